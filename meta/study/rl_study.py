"""The meta-RL study of a reproduction (presets with ``rl``, :class:`meta.study.rl_presets.RLStudy`):
MAML-TRPO and ANIL-TRPO for each environment and seed, each run trained, evaluated, snapshotted
and measured by one job of the ``rl`` stage (:data:`meta.study.stages.RL_STAGE`), then Table 2's
RL columns and the per-layer similarity of the policy, ours beside the paper's
(:mod:`meta.study.rl_report`).

One job per run (:func:`rl_run_job`), each step skipped when its file exists (a rerun resumes):

1. train (or resume) ``runs/<algorithm>_<env>_seed<S>/`` (:func:`meta.run.rl_train.train_rl`);
2. evaluate: the returns after ``k = 0 .. test_inner_steps`` inner steps on ``eval_tasks`` fixed
   test tasks (:func:`meta.run.rl_evaluate.evaluate_rl_run`, ``eval/study_returns_<T>tasks.json``);
3. snapshot ``snapshots/<run>/`` of ``snapshot_tasks`` test tasks (:mod:`meta.run.rl_snapshot`);
4. CCA and CKA of ``fc1``, ``fc2`` and ``head`` before vs after one inner step on the states
   the adapted policy visits (:func:`meta.run.rl_similarity.rl_similarity`,
   ``eval/similarity_<T>tasks.csv``).

The CSVs are read from those files (the same numbers on a rerun), over seeds as the
classification tables (:class:`meta.study.aggregate.OverSeeds`): for each seed the mean over
test tasks ``R_s`` and ``ci95_s = 1.96 * std_t / sqrt(T)``; then ``return = mean_s R_s``,
``ci95 = mean_s ci95_s``, ``std_seeds`` the sample std of ``R_s`` (``ddof=1``; empty for one
seed). The similarity the same way from each seed's mean and ``ci95`` over tasks.

Imports: :mod:`meta.rl.policy`, :mod:`meta.run` (rl_config, rl_train, rl_evaluate,
rl_snapshot, rl_similarity, folder), :mod:`meta.study` (aggregate, executor, plan, rl_presets,
rl_verdicts, schema) and :mod:`repsim.io`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from meta.rl.policy import LAYERS
from meta.run.folder import RunFolder
from meta.run.rl_config import RLConfig, resolve_rl, rl_from_mapping
from meta.study.aggregate import OverSeeds
from meta.study.executor import Job
from meta.study.plan import Plan, ReproductionError
from meta.study.rl_presets import RL_STUDY_ALGORITHMS, RLEnvBudget, RLStudy
from meta.study.rl_verdicts import DEFAULT_STEPS
from meta.study.schema import write_table
from repsim.io import read_json, write_json

#: Seconds per meta-iteration of one run on one core of this project's CPUs (measured): only to
#: start the longest jobs first and to state a preset's budget.
SECONDS_PER_ITERATION: dict[str, float] = {"2d-navigation": 8.4, "halfcheetah-dir": 60.0, "halfcheetah-vel": 60.0}
#: Meta-iterations' worth of the evaluation, snapshot and similarity of one run (estimated).
_MEASUREMENT_ITERATIONS = 4
#: The similarity measures of :mod:`meta.run.rl_similarity`.
RL_MEASURES: tuple[str, ...] = ("cca", "cka")


@dataclass(frozen=True)
class RLRunPlan:
    """One meta-RL run of the study: its environment's budget and resolved configuration."""

    budget: RLEnvBudget
    config: RLConfig

    @property
    def name(self) -> str:
        """``<algorithm>_<env>_seed<S>`` (the run folder's name), e.g. ``anil-trpo_2d-navigation_seed0``."""
        return f"{self.config.algorithm}_{self.config.env}_seed{self.config.seed}"


def _study(plan: Plan) -> RLStudy | None:
    """The preset's RL study (``None`` for a classification-only preset)."""
    return plan.preset.rl


def rl_config(study: RLStudy, budget: RLEnvBudget, algorithm: str, seed: int) -> RLConfig:
    """The resolved configuration of one run: the study's ``run``, the environment's ``run``,
    then the budget's iterations, the algorithm and the seed; ``test_tasks`` is the study's
    ``eval_tasks``. ``ValueError`` naming a bad value (:func:`meta.run.rl_config.resolve_rl`)."""
    values = {
        **study.run,
        **budget.run,
        "algorithm": algorithm,
        "env": budget.env,
        "iterations": budget.iterations,
        "seed": seed,
        "test_tasks": study.eval_tasks,
    }
    return resolve_rl(rl_from_mapping(values))


def rl_runs(plan: Plan) -> list[RLRunPlan]:
    """Every RL run of the plan (environment, then algorithm, then seed); none without ``rl``.
    :class:`meta.study.plan.ReproductionError` naming the preset and the bad value otherwise."""
    study = _study(plan)
    if study is None:
        return []
    if not study.envs:
        raise ReproductionError(f"preset {plan.preset.name!r}: its RL study has no environment")
    envs = [b.env for b in study.envs]
    if len(set(envs)) != len(envs):
        raise ReproductionError(f"preset {plan.preset.name!r}: an environment appears twice in its RL study ({envs})")
    runs = []
    for budget in study.envs:
        if not budget.seeds:
            raise ReproductionError(f"preset {plan.preset.name!r}: {budget.env} has no seeds")
        for algorithm in RL_STUDY_ALGORITHMS:
            for seed in budget.seeds:
                try:
                    runs.append(RLRunPlan(budget, rl_config(study, budget, algorithm, seed)))
                except ValueError as err:
                    raise ReproductionError(f"preset {plan.preset.name!r}, RL study: {err}") from None
    return runs


def rl_run_dir(plan: Plan, run: RLRunPlan) -> Path:
    """``out/runs/<run name>``."""
    return plan.out / "runs" / run.name


def rl_snapshot_dir(plan: Plan, run: RLRunPlan) -> Path:
    """``out/snapshots/<run name>``."""
    return plan.out / "snapshots" / run.name


def run_cost(config: RLConfig) -> float:
    """Estimated seconds of a run's job (:data:`SECONDS_PER_ITERATION`, scaled by the tasks x
    trajectories x horizon of the run against the environment's reference)."""
    reference = {"2d-navigation": 20 * 20 * 100}.get(config.env, 40 * 20 * 200)
    scale = config.meta_batch_size * config.trajectories * config.horizon / reference
    return SECONDS_PER_ITERATION[config.env] * scale * (config.iterations + _MEASUREMENT_ITERATIONS)


def describe_rl(plan: Plan) -> list[str]:
    """The RL study as lines of the printed plan: each environment's budget and estimated
    CPU time, then each run."""
    study, runs = _study(plan), rl_runs(plan)
    if study is None:
        return []
    lines = [
        f"rl: {study.eval_tasks} test tasks per return (after 0..{runs[0].config.test_inner_steps} inner steps),"
        f" {study.similarity_tasks} per similarity, {study.snapshot_tasks} per snapshot;"
        f" measures {', '.join(RL_MEASURES)}; Table 2 compares the return after {DEFAULT_STEPS} step(s)"
    ]
    for budget in study.envs:
        mine = [r for r in runs if r.budget == budget]
        c = mine[0].config
        minutes = sum(run_cost(r.config) for r in mine) / 60
        lines.append(
            f"  {budget.env}: {budget.iterations} meta-iterations, seeds {list(budget.seeds)}, meta-batch"
            f" {c.meta_batch_size} x {c.trajectories} trajectories, horizon {c.horizon}:"
            f" about {minutes:.0f} CPU-minutes for its {len(mine)} runs"
        )
    total = sum(run_cost(r.config) for r in runs) / 3600
    lines.append(f"  total: about {total:.1f} CPU-hours (divide by --jobs)")
    lines.append(f"rl runs ({len(runs)}):")
    lines += [f"  {r.name}: {r.config.iterations} meta-iterations, inner lr {r.config.inner_lr}" for r in runs]
    return lines


def rl_record(plan: Plan) -> list[dict[str, Any]]:
    """Every RL run's name and resolved configuration (for ``preset.json``)."""
    return [{"name": r.name, "config": r.config.as_dict()} for r in rl_runs(plan)]


# ---------------------------------------------------------------------------------------------
# The job
# ---------------------------------------------------------------------------------------------


def returns_json(run_dir: str | Path, tasks: int) -> Path:
    """``<run_dir>/eval/study_returns_<tasks>tasks.json``: the run's own test procedure on
    ``tasks`` fixed test tasks (the JSON of :func:`meta.run.rl_evaluate.evaluate_rl_run`)."""
    return RunFolder(Path(run_dir)).eval_dir / f"study_returns_{tasks}tasks.json"


def similarity_csv(run_dir: str | Path, tasks: int) -> Path:
    """``<run_dir>/eval/similarity_<tasks>tasks.csv``: the per-layer similarity of the run."""
    return RunFolder(Path(run_dir)).eval_dir / f"similarity_{tasks}tasks.csv"


def rl_run_job(
    config: Mapping[str, Any], run_dir: str, snapshot_dir: str, similarity_tasks: int, snapshot_tasks: int
) -> dict[str, Any]:
    """Train, evaluate, snapshot and measure one RL run (module docstring), each step skipped
    when its file exists; returns the paths of the evaluation JSON and of the similarity CSV."""
    from meta.run.rl_evaluate import evaluate_rl_run
    from meta.run.rl_similarity import rl_similarity
    from meta.run.rl_snapshot import snapshot_rl_run
    from meta.run.rl_train import train_rl

    c = rl_from_mapping(config)
    train_rl(c, run_dir)
    evaluation = returns_json(run_dir, c.test_tasks)
    if not evaluation.is_file():
        write_json(evaluation, evaluate_rl_run(run_dir, progress=False, write=False))
    if not (Path(snapshot_dir) / "manifest.json").is_file():
        snapshot_rl_run(run_dir, snapshot_dir, tasks=snapshot_tasks, overwrite=True, progress=False)
    similarity = similarity_csv(run_dir, similarity_tasks)
    if not similarity.is_file():
        rl_similarity(run_dir, tasks=similarity_tasks, out_csv=similarity, progress=False)
    return {"evaluation": str(evaluation), "similarity": str(similarity)}


def rl_jobs(plan: Plan) -> list[Job]:
    """One :func:`rl_run_job` per run, its training watched through its checkpoint."""
    study = _study(plan)
    return [
        Job(
            run.name,
            rl_run_job,
            {
                "config": run.config.as_dict(),
                "run_dir": str(rl_run_dir(plan, run)),
                "snapshot_dir": str(rl_snapshot_dir(plan, run)),
                "similarity_tasks": study.similarity_tasks,
                "snapshot_tasks": study.snapshot_tasks,
            },
            cost=run_cost(run.config),
            watch=str(RunFolder(rl_run_dir(plan, run)).checkpoint_info),
            iterations=run.config.iterations,
        )
        for run in rl_runs(plan)
        if study is not None
    ]


# ---------------------------------------------------------------------------------------------
# The CSVs (from the runs' files)
# ---------------------------------------------------------------------------------------------


def _groups(plan: Plan) -> list[tuple[RLEnvBudget, str, list[RLRunPlan]]]:
    """(environment, algorithm, its runs in seed order), in the study's order."""
    runs = rl_runs(plan)
    return [
        (budget, algorithm, [r for r in runs if r.budget == budget and r.config.algorithm == algorithm])
        for budget in (_study(plan).envs if runs else ())
        for algorithm in RL_STUDY_ALGORITHMS
    ]


def _evaluation(plan: Plan, run: RLRunPlan) -> dict[str, Any]:
    """The run's evaluation JSON (docs/formats.md, "Meta-RL evaluation")."""
    return read_json(returns_json(rl_run_dir(plan, run), run.config.test_tasks))


def table2_rl_rows(plan: Plan) -> list[dict[str, Any]]:
    """``table2_rl``: per environment, algorithm and number of test-time inner steps ``k``, the
    return after ``k`` steps over seeds (module docstring)."""
    rows = []
    for budget, algorithm, runs in _groups(plan):
        evaluations = [_evaluation(plan, r) for r in runs]
        for k in range(len(evaluations[0]["returns"])):
            cells = [e["returns"][k] for e in evaluations]
            over = OverSeeds.of(
                [c["return"] for c in cells], [c["ci95"] for c in cells], [e["tasks"] for e in evaluations]
            )
            rows.append(
                {
                    "env": budget.env,
                    "algorithm": algorithm,
                    "steps": k,
                    **over.as_row("return"),
                    "horizon": runs[0].config.horizon,
                    "iterations": budget.iterations,
                }
            )
    return rows


def _similarity_over_seeds(frames: Sequence[pd.DataFrame], layer: str, measure: str) -> OverSeeds:
    """One layer's and measure's similarity over the seeds that measured it (NaN: none did)."""
    cells = [f[(f["layer"] == layer) & (f["measure"] == measure)].iloc[0] for f in frames]
    measured = [c for c in cells if pd.notna(c["value"]) and c["n_tasks"] > 0]
    if not measured:
        return OverSeeds(float("nan"), float("nan"), float("nan"), 0, 0)
    return OverSeeds.of([c["value"] for c in measured], [c["ci95"] for c in measured], [c["n_tasks"] for c in measured])


def figure_rl_similarity_rows(plan: Plan) -> list[dict[str, Any]]:
    """``figure_rl_similarity``: per environment, algorithm, layer and measure, the similarity of
    the layer's activations before vs after one inner step, over seeds (module docstring)."""
    tasks = _study(plan).similarity_tasks if _study(plan) else 0
    rows = []
    for budget, algorithm, runs in _groups(plan):
        frames = [pd.read_csv(similarity_csv(rl_run_dir(plan, r), tasks)) for r in runs]
        rows += [
            {
                "env": budget.env,
                "algorithm": algorithm,
                "layer": layer,
                "measure": measure,
                **_similarity_over_seeds(frames, layer, measure).as_row("value"),
                "steps": 1,
            }
            for measure in RL_MEASURES
            for layer in LAYERS
        ]
    return rows


def collect_rl(plan: Plan, results: Mapping[str, Any]) -> list[Path]:
    """The ``rl`` stage's files: ``tables/table2_rl.csv`` and ``figures/figure_rl_similarity.csv``
    (from the runs' files, whatever ``results`` say); the ``report`` stage writes their Markdown,
    figure and section of ``report.html`` (:mod:`meta.study.rl_report`)."""
    table = write_table(plan.out, "table2_rl", table2_rl_rows(plan))
    figure = write_table(plan.out, "figure_rl_similarity", figure_rl_similarity_rows(plan))
    return [table, figure]
