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
``cross_model_similarity``    CCA and CKA of separately trained models layer by layer; Table 3
``report``                    Markdown tables, figures and ``report.html`` (:mod:`meta.study.report`)
============================  ======================================================================

Imports: :mod:`meta.run.folder`, :mod:`meta.study` (plan, jobs, executor, aggregate, schema, report).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meta.run.folder import RunFolder
from meta.study import aggregate
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


def _evaluations(plan: Plan) -> list[tuple[RunPlan, str, str, int]]:
    """(run, kind, weights, tasks) of every evaluation: MAML's freezing ablation and NIL test
    (final weights) and the ablation of each kept checkpoint (and of the final weights with
    Figure 3's number of tasks); ANIL's own procedure and NIL; the baselines' NIL."""
    p = plan.preset
    out = []
    for run in plan.runs:
        if run.algorithm == "maml":
            out += [(run, "freezing", "final", p.eval_tasks), (run, "nil", "final", p.eval_tasks)]
            out += [(run, "freezing", str(i), p.early_eval_tasks) for i in run.config.save_at]
            if p.early_eval_tasks != p.eval_tasks:
                out.append((run, "freezing", "final", p.early_eval_tasks))
        elif run.algorithm == "anil":
            out += [(run, "default", "final", p.eval_tasks), (run, "nil", "final", p.eval_tasks)]
        else:
            out.append((run, "nil", "final", p.eval_tasks))
    return out


def _eval_jobs(plan: Plan) -> list[Job]:
    """One job per evaluation of :func:`_evaluations`."""
    return [
        Job(
            f"{run.name} {kind} {weights} {tasks}tasks",
            evaluate_job,
            {
                "config": run.config.as_dict(),
                "run_dir": str(plan.run_dir(run)),
                "kind": kind,
                "weights": weights,
                "tasks": tasks,
                "device": plan.device,
            },
            cost=evaluation_cost(run.config, kind, tasks),
        )
        for run, kind, weights, tasks in _evaluations(plan)
    ]


def _collect_evaluate(plan: Plan, results: Mapping[str, Any]) -> list[Path]:
    """Tables 1, 2, 4 and 5 from the evaluation JSONs."""
    builders = {
        "table1_freezing": aggregate.table1_rows,
        "table2_anil_vs_maml": aggregate.table2_rows,
        "table4_nil": aggregate.table4_rows,
        "table5_body_regimes": aggregate.table5_rows,
    }
    return [write_table(plan.out, name, build(plan)) for name, build in builders.items()]


# --- snapshots and adaptation similarity (Figures 2 and 3)


def _snapshots(plan: Plan) -> list[tuple[RunPlan, int | None]]:
    """(run, iteration or None for the final weights) of every snapshot."""
    out: list[tuple[RunPlan, int | None]] = []
    for run in plan.meta_runs():
        out.append((run, None))
        if run.algorithm == "maml":
            out += [(run, i) for i in run.config.save_at]
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
                "device": plan.device,
            },
            cost=plan.preset.snapshot_tasks * run.setting.ways,
        )
        for run, it in _snapshots(plan)
    ]


def _similarity_jobs(plan: Plan) -> list[Job]:
    """One job per snapshot, keyed by its folder name (as :func:`aggregate.figure2_rows` reads them)."""
    return [
        Job(
            plan.snapshot_dir(run, it).name,
            adaptation_similarity_job,
            {"snapshot_dir": str(plan.snapshot_dir(run, it)), "measures": list(plan.preset.measures)},
            cost=plan.preset.snapshot_tasks * run.setting.ways,
        )
        for run, it in _snapshots(plan)
    ]


def _collect_similarity(plan: Plan, results: Mapping[str, Any]) -> list[Path]:
    """Figures 2 and 3 from the similarity jobs' rows (and Figure 3's checkpoint evaluations)."""
    return [
        write_table(plan.out, "figure2_adaptation_similarity", aggregate.figure2_rows(plan, results)),
        write_table(plan.out, "figure3_early_training", aggregate.figure3_rows(plan, results)),
    ]


# --- cross-model similarity (Table 3)


def _cross_jobs(plan: Plan) -> list[Job]:
    """One job per model pair of :func:`aggregate.model_pairs`, keyed by :func:`aggregate.pair_key`."""
    p = plan.preset
    return [
        Job(
            aggregate.pair_key(a, b),
            cross_similarity_job,
            {
                "config": a.config.as_dict(),
                "run_a": str(plan.run_dir(a)),
                "run_b": str(plan.run_dir(b)),
                "tasks": p.similarity_tasks,
                "measures": list(p.measures),
                "device": plan.device,
            },
            cost=p.similarity_tasks * s.ways,
        )
        for s in p.settings
        for _, a, b in aggregate.model_pairs(plan, s)
    ]


def _collect_cross(plan: Plan, results: Mapping[str, Any]) -> list[Path]:
    """Table 3 from the cross-model jobs' rows."""
    return [write_table(plan.out, "table3_cross_model_similarity", aggregate.table3_rows(plan, results))]


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
    Stage("report", "Markdown tables, figures and report.html (meta.study.report)", _no_jobs, _collect_report),
)
#: The stages' names, in order.
STAGES: tuple[str, ...] = tuple(s.name for s in STAGE_LIST)
