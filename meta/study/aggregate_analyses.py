"""Rows of the CSVs of the paper's further analyses and of the architecture study
(:mod:`meta.study.schema`), from the jobs' results, the evaluation JSONs and the runs' metrics.

- ``figure5_learning_curves``: the MAML and ANIL runs' validation accuracy and training query
  loss against iteration and wall time (``metrics.json``; wall time is the sum of the logged
  seconds per iteration).
- ``figure_weight_movement``: per algorithm, conv4 variant, inner step and layer, the mean over
  test tasks of ``||theta_adapted - theta_meta||`` (``quantity = movement``) and of the same over
  ``||theta_meta||`` (``relative``), with a 95% interval over tasks, then over seeds.
- ``figure_regime_similarity`` (the paper's App. D.2): CCA and CKA between the bodies trained by
  each pair of regimes (first seed), per layer, on the query sets of ``similarity_tasks`` test
  tasks: the mean over tasks and its 95% half-width.
- ``table_test_time_heads`` (App. D.1): each body (MAML- and ANIL-trained) tested with its own
  procedure, with the other algorithm's, and with NIL. MAML's procedure adapts every layer,
  ANIL's the head only: on the MAML body that is row ``conv1-4`` of its freezing ablation.
- ``table_speed``: ANIL's speed-up over MAML, per training iteration and per test-time
  adaptation (medians of :func:`meta.study.analyses.speed_job`), beside the paper's 1.7x and 4.1x.
- ``table_architecture_accuracy`` and ``figure_architecture_similarity``: for each conv4 variant,
  MAML's freezing table at the test-time steps and at ``head_steps_factor`` times as many, the
  NIL test of both bodies, ANIL's own accuracy, and the similarity before vs after each inner
  step (mean and 95% half-width over the tasks of the study's one seed).

Imports: :mod:`meta.core.names`, :mod:`meta.run`, :mod:`meta.study` (plan, jobs, aggregate), :mod:`repsim.io`.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from typing import Any

from meta.core.names import BODY, BODY_BASELINES, FROZEN_LABELS, LAYERS
from meta.run.folder import RunFolder
from meta.run.results import Evaluation
from meta.study.aggregate import Row, _shared, accuracy_over_seeds, similarity_over_seeds
from meta.study.jobs import eval_path
from meta.study.plan import Plan, RunPlan
from meta.study.presets import Setting
from repsim.io import read_json

#: The paper's speed-ups of ANIL over MAML (Raghu et al. 2020, section 4.2).
PAPER_SPEEDUP = {"training iteration": 1.7, "test-time adaptation": 4.1}
#: Regimes of the regime-similarity matrix, in the paper's order.
REGIMES: tuple[str, ...] = ("maml", "anil", *BODY_BASELINES)


def _read(plan: Plan, run: RunPlan, kind: str, tasks: int, steps: int | None = None) -> Evaluation:
    """The evaluation JSON of ``run`` written by :func:`meta.study.jobs.evaluate_job`."""
    return Evaluation.read(
        eval_path(plan.run_dir(run), run.config, kind=kind, weights="final", tasks=tasks, steps=steps)
    )


# ---------------------------------------------------------------------------------------------
# Learning curves (Figure 5)
# ---------------------------------------------------------------------------------------------


def learning_curve_rows(plan: Plan) -> list[Row]:
    """Every logged row of every reference MAML and ANIL run: validation rows give ``accuracy``
    (percent), training rows ``loss`` (the query loss); ``wall_seconds`` is the training time up
    to the row."""
    rows = []
    for run in plan.meta_runs():
        metrics = read_json(RunFolder(plan.run_dir(run)).root / "metrics.json")["rows"]
        wall, last = 0.0, 0
        for m in metrics:
            if m["split"] == "train":
                wall += (m.get("seconds") or 0.0) * (m["iteration"] - last)
                last = m["iteration"]
            accuracy = m.get("accuracy")
            rows.append(
                {
                    "algorithm": run.algorithm,
                    "seed": run.seed,
                    "iteration": m["iteration"],
                    "split": m["split"],
                    "accuracy": None if accuracy is None or m["split"] == "train" else 100 * accuracy,
                    "loss": m.get("loss") if m["split"] == "train" else None,
                    "wall_seconds": wall,
                    **_shared(run.setting),
                }
            )
    return rows


# ---------------------------------------------------------------------------------------------
# Weight movement
# ---------------------------------------------------------------------------------------------


def movement_runs(plan: Plan) -> list[tuple[str, RunPlan]]:
    """(architecture, run) of every final MAML and ANIL snapshot: the reference runs and the
    architecture study's variants."""
    runs = [(r.architecture, r) for r in plan.meta_runs()]
    study = [(v, r) for a in ("maml", "anil") for v, r in plan.architecture_runs(a) if v != "reference"]
    return runs + study


def movement_key(plan: Plan, run: RunPlan) -> str:
    """The key of a weight-movement job and of its result: ``movement <snapshot name>``."""
    return f"movement {plan.snapshot_dir(run).name}"


def weight_movement_rows(plan: Plan, results: Mapping[str, Any]) -> list[Row]:
    """Per algorithm, architecture, step, layer and quantity: over tasks, then seeds."""
    groups: dict[tuple[str, str, str], list[RunPlan]] = {}
    for architecture, run in movement_runs(plan):
        groups.setdefault((run.algorithm, architecture, run.setting.label), []).append(run)
    rows = []
    for (algorithm, architecture, _), runs in groups.items():
        setting = runs[0].setting
        per_run = [results[movement_key(plan, run)] for run in runs]
        steps = sorted({r["step"] for r in per_run[0]})
        for step in steps:
            for layer in LAYERS:
                for quantity in ("movement", "relative"):
                    values = [
                        [r[quantity] for r in rows_ if r["step"] == step and r["layer"] == layer] for rows_ in per_run
                    ]
                    rows.append(
                        {
                            "algorithm": algorithm,
                            "architecture": architecture,
                            "step": step,
                            "layer": layer,
                            "quantity": quantity,
                            **similarity_over_seeds(values).as_row("value"),
                            **_shared(setting),
                        }
                    )
    return rows


# ---------------------------------------------------------------------------------------------
# Similarity between the bodies of the training regimes (App. D.2)
# ---------------------------------------------------------------------------------------------


def regime_pairs(plan: Plan) -> list[tuple[Setting, RunPlan, RunPlan]]:
    """(setting, run A, run B) for every pair of regimes (first seed), in settings with baselines."""
    pairs = []
    for s in plan.preset.settings:
        if not s.baselines:
            continue
        runs = [plan.runs_of(s, regime)[0] for regime in REGIMES]
        pairs += [(s, a, b) for i, a in enumerate(runs) for b in runs[i + 1 :]]
    return pairs


def regime_key(a: RunPlan, b: RunPlan) -> str:
    """The key of a regime-similarity job and of its result."""
    return f"bodies {a.name} vs {b.name}"


def regime_similarity_rows(plan: Plan, results: Mapping[str, Any]) -> list[Row]:
    """Per pair of regimes, body layer and measure: the mean over tasks and its 95% half-width."""
    rows = []
    for s, a, b in regime_pairs(plan):
        found = results[regime_key(a, b)]
        for measure in plan.preset.measures:
            for layer in BODY:
                values = [r["value"] for r in found if r["layer"] == layer and r["measure"] == measure]
                over = similarity_over_seeds([values])
                rows.append(
                    {
                        "regime_a": a.algorithm,
                        "regime_b": b.algorithm,
                        "layer": layer,
                        "measure": measure,
                        "value": over.mean,
                        "ci95": over.ci95,
                        "n_tasks": over.n_tasks,
                        **_shared(s),
                    }
                )
    return rows


# ---------------------------------------------------------------------------------------------
# Test-time heads (App. D.1)
# ---------------------------------------------------------------------------------------------


def test_time_heads_rows(plan: Plan) -> list[Row]:
    """Each body with its own procedure, the other algorithm's, and NIL (over seeds)."""
    tasks, rows = plan.preset.eval_tasks, []
    for s in plan.preset.settings:
        maml, anil = plan.runs_of(s, "maml"), plan.runs_of(s, "anil")
        ablations = [_read(plan, r, "freezing", tasks) for r in maml]
        cases = (
            ("maml", "own (MAML: every layer adapts)", "all layers", [a.row("none").summary for a in ablations]),
            ("maml", "ANIL's (the head adapts)", "head", [a.row("conv1-4").summary for a in ablations]),
            (
                "maml",
                "NIL (no head, no inner loop)",
                "none",
                [_read(plan, r, "nil", tasks).result.summary for r in maml],
            ),
            (
                "anil",
                "own (ANIL: the head adapts)",
                "head",
                [_read(plan, r, "default", tasks).result.summary for r in anil],
            ),
            (
                "anil",
                "MAML's (every layer adapts)",
                "all layers",
                [_read(plan, r, "adapt-all", tasks).result.summary for r in anil],
            ),
            (
                "anil",
                "NIL (no head, no inner loop)",
                "none",
                [_read(plan, r, "nil", tasks).result.summary for r in anil],
            ),
        )
        rows += [
            {
                "body": body,
                "procedure": procedure,
                "adapted": adapted,
                **_shared(s),
                **accuracy_over_seeds(summaries).as_row("accuracy"),
            }
            for body, procedure, adapted, summaries in cases
        ]
    return rows


# ---------------------------------------------------------------------------------------------
# Speed (ANIL over MAML)
# ---------------------------------------------------------------------------------------------


def speed_runs(plan: Plan) -> tuple[Setting, RunPlan, RunPlan]:
    """The setting and the MAML and ANIL runs (first seed) whose speed is measured: the first setting's."""
    s = plan.preset.settings[0]
    return s, plan.runs_of(s, "maml")[0], plan.runs_of(s, "anil")[0]


def speed_rows(plan: Plan, results: Mapping[str, Any]) -> list[Row]:
    """Median seconds of MAML and ANIL, per training iteration and per test-time adaptation, and
    their ratio, beside the paper's."""
    setting, _, _ = speed_runs(plan)
    seconds = results["speed"]
    rows = []
    for quantity, key in (("training iteration", "train"), ("test-time adaptation", "test")):
        maml, anil = statistics.median(seconds[key]["maml"]), statistics.median(seconds[key]["anil"])
        rows.append(
            {
                "quantity": quantity,
                "maml_seconds": maml,
                "anil_seconds": anil,
                "speedup": maml / anil,
                "paper_speedup": PAPER_SPEEDUP[quantity],
                "repeats": len(seconds[key]["maml"]),
                **_shared(setting),
            }
        )
    return rows


# ---------------------------------------------------------------------------------------------
# The architecture study
# ---------------------------------------------------------------------------------------------


def head_steps(run: RunPlan, factor: int) -> int:
    """The study's longer test-time inner loop: ``factor`` times the run's test steps."""
    return factor * run.config.test_inner_steps


def architecture_evaluations(plan: Plan) -> list[tuple[RunPlan, str, int | None]]:
    """(run, kind, steps) of the study's evaluations, on ``architecture_tasks`` tasks: MAML's
    freezing ablation at the test steps and at ``head_steps_factor`` times as many, and NIL;
    ANIL's own procedure and NIL."""
    p, out = plan.preset, []
    for _, run in plan.architecture_runs("maml"):
        out += [(run, "freezing", None), (run, "freezing", head_steps(run, p.head_steps_factor)), (run, "nil", None)]
    for _, run in plan.architecture_runs("anil"):
        out += [(run, "default", None), (run, "nil", None)]
    return out


def architecture_accuracy_rows(plan: Plan) -> list[Row]:
    """Per variant: MAML's freezing rows (both step counts), the NIL test of MAML's and ANIL's
    bodies and ANIL's own accuracy, on ``architecture_tasks`` tasks (the study's one seed)."""
    tasks, rows = plan.preset.architecture_tasks, []
    for run, kind, steps in architecture_evaluations(plan):
        evaluation = _read(plan, run, kind, tasks, steps)
        keys = {"architecture": run.architecture, "algorithm": run.algorithm, **_shared(run.setting)}
        count = steps or run.config.test_inner_steps
        if kind == "freezing":
            rows += [
                {
                    **keys,
                    "procedure": "freezing",
                    "frozen": label,
                    "steps": count,
                    **_one(evaluation.row(label).summary),
                }
                for label in FROZEN_LABELS
            ]
        else:
            procedure = "nil" if kind == "nil" else "own"
            rows.append(
                {
                    **keys,
                    "procedure": procedure,
                    "frozen": None,
                    "steps": 0 if kind == "nil" else count,
                    **_one(evaluation.result.summary),
                }
            )
    return rows


def _one(summary: Any) -> Row:
    return accuracy_over_seeds([summary]).as_row("accuracy")


def architecture_similarity_rows(plan: Plan, results: Mapping[str, Any]) -> list[Row]:
    """Per variant, algorithm, inner step, layer and measure: the similarity before adaptation vs
    after that step, mean and 95% half-width over the study seed's snapshot tasks."""
    rows = []
    for algorithm in ("maml", "anil"):
        for architecture, run in plan.architecture_runs(algorithm):
            found = results[plan.snapshot_dir(run).name]
            for step in sorted({r["step"] for r in found}):
                for measure in plan.preset.measures:
                    for layer in LAYERS:
                        values = [
                            r["value"] for r in found if (r["step"], r["layer"], r["measure"]) == (step, layer, measure)
                        ]
                        rows.append(
                            {
                                "architecture": architecture,
                                "algorithm": algorithm,
                                "step": step,
                                "layer": layer,
                                "measure": measure,
                                **similarity_over_seeds([values]).as_row("value"),
                                **_shared(run.setting),
                            }
                        )
    return rows
