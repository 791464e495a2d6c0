"""The memory instrument of ``benchmarks/bench_maml.py`` (its figures are in
``benchmarks/README.md``; timings are never asserted)."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import bench_maml

MB = 2**20


def test_tensor_peak_is_the_largest_total_held_at_once():
    """4 MB, then 2 MB beside it (6 MB), the 4 MB freed, then 3 MB beside the 2 MB (5 MB): the
    peak is 6 MB, not the 9 MB allocated in all, nor the 5 MB held at the end."""

    def step():
        first = torch.zeros(4 * MB, dtype=torch.uint8)
        second = torch.zeros(2 * MB, dtype=torch.uint8)
        del first
        third = torch.zeros(3 * MB, dtype=torch.uint8)
        return second, third

    assert bench_maml.live_tensor_peak_mb(step) == pytest.approx(6.0, abs=0.01)


def _first_tasks(tasks: SimpleNamespace, n: int) -> SimpleNamespace:
    return SimpleNamespace(**{k: v[:n] for k, v in vars(tasks).items()})


def test_tensor_peaks_show_what_each_path_keeps():
    """The baseline frees each task's graph before the next task (its peak does not grow with
    the tasks); ``hybrid`` keeps every inner-loop graph of a chunk (a chunk of 2 holds
    more than a chunk of 1, by at least a task's fast weights: 5 steps of conv2-4)."""
    models, tasks = bench_maml.make_models(), bench_maml.make_tasks()
    table = {chunk: bench_maml.cases(chunk) for chunk in (1, 2)}

    def peak(chunk: int, case: str, n_tasks: int) -> float:
        bench_maml.zero_grads(models)
        return bench_maml.live_tensor_peak_mb(lambda: table[chunk][case](models, _first_tasks(tasks, n_tasks)))

    assert peak(1, "maml/baseline", 3) == pytest.approx(peak(1, "maml/baseline", 1), rel=0.05)
    fast_weights = 5 * 3 * 64 * 64 * 9 * 4 / MB
    assert peak(2, "maml/hybrid", 2) > peak(1, "maml/hybrid", 2) + fast_weights
