"""The meta-RL environments by name, and what every batched environment provides.

A *batched environment* runs ``T`` tasks x ``N`` trajectories at once: ``sample_tasks(rng, n)``
draws ``n`` tasks ``(n, task_size)``; ``reset(tasks, N, rng)`` starts ``N`` episodes per task and
returns the observations ``(T, N, observation_size)``; ``step(actions (T, N, action_size))``
advances all of them and returns ``(observations, rewards (T, N), done (T, N))``. Nothing in it
loops over environments in Python.

==================  =====================================  =======  ==========================
name                what                                   horizon  module
==================  =====================================  =======  ==========================
``2d-navigation``   point agent, goal in [-0.5, 0.5]^2      100      :mod:`meta.rl.navigation`
``halfcheetah-dir`` run forward or backward (MuJoCo)        200      :mod:`meta.rl.cheetah`
``halfcheetah-vel`` run at a goal speed in [0, 2] (MuJoCo)  200      :mod:`meta.rl.cheetah`
==================  =====================================  =======  ==========================

Imports: :mod:`meta.validation` and :mod:`meta.rl` (the HalfCheetah module imports ``mujoco``
only when one is built).
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from meta.rl.cheetah import HalfCheetah
from meta.rl.errors import DivergedError
from meta.rl.navigation import Navigation2D
from meta.validation import check_choice, check_int

__all__ = ["DEFAULT_HORIZONS", "ENVS", "BatchEnv", "check_finite", "make_env"]

#: Every environment's name.
ENVS: tuple[str, ...] = ("2d-navigation", "halfcheetah-dir", "halfcheetah-vel")
#: The paper's horizons (MAML, App. A.2: 100 for 2D navigation, 200 for HalfCheetah).
DEFAULT_HORIZONS: dict[str, int] = {"2d-navigation": 100, "halfcheetah-dir": 200, "halfcheetah-vel": 200}


class BatchEnv(Protocol):
    """``T`` tasks x ``N`` trajectories stepped together (module docstring)."""

    name: str
    observation_size: int
    action_size: int
    task_size: int
    horizon: int

    def sample_tasks(self, rng: np.random.Generator, n: int) -> np.ndarray: ...

    def reset(self, tasks: np.ndarray, trajectories: int, rng: np.random.Generator) -> np.ndarray: ...

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...


def make_env(name: str, horizon: int | None = None, **options: Any) -> BatchEnv:
    """The batched environment ``name`` (:data:`ENVS`) with ``horizon`` steps per episode
    (``None``: the paper's, :data:`DEFAULT_HORIZONS`); ``options`` go to
    :class:`meta.rl.cheetah.HalfCheetah` (``ctrl_cost_weight``, ``reset_noise_scale``).

    Examples:
        >>> make_env("2d-navigation").horizon
        100
        >>> make_env("2d-navigation", horizon=0)
        Traceback (most recent call last):
        ...
        ValueError: horizon must be an integer >= 1, got 0
    """
    check_choice("env", name, ENVS)
    steps = DEFAULT_HORIZONS[name] if horizon is None else check_int("horizon", horizon, minimum=1)
    if name == "2d-navigation":
        if options:
            raise ValueError(f"2d-navigation takes no options, got {sorted(options)}")
        return Navigation2D(steps)
    return HalfCheetah("direction" if name == "halfcheetah-dir" else "velocity", steps, **options)


def check_finite(env: BatchEnv, step: int, observations: np.ndarray, rewards: np.ndarray) -> None:
    """:class:`meta.rl.errors.DivergedError` naming ``env`` and ``step`` when an observation or
    a reward of the batch is NaN or infinite."""
    bad_obs = ~np.all(np.isfinite(observations), axis=-1)
    bad = bad_obs | ~np.isfinite(rewards)
    if np.any(bad):
        what = "observation" if np.any(bad_obs) else "reward"
        task, trajectory = (int(i[0]) for i in np.nonzero(bad))
        raise DivergedError(
            f"{env.name}: a NaN or infinite {what} at step {step} (task {task}, trajectory {trajectory},"
            f" {int(bad.sum())} trajectories in all): the simulation diverged"
        )
