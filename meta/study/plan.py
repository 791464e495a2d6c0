"""A preset resolved for an output folder: the runs of the study (:class:`RunPlan`: MAML and
ANIL for each seed, the body-training baselines of Table 5, and MAML and ANIL on each conv4
variant of the architecture study), where each run's files go (:class:`Plan`), and the estimated
cost of a run or an evaluation (to start the longest jobs first).

Imports: :mod:`meta.core.names`, :mod:`meta.data.registry`, :mod:`meta.run.config`,
:mod:`meta.study.presets`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meta.core.names import BODY_BASELINES, FREEZING_ROWS, META_LEARNERS
from meta.data.registry import ROOT_ENV
from meta.run.config import RunConfig, from_mapping, resolve
from meta.study.presets import ARCHITECTURES, Setting, StudyPreset

#: Data sets read from the user's files (the others are generated on the machine).
EXTERNAL_DATA: tuple[str, ...] = tuple(ROOT_ENV)
#: Seconds per image of a task's forward and backward pass (64-filter conv4, 28x28, one core of the
#: project's CPUs, measured on Omniglot): body-only regimes, and MAML's query pass and extra cost per
#: support image and inner step. Used only to start the longest jobs first.
_SECONDS_PER_IMAGE = {"body": 1.8e-4, "query": 2.1e-4, "support_step": 5.3e-4}


class ReproductionError(ValueError):
    """The output folder or the data cannot be used for this reproduction (the message says why)."""


@dataclass(frozen=True)
class RunPlan:
    """One training run of the study: its setting, resolved configuration and conv4 variant
    (:data:`meta.study.presets.ARCHITECTURES`; ``"reference"`` for the paper's tables)."""

    setting: Setting
    config: RunConfig
    architecture: str = "reference"

    @property
    def algorithm(self) -> str:
        """The training regime (``maml``, ``anil`` or a baseline of Table 5)."""
        return self.config.algorithm

    @property
    def seed(self) -> int:
        """The run's seed."""
        return self.config.seed

    @property
    def name(self) -> str:
        """``<algorithm>_<dataset>_<ways>w<shots>s_seed<S>`` (the run folder's name), with
        ``-<variant>`` after the algorithm for the architecture study's variants."""
        variant = "" if self.architecture == "reference" else f"-{self.architecture}"
        return f"{self.algorithm}{variant}_{self.setting.label}_seed{self.seed}"


@dataclass(frozen=True)
class Plan:
    """A preset resolved for an output folder: its runs, the device, and where each run's files go."""

    preset: StudyPreset
    out: Path
    runs: tuple[RunPlan, ...]
    device: str

    def runs_of(self, setting: Setting, algorithm: str, architecture: str = "reference") -> list[RunPlan]:
        """The runs of ``algorithm`` in ``setting`` on conv4 variant ``architecture`` (one per
        seed), in seed order."""
        return [
            r for r in self.runs if r.setting == setting and r.algorithm == algorithm and r.architecture == architecture
        ]

    def run_dir(self, run: RunPlan) -> Path:
        """``out/runs/<run name>``."""
        return self.out / "runs" / run.name

    def snapshot_dir(self, run: RunPlan, iteration: int | None = None) -> Path:
        """``out/snapshots/<run name>`` (final weights) or ``.../<run name>_iterNNNNNN``."""
        suffix = "" if iteration is None else f"_iter{iteration:06d}"
        return self.out / "snapshots" / f"{run.name}{suffix}"

    def meta_runs(self) -> list[RunPlan]:
        """The MAML and ANIL runs of the paper's tables (the reference conv4)."""
        return [r for r in self.runs if r.algorithm in ("maml", "anil") and r.architecture == "reference"]

    @property
    def study_setting(self) -> Setting | None:
        """The setting of the architecture study (the preset's first), or ``None`` without one."""
        return self.preset.settings[0] if self.preset.architectures else None

    def architecture_runs(self, algorithm: str) -> list[tuple[str, RunPlan]]:
        """``(variant, run)`` of the architecture study for ``algorithm``, the reference first:
        the study seed's run of every variant (none without a study)."""
        setting = self.study_setting
        if setting is None:
            return []
        variants = ("reference", *self.preset.architectures)
        return [(v, self.runs_of(setting, algorithm, v)[0]) for v in variants]


def early_iterations(iterations: int, fractions: Sequence[float]) -> tuple[int, ...]:
    """The iterations ``round(f * iterations)`` (at least 1, below ``iterations``), sorted, unique."""
    kept = {max(1, round(f * iterations)) for f in fractions}
    return tuple(sorted(i for i in kept if i < iterations))


def run_config(
    preset: StudyPreset,
    setting: Setting,
    algorithm: str,
    seed: int,
    *,
    device: str,
    data_root: str | None = None,
    cache_dir: str | None = None,
    architecture: str = "reference",
) -> RunConfig:
    """The resolved configuration of one run: the setting, then the preset's ``run``, the
    setting's ``run`` and, for baselines, ``baseline_run`` (for an architecture variant,
    ``architecture_run`` and the variant's changes); ``None`` values from the paper defaults
    (:func:`meta.run.config.resolve`). Reference MAML runs keep their weights at the preset's
    ``early_fractions`` of training; the random-features baseline trains for one (no-op)
    iteration."""
    baseline = algorithm not in META_LEARNERS
    variant = {} if architecture == "reference" else {**preset.architecture_run, **ARCHITECTURES[architecture].run}
    values: dict[str, Any] = {
        "algorithm": algorithm,
        "dataset": setting.dataset,
        "ways": setting.ways,
        "shots": setting.shots,
        "seed": seed,
        **preset.run,
        **setting.run,
        **(preset.baseline_run if baseline else {}),
        **variant,
        "device": device,
        "data_root": data_root,
        "cache_dir": cache_dir,
        "threads": 1,
        "progress": False,
    }
    if algorithm == "random":
        values["iterations"] = 1
    config, _ = resolve(from_mapping(values))
    if algorithm == "maml" and architecture == "reference":
        config = config.replace(save_at=early_iterations(config.iterations, preset.early_fractions))
    return config


def make_plan(
    preset: StudyPreset,
    out: str | Path,
    *,
    data_roots: Mapping[str, str] | None = None,
    cache_dir: str | None = None,
    device: str | None = None,
) -> Plan:
    """The plan of ``preset`` written to ``out``: MAML and ANIL for each seed and setting, the
    baselines (:data:`meta.core.names.BODY_BASELINES`) for each baseline seed where the setting
    has ``baselines``, and MAML and ANIL on each of the preset's ``architectures`` (first setting,
    first seed)."""
    roots = dict(data_roots or {})
    device = device or preset.device
    runs = []
    for setting in preset.settings:
        algorithms = [(a, s) for a in ("maml", "anil") for s in preset.seeds]
        if setting.baselines:
            algorithms += [(a, s) for a in BODY_BASELINES for s in preset.baseline_seeds]
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
    first = preset.settings[0] if preset.settings else None
    for architecture in preset.architectures if first is not None else ():
        if architecture not in ARCHITECTURES or architecture == "reference":
            known = [a for a in ARCHITECTURES if a != "reference"]
            raise ReproductionError(f"unknown architecture {architecture!r} in the preset; known: {known}")
        for algorithm in ("maml", "anil"):
            config = run_config(
                preset,
                first,
                algorithm,
                preset.seeds[0],
                device=device,
                data_root=roots.get(first.dataset),
                cache_dir=cache_dir,
                architecture=architecture,
            )
            runs.append(RunPlan(first, config, architecture))
    return Plan(preset, Path(out), tuple(runs), device)


def describe_run(c: RunConfig) -> str:
    """The settings of a run that matter for its regime, in a few words (for the printed plan)."""
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


# ---------------------------------------------------------------------------------------------
# Costs (relative; only to start the longest jobs first)
# ---------------------------------------------------------------------------------------------


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


def evaluation_cost(config: RunConfig, kind: str, tasks: int, steps: int | None = None) -> float:
    """Relative duration of an evaluation: per task the query images plus the support images at
    each test step (``steps``, default the run's; NIL: no steps), five times for the freezing
    ablation."""
    steps = 0 if kind == "nil" else (config.test_inner_steps if steps is None else steps)
    per_task = config.ways * (config.queries + config.shots * (1 + steps))
    return tasks * per_task * (len(FREEZING_ROWS) if kind == "freezing" else 1)
