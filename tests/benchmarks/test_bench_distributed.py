"""A smoke run of ``benchmarks/bench_distributed.py``: real ``torchrun`` launches of 1 and 2 ranks
on the loopback interface, 3 iterations each on the built-in glyphs set; the report names both
rank counts, their speed-up and the communication time. Timings are never asserted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import bench_distributed

BENCHMARKS = Path(bench_distributed.__file__).resolve().parent


def test_auto_falls_back_to_glyphs_where_omniglot_is_absent_and_says_so(tmp_path):
    dataset, root, line = bench_distributed.choose_data("auto", tmp_path)
    assert (dataset, root) == ("glyphs", None) and "glyphs" in line and str(tmp_path) in line
    with pytest.raises(SystemExit, match="not in"):
        bench_distributed.choose_data("omniglot", tmp_path)


def test_the_metrics_rows_are_the_training_iterations(tmp_path):
    csv = tmp_path / "metrics.csv"
    csv.write_text(
        "iteration,split,loss,accuracy,comm_seconds,seconds,ci95\n"
        "1,train,1.0,0.5,0.01,0.4,\n2,train,1.0,0.5,0.02,0.3,\n2,val,,0.6,,,0.1\n"
    )
    rows = bench_distributed.iteration_rows(csv)
    assert rows == [
        {"iteration": 1.0, "seconds": 0.4, "comm_seconds": 0.01},
        {"iteration": 2.0, "seconds": 0.3, "comm_seconds": 0.02},
    ]


@pytest.mark.slow
def test_smoke_run_reports_both_rank_counts_their_ratio_and_the_communication_time():
    command = [sys.executable, str(BENCHMARKS / "bench_distributed.py"), "--dataset", "glyphs"]
    command += ["--iterations", "3", "--repeats", "1", "--warmup", "1"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "data: the built-in glyphs set" in out
    assert "\n| 1 | " in out and "\n| 2 | " in out
    assert "speed-up 2 ranks vs 1: " in out and "x (per repeat: " in out
    assert "communication with 2 ranks: " in out and "s per iteration" in out
