"""Evaluation: the CI formula, JSON results against a direct computation, the same tasks for
every algorithm, the freezing ablation, NIL-testing and the mean/std over seeds."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from test_train import tiny_config

from meta.core.inner import InnerLoop
from meta.core.names import FREEZING_ROWS
from meta.core.nil import nil_accuracy
from meta.core.procedures import evaluate_task
from meta.data import fixed_tasks
from meta.data.synthetic import synthetic_split
from meta.run.evaluate import LoadedRun, evaluate_run, evaluate_runs, run_procedure
from meta.run.results import Evaluation, format_result, mean_ci95
from meta.run.train import train

TASKS = 12


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three MAML seeds, ANIL, a 4-way MAML run and a multiclass run, a few iterations each."""
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for seed in (0, 1, 2):
        out[f"maml{seed}"] = root / f"maml{seed}"
        train(tiny_config(seed=seed, iterations=4), out[f"maml{seed}"])
    out["anil"] = root / "anil"
    train(tiny_config(algorithm="anil", iterations=4), out["anil"])
    out["four_way"] = root / "four_way"
    train(tiny_config(ways=4, iterations=1), out["four_way"])
    out["multiclass"] = root / "multiclass"
    train(tiny_config(algorithm="multiclass", iterations=2, batch_size=16), out["multiclass"])
    return out


def test_ci95_is_1_96_population_std_over_sqrt_tasks():
    a = np.array([0.2, 0.6, 0.6, 1.0])
    mean, ci = mean_ci95(a)
    assert mean == pytest.approx(0.6)
    assert ci == pytest.approx(1.96 * math.sqrt(((a - 0.6) ** 2).mean()) / 2)  # ddof=0, sqrt(4) tasks
    assert mean_ci95([0.5] * 10) == (0.5, 0.0)
    with pytest.raises(ValueError, match="finite"):
        mean_ci95([0.5, float("nan")])


def test_evaluate_json_equals_a_direct_computation(runs):
    result = evaluate_run(runs["maml0"], tasks=TASKS, progress=False)
    written = json.loads(Path(result.json).read_text())
    assert written["accuracy"] == result.accuracy and written["ci95"] == result.ci95
    assert Evaluation.from_json(written) == result  # the file reads back to the same result
    assert result.json.startswith(str(runs["maml0"] / "eval"))
    # direct: the first TASKS fixed test tasks, the run's test-time inner loop (2 steps of 0.4, all layers)
    run = LoadedRun.open(runs["maml0"])
    model = run.model("final")
    tasks = fixed_tasks(synthetic_split("test"), 3, 1, 5, n_tasks=TASKS)
    direct = np.array([evaluate_task(model, tasks[i], InnerLoop(2, 0.4)).accuracy for i in range(TASKS)])
    assert list(result.result.per_task) == pytest.approx(direct.tolist(), abs=0)
    assert result.accuracy == pytest.approx(100 * direct.mean(), rel=1e-12)
    assert result.ci95 == pytest.approx(100 * 1.96 * direct.std() / math.sqrt(TASKS), rel=1e-12)
    assert result.result.procedure == {
        "kind": "inner",
        "steps": 2,
        "lr": 0.4,
        "adapted_layers": list(model.layers),
        "frozen_layers": [],
    }
    assert result.result.summary.tasks == TASKS and "1.96" in written["ci95_formula"]


def test_every_algorithm_is_tested_on_the_same_tasks(runs):
    maml = evaluate_run(runs["maml1"], tasks=TASKS, progress=False, write=False)
    anil = evaluate_run(runs["anil"], tasks=TASKS, progress=False, write=False)
    assert maml.task_set == anil.task_set
    assert anil.result.procedure["adapted_layers"] == ["head"]  # ANIL adapts its head at test time


def test_freezing_ablation_rows_match_single_evaluations(runs):
    table = evaluate_run(runs["maml0"], tasks=TASKS, ablation="freezing", progress=False)
    assert [row.frozen for row in table.rows] == ["none", "conv1", "conv1-2", "conv1-3", "conv1-4"]
    for row, (_, frozen) in zip(table.rows, FREEZING_ROWS):
        assert row.procedure["frozen_layers"] == list(frozen)
        single = evaluate_run(
            runs["maml0"], tasks=TASKS, freeze=",".join(frozen) or "none", progress=False, write=False
        )
        assert single.accuracy == row.summary.accuracy and single.ci95 == row.summary.ci95
    default = evaluate_run(runs["maml0"], tasks=TASKS, progress=False, write=False)
    assert table.row("none").summary.accuracy == default.accuracy  # MAML adapts every layer by default
    assert "conv1-4" in format_result(table)


def test_nil_equals_a_direct_computation_and_ignores_the_head(runs):
    result = evaluate_run(runs["maml2"], tasks=TASKS, nil=True, progress=False)
    assert result.result.procedure == {"kind": "nil"} and result.name.endswith("_nil")
    model = LoadedRun.open(runs["maml2"]).model("final")
    tasks = fixed_tasks(synthetic_split("test"), 3, 1, 5, n_tasks=TASKS)
    direct = [nil_accuracy(model, tasks[i]) for i in range(TASKS)]
    assert result.accuracy == pytest.approx(100 * np.mean(direct), rel=1e-12)
    with torch.no_grad():
        model.head.weight.normal_()
    assert [nil_accuracy(model, tasks[i]) for i in range(TASKS)] == direct


def test_baselines_default_to_nil_and_a_multiclass_head_cannot_adapt(runs):
    result = evaluate_run(runs["multiclass"], tasks=TASKS, progress=False, write=False)
    assert result.result.procedure == {"kind": "nil"}
    with pytest.raises(ValueError, match="48 outputs but the tasks are 3-way"):
        evaluate_run(runs["multiclass"], tasks=TASKS, freeze="none", progress=False, write=False)


def test_mean_and_std_over_seeds(runs, tmp_path):
    dirs = [runs[f"maml{s}"] for s in (0, 1, 2)]
    combined = evaluate_runs(dirs, tasks=TASKS, progress=False)
    singles = [evaluate_run(d, tasks=TASKS, progress=False, write=False).accuracy for d in dirs]
    assert [r.accuracy for r in combined.runs] == singles
    assert [r.seed for r in combined.runs] == [0, 1, 2]
    assert combined.rows[0].accuracy == pytest.approx(np.mean(singles))
    assert combined.rows[0].std_over_seeds == pytest.approx(np.std(singles, ddof=1))
    table = evaluate_runs(dirs, tasks=TASKS, ablation="freezing", progress=False, write=False)
    assert [row.frozen for row in table.rows] == [label for label, _ in FREEZING_ROWS]
    assert table.rows[0].accuracy == pytest.approx(np.mean(singles))
    assert "over 3 seeds" in format_result(combined)


def test_bad_requests_are_refused_with_a_reason(runs, tmp_path):
    run = runs["maml0"]
    with pytest.raises(ValueError, match="NIL"):
        evaluate_run(run, tasks=2, nil=True, freeze="conv1", progress=False, write=False)
    with pytest.raises(ValueError, match="drop --nil and --freeze"):
        evaluate_run(run, tasks=2, ablation="freezing", nil=True, progress=False, write=False)
    with pytest.raises(ValueError, match="unknown ablation"):
        evaluate_run(run, tasks=2, ablation="width", progress=False, write=False)
    with pytest.raises(ValueError, match="unknown layers"):
        evaluate_run(run, tasks=2, freeze="conv9", progress=False, write=False)
    with pytest.raises(ValueError, match="does not exist"):
        evaluate_run(run, tasks=2, weights=str(tmp_path / "missing.safetensors"), progress=False, write=False)
    with pytest.raises(ValueError, match="no config.json"):
        evaluate_run(tmp_path, tasks=2, progress=False, write=False)
    with pytest.raises(ValueError, match="different task sets"):
        evaluate_runs([run, runs["four_way"]], tasks=2, progress=False, write=False)


def test_best_weights_and_procedure_overrides(runs):
    best = evaluate_run(runs["maml0"], tasks=TASKS, weights="best", progress=False, write=False)
    assert best.weights_path.endswith("best.safetensors")
    procedure = run_procedure(LoadedRun.open(runs["anil"]).config, steps=5, lr=0.1)
    assert procedure.inner == InnerLoop(5, 0.1, adapt=frozenset({"head"}))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("procedure", [{}, {"nil": True}, {"freeze": "conv1,conv2,conv3,conv4"}])
def test_evaluation_on_cuda_equals_the_cpu_one(runs, procedure):
    """The same fixed tasks, adapted on the GPU: every task's accuracy as on the CPU (float32 on
    both; a task's accuracy is a count of correct queries, so the rounding shows only where two
    logits tie to within it)."""
    cpu = evaluate_run(runs["maml0"], tasks=TASKS, progress=False, write=False, **procedure)
    gpu = evaluate_run(runs["maml0"], tasks=TASKS, progress=False, write=False, device="cuda", **procedure)
    assert gpu.accuracy == pytest.approx(cpu.accuracy, abs=100 / TASKS / 15)
