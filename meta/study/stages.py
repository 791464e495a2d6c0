"""The stages of the reproduction (:data:`STAGE_LIST`), in order: each makes its list of
independent jobs from the plan alone (:class:`meta.study.executor.Job`) and, from their results,
writes its files (CSVs of :mod:`meta.study.schema`, the report).

============================  ======================================================================
``data``                      every split of every data set, generated or decoded into the cache
``train``                     the training runs (MAML keeps its weights at the preset's
                              ``early_fractions`` of training)
``evaluate``                  the evaluations on fixed test tasks; Tables 1, 2, 4 and 5
``snapshots``                 adaptation snapshots of the final MAML and ANIL weights and of each
                              kept MAML checkpoint
``adaptation_similarity``     CCA and CKA of each layer before vs after adaptation; Figures 2 and 3
``cross_model_similarity``    CCA and CKA of separately trained models layer by layer; Table 3 and
                              the similarity between the regimes' bodies
``speed``                     ANIL's speed-up over MAML on this machine (one job, alone); the
                              learning curves
``report``                    Markdown tables, figures and ``report.html`` (:mod:`meta.study.report`)
``rl``                        presets with ``rl`` only (:data:`RL_STAGE`, :mod:`meta.study.rl_study`):
                              MAML-TRPO and ANIL-TRPO trained, evaluated, snapshotted and measured
                              per environment and seed; Table 2's RL columns and the policy's
                              per-layer similarity (CSV, Markdown, PNG)
============================  ======================================================================

Which stages a preset runs: :func:`stages_of` (the classification stages :data:`STAGE_LIST` for
a preset with few-shot settings, :data:`RL_STAGE` for one with ``rl``, before ``report`` when both).

Beside the paper's tables the stages write its further analyses and the architecture study
(:mod:`meta.study.aggregate_analyses`): the test-time heads table and the architecture study's
accuracies after ``evaluate``, the weight movement and the study's per-step similarity after
``adaptation_similarity``.

Imports: :mod:`meta.run.folder`, :mod:`meta.study` (plan, jobs, executor, aggregate, schema, report,
rl_study).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meta.core.names import BODY
from meta.run.folder import RunFolder
from meta.study import aggregate
from meta.study import aggregate_analyses as analyses
from meta.study.analyses import speed_job, weight_movement_job
from meta.study.executor import Job
from meta.study.jobs import (
    DATA_FIELDS,
    adaptation_similarity_job,
    cross_similarity_job,
    data_job,
    evaluate_job,
    snapshot_job,
    train_job,
)
from meta.study.plan import Plan, RunPlan, evaluation_cost, training_cost
from meta.study.report import write_paper_outputs
from meta.study.rl_study import collect_rl, rl_jobs
from meta.study.schema import write_table

#: What a stage writes from its jobs' results (``{job key: result}``): the files' paths.
Collect = Callable[[Plan, Mapping[str, Any]], list[Path]]


@dataclass(frozen=True)
class Stage:
    """A stage: its jobs (from the plan alone) and what it writes from their results."""

    name: str
    description: str
    jobs: Callable[[Plan], list[Job]]
    collect: Collect


def _no_outputs(plan: Plan, results: Mapping[str, Any]) -> list[Path]:
    """A stage whose jobs write their own files: nothing more to write."""
    return []


# --- data and training


def _data_jobs(plan: Plan) -> list[Job]:
    """One job per distinct data set (the first run reading it)."""
    first = {}
    for run in plan.runs:
        key = tuple(getattr(run.config, k) for k in DATA_FIELDS)
        first.setdefault(key, run)
    return [
        Job(
            f"{run.config.dataset}" + (f" ({run.config.data_root})" if run.config.data_root else ""),
            data_job,
            {"config": run.config.as_dict()},
        )
        for run in first.values()
    ]


def _train_jobs(plan: Plan) -> list[Job]:
    """One job per run, its progress watched through its checkpoint."""
    return [
        Job(
            run.name,
            train_job,
            {"config": run.config.as_dict(), "run_dir": str(plan.run_dir(run))},
            cost=training_cost(run.config),
            watch=str(RunFolder(plan.run_dir(run)).checkpoint_info),
            iterations=run.config.iterations,
        )
        for run in plan.runs
    ]


# --- evaluate (Tables 1, 2, 4, 5)


#: One evaluation: (run, kind, weights, tasks, test-time steps or None for the run's).
Evaluation = tuple[RunPlan, str, str, int, int | None]


def _evaluations(plan: Plan) -> list[Evaluation]:
    """Every evaluation, once: MAML's freezing ablation and NIL test (final weights) and the
    ablation of each kept checkpoint (and of the final weights with Figure 3's number of tasks);
    ANIL's own procedure, NIL, and every layer adapting (the test-time heads table); the
    baselines' NIL; the architecture study's (:func:`aggregate_analyses.architecture_evaluations`)."""
    p = plan.preset
    out: list[Evaluation] = []
    for run in plan.runs:
        if run.architecture != "reference":
            continue
        if run.algorithm == "maml":
            out += [(run, "freezing", "final", p.eval_tasks, None), (run, "nil", "final", p.eval_tasks, None)]
            out += [(run, "freezing", str(i), p.early_eval_tasks, None) for i in run.config.save_at]
            out.append((run, "freezing", "final", p.early_eval_tasks, None))
        elif run.algorithm == "anil":
            out += [(run, kind, "final", p.eval_tasks, None) for kind in ("default", "nil", "adapt-all")]
        else:
            out.append((run, "nil", "final", p.eval_tasks, None))
    out += [
        (run, kind, "final", p.architecture_tasks, steps)
        for run, kind, steps in analyses.architecture_evaluations(plan)
    ]
    unique = {(run.name, *rest): (run, *rest) for run, *rest in out}
    return list(unique.values())


def _eval_jobs(plan: Plan) -> list[Job]:
    """One job per evaluation of :func:`_evaluations`."""
    return [
        Job(
            f"{run.name} {kind} {weights} {tasks}tasks" + (f" {steps}steps" if steps else ""),
            evaluate_job,
            {
                "config": run.config.as_dict(),
                "run_dir": str(plan.run_dir(run)),
                "kind": kind,
                "weights": weights,
                "tasks": tasks,
                "device": plan.device,
                "steps": steps,
            },
            cost=evaluation_cost(run.config, kind, tasks, steps),
        )
        for run, kind, weights, tasks, steps in _evaluations(plan)
    ]


def _collect_evaluate(plan: Plan, results: Mapping[str, Any]) -> list[Path]:
    """Tables 1, 2, 4 and 5, the test-time heads table and the architecture study's accuracies
    from the evaluation JSONs."""
    builders = {
        "table1_freezing": aggregate.table1_rows,
        "table2_anil_vs_maml": aggregate.table2_rows,
        "table4_nil": aggregate.table4_rows,
        "table5_body_regimes": aggregate.table5_rows,
        "table_test_time_heads": analyses.test_time_heads_rows,
    }
    if plan.study_setting is not None:
        builders["table_architecture_accuracy"] = analyses.architecture_accuracy_rows
    return [write_table(plan.out, name, build(plan)) for name, build in builders.items()]


# --- snapshots and adaptation similarity (Figures 2 and 3)


def _snapshots(plan: Plan) -> list[tuple[RunPlan, int | None]]:
    """(run, iteration or None for the final weights) of every snapshot: the reference MAML and
    ANIL runs (and MAML's kept checkpoints), and the architecture study's variants."""
    out: list[tuple[RunPlan, int | None]] = []
    for run in plan.meta_runs():
        out.append((run, None))
        if run.algorithm == "maml":
            out += [(run, i) for i in run.config.save_at]
    for algorithm in ("maml", "anil"):
        out += [(run, None) for variant, run in plan.architecture_runs(algorithm) if variant != "reference"]
    return out


def _snapshot_jobs(plan: Plan) -> list[Job]:
    """One job per snapshot of :func:`_snapshots`, keyed by its folder name."""
    return [
        Job(
            plan.snapshot_dir(run, it).name,
            snapshot_job,
            {
                "config": run.config.as_dict(),
                "run_dir": str(plan.run_dir(run)),
                "out_dir": str(plan.snapshot_dir(run, it)),
                "weights": "final" if it is None else str(it),
                "tasks": plan.preset.snapshot_tasks,
                "queries": plan.preset.analysis_queries,
                "device": plan.device,
            },
            cost=plan.preset.snapshot_tasks * run.setting.ways,
        )
        for run, it in _snapshots(plan)
    ]


def _similarity_jobs(plan: Plan) -> list[Job]:
    """One job per snapshot, keyed by its folder name (as :func:`aggregate.figure2_rows` reads
    them), and one weight-movement job per final snapshot."""
    similarity = [
        Job(
            plan.snapshot_dir(run, it).name,
            adaptation_similarity_job,
            {"snapshot_dir": str(plan.snapshot_dir(run, it)), "measures": list(plan.preset.measures)},
            cost=plan.preset.snapshot_tasks * run.setting.ways,
        )
        for run, it in _snapshots(plan)
    ]
    movement = [
        Job(analyses.movement_key(plan, run), weight_movement_job, {"snapshot_dir": str(plan.snapshot_dir(run))})
        for _, run in analyses.movement_runs(plan)
    ]
    return similarity + movement


def _collect_similarity(plan: Plan, results: Mapping[str, Any]) -> list[Path]:
    """Figures 2 and 3 from the similarity jobs' rows (and Figure 3's checkpoint evaluations), the
    weight movement, and the architecture study's similarity per inner step."""
    written = [
        write_table(plan.out, "figure2_adaptation_similarity", aggregate.figure2_rows(plan, results)),
        write_table(plan.out, "figure3_early_training", aggregate.figure3_rows(plan, results)),
        write_table(plan.out, "figure_weight_movement", analyses.weight_movement_rows(plan, results)),
    ]
    if plan.study_setting is not None:
        rows = analyses.architecture_similarity_rows(plan, results)
        written.append(write_table(plan.out, "figure_architecture_similarity", rows))
    return written


# --- cross-model similarity (Table 3)


def _cross_job(plan: Plan, key: str, a: RunPlan, b: RunPlan, ways: int, layers: Sequence[str] | None = None) -> Job:
    """The job comparing runs ``a`` and ``b`` layer by layer on the same test inputs (``layers``:
    every layer of the model when ``None``)."""
    p = plan.preset
    kwargs = {
        "config": a.config.as_dict(),
        "run_a": str(plan.run_dir(a)),
        "run_b": str(plan.run_dir(b)),
        "tasks": p.similarity_tasks,
        "queries": p.analysis_queries,
        "measures": list(p.measures),
        "device": plan.device,
    }
    if layers is not None:
        kwargs["layers"] = list(layers)
    return Job(key, cross_similarity_job, kwargs, cost=p.similarity_tasks * ways)


def _cross_jobs(plan: Plan) -> list[Job]:
    """One job per model pair of :func:`aggregate.model_pairs` (keyed by :func:`aggregate.pair_key`)
    and per pair of training regimes of :func:`analyses.regime_pairs` (their bodies only)."""
    pairs = [
        _cross_job(plan, aggregate.pair_key(a, b), a, b, s.ways)
        for s in plan.preset.settings
        for _, a, b in aggregate.model_pairs(plan, s)
    ]
    regimes = [
        _cross_job(plan, analyses.regime_key(a, b), a, b, s.ways, BODY) for s, a, b in analyses.regime_pairs(plan)
    ]
    return pairs + regimes


def _collect_cross(plan: Plan, results: Mapping[str, Any]) -> list[Path]:
    """Table 3 and the regimes' body similarity from the cross-model jobs' rows."""
    written = [write_table(plan.out, "table3_cross_model_similarity", aggregate.table3_rows(plan, results))]
    if analyses.regime_pairs(plan):
        rows = analyses.regime_similarity_rows(plan, results)
        written.append(write_table(plan.out, "figure_regime_similarity", rows))
    return written


# --- speed and learning curves

#: Timed repeats of :func:`meta.study.analyses.speed_job`: training iterations and test tasks.
SPEED_REPEATS = {"iterations": 5, "tasks": 20}


def _speed_jobs(plan: Plan) -> list[Job]:
    """One job, alone in its stage: ANIL's speed-up over MAML (first setting, first seed); none
    without a few-shot setting."""
    if not plan.preset.settings:
        return []
    _, maml, anil = analyses.speed_runs(plan)
    specs = {
        name: {"config": r.config.as_dict(), "run_dir": str(plan.run_dir(r))}
        for name, r in (("maml", maml), ("anil", anil))
    }
    return [Job("speed", speed_job, {**specs, **SPEED_REPEATS})]


def _collect_speed(plan: Plan, results: Mapping[str, Any]) -> list[Path]:
    """The speed table and the learning curves (from the runs' metrics)."""
    return [
        write_table(plan.out, "table_speed", analyses.speed_rows(plan, results)),
        write_table(plan.out, "figure5_learning_curves", analyses.learning_curve_rows(plan)),
    ]


# --- report


def _no_jobs(plan: Plan) -> list[Job]:
    """A stage that only writes (from the files of the earlier stages)."""
    return []


def _collect_report(plan: Plan, results: Mapping[str, Any]) -> list[Path]:
    """The Markdown tables, figures and ``report.html`` (:func:`meta.study.report.write_paper_outputs`)."""
    return [write_paper_outputs(plan.out)]


STAGE_LIST: tuple[Stage, ...] = (
    Stage("data", "generate or decode every split of the data sets into the cache", _data_jobs, _no_outputs),
    Stage("train", "train MAML and ANIL (each seed) and the body-training baselines", _train_jobs, _no_outputs),
    Stage(
        "evaluate",
        "test accuracy on fixed tasks: freezing ablation, NIL-testing; Tables 1, 2, 4, 5",
        _eval_jobs,
        _collect_evaluate,
    ),
    Stage(
        "snapshots",
        "weights before and after each inner step on test tasks (final and kept checkpoints)",
        _snapshot_jobs,
        _no_outputs,
    ),
    Stage(
        "adaptation_similarity",
        "CCA/CKA of each layer before vs after adaptation; Figures 2 and 3",
        _similarity_jobs,
        _collect_similarity,
    ),
    Stage(
        "cross_model_similarity",
        "CCA/CKA of MAML vs ANIL (and across seeds) per layer; Table 3",
        _cross_jobs,
        _collect_cross,
    ),
    Stage("speed", "ANIL's speed-up over MAML on this machine; the learning curves", _speed_jobs, _collect_speed),
    Stage("report", "Markdown tables, figures and report.html (meta.study.report)", _no_jobs, _collect_report),
)
#: The stages' names, in order.
STAGES: tuple[str, ...] = tuple(s.name for s in STAGE_LIST)
#: The meta-RL study's stage (presets with ``rl``): one job per run (:func:`meta.study.rl_study.rl_run_job`).
RL_STAGE = Stage(
    "rl",
    "meta-RL: train, evaluate, snapshot and measure MAML-TRPO and ANIL-TRPO; Table 2's RL columns, the RL figure",
    rl_jobs,
    collect_rl,
)


def stages_of(plan: Plan) -> tuple[Stage, ...]:
    """The stages ``plan``'s preset runs, in order: :data:`STAGE_LIST` with few-shot settings,
    :data:`RL_STAGE` with ``rl``, and ``report`` last in any case (the report of what was studied)."""
    classification = STAGE_LIST[:-1] if plan.preset.settings else ()
    rl = (RL_STAGE,) if plan.preset.rl is not None else ()
    return (*classification, *rl, STAGE_LIST[-1])
