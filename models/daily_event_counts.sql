-- grain: one row per UTC day (event_date) and event name
-- purpose: daily metrics: events, distinct users, and new users (users whose first loaded event
--   of any kind happened that day; history before initial_start_date is not known)
-- materialized: table
-- tests: not_null(event_date), not_null(event_name), not_null(events)
WITH first_seen AS (
  SELECT insider_id, MIN(event_date) AS first_day
  FROM events
  GROUP BY insider_id
)
SELECT
  e.event_date,
  e.event_name,
  COUNT(*) AS events,
  COUNT(DISTINCT e.insider_id) AS users,
  COUNT(DISTINCT CASE WHEN f.first_day = e.event_date THEN e.insider_id END) AS new_users
FROM events AS e
JOIN first_seen AS f ON f.insider_id = e.insider_id
GROUP BY e.event_date, e.event_name
