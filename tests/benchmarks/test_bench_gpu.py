"""A smoke run of ``benchmarks/bench_gpu.py`` on the CPU at tiny sizes (``--device cpu --smoke``:
every path's meta-gradient agrees with the float64 reference, every table is printed), and its
refusal, exit code 2, when asked for a GPU that is not there. Timings are never asserted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import bench_gpu

BENCHMARKS = Path(bench_gpu.__file__).resolve().parent


def run_script(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(BENCHMARKS / "bench_gpu.py"), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def test_the_timed_cases_are_loop_and_each_batched_path_at_chunk_4_and_the_whole_meta_batch():
    assert bench_gpu.path_variants(["loop", "grouped", "hybrid"], 16) == [
        ("loop", 1), ("grouped", 4), ("grouped", 16), ("hybrid", 4), ("hybrid", 16)
    ]  # fmt: skip
    assert bench_gpu.path_variants(["grouped"], 4) == [("grouped", 4)]
    assert bench_gpu.make_case("miniimagenet-5w1s", smoke=False).tasks == 4
    assert bench_gpu.make_case("omniglot-20w1s", smoke=False).tasks == 16


@pytest.mark.slow
def test_smoke_run_on_the_cpu_checks_every_path_against_float64_and_prints_the_tables(tmp_path):
    reference = tmp_path / "cpu.json"
    done = run_script("--device", "cpu", "--smoke", "--save-cpu-reference", str(reference))
    assert done.returncode == 0, done.stderr[-3000:]
    checks = [line for line in done.stdout.splitlines() if line.startswith("grad check ")]
    assert len(checks) == len(bench_gpu.SETTINGS) * len(bench_gpu.ALGORITHMS) * 3  # loop, grouped, hybrid
    assert all("agrees with float64" in line for line in checks), "\n".join(checks)
    for title in ("## Training iterations", "## ANIL against MAML", "## Against the CPU", "## Projected training"):
        assert title in done.stdout
    assert "| omniglot-20w1s | maml | grouped/c2 |" in done.stdout
    assert "hours of training" in done.stdout
    assert set(bench_gpu.load_cpu_reference(reference)["s_per_iter"]) == {
        f"{label}/{algorithm}" for label in bench_gpu.SETTINGS for algorithm in bench_gpu.ALGORITHMS
    }


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_without_a_gpu_the_default_run_exits_2_naming_the_missing_gpu():
    done = run_script()
    assert done.returncode == 2
    assert "no CUDA GPU" in done.stderr and "--device cpu --smoke" in done.stderr
    assert "grad check" not in done.stdout
