-- grain: one row per event (as table events)
-- purpose: every event with the attributes its user had when it happened. A snapshot (one per
--   export, taken when the export was requested: snapshot_at) holds from its snapshot_at until
--   the user's next snapshot; an event takes the snapshot that held at its timestamp. No snapshot
--   covers the events before a user's first one (e.g. the whole first window): they take that
--   first snapshot, the closest values in time (attributes_from_first_snapshot = true). Unlike
--   the current values, these never change once built, so the model can be incremental.
-- materialized: incremental
-- time_column: timestamp
-- lookback: 3 days
-- load_column: export_id
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
-- events a snapshot covers: the values of that snapshot (an equi + range join per branch, which
-- every warehouse runs as a hash join; an OR of both cases would not be)
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
-- events before the user's first snapshot: that snapshot (users without any: NULL attributes)
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
