"""2D navigation (Finn et al. 2017, section 5.3 and App. A.2), every task and trajectory stepped
together in numpy.

A point agent starts at the origin of the plane. A task is a goal ``g`` drawn uniformly from the
square ``[-0.5, 0.5]^2``. An action ``a`` in R^2 is clipped to ``[-0.1, 0.1]^2`` and moves the
agent; the reward is minus the **Euclidean distance** (not squared) from the new position to the
goal::

    s_0 = (0, 0),   s_{t+1} = s_t + clip(a_t, -0.1, 0.1),   r_t = -||s_{t+1} - g||_2

The observation is the position ``s_t``. An episode ends after ``horizon`` steps (100 in the
paper) or as soon as the agent is within 0.01 of the goal in both coordinates (the references'
``done``; the sampler masks the steps after it). References: cbfinn/maml_rl
``maml_examples/point_env_randgoal.py`` (``sample_goals``: ``uniform(-0.5, 0.5)``; ``step``:
``reward = -(x ** 2 + y ** 2) ** 0.5``, ``done = abs(x) < 0.01 and abs(y) < 0.01``) and
tristandeleu/pytorch-maml-rl ``maml_rl/envs/navigation.py`` (the same, with the action clipped
to ``[-0.1, 0.1]`` inside ``step``, as here).

Imports: nothing of :mod:`meta` (numpy only).
"""

from __future__ import annotations

import numpy as np

__all__ = ["GOAL_RANGE", "MAX_SPEED", "Navigation2D"]

#: Goals are uniform in ``[-GOAL_RANGE, GOAL_RANGE]^2``.
GOAL_RANGE = 0.5
#: Each coordinate of an action is clipped to ``[-MAX_SPEED, MAX_SPEED]``.
MAX_SPEED = 0.1
#: The episode ends when ``|s - g| < DONE_DISTANCE`` in both coordinates.
DONE_DISTANCE = 0.01


class Navigation2D:
    """A batch of 2D-navigation episodes: ``T`` tasks (goals) x ``N`` trajectories each.

    Attributes:
        observation_size, action_size: 2 and 2.
        horizon: steps per episode.
        task_size: numbers per task (the goal's two coordinates).
    """

    name = "2d-navigation"
    observation_size = 2
    action_size = 2
    task_size = 2

    def __init__(self, horizon: int = 100) -> None:
        self.horizon = horizon
        self._goals = np.zeros((0, 1, 2))
        self._position = np.zeros((0, 0, 2))

    def sample_tasks(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` goals ``(n, 2)``, uniform in ``[-0.5, 0.5]^2``."""
        return rng.uniform(-GOAL_RANGE, GOAL_RANGE, size=(n, 2))

    def reset(self, tasks: np.ndarray, trajectories: int, rng: np.random.Generator) -> np.ndarray:
        """Start ``trajectories`` episodes per goal of ``tasks`` ``(T, 2)`` at the origin; returns
        the observations ``(T, N, 2)`` (``rng`` is unused: the start is deterministic)."""
        del rng
        self._goals = np.asarray(tasks, dtype=np.float64).reshape(-1, 1, 2)
        self._position = np.zeros((len(self._goals), trajectories, 2))
        return self._position.copy()

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One step of every episode: ``actions (T, N, 2)`` -> ``(observations (T, N, 2),
        rewards (T, N), done (T, N) bool)`` (module docstring for the formulas)."""
        self._position = self._position + np.clip(actions, -MAX_SPEED, MAX_SPEED)
        offset = self._position - self._goals
        reward = -np.sqrt(np.sum(offset**2, axis=-1))
        done = np.all(np.abs(offset) < DONE_DISTANCE, axis=-1)
        return self._position.copy(), reward, done
