"""The presets of ``python -m meta reproduce``: every setting of every stage, as data.

A :class:`StudyPreset` says which few-shot settings are studied, which seeds, how long each
run trains and how many tasks each measurement uses; :mod:`meta.study.plan` turns it into runs
and :mod:`meta.study.pipeline` runs their stages. Settings a preset leaves out (``None`` in
``run``) fall back to the paper defaults of the setting
(:data:`meta.run.paper_defaults.PAPER_DEFAULTS`, via :func:`meta.run.config.resolve`).

- ``quick``: the built-in ``glyphs`` data set, 5-way 1-shot, sized to finish in under ten minutes
  on a 2-core CPU (the README's first command). Smaller than the paper on purpose: 32 filters
  instead of 64, 5 queries per class instead of 15, a meta-batch of 8, about a thousand
  iterations. Fewer than 600 evaluation tasks where that is stated in ``notes``.
- ``omniglot``: the real Omniglot (MAML split), 5-way and 20-way 1-shot and 5-way 5-shot, the
  paper's network and inner loops, budgets sized for one CPU machine (about 2.5 hours with
  ``--jobs 2``; see its description).
- ``paper``: the paper's settings for a GPU: Omniglot 5/20-way and miniImageNet 5-way, 1 and 5
  shots, the reference's 60000 iterations, 600 test tasks,
  3 seeds.
- ``tiny``: a smoke test on the ``synthetic`` data set (seconds; the numbers mean nothing).
- ``rl``, ``paper-rl``, ``tiny-rl``: the meta-RL study alone (no few-shot setting; ``rl``,
  :class:`meta.study.rl_presets.RLStudy`): MAML-TRPO and ANIL-TRPO on 2D navigation and
  HalfCheetah-Direction/-Velocity, Table 2's RL columns and the per-layer similarity of the
  policy (:mod:`meta.study.rl_study`). ``rl`` fits about two hours on a 2-core CPU, ``paper-rl`` is
  the paper's 500 meta-iterations (a separate preset: RL runs on CPUs, ``paper`` on a GPU),
  ``tiny-rl`` is a smoke test.

Imports: :mod:`meta.study.rl_presets` (plain data).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from meta.study.rl_presets import RL_PAPER, RL_TINY, RL_TWO_HOURS, RLStudy

#: Fractions of training at which the MAML runs keep their weights for Figure 3 (the final
#: weights are added).
EARLY_FRACTIONS: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5)


@dataclass(frozen=True)
class Architecture:
    """A conv4 variant of the architecture study ("when does feature reuse hold?"): what it changes
    in a run's configuration, and a description for the report."""

    name: str
    description: str
    run: Mapping[str, Any] = field(default_factory=dict)


#: The conv4 variants of the architecture study, the reference first (the setting's own conv4:
#: for Omniglot-shaped data, stride-2 convolutions, the spatial mean and an N(0, 1) head).
ARCHITECTURES: dict[str, Architecture] = {
    a.name: a
    for a in (
        Architecture("reference", "the reference Omniglot conv4: stride 2, spatial mean, N(0, 1) head"),
        Architecture("glorot-head", "the reference conv4 with a Glorot-uniform head", {"head_init": "xavier"}),
        Architecture("zero-head", "the reference conv4 with a zero head", {"head_init": "zero"}),
        Architecture(
            "miniimagenet-conv4",
            "the miniImageNet conv4 on the same images: max-pooling, flattened features, Glorot head",
            {"variant": "miniimagenet"},
        ),
    )
}


@dataclass(frozen=True)
class Setting:
    """One few-shot setting and what differs in it from the preset's common settings.

    Attributes:
        dataset, ways, shots: the setting (e.g. ``omniglot``, 20, 1).
        run: :class:`meta.run.config.RunConfig` values for every run of this setting (e.g.
            ``iterations``), over the preset's ``run``.
        baselines: whether the body-training baselines of Table 5 are trained in this setting.
    """

    dataset: str
    ways: int
    shots: int
    run: Mapping[str, Any] = field(default_factory=dict)
    baselines: bool = True

    @property
    def label(self) -> str:
        """``<dataset>_<ways>w<shots>s``, the setting part of run folder names."""
        return f"{self.dataset}_{self.ways}w{self.shots}s"


@dataclass(frozen=True)
class StudyPreset:
    """Everything ``python -m meta reproduce --preset NAME`` runs.

    Attributes:
        name, description: what the preset is for and how long it takes.
        summary: one line for ``--help``: the data, the settings and the budget.
        settings: the few-shot settings studied.
        seeds: seeds of the MAML and ANIL runs (two or more give Table 3 its MAML-MAML and
            ANIL-ANIL reference).
        baseline_seeds: seeds of the body-training baselines (Table 5).
        run: :class:`meta.run.config.RunConfig` values common to every run (``None``: the paper
            default of the setting).
        baseline_run: values for the baselines only, over ``run`` (e.g. fewer iterations).
        eval_tasks: fixed test tasks behind every accuracy of Tables 1, 2, 4 and 5.
        snapshot_tasks: test tasks of each adaptation snapshot (Figure 2 similarity).
        similarity_tasks: test tasks whose query sets feed the MAML-vs-ANIL comparison (Table 3).
        analysis_queries: query examples per class of the test tasks whose representations feed
            the similarity analyses (snapshots, Table 3): more datapoints than the accuracies'
            ``test_queries`` (the reference's K), the same classes and support sets.
        early_fractions: fractions of training kept for Figure 3 (rounded to iterations).
        early_eval_tasks: test tasks of Figure 3's freezing accuracies at each kept iteration
            (its similarities use ``snapshot_tasks``).
        measures: similarity measures (names of :data:`repsim.measures.MEASURES`).
        architectures: conv4 variants of :data:`ARCHITECTURES` studied beside the reference, in
            the first setting, for the first seed (MAML and ANIL each; none: no study).
        architecture_run: run values of the variants' runs, over ``run`` (e.g. fewer iterations).
        architecture_tasks: test tasks of the study's accuracies (each variant alike).
        head_steps_factor: the study's freezing table is also computed with this many times the
            test-time inner steps (a frozen body leaves the head alone to adapt).
        device: torch device of training, evaluation and similarity.
        notes: caveats a reader of the results must know (written to ``preset.json``).
        rl: the meta-RL study (:class:`meta.study.rl_presets.RLStudy`; ``None``: none). A preset
            with ``rl`` and no ``settings`` runs the RL study alone.
    """

    name: str
    description: str
    settings: tuple[Setting, ...]
    summary: str = ""
    seeds: tuple[int, ...] = (0,)
    baseline_seeds: tuple[int, ...] = (0,)
    run: Mapping[str, Any] = field(default_factory=dict)
    baseline_run: Mapping[str, Any] = field(default_factory=dict)
    eval_tasks: int = 600
    snapshot_tasks: int = 20
    similarity_tasks: int = 20
    analysis_queries: int = 15
    early_fractions: tuple[float, ...] = EARLY_FRACTIONS
    early_eval_tasks: int = 600
    measures: tuple[str, ...] = ("cca", "cka")
    architectures: tuple[str, ...] = ()
    architecture_run: Mapping[str, Any] = field(default_factory=dict)
    architecture_tasks: int = 200
    head_steps_factor: int = 4
    device: str = "cpu"
    notes: tuple[str, ...] = ()
    rl: RLStudy | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (tuples as lists, mappings as dicts)."""
        return _plain(dataclasses.asdict(self))

    def replace(self, **changes: Any) -> StudyPreset:
        """A copy with ``changes`` (field -> value)."""
        return dataclasses.replace(self, **changes)


def _plain(value: Any) -> Any:
    """``value`` with mappings as dicts (string keys) and tuples as lists, recursively."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# Logging and checkpointing common to every preset: a resumable checkpoint often enough that an
# interruption loses little, validation on 100 fixed tasks a few times per run.
_BOOKKEEPING = {"checkpoint_every": 100, "log_every": 10, "val_tasks": 100}

QUICK = StudyPreset(
    name="quick",
    summary="built-in glyphs, 5-way 1-shot, 1 seed, 800 iterations, with the architecture study:"
    " under 10 minutes on 2 CPU cores",
    description=(
        "Built-in glyphs data set, 5-way 1-shot, one seed: the whole study in under 10 minutes on a"
        " 2-core CPU (--jobs 2). Scaled down: 32 filters, 5 queries per class, meta-batch 8 and 800"
        " iterations per run, with the step counts of the paper's miniImageNet setting (5 inner steps at"
        " training, 10 at test, here of 0.08) and a meta learning rate of 3e-3 so that MAML and ANIL both train"
        " in that budget."
    ),
    settings=(Setting("glyphs", 5, 1),),
    seeds=(0,),
    baseline_seeds=(0,),
    run={
        **_BOOKKEEPING,
        "filters": 32,
        "queries": 5,
        "meta_batch_size": 8,
        "iterations": 800,
        "meta_lr": 3e-3,
        "inner_steps": 5,
        "inner_lr": 0.08,
        "test_inner_steps": 10,
        "test_inner_lr": 0.08,
        "val_every": 500,
        "val_tasks": 50,
    },
    baseline_run={"iterations": 500},
    eval_tasks=300,
    snapshot_tasks=5,
    similarity_tasks=5,
    early_eval_tasks=100,
    architectures=("glorot-head", "zero-head", "miniimagenet-conv4"),
    architecture_run={"iterations": 200, "meta_batch_size": 4},
    architecture_tasks=50,
    head_steps_factor=4,
    notes=(
        "Scaled down for a 2-core CPU: 32 filters (paper: 64), 5 queries per class (the reference: K for"
        " Omniglot), meta-batch 8 (paper: 32), 800 iterations (paper: 60000).",
        "Architecture study: the three conv4 variants are trained for 200 iterations of meta-batch 4 (MAML and"
        " ANIL, seed 0) and tested on 50 tasks; the reference conv4 is the main runs' (800 iterations).",
        "Table 5's baselines are trained for 500 iterations; accuracies use 300 test tasks, similarities 5 test tasks.",
        "Inner loop 5 steps of 0.08 at training and 10 at test (the step counts of the paper's miniImageNet"
        " setting; the learning rate is for the reference loss, summed over the support set and divided by"
        " K, i.e. 0.4 on the mean cross-entropy) and meta learning rate 3e-3 (paper, Omniglot 5-way: 1 step"
        " of 0.4 at training, 3 at test, 1e-3). Measured on glyphs with the paper's Omniglot 5-way inner loop"
        " instead: MAML 85.5%, ANIL 79.3%, NIL 89.9% after 1000 iterations, ANIL's N(0, 1) head (as in MAML's"
        " code) adapting too little in one step for ANIL and MAML to be compared.",
        "Figure 3's freezing accuracies use 100 test tasks per checkpoint (Tables 1, 2, 4, 5: 300).",
        "One seed: Table 3 has no MAML-MAML / ANIL-ANIL reference and std_seeds is empty.",
    ),
)

OMNIGLOT = StudyPreset(
    name="omniglot",
    summary="real Omniglot, 5/20-way 1-shot and 5-way 5-shot, 1 seed, 600-1200 iterations: about 2.5 hours on"
    " 2 CPU cores (needs --data-root)",
    description=(
        "Real Omniglot (MAML protocol of meta.data.omniglot: 4400/400/1692 rotated-character classes),"
        " 5-way and 20-way 1-shot and 5-way 5-shot, the paper's network and inner loops, one seed, shortened"
        " training: about 2.6 CPU-hours of training (the architecture study's six runs included; measured"
        " one-thread costs per iteration on a 2-core CPU: MAML 0.86 s at 5-way 1-shot, 1.6 s at 5-way 5-shot,"
        " 1.7 s at 20-way 1-shot with meta-batch 8; ANIL about 0.4x MAML), then 1-1.5 of evaluation and"
        " similarity (conv layers over every inner step): about 2.5 hours with --jobs 2. Needs --data-root"
        " DIR with images_background.zip and images_evaluation.zip."
    ),
    settings=(
        Setting("omniglot", 5, 1, {"iterations": 1200}),
        Setting("omniglot", 5, 5, {"iterations": 600}, baselines=False),
        Setting("omniglot", 20, 1, {"iterations": 1200, "meta_batch_size": 8}),
    ),
    seeds=(0,),
    baseline_seeds=(0,),
    run={**_BOOKKEEPING, "val_every": 400},
    eval_tasks=600,
    snapshot_tasks=20,
    similarity_tasks=20,
    early_eval_tasks=200,
    architectures=("glorot-head", "zero-head", "miniimagenet-conv4"),
    architecture_run={"iterations": 600},
    architecture_tasks=200,
    notes=(
        "Training is shortened for one CPU machine (paper: 60000 iterations, the reference's): 1200"
        " iterations at 1-shot, 600 at 5-way 5-shot; 20-way uses meta-batch 8 (paper: 16). 20-way"
        " 5-shot is left out (its MAML costs 3.5 s per iteration here).",
        "Architecture study in the 5-way 1-shot setting: the three conv4 variants are trained for 600"
        " iterations (MAML and ANIL, seed 0) and tested on 200 tasks; the reference conv4 is the main"
        " runs' (1200 iterations).",
        "Table 5's baselines are trained in the 1-shot settings only.",
        "Figure 3's freezing accuracies use 200 test tasks per checkpoint (Tables 1, 2, 4, 5: 600).",
        "One seed: Table 3 has no MAML-MAML / ANIL-ANIL reference and std_seeds is empty.",
    ),
)

PAPER = StudyPreset(
    name="paper",
    summary="the paper's settings (Omniglot and miniImageNet, 3 seeds, 60000 iterations): days of"
    " GPU time (needs --data-root for both)",
    description=(
        "The paper's settings on a GPU: Omniglot 5-way and 20-way and miniImageNet 5-way, 1-shot and"
        " 5-shot, the paper's hyperparameters and the reference's 60000 iterations, 3 seeds, 600 test tasks."
        " Days of GPU time; not meant for a CPU. Needs"
        " --data-root omniglot=DIR and --data-root miniimagenet=DIR (or $OMNIGLOT_DIR, $MINIIMAGENET_DIR)."
    ),
    settings=(
        Setting("omniglot", 5, 1, baselines=False),
        Setting("omniglot", 5, 5, baselines=False),
        Setting("omniglot", 20, 1, baselines=False),
        Setting("omniglot", 20, 5, baselines=False),
        Setting("miniimagenet", 5, 1),
        Setting("miniimagenet", 5, 5),
    ),
    seeds=(0, 1, 2),
    baseline_seeds=(0, 1, 2),
    run={**_BOOKKEEPING, "checkpoint_every": 1000, "log_every": 100, "val_every": 2000, "path": "grouped"},
    eval_tasks=600,
    snapshot_tasks=50,
    similarity_tasks=50,
    early_eval_tasks=600,
    device="cuda",
    notes=(
        "Table 5's baselines are trained on miniImageNet only, as in the paper.",
        "Iterations, inner loops and meta-batch sizes are the paper's defaults"
        " (meta.run.paper_defaults.PAPER_DEFAULTS).",
        "Table 2's reinforcement-learning columns are the preset paper-rl (500 meta-iterations, 3 seeds, on CPUs).",
    ),
)

TINY = StudyPreset(
    name="tiny",
    summary="synthetic data, a 4-filter conv4, 20 iterations: a smoke test of the pipeline in seconds",
    description="Smoke test of the pipeline on the synthetic data set: seconds on one core; the numbers mean nothing.",
    settings=(Setting("synthetic", 3, 1),),
    seeds=(0, 1),
    baseline_seeds=(0,),
    run={
        "filters": 4,
        "queries": 5,
        "meta_batch_size": 2,
        "iterations": 20,
        "inner_steps": 1,
        "inner_lr": 0.4,
        "test_inner_steps": 2,
        "val_every": 10,
        "val_tasks": 4,
        "checkpoint_every": 10,
        "log_every": 5,
        "batch_size": 32,
    },
    baseline_run={"iterations": 10},
    eval_tasks=8,
    snapshot_tasks=3,
    similarity_tasks=3,
    early_fractions=(0.25, 0.5),
    early_eval_tasks=6,
    architectures=("glorot-head", "zero-head", "miniimagenet-conv4"),
    architecture_tasks=6,
    head_steps_factor=2,
    notes=("Synthetic data and a 4-filter network: for testing the pipeline only.",),
)

_RL_NOTES = (
    "Returns are not comparable across code bases (the paper's are from its own environments and horizons):"
    " compare MAML with ANIL within a column, not our numbers with the paper's.",
    "The paper does not say after how many test-time inner steps its returns are measured; table2_rl.md sets"
    " the return after one step (the inner loop of meta-training) beside them, the CSV has 0..3 steps.",
    "Horizons: 100 steps (2D navigation), 200 (HalfCheetah), as in the MAML references.",
)

RL = StudyPreset(
    name="rl",
    summary="meta-RL: MAML-TRPO vs ANIL-TRPO, 2D navigation (100 its, 2 seeds) and HalfCheetah-Dir/-Vel"
    " (40 its, 1 seed): about two hours on 2 CPU cores with --jobs 2",
    description=(
        "The meta-RL part of Table 2 (MAML-TRPO and ANIL-TRPO) and the per-layer similarity of the policy"
        " before vs after adaptation, sized for about two hours on a 2-core CPU with --jobs 2 (about 4"
        " CPU-hours): 2D navigation in full (100 meta-iterations, the reference's, 2 seeds: 4 runs of about"
        " 14 min at 8.4 s per meta-iteration), HalfCheetah-Direction and HalfCheetah-Velocity at 40"
        " meta-iterations (paper: 500; 1 seed: 4 runs of about 40 min at 60 s per meta-iteration)."
        " Returns after 0..3 inner steps on 40 fixed test tasks."
    ),
    settings=(),
    notes=(
        "HalfCheetah runs 40 meta-iterations instead of the paper's 500 and one seed instead of three: its"
        " returns are of barely trained policies; 2D navigation runs the reference's 100 with 2 seeds.",
        *_RL_NOTES,
    ),
    rl=RL_TWO_HOURS,
)

PAPER_RL = StudyPreset(
    name="paper-rl",
    summary="meta-RL at the paper's budget: 3 environments, 500 meta-iterations, 3 seeds: about 107 CPU-hours",
    description=(
        "The meta-RL part of Table 2 at the paper's budget: MAML-TRPO and ANIL-TRPO on 2D navigation,"
        " HalfCheetah-Direction and HalfCheetah-Velocity, 500 meta-iterations each, 3 seeds; about 107"
        " CPU-hours (HalfCheetah: 12 runs of about 8.3 hours; 2D navigation: 6 of about 70 min), e.g. a day"
        " on a 4-core machine with --jobs 4. Separate from the paper preset because the RL runs use CPUs only."
    ),
    settings=(),
    notes=_RL_NOTES,
    rl=RL_PAPER,
)

TINY_RL = StudyPreset(
    name="tiny-rl",
    summary="meta-RL smoke test: 2D navigation, 4 meta-iterations of 3 tasks x 3 trajectories: seconds",
    description="Smoke test of the meta-RL study: 2D navigation, 4 meta-iterations, 2 seeds; seconds; the numbers"
    " mean nothing.",
    settings=(),
    notes=("A policy of 8 units, 3 tasks x 3 trajectories of 10 steps: for testing the pipeline only.",),
    rl=RL_TINY,
)

#: The presets of ``python -m meta reproduce --preset NAME``, by name.
STUDY_PRESETS: dict[str, StudyPreset] = {p.name: p for p in (QUICK, OMNIGLOT, PAPER, TINY, RL, PAPER_RL, TINY_RL)}


def get_study_preset(name: str) -> StudyPreset:
    """The preset called ``name`` (ValueError naming the known presets otherwise)."""
    if name not in STUDY_PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(STUDY_PRESETS)}")
    return STUDY_PRESETS[name]
