"""Runs compiled Snowflake SQL under fakesnow (a Snowflake emulator), in its own virtualenv.

fakesnow pins duckdb and sqlglot versions that conflict with the project's, so tests run this
script with a separate interpreter: ``python fakesnow_runner.py job.json``. The job names Parquet
files of the raw tables (created as ``INSIDER.<TABLE>`` with upper-case columns, as dlt stores them
on Snowflake) and the models' compiled SQL in dependency order; each model is created as a table
and its rows are written back as JSON, values as strings.
"""

from __future__ import annotations

import json
import sys

import fakesnow
import pyarrow.parquet as pq
import snowflake.connector


def main(job_path: str) -> None:
    with open(job_path) as f:
        job = json.load(f)
    out = {}
    with fakesnow.patch():
        conn = snowflake.connector.connect(database="DB", schema="INSIDER")
        cur = conn.cursor()
        cur.execute("CREATE SCHEMA IF NOT EXISTS DB.INSIDER")
        for table, path in job["tables"].items():
            cols = ", ".join(f'"{c}" AS "{c.upper()}"' for c in pq.read_schema(path).names)
            cur.execute(f'CREATE TABLE "INSIDER"."{table.upper()}" AS '
                        f"SELECT {cols} FROM read_parquet('{path}')")
        for name, sql in job["models"]:
            cur.execute(f'CREATE TABLE "INSIDER"."{name.upper()}" AS {sql}')
            cur.execute(f'SELECT * FROM "INSIDER"."{name.upper()}"')
            names = [d[0] for d in cur.description]
            out[name] = {"columns": names,
                         "rows": [[None if v is None else str(v) for v in r]
                                  for r in cur.fetchall()]}
    with open(job["output"], "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main(sys.argv[1])
