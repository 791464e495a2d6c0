"""The meta-RL part of a reproduction preset, as data: which environments, how many
meta-iterations and seeds each, and how many test tasks each measurement uses
(:class:`RLStudy`, the ``rl`` field of :class:`meta.study.presets.StudyPreset`).

The budgets below are the RL parts of the presets ``rl``, ``paper-rl`` and ``tiny-rl``. Their
costs are measured on this project's 2-core CPU, one torch thread per run: about 8.4 s per
meta-iteration of 2D navigation (20 tasks x 20 trajectories x horizon 100) and about 60 s per
meta-iteration of HalfCheetah (40 tasks x 20 trajectories x horizon 200); the evaluation, the
snapshot and the similarity analysis of a run cost a few meta-iterations more.

- :data:`RL_TWO_HOURS` (preset ``rl``): 2D navigation in full (the reference's 100
  meta-iterations, 2 seeds: 4 runs x 14 min), HalfCheetah-Direction and -Velocity at 40 of the
  paper's 500 meta-iterations (1 seed: 4 runs x 40 min); about 4 CPU-hours, two hours with
  ``--jobs 2``.
- :data:`RL_PAPER` (preset ``paper-rl``): the paper's 500 meta-iterations in every environment,
  3 seeds (the paper's three initialisations): about 107 CPU-hours (HalfCheetah: 12 runs of
  8.3 hours; 2D navigation: 6 runs of 70 min).
- :data:`RL_TINY` (preset ``tiny-rl``): 2D navigation, 4 meta-iterations of 3 tasks x 3
  trajectories of 10 steps, a policy of 8 units: seconds; the numbers mean nothing.

Imports: nothing of :mod:`meta` (plain data).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: The meta-RL algorithms compared (Table 2's RL columns): MAML-TRPO and ANIL-TRPO.
RL_STUDY_ALGORITHMS: tuple[str, ...] = ("maml-trpo", "anil-trpo")


@dataclass(frozen=True)
class RLEnvBudget:
    """One environment of the RL study and its budget.

    Attributes:
        env: an environment of :data:`meta.rl.envs.ENVS` (``2d-navigation``, ``halfcheetah-dir``,
            ``halfcheetah-vel``).
        iterations: meta-iterations of each run (MAML-TRPO and ANIL-TRPO alike).
        seeds: seeds of the runs (each algorithm once per seed).
        run: :class:`meta.run.rl_config.RLConfig` values of this environment's runs, over the
            study's ``run`` (e.g. ``meta_batch_size``).
    """

    env: str
    iterations: int
    seeds: tuple[int, ...] = (0,)
    run: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RLStudy:
    """The meta-RL study of a preset: MAML-TRPO and ANIL-TRPO per environment and seed.

    Attributes:
        envs: the environments and their budgets.
        run: :class:`meta.run.rl_config.RLConfig` values common to every run (``None`` or absent:
            the environment's default, :data:`meta.run.rl_config.ENV_DEFAULTS`).
        eval_tasks: fixed test tasks of the returns after 0 .. ``test_inner_steps`` inner steps.
        similarity_tasks: test tasks of the per-layer similarity before vs after one inner step.
        snapshot_tasks: test tasks kept in each run's adaptation snapshot.
    """

    envs: tuple[RLEnvBudget, ...]
    run: Mapping[str, Any] = field(default_factory=dict)
    eval_tasks: int = 40
    similarity_tasks: int = 20
    snapshot_tasks: int = 4


#: Bookkeeping of every RL run of a reproduction: checkpoints often enough that an interruption
#: loses little, no progress bar (the pipeline shows one per run), one thread.
_RL_BOOKKEEPING: dict[str, Any] = {"checkpoint_every": 5, "log_every": 1, "progress": False, "threads": 1}

RL_TWO_HOURS = RLStudy(
    envs=(
        RLEnvBudget("2d-navigation", 100, seeds=(0, 1)),
        RLEnvBudget("halfcheetah-dir", 40),
        RLEnvBudget("halfcheetah-vel", 40),
    ),
    run=_RL_BOOKKEEPING,
    eval_tasks=40,
    similarity_tasks=20,
    snapshot_tasks=4,
)

RL_PAPER = RLStudy(
    envs=tuple(
        RLEnvBudget(env, 500, seeds=(0, 1, 2)) for env in ("2d-navigation", "halfcheetah-dir", "halfcheetah-vel")
    ),
    run={**_RL_BOOKKEEPING, "checkpoint_every": 10},
    eval_tasks=40,
    similarity_tasks=40,
    snapshot_tasks=8,
)

RL_TINY = RLStudy(
    envs=(RLEnvBudget("2d-navigation", 4, seeds=(0, 1)),),
    run={
        **_RL_BOOKKEEPING,
        "checkpoint_every": 2,
        "meta_batch_size": 3,
        "trajectories": 3,
        "horizon": 10,
        "hidden": 8,
    },
    eval_tasks=4,
    similarity_tasks=3,
    snapshot_tasks=2,
)
