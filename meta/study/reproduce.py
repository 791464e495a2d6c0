"""The whole study of "Rapid Learning or Feature Reuse?" in one command:
``python -m meta reproduce --preset quick|omniglot|paper --out DIR``.

The preset (:mod:`meta.study.presets`) becomes a plan: runs (MAML and ANIL for each seed, the
body-training baselines of Table 5) and stages, each a list of independent jobs. The stages, in
order, and what each writes into ``DIR`` (docs/formats.md, "Reproduction output"):

============================  ======================================================================
``data``                      every split of every data set, generated or decoded into the cache
``train``                     ``runs/<algorithm>_<dataset>_<ways>w<shots>s_seed<S>/`` (the MAML runs
                              keep their weights at :data:`meta.study.presets.EARLY_FRACTIONS` of training)
``evaluate``                  ``eval/*.json`` in each run folder (fixed test tasks): MAML's freezing
                              ablation and NIL-testing, ANIL's inner loop and NIL-testing, the
                              baselines' NIL-testing, and the freezing ablation of every kept MAML
                              checkpoint; then ``tables/table1_freezing.csv``, ``table2_anil_vs_maml``,
                              ``table4_nil`` and ``table5_body_regimes``
``snapshots``                 ``snapshots/<run>/`` for the final MAML and ANIL weights, and
                              ``snapshots/<run>_iterNNNNNN/`` for each kept MAML checkpoint
``adaptation_similarity``     CCA and CKA of each layer before vs after adaptation
                              (:func:`repsim.snapshot_report.report_snapshot` on each snapshot):
                              ``figures/figure2_adaptation_similarity.csv`` and
                              ``figures/figure3_early_training.csv`` (with the checkpoints' freezing
                              accuracies)
``cross_model_similarity``    CCA and CKA of separately trained models layer by layer
                              (:func:`repsim.compare.compare_models`): MAML vs ANIL, and MAML vs MAML
                              and ANIL vs ANIL across seeds: ``tables/table3_cross_model_similarity.csv``
``report``                    :func:`meta.study.paper_report.write_paper_outputs`: ``tables/*.md``,
                              ``figures/*.png``, ``report.html``
============================  ======================================================================

Rerunning. ``stages/<stage>.done`` (JSON) is written atomically after a stage's outputs, and a
rerun skips the stages that have one. Inside an unfinished stage, finished jobs are skipped too: a
training run resumes from its checkpoint (the trainer's own resume), an evaluation whose JSON
exists and a snapshot whose manifest exists are not recomputed. ``preset.json`` records the
resolved preset; a folder that holds another preset's results is refused unless ``force``.

Parallelism. The jobs of a stage are independent; with ``jobs > 1`` they run in that many worker
processes (one torch thread each, started by a ``forkserver``), longest first; the results do not
depend on ``jobs``. Each worker loads a data set once and ends when the main process is gone. A
script that calls :func:`reproduce` with ``jobs > 1`` must do so under
``if __name__ == "__main__":`` (as always with ``multiprocessing``).

Numbers in the CSVs. Accuracies are percentages: for each seed the mean over the fixed test tasks
and ``ci95 = 1.96 * std / sqrt(n_tasks)`` (population std, :func:`meta.run.evaluate.mean_ci95`); over
seeds ``accuracy`` is the mean, ``ci95`` the mean half-width and ``std_seeds`` the sample standard
deviation (``ddof=1``; empty for one seed). Similarities (Figures 2, 3) are handled the same way,
per task: the similarity of a layer before vs after the last inner step on that task's query set
(one batch, batch statistics), then mean and ``ci95`` over tasks, then over seeds. MAML's Table 2
and Table 4 accuracy is row ``none`` of its freezing ablation (every layer adapts: the same
procedure as its plain evaluation, on the same tasks).

Table 3. Two trained models (final weights) are compared on the query set of each of the first
``similarity_tasks`` fixed test tasks, one forward pass per task (batch norm uses the statistics
of the batch, so a task's query set must be one batch), with every layer's output as the
representation (conv layers: channels as neurons, every position a datapoint); the per-task values
are averaged. With two or more seeds, MAML-ANIL pairs take different seeds only (every comparison
is then between different initialisations, as MAML-MAML and ANIL-ANIL are); with one seed the
single same-seed pair is compared. ``value`` is the mean over pairs and ``std`` the sample
standard deviation over pairs (empty for one pair).
"""

from __future__ import annotations

import concurrent.futures as futures
import functools
import itertools
import json
import math
import multiprocessing
import os
import shutil
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from meta.core.names import FREEZING_ROWS, FROZEN_LABELS, LAYERS
from meta.data.registry import ROOT_ENV
from meta.run.config import (
    META_LEARNERS,
    MUTABLE_FIELDS,
    RunConfig,
    from_mapping,
    load_run_split,
    resolve,
)
from meta.run.evaluate import LoadedRun, evaluation_tasks, mean_ci95, run_procedure
from meta.run.folder import RunFolder
from meta.study.presets import BASELINE_REGIMES, ReproducePreset, Setting, get_preset
from repsim.io import read_json, write_csv, write_json

FORMAT = "meta-reproduction"
VERSION = 1
STAGES: tuple[str, ...] = (
    "data",
    "train",
    "evaluate",
    "snapshots",
    "adaptation_similarity",
    "cross_model_similarity",
    "report",
)
#: What the pipeline writes into its output folder (and ``force`` removes).
OWNED: tuple[str, ...] = ("preset.json", "stages", "runs", "snapshots", "tables", "figures", "report.html")
#: Preset fields that may change without invalidating the results already in a folder.
_NOT_IDENTITY = ("description", "notes", "device")
#: Data sets read from the user's files (the others are generated on the machine).
_EXTERNAL_DATA = tuple(ROOT_ENV)
#: Seconds per image of a task's forward and backward pass (64-filter conv4, 28x28, one core of the
#: project's CPUs, measured on Omniglot): body-only regimes, and MAML's query pass and extra cost per
#: support image and inner step. Used only to start the longest jobs first.
_SECONDS_PER_IMAGE = {"body": 1.8e-4, "query": 2.1e-4, "support_step": 5.3e-4}
_FROZEN_LABELS = FROZEN_LABELS


class ReproductionError(ValueError):
    """The output folder or the data cannot be used for this reproduction (the message says why)."""


# ---------------------------------------------------------------------------------------------
# The plan: runs and stages of jobs
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunPlan:
    """One training run of the study: its setting and resolved configuration."""

    setting: Setting
    config: RunConfig

    @property
    def algorithm(self) -> str:
        return self.config.algorithm

    @property
    def seed(self) -> int:
        return self.config.seed

    @property
    def name(self) -> str:
        """``<algorithm>_<dataset>_<ways>w<shots>s_seed<S>`` (the run folder's name)."""
        return f"{self.algorithm}_{self.setting.label}_seed{self.seed}"


@dataclass(frozen=True)
class Job:
    """One independent piece of work of a stage.

    Attributes:
        key: unique name within the stage (shown in the plan and in errors).
        fn: a module-level function (picklable, run in a worker process).
        kwargs: its keyword arguments (plain data).
        cost: relative duration, to start the longest jobs first.
        watch: a training run's ``checkpoint.json``, read to show the run's progress.
        iterations: the run's iterations (with ``watch``).
    """

    key: str
    fn: Callable[..., Any]
    kwargs: Mapping[str, Any]
    cost: float = 1.0
    watch: str | None = None
    iterations: int = 0


@dataclass(frozen=True)
class Plan:
    """A preset resolved for an output folder: the runs and the jobs of every stage."""

    preset: ReproducePreset
    out: Path
    runs: tuple[RunPlan, ...]
    device: str

    def runs_of(self, setting: Setting, algorithm: str) -> list[RunPlan]:
        return [r for r in self.runs if r.setting == setting and r.algorithm == algorithm]

    def run_dir(self, run: RunPlan) -> Path:
        return self.out / "runs" / run.name

    def snapshot_dir(self, run: RunPlan, iteration: int | None = None) -> Path:
        suffix = "" if iteration is None else f"_iter{iteration:06d}"
        return self.out / "snapshots" / f"{run.name}{suffix}"

    def meta_runs(self) -> list[RunPlan]:
        return [r for r in self.runs if r.algorithm in ("maml", "anil")]


def early_iterations(iterations: int, fractions: Sequence[float]) -> tuple[int, ...]:
    """The iterations ``round(f * iterations)`` (at least 1, below ``iterations``), sorted, unique."""
    kept = {max(1, round(f * iterations)) for f in fractions}
    return tuple(sorted(i for i in kept if i < iterations))


def run_config(
    preset: ReproducePreset,
    setting: Setting,
    algorithm: str,
    seed: int,
    *,
    device: str,
    data_root: str | None = None,
    cache_dir: str | None = None,
) -> RunConfig:
    """The resolved configuration of one run: the setting, then the preset's ``run``, the
    setting's ``run`` and, for baselines, ``baseline_run``; ``None`` values from the paper
    defaults (:func:`meta.run.config.resolve`). MAML runs keep their weights at the preset's
    ``early_fractions`` of training; the random-features baseline trains for one (no-op)
    iteration."""
    baseline = algorithm not in META_LEARNERS
    values: dict[str, Any] = {
        "algorithm": algorithm,
        "dataset": setting.dataset,
        "ways": setting.ways,
        "shots": setting.shots,
        "seed": seed,
        **preset.run,
        **setting.run,
        **(preset.baseline_run if baseline else {}),
        "device": device,
        "data_root": data_root,
        "cache_dir": cache_dir,
        "threads": 1,
        "progress": False,
    }
    if algorithm == "random":
        values["iterations"] = 1
    config, _ = resolve(from_mapping(values))
    if algorithm == "maml":
        config = config.replace(save_at=early_iterations(config.iterations, preset.early_fractions))
    return config


def make_plan(
    preset: ReproducePreset,
    out: str | Path,
    *,
    data_roots: Mapping[str, str] | None = None,
    cache_dir: str | None = None,
    device: str | None = None,
) -> Plan:
    """The runs of ``preset`` written to ``out``: MAML and ANIL for each seed and setting, and the
    baselines (:data:`meta.study.presets.BASELINE_REGIMES`) for each baseline seed where the setting
    has ``baselines``."""
    roots = dict(data_roots or {})
    device = device or preset.device
    runs = []
    for setting in preset.settings:
        algorithms = [(a, s) for a in ("maml", "anil") for s in preset.seeds]
        if setting.baselines:
            algorithms += [(a, s) for a in BASELINE_REGIMES for s in preset.baseline_seeds]
        for algorithm, seed in algorithms:
            config = run_config(
                preset,
                setting,
                algorithm,
                seed,
                device=device,
                data_root=roots.get(setting.dataset),
                cache_dir=cache_dir,
            )
            runs.append(RunPlan(setting, config))
    return Plan(preset, Path(out), tuple(runs), device)


# ---------------------------------------------------------------------------------------------
# Jobs (run in worker processes; module-level so that they pickle)
# ---------------------------------------------------------------------------------------------

_DATA_FIELDS = ("dataset", "data_root", "protocol", "image_size", "cache_dir")


@functools.lru_cache(maxsize=8)
def _cached_split(data: tuple[tuple[str, Any], ...], split: str) -> Any:
    return load_run_split(from_mapping(dict(data)), split, progress=False)


def load_split_once(config: RunConfig, split: str) -> Any:
    """A split of the run's data set, loaded once per process."""
    return _cached_split(tuple((k, getattr(config, k)) for k in _DATA_FIELDS), split)


def data_job(config: Mapping[str, Any]) -> dict[str, Any]:
    """Load (generate or decode into the cache) every split of a run's data set."""
    c = from_mapping(config)
    try:
        splits = {s: load_split_once(c, s) for s in ("train", "val", "test")}
    except (ValueError, OSError) as err:
        hint = f" (pass --data-root DIR for {c.dataset})" if c.dataset in _EXTERNAL_DATA else ""
        raise ReproductionError(f"cannot load the {c.dataset} data set: {err}{hint}") from err
    return {name: {"name": s.name, "classes": s.n_classes} for name, s in splits.items()}


def train_job(config: Mapping[str, Any], run_dir: str) -> dict[str, Any]:
    """Train (or resume, or find finished) one run."""
    from meta.run.train import train

    c = from_mapping(config)
    splits = {s: load_split_once(c, s) for s in ("train", "val")}
    result = train(c, run_dir, splits=splits)
    return {"iterations": result.iterations, "best": result.best}


def eval_path(run_dir: str | Path, config: RunConfig, *, kind: str, weights: str, tasks: int) -> Path:
    """Where :func:`meta.run.evaluate.evaluate_run` writes a result: ``kind`` ``"freezing"`` (the
    ablation), ``"nil"`` or ``"default"`` (the run's own test procedure)."""
    procedure = "ablation-freezing" if kind == "freezing" else run_procedure(config, nil=kind == "nil").tag()
    return RunFolder(Path(run_dir)).eval_dir / f"test_{weights}_{tasks}tasks_{procedure}.json"


def evaluate_job(config: Mapping[str, Any], run_dir: str, kind: str, weights: str, tasks: int, device: str) -> str:
    """One evaluation of a run on the fixed test tasks (skipped when its JSON exists); returns
    the JSON's path."""
    from meta.run.evaluate import evaluate_run

    c = from_mapping(config)
    path = eval_path(run_dir, c, kind=kind, weights=weights, tasks=tasks)
    if path.is_file():
        return str(path)
    result = evaluate_run(
        run_dir,
        tasks=tasks,
        weights=weights,
        nil=kind == "nil",
        ablation="freezing" if kind == "freezing" else None,
        device=device,
        data=load_split_once(c, "test"),
        progress=False,
    )
    if Path(result.json) != path:
        raise RuntimeError(f"meta.run.evaluate wrote {result.json!r}, expected {str(path)!r}: update eval_path")
    return str(path)


def snapshot_job(config: Mapping[str, Any], run_dir: str, out_dir: str, weights: str, tasks: int, device: str) -> str:
    """An adaptation snapshot of a run on the first ``tasks`` fixed test tasks (skipped when its
    manifest exists; an incomplete one is replaced)."""
    from meta.run.snapshot_writer import snapshot_run

    if not (Path(out_dir) / "manifest.json").is_file():
        snapshot_run(
            run_dir,
            out_dir,
            tasks=tasks,
            weights=weights,
            device=device,
            data=load_split_once(from_mapping(config), "test"),
            overwrite=True,
            progress=False,
        )
    return out_dir


def adaptation_similarity_job(snapshot_dir: str, measures: Sequence[str]) -> list[dict[str, Any]]:
    """Per task, layer and measure: similarity of the layer before vs after the last inner step
    on the task's query set (:func:`repsim.snapshot_report.report_snapshot`)."""
    from repsim.snapshot_report import report_snapshot

    per_task, _ = report_snapshot(snapshot_dir, measures=list(measures), inputs="query", progress=False)
    last = per_task[per_task["step"] == per_task["step"].max()]
    return last[["task", "layer", "measure", "value"]].to_dict("records")


def cross_similarity_job(
    config: Mapping[str, Any],
    run_a: str,
    run_b: str,
    tasks: int,
    measures: Sequence[str],
    device: str,
) -> list[dict[str, Any]]:
    """Per task, layer and measure: similarity of two runs' final models on the task's query set
    (one forward pass per task; :func:`repsim.compare.compare_models`)."""
    from repsim.compare import compare_models

    c = from_mapping(config)
    model_a, model_b = (LoadedRun.open(r).model("final", device) for r in (run_a, run_b))
    episodes = evaluation_tasks(c, load_split_once(c, "test"), tasks)
    rows = []
    for t in range(tasks):
        x = episodes[t].query_x
        frame = compare_models(
            model_a,
            model_b,
            x,
            layers_a=list(LAYERS),
            measures=list(measures),
            batch_size=len(x),
            device=device,
            progress=False,
        )
        rows += [
            {"task": t, "layer": r.layer_a, "measure": r.measure, "value": r.value}
            for r in frame.itertuples(index=False)
        ]
    return rows


# ---------------------------------------------------------------------------------------------
# Aggregation: per-seed results -> one CSV row
# ---------------------------------------------------------------------------------------------


def _std(values: Sequence[float]) -> float:
    """Sample standard deviation (``ddof=1``); NaN for fewer than two values."""
    return float(np.std(values, ddof=1)) if len(values) > 1 else math.nan


def accuracy_over_seeds(results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """``accuracy``, ``ci95``, ``std_seeds``, ``n_seeds``, ``n_tasks`` from one evaluation result
    per seed (each with ``accuracy``, ``ci95`` in percent and ``tasks``)."""
    accuracies = [float(r["accuracy"]) for r in results]
    return {
        "accuracy": float(np.mean(accuracies)),
        "ci95": float(np.mean([r["ci95"] for r in results])),
        "std_seeds": _std(accuracies),
        "n_seeds": len(results),
        "n_tasks": min(int(r["tasks"]) for r in results),
    }


def similarity_over_seeds(per_seed: Sequence[Sequence[float]]) -> dict[str, Any]:
    """``value``, ``ci95``, ``std_seeds``, ``n_tasks``, ``n_seeds`` from per-task similarities of
    each seed: per seed the mean and ``1.96 * std / sqrt(n)`` over its finite values, then the
    mean of both over seeds and the sample std of the means. NaN where no value is finite."""
    finite = [np.asarray(v, dtype=float)[np.isfinite(v)] for v in per_seed]
    stats = [mean_ci95(v) for v in finite if v.size]
    if not stats:
        return {"value": math.nan, "ci95": math.nan, "std_seeds": math.nan, "n_tasks": 0, "n_seeds": 0}
    means = [m for m, _ in stats]
    return {
        "value": float(np.mean(means)),
        "ci95": float(np.mean([c for _, c in stats])),
        "std_seeds": _std(means),
        "n_tasks": min(v.size for v in finite if v.size),
        "n_seeds": len(stats),
    }


def _shared(setting: Setting) -> dict[str, Any]:
    return {"dataset": setting.dataset, "ways": setting.ways, "shots": setting.shots}


def _values(rows: Sequence[Mapping[str, Any]], layer: str, measure: str) -> list[float]:
    return [float(r["value"]) for r in rows if r["layer"] == layer and r["measure"] == measure]


# ---------------------------------------------------------------------------------------------
# Stages
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stage:
    """A stage: its jobs (from the plan alone) and what it writes from their results."""

    name: str
    description: str
    jobs: Callable[[Plan], list[Job]]
    collect: Callable[[Plan, Mapping[str, Any]], list[Path]]


# --- data


def _data_jobs(plan: Plan) -> list[Job]:
    first = {}
    for run in plan.runs:
        key = tuple(getattr(run.config, k) for k in _DATA_FIELDS)
        first.setdefault(key, run)
    return [
        Job(
            f"{run.config.dataset}" + (f" ({run.config.data_root})" if run.config.data_root else ""),
            data_job,
            {"config": run.config.as_dict()},
        )
        for run in first.values()
    ]


# --- train


def training_cost(config: RunConfig) -> float:
    """Estimated seconds of a run on one core (:data:`_SECONDS_PER_IMAGE`): per task, MAML pays
    for its query and support images plus each support image at each inner step (second order);
    ANIL, multitask and NIL training for the images once; multiclass for its batch."""
    support, query = config.ways * config.shots, config.ways * config.queries
    if config.algorithm == "random":
        return 0.0
    if config.algorithm == "multiclass":
        return config.iterations * config.batch_size * _SECONDS_PER_IMAGE["query"]
    if config.algorithm in ("maml", "fomaml"):
        per_task = (support + query) * _SECONDS_PER_IMAGE["query"] + (
            support * config.inner_steps * _SECONDS_PER_IMAGE["support_step"]
        )
    else:
        per_task = (support + query) * _SECONDS_PER_IMAGE["body"]
    return config.iterations * config.meta_batch_size * per_task


def _train_jobs(plan: Plan) -> list[Job]:
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


# --- evaluate


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


def _eval_key(run: RunPlan, kind: str, weights: str, tasks: int) -> str:
    return f"{run.name} {kind} {weights} {tasks}tasks"


def evaluation_cost(config: RunConfig, kind: str, tasks: int) -> float:
    """Relative duration of an evaluation: per task the query images plus the support images at
    each test step (NIL: no steps), five times for the freezing ablation."""
    steps = 0 if kind == "nil" else config.test_inner_steps
    per_task = config.ways * (config.queries + config.shots * (1 + steps))
    return tasks * per_task * (len(FREEZING_ROWS) if kind == "freezing" else 1)


def _eval_jobs(plan: Plan) -> list[Job]:
    return [
        Job(
            _eval_key(run, kind, weights, tasks),
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


def _eval_result(plan: Plan, run: RunPlan, kind: str, weights: str = "final", tasks: int | None = None) -> dict:
    tasks = plan.preset.eval_tasks if tasks is None else tasks
    return read_json(eval_path(plan.run_dir(run), run.config, kind=kind, weights=weights, tasks=tasks))


def _freezing_rows(result: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["frozen"]: row for row in result["rows"]}


def table1_rows(plan: Plan) -> list[dict[str, Any]]:
    """Table 1: MAML with layers frozen in the test-time inner loop."""
    rows = []
    for setting in plan.preset.settings:
        ablations = [_freezing_rows(_eval_result(plan, run, "freezing")) for run in plan.runs_of(setting, "maml")]
        rows += [
            {
                "algorithm": "maml",
                **_shared(setting),
                "frozen": label,
                **accuracy_over_seeds([a[label] for a in ablations]),
            }
            for label in _FROZEN_LABELS
        ]
    return rows


def _maml_accuracy(plan: Plan, setting: Setting) -> dict[str, Any]:
    """MAML's test accuracy: row ``none`` of its freezing ablation (every layer adapts)."""
    return accuracy_over_seeds(
        [_freezing_rows(_eval_result(plan, run, "freezing"))["none"] for run in plan.runs_of(setting, "maml")]
    )


def _over_runs(plan: Plan, setting: Setting, algorithm: str, kind: str) -> dict[str, Any]:
    return accuracy_over_seeds([_eval_result(plan, run, kind) for run in plan.runs_of(setting, algorithm)])


def table2_rows(plan: Plan) -> list[dict[str, Any]]:
    """Table 2: MAML and ANIL, each with its own test-time inner loop."""
    return [
        row
        for s in plan.preset.settings
        for row in (
            {"algorithm": "maml", **_shared(s), **_maml_accuracy(plan, s)},
            {"algorithm": "anil", **_shared(s), **_over_runs(plan, s, "anil", "default")},
        )
    ]


def table4_rows(plan: Plan) -> list[dict[str, Any]]:
    """Table 4: MAML, ANIL and NIL-testing of the ANIL-trained body."""
    return [
        row
        for s in plan.preset.settings
        for row in (
            {"method": "maml", **_shared(s), **_maml_accuracy(plan, s)},
            {"method": "anil", **_shared(s), **_over_runs(plan, s, "anil", "default")},
            {"method": "nil", **_shared(s), **_over_runs(plan, s, "anil", "nil")},
        )
    ]


def table5_rows(plan: Plan) -> list[dict[str, Any]]:
    """Table 5: the body trained by each regime, tested with NIL."""
    return [
        {"regime": regime, "test": "nil", **_shared(s), **_over_runs(plan, s, regime, "nil")}
        for s in plan.preset.settings
        if s.baselines
        for regime in ("maml", "anil", *BASELINE_REGIMES)
    ]


#: Columns of each CSV, in order (docs/formats.md, "Reproduction output").
COLUMNS: dict[str, tuple[str, ...]] = {
    "table1_freezing": (
        "algorithm",
        "dataset",
        "ways",
        "shots",
        "frozen",
        "accuracy",
        "ci95",
        "std_seeds",
        "n_seeds",
        "n_tasks",
    ),
    "table2_anil_vs_maml": (
        "algorithm",
        "dataset",
        "ways",
        "shots",
        "accuracy",
        "ci95",
        "std_seeds",
        "n_seeds",
        "n_tasks",
    ),
    "table3_cross_model_similarity": (
        "comparison",
        "layer",
        "measure",
        "value",
        "std",
        "n_pairs",
        "dataset",
        "ways",
        "shots",
    ),
    "table4_nil": ("method", "dataset", "ways", "shots", "accuracy", "ci95", "std_seeds", "n_seeds", "n_tasks"),
    "table5_body_regimes": (
        "regime",
        "test",
        "dataset",
        "ways",
        "shots",
        "accuracy",
        "ci95",
        "std_seeds",
        "n_seeds",
        "n_tasks",
    ),
    "figure2_adaptation_similarity": (
        "algorithm",
        "layer",
        "measure",
        "value",
        "ci95",
        "std_seeds",
        "n_tasks",
        "n_seeds",
        "dataset",
        "ways",
        "shots",
    ),
    "figure3_early_training": (
        "algorithm",
        "iteration",
        "kind",
        "layer",
        "measure",
        "value",
        "ci95",
        "std_seeds",
        "n_tasks",
        "n_seeds",
        "dataset",
        "ways",
        "shots",
    ),
}


def output_path(out: Path, name: str) -> Path:
    """``tables/<name>.csv`` or ``figures/<name>.csv``."""
    return out / ("tables" if name.startswith("table") else "figures") / f"{name}.csv"


def write_table(out: Path, name: str, rows: Sequence[Mapping[str, Any]]) -> Path:
    """One CSV of the layout, with exactly its documented columns (atomically)."""
    return write_csv(output_path(out, name), pd.DataFrame(list(rows), columns=list(COLUMNS[name])))


def _collect_evaluate(plan: Plan, results: Mapping[str, Any]) -> list[Path]:
    builders = {
        "table1_freezing": table1_rows,
        "table2_anil_vs_maml": table2_rows,
        "table4_nil": table4_rows,
        "table5_body_regimes": table5_rows,
    }
    return [write_table(plan.out, name, build(plan)) for name, build in builders.items()]


# --- snapshots


def _snapshots(plan: Plan) -> list[tuple[RunPlan, int | None]]:
    """(run, iteration or None for the final weights) of every snapshot."""
    out: list[tuple[RunPlan, int | None]] = []
    for run in plan.meta_runs():
        out.append((run, None))
        if run.algorithm == "maml":
            out += [(run, i) for i in run.config.save_at]
    return out


def _snapshot_jobs(plan: Plan) -> list[Job]:
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


# --- adaptation similarity (Figures 2 and 3)


def _similarity_jobs(plan: Plan) -> list[Job]:
    return [
        Job(
            plan.snapshot_dir(run, it).name,
            adaptation_similarity_job,
            {"snapshot_dir": str(plan.snapshot_dir(run, it)), "measures": list(plan.preset.measures)},
            cost=plan.preset.snapshot_tasks * run.setting.ways,
        )
        for run, it in _snapshots(plan)
    ]


def _similarity_rows(
    plan: Plan, results: Mapping[str, Any], runs: Sequence[RunPlan], at: int | None, **keys: Any
) -> list[dict[str, Any]]:
    """One row per layer and measure: the similarity in the runs' snapshots (of the weights kept
    at iteration ``at``, or the final weights for ``None``) over tasks and seeds."""
    per_run = [results[plan.snapshot_dir(run, at).name] for run in runs]
    return [
        {
            **keys,
            "layer": layer,
            "measure": measure,
            **similarity_over_seeds([_values(rows, layer, measure) for rows in per_run]),
        }
        for measure in plan.preset.measures
        for layer in LAYERS
    ]


def figure2_rows(plan: Plan, results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Figure 2: each layer's similarity before vs after adaptation, MAML and ANIL."""
    return [
        {**row, **_shared(s)}
        for s in plan.preset.settings
        for algorithm in ("maml", "anil")
        for row in _similarity_rows(plan, results, plan.runs_of(s, algorithm), None, algorithm=algorithm)
    ]


def figure3_rows(plan: Plan, results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Figure 3: at each kept MAML checkpoint and at the end, the similarity before vs after
    adaptation per layer and the freezing accuracies (on ``early_eval_tasks`` tasks)."""
    rows = []
    p = plan.preset
    for s in p.settings:
        runs = plan.runs_of(s, "maml")
        final = runs[0].config.iterations
        for iteration in sorted({*runs[0].config.save_at, final}):
            which = None if iteration == final else iteration
            weights = "final" if which is None else str(which)
            keys = {"algorithm": "maml", "iteration": iteration}
            rows += [
                {**row, **_shared(s)} for row in _similarity_rows(plan, results, runs, which, **keys, kind="similarity")
            ]
            ablations = [
                _freezing_rows(_eval_result(plan, run, "freezing", weights, p.early_eval_tasks)) for run in runs
            ]
            for label in _FROZEN_LABELS:
                summary = accuracy_over_seeds([a[label] for a in ablations])
                rows.append(
                    {
                        **keys,
                        "kind": "freezing",
                        "layer": label,
                        "measure": "accuracy",
                        "value": summary.pop("accuracy"),
                        **summary,
                        **_shared(s),
                    }
                )
    return rows


def _collect_similarity(plan: Plan, results: Mapping[str, Any]) -> list[Path]:
    return [
        write_table(plan.out, "figure2_adaptation_similarity", figure2_rows(plan, results)),
        write_table(plan.out, "figure3_early_training", figure3_rows(plan, results)),
    ]


# --- cross-model similarity (Table 3)


def model_pairs(plan: Plan, setting: Setting) -> list[tuple[str, RunPlan, RunPlan]]:
    """(comparison, run A, run B): MAML-MAML and ANIL-ANIL over pairs of seeds; MAML-ANIL over
    pairs of different seeds (the same seed when there is only one)."""
    maml, anil = plan.runs_of(setting, "maml"), plan.runs_of(setting, "anil")
    pairs = [("maml-maml", a, b) for a, b in itertools.combinations(maml, 2)]
    pairs += [("anil-anil", a, b) for a, b in itertools.combinations(anil, 2)]
    mixed = [(a, b) for a in maml for b in anil if a.seed != b.seed] or list(zip(maml, anil))
    return pairs + [("maml-anil", a, b) for a, b in mixed]


def _pair_key(a: RunPlan, b: RunPlan) -> str:
    return f"{a.name} vs {b.name}"


def _cross_jobs(plan: Plan) -> list[Job]:
    p = plan.preset
    return [
        Job(
            _pair_key(a, b),
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
        for _, a, b in model_pairs(plan, s)
    ]


def table3_rows(plan: Plan, results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Table 3: per comparison, layer and measure, the mean over model pairs of the mean over
    tasks, and the sample std over pairs."""
    rows = []
    for s in plan.preset.settings:
        pairs = model_pairs(plan, s)
        for comparison in dict.fromkeys(c for c, _, _ in pairs):
            chosen = [results[_pair_key(a, b)] for c, a, b in pairs if c == comparison]
            for measure in plan.preset.measures:
                for layer in LAYERS:
                    means = [float(np.nanmean(_values(r, layer, measure))) for r in chosen]
                    rows.append(
                        {
                            "comparison": comparison,
                            "layer": layer,
                            "measure": measure,
                            "value": float(np.mean(means)),
                            "std": _std(means),
                            "n_pairs": len(means),
                            **_shared(s),
                        }
                    )
    return rows


def _collect_cross(plan: Plan, results: Mapping[str, Any]) -> list[Path]:
    return [write_table(plan.out, "table3_cross_model_similarity", table3_rows(plan, results))]


# --- report


def _report_jobs(plan: Plan) -> list[Job]:
    return []


def _collect_report(plan: Plan, results: Mapping[str, Any]) -> list[Path]:
    from meta.study.paper_report import write_paper_outputs

    return [write_paper_outputs(plan.out)]


def _no_outputs(plan: Plan, results: Mapping[str, Any]) -> list[Path]:
    return []


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
    Stage(
        "report", "Markdown tables, figures and report.html (meta.study.paper_report)", _report_jobs, _collect_report
    ),
)
assert tuple(s.name for s in STAGE_LIST) == STAGES


# ---------------------------------------------------------------------------------------------
# Running jobs
# ---------------------------------------------------------------------------------------------


def available_cores() -> int:
    """CPU cores this process may use (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def _init_worker(parent: int | None = None) -> None:
    """One torch thread (and the other CPU settings) in a worker; with ``parent``, a daemon
    thread ends the worker when that process is gone, so that stopping the pipeline (even with
    SIGKILL) leaves no orphan still training (the runs resume from their checkpoints)."""
    from meta.run.cpu import configure_cpu

    configure_cpu(threads=1)
    if parent is not None:
        threading.Thread(target=_exit_with, args=(parent,), name="parent-watch", daemon=True).start()


def _exit_with(parent: int, interval: float = 1.0) -> None:
    """End this process (exit status 1) once process ``parent`` no longer exists."""
    while True:
        try:
            os.kill(parent, 0)
        except ProcessLookupError:
            os._exit(1)
        except PermissionError:  # alive, owned by someone else
            pass
        time.sleep(interval)


class JobRunner:
    """Runs the jobs of a stage in this process (``workers == 1``) or in a pool of worker
    processes (created on first use, reused by later stages), longest first, with a progress bar."""

    def __init__(self, workers: int, *, progress: bool = True) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"jobs must be a positive integer, got {workers!r}")
        self.workers, self.progress = workers, progress
        self._pool: futures.ProcessPoolExecutor | None = None

    def __enter__(self) -> JobRunner:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def pool(self) -> futures.ProcessPoolExecutor:
        if self._pool is None:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(["meta.study.reproduce"])
            self._pool = futures.ProcessPoolExecutor(
                self.workers, mp_context=context, initializer=_init_worker, initargs=(os.getpid(),)
            )
        return self._pool

    def run(self, stage: str, jobs: Sequence[Job]) -> dict[str, Any]:
        """``{job.key: result}``; the first failure cancels the rest and is raised with the
        stage and job named."""
        ordered = sorted(jobs, key=lambda j: -j.cost)
        bar = tqdm(
            total=len(jobs),
            desc=stage,
            unit="job",
            disable=not self.progress,
            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total} jobs [{elapsed}<{remaining}]",
        )
        try:
            if self.workers == 1:
                return self._run_here(stage, ordered, bar)
            return self._run_pool(stage, ordered, bar)
        finally:
            bar.close()

    def _run_here(self, stage: str, jobs: Sequence[Job], bar: Any) -> dict[str, Any]:
        _init_worker()
        results = {}
        for job in jobs:
            results[job.key] = _call(stage, job)
            bar.update(1)
        return results

    def _run_pool(self, stage: str, jobs: Sequence[Job], bar: Any) -> dict[str, Any]:
        pool = self.pool()
        pending = {pool.submit(job.fn, **job.kwargs): job for job in jobs}
        results: dict[str, Any] = {}
        try:
            while pending:
                finished, _ = futures.wait(pending, timeout=2.0, return_when=futures.FIRST_COMPLETED)
                for future in finished:
                    job = pending.pop(future)
                    try:
                        results[job.key] = future.result()
                    except Exception as err:
                        raise _job_error(stage, job, err) from err
                bar.n = len(results) + sum(_partial(job) for job in pending.values())
                bar.refresh()
        except BaseException:
            for future in pending:
                future.cancel()
            raise
        return results


def _call(stage: str, job: Job) -> Any:
    try:
        return job.fn(**job.kwargs)
    except Exception as err:
        raise _job_error(stage, job, err) from err


def _job_error(stage: str, job: Job, err: Exception) -> Exception:
    """The job's ValueError with the stage and job named (other errors pass unchanged)."""
    if isinstance(err, ValueError):
        return ReproductionError(f"stage {stage}, job {job.key}: {err}")
    return err


def _partial(job: Job) -> float:
    """Fraction of a running training job done (from its ``checkpoint.json``), else 0."""
    if job.watch is None or not job.iterations:
        return 0.0
    try:
        return min(1.0, json.loads(Path(job.watch).read_text())["iteration"] / job.iterations) * 0.999
    except (OSError, ValueError, KeyError, TypeError):
        return 0.0


# ---------------------------------------------------------------------------------------------
# The output folder
# ---------------------------------------------------------------------------------------------


def preset_record(plan: Plan) -> dict[str, Any]:
    """What ``preset.json`` holds: the preset, every run's resolved configuration and the jobs of
    every stage."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "preset": plan.preset.name,
        "description": plan.preset.description,
        "notes": list(plan.preset.notes),
        "settings": {k: v for k, v in plan.preset.as_dict().items() if k not in ("name", "description", "notes")},
        "device": plan.device,
        "runs": [
            {
                "name": r.name,
                "algorithm": r.algorithm,
                "dataset": r.setting.dataset,
                "ways": r.setting.ways,
                "shots": r.setting.shots,
                "seed": r.seed,
                "iterations": r.config.iterations,
                "save_at": list(r.config.save_at),
                "config": r.config.as_dict(),
            }
            for r in plan.runs
        ],
        "stages": {s.name: {"description": s.description, "jobs": [j.key for j in s.jobs(plan)]} for s in STAGE_LIST},
        "statistics": {
            "accuracy": "percent; per seed mean over the fixed test tasks and ci95 = 1.96 * std / sqrt(n_tasks)"
            " (population std); over seeds the mean, the mean ci95 and std_seeds (ddof=1)",
            "similarity": "per task the layer's similarity before vs after the last inner step on the query set;"
            " mean and ci95 = 1.96 * std / sqrt(n_tasks) over tasks, then over seeds as accuracies",
            "table3": "mean over tasks per model pair, then mean and std (ddof=1) over pairs; MAML-ANIL pairs"
            " of different seeds when there are two or more",
            "maml_accuracy": "Tables 2 and 4: row 'none' of MAML's freezing ablation (every layer adapts)",
        },
    }


def _identity(record: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of a preset record that decide the results (not texts, device or data paths)."""
    settings = {k: v for k, v in record.get("settings", {}).items() if k not in _NOT_IDENTITY}
    runs = [
        {**run, "config": {k: v for k, v in run.get("config", {}).items() if k not in MUTABLE_FIELDS}}
        for run in record.get("runs", [])
    ]
    return {"preset": record.get("preset"), "settings": settings, "runs": runs}


def _differences(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested records."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        return [
            d
            for k in sorted(set(old) | set(new), key=str)
            for d in _differences(old.get(k), new.get(k), f"{prefix}{k}.")
        ]
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [d for i, (a, b) in enumerate(zip(old, new)) for d in _differences(a, b, f"{prefix}{i}.")]
    return [] if old == new else [prefix.rstrip(".")]


def check_folder(out: Path, record: Mapping[str, Any], *, force: bool) -> None:
    """Refuse (:class:`ReproductionError`) a folder that holds another preset's results, or
    results of other settings, unless ``force``, which then deletes them (only the names of
    :data:`OWNED`)."""
    path = out / "preset.json"
    problem = None
    if path.is_file():
        old = read_json(path)
        if not isinstance(old, dict) or old.get("format") != FORMAT:
            problem = f"{str(path)!r} is not a reproduction record"
        elif old.get("preset") != record["preset"]:
            problem = f"{str(out)!r} holds the results of preset {old.get('preset')!r}, not {record['preset']!r}"
        else:
            changed = _differences(_identity(old), _identity(record))
            if changed:
                problem = (
                    f"{str(out)!r} holds results of preset {record['preset']!r} with other settings"
                    f" ({', '.join(changed[:6])}{', ...' if len(changed) > 6 else ''})"
                )
    elif any((out / name).exists() for name in OWNED):
        found = ", ".join(n for n in OWNED if (out / n).exists())
        problem = f"{str(out)!r} has reproduction outputs ({found}) but no preset.json"
    if problem is None:
        return
    if not force:
        raise ReproductionError(f"{problem}. Use another --out, or --force to delete those results and start over.")
    for name in OWNED:
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    print(f"[reproduce] --force: removed the previous results in {out} ({problem})", flush=True)


def check_data(plan: Plan) -> None:
    """Every data set read from the user's files has a folder: ``--data-root`` or the
    environment variable (:class:`ReproductionError` naming both otherwise)."""
    for dataset in dict.fromkeys(s.dataset for s in plan.preset.settings):
        if dataset not in _EXTERNAL_DATA:
            continue
        roots = {r.config.data_root for r in plan.runs if r.setting.dataset == dataset}
        root = next(iter(roots)) or os.environ.get(ROOT_ENV[dataset])
        where = f"pass --data-root DIR (or --data-root {dataset}=DIR) or set ${ROOT_ENV[dataset]}"
        if not root:
            raise ReproductionError(f"the {plan.preset.name!r} preset needs the {dataset} data set: {where}")
        if not Path(root).is_dir():
            raise ReproductionError(f"the {dataset} data folder {root!r} does not exist: {where}")


def parse_data_roots(items: Sequence[str], preset: ReproducePreset) -> dict[str, str]:
    """``--data-root`` values: ``DATASET=DIR`` for one data set, or a bare ``DIR`` for the
    preset's data set (ValueError when the preset reads several data sets from files)."""
    datasets = list(dict.fromkeys(s.dataset for s in preset.settings))
    roots: dict[str, str] = {}
    for item in items:
        name, sep, folder = item.partition("=")
        if sep and name in (*_EXTERNAL_DATA, "glyphs", "synthetic"):
            roots[name] = folder
            continue
        external = [d for d in datasets if d in _EXTERNAL_DATA]
        if len(external) > 1:
            raise ValueError(
                f"the {preset.name!r} preset reads {' and '.join(external)}: give --data-root as"
                f" DATASET=DIR, e.g. --data-root {external[0]}={item}"
            )
        roots.update(dict.fromkeys(external or datasets, item))
    return roots


def _data_lines(plan: Plan) -> list[str]:
    """Where each data set comes from (for the plan)."""
    lines = []
    for dataset in dict.fromkeys(s.dataset for s in plan.preset.settings):
        root = next(r.config.data_root for r in plan.runs if r.setting.dataset == dataset)
        if dataset in _EXTERNAL_DATA:
            root = root or os.environ.get(ROOT_ENV[dataset])
            where = (
                root
                if root and Path(root).is_dir()
                else (
                    f"NOT FOUND ({root!r}); pass --data-root DIR or set ${ROOT_ENV[dataset]}"
                    if root
                    else f"NOT GIVEN: pass --data-root DIR or set ${ROOT_ENV[dataset]}"
                )
            )
        else:
            where = "generated on this machine" + (f" (cache {root})" if root else "")
        lines.append(f"data: {dataset}: {where}")
    return lines


def stage_marker(out: Path, stage: str) -> Path:
    return out / "stages" / f"{stage}.done"


# ---------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------


def _run_text(c: RunConfig) -> str:
    """The settings of a run that matter for its regime, in a few words."""
    if c.algorithm in META_LEARNERS:
        what = (
            f"meta-batch {c.meta_batch_size}, inner loop {c.inner_steps} x {c.inner_lr} (test {c.test_inner_steps}"
            f" x {c.test_inner_lr}), meta lr {c.meta_lr}"
        )
    elif c.algorithm == "multiclass":
        what = f"batches of {c.batch_size} images, lr {c.meta_lr}"
    else:
        what = f"meta-batch {c.meta_batch_size}, lr {c.meta_lr}"
    kept = f"; weights kept at {','.join(map(str, c.save_at))}" if c.save_at else ""
    return (
        f"{c.iterations} iterations, {what}, {c.queries} queries, filters {c.filters or 'default'}"
        f" (test: NIL{' and inner loop' if c.algorithm in META_LEARNERS else ''}){kept}"
    )


def describe_plan(plan: Plan, jobs: int) -> str:
    """The plan as text: settings, runs and each stage's jobs (what ``--dry-run`` prints)."""
    p = plan.preset
    lines = [
        f"preset {p.name!r} -> {plan.out}  ({jobs} parallel job{'s' * (jobs > 1)}, device {plan.device})",
        f"  {p.description}",
    ]
    lines += [f"  note: {n}" for n in p.notes]
    lines.append(
        f"settings: {', '.join(f'{s.dataset} {s.ways}-way {s.shots}-shot' for s in p.settings)};"
        f" seeds {list(p.seeds)} (baselines {list(p.baseline_seeds)})"
    )
    lines += _data_lines(plan)
    lines.append(
        f"tasks: {p.eval_tasks} test tasks per accuracy, {p.early_eval_tasks} per checkpoint accuracy,"
        f" {p.snapshot_tasks} per snapshot, {p.similarity_tasks} per model pair;"
        f" measures {', '.join(p.measures)}"
    )
    lines.append(f"runs ({len(plan.runs)}):")
    lines += [f"  {r.name}: {_run_text(r.config)}" for r in plan.runs]
    lines.append("stages:")
    for number, stage in enumerate(STAGE_LIST, start=1):
        done = " [done]" if stage_marker(plan.out, stage.name).is_file() else ""
        job_list = stage.jobs(plan)
        count = f"{len(job_list)} job{'s' * (len(job_list) != 1)}"
        lines.append(f"  {number}. {stage.name}{done}: {stage.description} ({count})")
        lines += [f"       - {j.key}" for j in job_list]
    return "\n".join(lines)


def plan_summary(plan: Plan) -> dict[str, Any]:
    """The plan as data: ``{"preset", "runs": [names], "stages": {stage: [job keys]}}``."""
    return {
        "preset": plan.preset.name,
        "runs": [r.name for r in plan.runs],
        "stages": {s.name: [j.key for j in s.jobs(plan)] for s in STAGE_LIST},
    }


def run_stage(plan: Plan, stage: Stage, runner: JobRunner) -> dict[str, Any]:
    """Run one stage's jobs, write its outputs, then its marker (atomically)."""
    started = time.perf_counter()
    job_list = stage.jobs(plan)
    results = runner.run(stage.name, job_list) if job_list else {}
    outputs = stage.collect(plan, results)
    marker = {
        "stage": stage.name,
        "preset": plan.preset.name,
        "jobs": [j.key for j in job_list],
        "outputs": [str(Path(p).relative_to(plan.out)) for p in outputs],
        "seconds": round(time.perf_counter() - started, 3),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_json(stage_marker(plan.out, stage.name), marker)
    return marker


def reproduce(
    preset: str | ReproducePreset,
    out: str | Path,
    *,
    jobs: int | None = None,
    data_roots: Mapping[str, str] | None = None,
    cache_dir: str | None = None,
    device: str | None = None,
    force: bool = False,
    dry_run: bool = False,
    progress: bool = True,
    echo: Callable[[str], None] = functools.partial(print, flush=True),
) -> Plan:
    """Run the study of ``preset`` into ``out`` (see the module docstring), skipping finished
    stages.

    Args:
        preset: a name of :data:`meta.study.presets.PRESETS` or a :class:`ReproducePreset`.
        out: the output folder (created).
        jobs: parallel worker processes (default: :func:`available_cores`; 1 runs every job in
            this process).
        data_roots: data set name -> folder of its files (``omniglot``, ``miniimagenet``); for
            ``glyphs`` the cache folder.
        cache_dir: decoded-image cache folder.
        device: torch device (default: the preset's).
        force: delete another preset's results found in ``out`` instead of refusing.
        dry_run: print the plan and return without running anything.
        progress: tqdm bars per stage.
        echo: where the one-line stage messages go.

    Returns:
        The plan that was run (or printed).
    """
    chosen = get_preset(preset) if isinstance(preset, str) else preset
    workers = available_cores() if jobs is None else jobs
    plan = make_plan(chosen, out, data_roots=data_roots, cache_dir=cache_dir, device=device)
    runner = JobRunner(workers, progress=progress)
    if dry_run:
        echo(describe_plan(plan, workers))
        return plan
    check_data(plan)
    record = preset_record(plan)
    check_folder(plan.out, record, force=force)
    plan.out.mkdir(parents=True, exist_ok=True)
    write_json(plan.out / "preset.json", record)
    started = time.perf_counter()
    with runner:
        for number, stage in enumerate(STAGE_LIST, start=1):
            label = f"[reproduce] {number}/{len(STAGE_LIST)} {stage.name}"
            if stage_marker(plan.out, stage.name).is_file():
                echo(f"{label}: done before, skipped")
                continue
            echo(f"{label}: started ({stage.description})")
            marker = run_stage(plan, stage, runner)
            echo(f"{label}: finished in {marker['seconds']:.1f} s (total {time.perf_counter() - started:.1f} s)")
    echo(f"[reproduce] {plan.preset.name} done in {time.perf_counter() - started:.1f} s: {plan.out / 'report.html'}")
    return plan
