"""The benchmark script works end to end at smoke size and prints every figure (no timings are
asserted: speed and memory goals live in benchmarks/, see BENCHMARKS.md)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.conftest import ROOT


def test_benchmark_script_prints_every_figure() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--events", "50_000",
         "--repeats", "1", "--days", "3"],
        capture_output=True, text=True, timeout=300, env=dict(os.environ))
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    rows = int(re.search(r"rows:\s+([\d,]+)", text).group(1).replace(",", ""))  # type: ignore[union-attr]
    assert 40_000 < rows < 70_000, "the export has about the requested size"
    for figure in (r"pipeline:\s+[\d.]+ s\s+[\d,]+ rows/s\s+[\d.]+ MB/s",
                   r"floor:\s+[\d.]+ s\s+\(download [\d.]+ s \+ duckdb read [\d.]+ s\)",
                   r"ratio:\s+[\d.]+x the floor",
                   r"peak RSS:\s+\d+ MiB",
                   r"models: 4 built, full refresh [\d.]+s; after one more day .* incremental "
                   r"[\d.]+s = [\d.]+x the full refresh"):
        assert re.search(figure, text), f"missing {figure!r} in:\n{text}"
