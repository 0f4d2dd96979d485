-- grain: one row per event
-- purpose: every event with the attributes valid when it happened. A snapshot (one per export,
--   taken when the export was requested) holds from its snapshot_at until the user's next
--   snapshot. No snapshot covers events before a user's first one: they get the values of that
--   first snapshot, the closest in time (attributes_from_first_snapshot = true); unlike the
--   current values, these never change afterwards, so the model stays incremental.
-- materialized: incremental
-- time_column: timestamp
-- lookback: 3 days
-- tests: not_null(insider_id), not_null(timestamp), not_null(attributes_from_first_snapshot)
WITH intervals AS (
  SELECT
    h.*,
    COALESCE(
      LEAD(h.snapshot_at) OVER (PARTITION BY h.insider_id ORDER BY h.snapshot_at),
      CAST('9999-12-31 00:00:00+00' AS TIMESTAMPTZ)
    ) AS valid_to
  FROM attributes_history AS h
),
first_snapshot AS (
  SELECT insider_id, MIN(snapshot_at) AS first_at
  FROM attributes_history
  GROUP BY insider_id
)
-- events a snapshot covers: the values of that snapshot
SELECT
  e.*,
  iv.* EXCLUDE (insider_id, export_id, snapshot_at, valid_to),
  iv.snapshot_at AS attributes_snapshot_at,
  FALSE AS attributes_from_first_snapshot
FROM events AS e
JOIN intervals AS iv
  ON iv.insider_id = e.insider_id
  AND e.timestamp >= iv.snapshot_at
  AND e.timestamp < iv.valid_to
UNION ALL
-- events before the user's first snapshot (or of users without any: no attributes)
SELECT
  e.*,
  fs.* EXCLUDE (insider_id, export_id, snapshot_at, valid_to),
  fs.snapshot_at AS attributes_snapshot_at,
  TRUE AS attributes_from_first_snapshot
FROM events AS e
LEFT JOIN first_snapshot AS f
  ON f.insider_id = e.insider_id
LEFT JOIN intervals AS fs
  ON fs.insider_id = e.insider_id
  AND fs.snapshot_at = f.first_at
WHERE f.first_at IS NULL OR e.timestamp < f.first_at
