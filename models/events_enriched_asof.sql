-- grain: one row per event
-- purpose: every event with the attributes valid when it happened. A snapshot (one per export,
--   taken when the export was requested) holds from its snapshot_at until the user's next
--   snapshot; events before a user's first snapshot get the current values
--   (attributes_are_current = true).
-- materialized: incremental
-- time_column: timestamp
-- lookback: 3 days
-- rebuild_where: attributes_are_current
-- tests: not_null(insider_id), not_null(timestamp), not_null(attributes_are_current)
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
  FALSE AS attributes_are_current
FROM events AS e
JOIN intervals AS iv
  ON iv.insider_id = e.insider_id
  AND e.timestamp >= iv.snapshot_at
  AND e.timestamp < iv.valid_to
UNION ALL
-- events before the user's first snapshot (or of users without one): the current values, i.e.
-- the user's latest snapshot (the open interval), the same row as in table attributes
SELECT
  e.*,
  cur.* EXCLUDE (insider_id, export_id, snapshot_at, valid_to),
  cur.snapshot_at AS attributes_snapshot_at,
  TRUE AS attributes_are_current
FROM events AS e
LEFT JOIN first_snapshot AS f
  ON f.insider_id = e.insider_id
LEFT JOIN intervals AS cur
  ON cur.insider_id = e.insider_id
  AND cur.valid_to = CAST('9999-12-31 00:00:00+00' AS TIMESTAMPTZ)
WHERE f.first_at IS NULL OR e.timestamp < f.first_at
