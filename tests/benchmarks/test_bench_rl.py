"""A smoke run of ``benchmarks/bench_rl.py`` at a tiny size (its figures are in
``benchmarks/README.md``; timings are never asserted)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import bench_rl


def test_every_case_steps_every_trajectory():
    pytest.importorskip("gymnasium")
    pytest.importorskip("mujoco")
    cases = bench_rl.env_cases(tasks=2, trajectories=2, steps=3)
    assert {name: case() for name, case in cases.items()} == dict.fromkeys(cases, 12)
    timing = bench_rl.time_cases(cases, rounds=1)
    assert all(rate["wall"] > 0 for rate in timing.values())


def test_the_meta_iteration_split_names_its_parts():
    split = bench_rl.meta_iteration_split("2d-navigation", tasks=2, trajectories=2)
    assert {"sampling_s", "inner_s", "trpo_s", "total_s"} <= set(split) and split["horizon"] == 100
