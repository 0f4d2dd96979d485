-- grain: one row per user (insider_id) with at least one event
-- purpose: activity per user: first and last event, events in total and per event type, active
--   UTC days, purchases and revenue per currency, then the user's current attributes. Revenue is
--   unit_price * quantity (quantity 1 when absent), rounded to cents per purchase and summed in
--   integer cents, so it is exact and the same text on every warehouse (e.g. 'EUR:12.50').
-- materialized: table
-- unique_key: insider_id
-- tests: not_null(first_event_at), relationships(insider_id -> attributes.insider_id)
WITH activity AS (
  SELECT
    insider_id,
    MIN(timestamp) AS first_event_at,
    MAX(timestamp) AS last_event_at,
    COUNT(*) AS events,
    COUNT(DISTINCT event_date) AS active_days
  FROM events
  GROUP BY insider_id
),
per_type AS (
  SELECT insider_id, event_name, COUNT(*) AS n
  FROM events
  GROUP BY insider_id, event_name
),
types AS (
  SELECT
    insider_id,
    STRING_AGG(event_name || ':' || CAST(n AS VARCHAR), ', ' ORDER BY event_name NULLS FIRST) AS events_by_type
  FROM per_type
  GROUP BY insider_id
),
per_currency AS (
  SELECT
    insider_id,
    currency,
    COUNT(*) AS purchases,
    COALESCE(SUM(CAST(ROUND(unit_price * COALESCE(quantity, 1) * 100) AS BIGINT)), 0) AS cents
  FROM events
  WHERE event_name = 'purchase'
  GROUP BY insider_id, currency
),
money AS (
  SELECT
    insider_id,
    CAST(SUM(purchases) AS BIGINT) AS purchases,
    STRING_AGG(
      COALESCE(currency, '?') || ':'
      || CASE WHEN cents < 0 THEN '-' ELSE '' END
      || CAST(CAST(FLOOR(ABS(cents) / 100) AS BIGINT) AS VARCHAR)
      || '.' || LPAD(CAST(MOD(ABS(cents), 100) AS VARCHAR), 2, '0'),
      ', ' ORDER BY currency NULLS FIRST
    ) AS revenue_by_currency
  FROM per_currency
  GROUP BY insider_id
)
SELECT
  act.insider_id,
  act.first_event_at,
  act.last_event_at,
  act.events,
  act.active_days,
  t.events_by_type,
  COALESCE(m.purchases, 0) AS purchases,
  m.revenue_by_currency,
  a.* EXCLUDE (insider_id, export_id, snapshot_at)
FROM activity AS act
LEFT JOIN types AS t ON t.insider_id = act.insider_id
LEFT JOIN money AS m ON m.insider_id = act.insider_id
LEFT JOIN attributes AS a ON a.insider_id = act.insider_id
