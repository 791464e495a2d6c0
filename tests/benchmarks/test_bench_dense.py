"""A smoke run of ``benchmarks/bench_dense.py`` at a tiny size (its figures are in
``benchmarks/README.md``; timings are never asserted)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import bench_dense


def test_every_operation_agrees_with_torch_and_is_timed_on_both_sides():
    rows = bench_dense.time_pairs(bench_dense.problems(24), repeats=1)
    assert len(rows) == 5
    for row in rows:
        assert row["diff"] < 1e-12, row["operation"]
        assert row["repsim_ms"] > 0 and row["torch_ms"] > 0 and row["x"] > 0


def test_the_script_prints_one_line_per_operation(capsys):
    bench_dense.main(["--d", "16", "--repeats", "1"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("torch ") and "d = 16" in lines[0]
    assert [line.split("  ")[0].strip() for line in lines[2:]] == list(bench_dense.problems(16))
