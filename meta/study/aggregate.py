"""From the per-run results of the jobs to the rows of each CSV of the reproduction
(:mod:`meta.study.schema`): the evaluation JSONs give Tables 1, 2, 4, 5 and Figure 3's freezing
points, the adaptation-similarity jobs Figures 2 and 3, the cross-model jobs Table 3.

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

Imports: :mod:`meta.core.names`, :mod:`meta.run.evaluate`, :mod:`meta.study` (presets, plan, jobs,
schema).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from meta.core.names import FROZEN_LABELS, LAYERS
from meta.run.results import AccuracySummary, Evaluation, mean_ci95
from meta.study.jobs import eval_path
from meta.study.plan import Plan, RunPlan
from meta.study.presets import Setting
from meta.study.schema import BODY_REGIMES

#: One CSV row: column -> value.
Row = dict[str, Any]


# ---------------------------------------------------------------------------------------------
# Over seeds
# ---------------------------------------------------------------------------------------------


def _std(values: Sequence[float]) -> float:
    """Sample standard deviation (``ddof=1``); NaN for fewer than two values."""
    return float(np.std(values, ddof=1)) if len(values) > 1 else math.nan


@dataclass(frozen=True)
class OverSeeds:
    """A quantity over seeds: the mean of the seeds' means, the mean of their 95% half-widths over
    tasks, the sample standard deviation of their means (NaN for one seed), the number of seeds
    and the fewest tasks of a seed."""

    mean: float
    ci95: float
    std_seeds: float
    n_seeds: int
    n_tasks: int

    @classmethod
    def of(cls, means: Sequence[float], ci95s: Sequence[float], tasks: Sequence[int]) -> OverSeeds:
        """From each seed's mean, half-width and number of tasks."""
        return cls(float(np.mean(means)), float(np.mean(ci95s)), _std(means), len(means), min(tasks))

    def as_row(self, column: str) -> Row:
        """The CSV columns: ``column`` (``accuracy`` or ``value``) for the mean, then ``ci95``,
        ``std_seeds``, ``n_seeds``, ``n_tasks``."""
        return {
            column: self.mean,
            "ci95": self.ci95,
            "std_seeds": self.std_seeds,
            "n_seeds": self.n_seeds,
            "n_tasks": self.n_tasks,
        }


#: The similarity of a layer no seed measured.
_UNMEASURED = OverSeeds(math.nan, math.nan, math.nan, 0, 0)


def accuracy_over_seeds(summaries: Sequence[AccuracySummary]) -> OverSeeds:
    """One evaluation summary per seed (accuracy and ``ci95`` in percent) over seeds."""
    return OverSeeds.of(
        [float(s.accuracy) for s in summaries], [s.ci95 for s in summaries], [int(s.tasks) for s in summaries]
    )


def similarity_over_seeds(per_seed: Sequence[Sequence[float]]) -> OverSeeds:
    """Per-task similarities of each seed over seeds: per seed the mean and
    ``1.96 * std / sqrt(n)`` over its finite values, then both over seeds as
    :func:`accuracy_over_seeds`; seeds without a finite value are left out (NaN and no seeds
    when none has one)."""
    finite = [np.asarray(v, dtype=float)[np.isfinite(v)] for v in per_seed]
    measured = [v for v in finite if v.size]
    if not measured:
        return _UNMEASURED
    stats = [mean_ci95(v) for v in measured]
    return OverSeeds.of([m for m, _ in stats], [c for _, c in stats], [v.size for v in measured])


def _shared(setting: Setting) -> Row:
    """The setting's columns (``dataset``, ``ways``, ``shots``)."""
    return {"dataset": setting.dataset, "ways": setting.ways, "shots": setting.shots}


def _values(rows: Sequence[Mapping[str, Any]], layer: str, measure: str) -> list[float]:
    """The per-task ``value`` of ``layer`` and ``measure`` in a similarity job's rows."""
    return [float(r["value"]) for r in rows if r["layer"] == layer and r["measure"] == measure]


def last_step(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The rows of an adaptation-similarity job after the last inner step."""
    last = max(r["step"] for r in rows)
    return [r for r in rows if r["step"] == last]


# ---------------------------------------------------------------------------------------------
# Accuracy tables (from the evaluation JSONs)
# ---------------------------------------------------------------------------------------------


def _evaluation(plan: Plan, run: RunPlan, kind: str, weights: str = "final", tasks: int | None = None) -> Evaluation:
    """The evaluation of ``run`` written by :func:`meta.study.jobs.evaluate_job` (on the preset's
    ``eval_tasks`` unless ``tasks``)."""
    tasks = plan.preset.eval_tasks if tasks is None else tasks
    return Evaluation.read(eval_path(plan.run_dir(run), run.config, kind=kind, weights=weights, tasks=tasks))


def _ablations(
    plan: Plan, runs: Sequence[RunPlan], weights: str = "final", tasks: int | None = None
) -> list[Evaluation]:
    """The freezing ablation of each run (of ``weights``, on ``tasks`` tasks: see :func:`_evaluation`)."""
    return [_evaluation(plan, run, "freezing", weights, tasks) for run in runs]


def _frozen_over_seeds(ablations: Sequence[Evaluation], label: str) -> OverSeeds:
    """Row ``label`` of the freezing ablations over seeds."""
    return accuracy_over_seeds([ablation.row(label).summary for ablation in ablations])


def _over_runs(plan: Plan, setting: Setting, algorithm: str, kind: str) -> OverSeeds:
    """The accuracy of ``algorithm``'s runs in ``setting`` under test procedure ``kind``, over seeds."""
    runs = plan.runs_of(setting, algorithm)
    return accuracy_over_seeds([_evaluation(plan, run, kind).result.summary for run in runs])


def _maml_accuracy(plan: Plan, setting: Setting) -> OverSeeds:
    """MAML's test accuracy: row ``none`` of its freezing ablation (every layer adapts)."""
    return _frozen_over_seeds(_ablations(plan, plan.runs_of(setting, "maml")), "none")


def table1_rows(plan: Plan) -> list[Row]:
    """Table 1: MAML with layers frozen in the test-time inner loop."""
    rows = []
    for s in plan.preset.settings:
        ablations = _ablations(plan, plan.runs_of(s, "maml"))
        rows += [
            {
                "algorithm": "maml",
                **_shared(s),
                "frozen": label,
                **_frozen_over_seeds(ablations, label).as_row("accuracy"),
            }
            for label in FROZEN_LABELS
        ]
    return rows


def table2_rows(plan: Plan) -> list[Row]:
    """Table 2: MAML and ANIL, each with its own test-time inner loop."""
    return [
        row
        for s in plan.preset.settings
        for row in (
            {"algorithm": "maml", **_shared(s), **_maml_accuracy(plan, s).as_row("accuracy")},
            {"algorithm": "anil", **_shared(s), **_over_runs(plan, s, "anil", "default").as_row("accuracy")},
        )
    ]


def table4_rows(plan: Plan) -> list[Row]:
    """Table 4: MAML, ANIL and NIL-testing of the ANIL-trained body."""
    return [
        row
        for s in plan.preset.settings
        for row in (
            {"method": "maml", **_shared(s), **_maml_accuracy(plan, s).as_row("accuracy")},
            {"method": "anil", **_shared(s), **_over_runs(plan, s, "anil", "default").as_row("accuracy")},
            {"method": "nil", **_shared(s), **_over_runs(plan, s, "anil", "nil").as_row("accuracy")},
        )
    ]


def table5_rows(plan: Plan) -> list[Row]:
    """Table 5: the body trained by each regime, tested with NIL."""
    return [
        {"regime": regime, "test": "nil", **_shared(s), **_over_runs(plan, s, regime, "nil").as_row("accuracy")}
        for s in plan.preset.settings
        if s.baselines
        for regime in BODY_REGIMES
    ]


# ---------------------------------------------------------------------------------------------
# Similarity before vs after adaptation (Figures 2 and 3)
# ---------------------------------------------------------------------------------------------


def _similarity_rows(
    plan: Plan, results: Mapping[str, Any], runs: Sequence[RunPlan], at: int | None, **keys: Any
) -> list[Row]:
    """One row per layer and measure: the similarity in the runs' snapshots (of the weights kept
    at iteration ``at``, or the final weights for ``None``) over tasks and seeds; ``results`` are
    the adaptation-similarity jobs' rows keyed by snapshot folder name."""
    per_run = [last_step(results[plan.snapshot_dir(run, at).name]) for run in runs]
    return [
        {
            **keys,
            "layer": layer,
            "measure": measure,
            **similarity_over_seeds([_values(rows, layer, measure) for rows in per_run]).as_row("value"),
        }
        for measure in plan.preset.measures
        for layer in LAYERS
    ]


def figure2_rows(plan: Plan, results: Mapping[str, Any]) -> list[Row]:
    """Figure 2: each layer's similarity before vs after adaptation, MAML and ANIL."""
    return [
        {**row, **_shared(s)}
        for s in plan.preset.settings
        for algorithm in ("maml", "anil")
        for row in _similarity_rows(plan, results, plan.runs_of(s, algorithm), None, algorithm=algorithm)
    ]


def _checkpoint_rows(plan: Plan, results: Mapping[str, Any], setting: Setting, iteration: int) -> list[Row]:
    """Figure 3's rows of one MAML checkpoint (the final weights at the last iteration): the
    similarity per layer and measure, then the freezing accuracies on ``early_eval_tasks`` tasks."""
    runs = plan.runs_of(setting, "maml")
    which = None if iteration == runs[0].config.iterations else iteration
    weights = "final" if which is None else str(which)
    keys = {"algorithm": "maml", "iteration": iteration}
    similarity = _similarity_rows(plan, results, runs, which, **keys, kind="similarity")
    ablations = _ablations(plan, runs, weights, plan.preset.early_eval_tasks)
    freezing = [
        {
            **keys,
            "kind": "freezing",
            "layer": label,
            "measure": "accuracy",
            **_frozen_over_seeds(ablations, label).as_row("value"),
        }
        for label in FROZEN_LABELS
    ]
    return [{**row, **_shared(setting)} for row in (*similarity, *freezing)]


def figure3_rows(plan: Plan, results: Mapping[str, Any]) -> list[Row]:
    """Figure 3: at each kept MAML checkpoint and at the end, the similarity before vs after
    adaptation per layer and the freezing accuracies (on ``early_eval_tasks`` tasks)."""
    rows = []
    for s in plan.preset.settings:
        config = plan.runs_of(s, "maml")[0].config
        for iteration in sorted({*config.save_at, config.iterations}):
            rows += _checkpoint_rows(plan, results, s, iteration)
    return rows


# ---------------------------------------------------------------------------------------------
# Similarity across models (Table 3)
# ---------------------------------------------------------------------------------------------


def model_pairs(plan: Plan, setting: Setting) -> list[tuple[str, RunPlan, RunPlan]]:
    """(comparison, run A, run B): MAML-MAML and ANIL-ANIL over pairs of seeds; MAML-ANIL over
    pairs of different seeds (the same seed when there is only one)."""
    maml, anil = plan.runs_of(setting, "maml"), plan.runs_of(setting, "anil")
    pairs = [("maml-maml", a, b) for a, b in itertools.combinations(maml, 2)]
    pairs += [("anil-anil", a, b) for a, b in itertools.combinations(anil, 2)]
    mixed = [(a, b) for a in maml for b in anil if a.seed != b.seed] or list(zip(maml, anil))
    return pairs + [("maml-anil", a, b) for a, b in mixed]


def pair_key(a: RunPlan, b: RunPlan) -> str:
    """``"<run A> vs <run B>"``: the key of a cross-model job and of its result."""
    return f"{a.name} vs {b.name}"


def table3_rows(plan: Plan, results: Mapping[str, Any]) -> list[Row]:
    """Table 3: per comparison, layer and measure, the mean over model pairs of the mean over
    tasks, and the sample std over pairs; ``results`` are the cross-model jobs' rows keyed by
    :func:`pair_key`."""
    rows = []
    for s in plan.preset.settings:
        pairs = model_pairs(plan, s)
        for comparison in dict.fromkeys(c for c, _, _ in pairs):
            chosen = [results[pair_key(a, b)] for c, a, b in pairs if c == comparison]
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
