-- grain: one row per event
-- purpose: every event with its user's current attributes (the latest snapshot, table attributes)
-- materialized: view
-- tests: not_null(insider_id), not_null(event_name), not_null(timestamp)
SELECT
  e.*,
  a.* EXCLUDE (insider_id, export_id, snapshot_at),
  a.snapshot_at AS attributes_snapshot_at
FROM events AS e
LEFT JOIN attributes AS a
  ON a.insider_id = e.insider_id
