-- grain: one row per event
-- purpose: every event with the attributes valid when it happened. A snapshot (one per export,
--   taken when the export was requested) holds from its snapshot_at until the user's next
--   snapshot; events before a user's first snapshot get the current values
--   (attributes_are_current = true).
-- materialized: incremental
-- time_column: timestamp
-- lookback: 3 days
-- rebuild_where: attributes_are_current
-- tests: not_null(insider_id), not_null(timestamp), not_null(attributes_snapshot_at)
WITH intervals AS (
  SELECT
    insider_id,
    snapshot_at AS valid_from,
    LEAD(snapshot_at) OVER (PARTITION BY insider_id ORDER BY snapshot_at) AS valid_to
  FROM attributes_history
)
SELECT
  e.*,
  h.* EXCLUDE (insider_id, export_id, snapshot_at),
  h.snapshot_at AS attributes_snapshot_at,
  iv.valid_from IS NULL AS attributes_are_current
FROM events AS e
LEFT JOIN intervals AS iv
  ON iv.insider_id = e.insider_id
  AND e.timestamp >= iv.valid_from
  AND (iv.valid_to IS NULL OR e.timestamp < iv.valid_to)
LEFT JOIN attributes AS cur
  ON cur.insider_id = e.insider_id
LEFT JOIN attributes_history AS h
  ON h.insider_id = e.insider_id
  AND h.snapshot_at = COALESCE(iv.valid_from, cur.snapshot_at)
