-- grain: one row per event (as table events)
-- purpose: every event with its user's current attributes: the user's latest snapshot, as in
--   table attributes (NULL attributes for a user without any). For the values the user had when
--   the event happened, use events_enriched_asof.
-- materialized: view
-- tests: not_null(insider_id), not_null(event_name), not_null(timestamp)
SELECT
  e.*,
  -- the event's own insider_id and dlt columns stay; star on both sides keeps every configured
  -- event param and attribute without listing them
  a.* EXCLUDE (insider_id, export_id, snapshot_at),
  a.snapshot_at AS attributes_snapshot_at
FROM events AS e
LEFT JOIN attributes AS a
  ON a.insider_id = e.insider_id
