"""Sampling episodes: every trajectory of every task of a meta-batch stepped together, one
batched policy evaluation and one batched environment step per time step.

At step ``t`` the policy (shared parameters, or one set per task after adaptation) maps the
observations ``o_t (T, N, D)`` to ``mu_t, sigma``; the action is ``a_t = mu_t + sigma * eps_t``,
``eps_t ~ N(0, I)`` from a seeded ``torch.Generator``; the environment (:mod:`meta.rl.envs`)
returns ``o_{t+1}``, ``r_t`` and ``done_t``. A trajectory is *alive* at step ``t`` until the step
after its ``done``; the mask ``m_t`` is 1 while alive and 0 after, and the rewards of masked steps
are 0. The actions kept are the policy's samples, before the environment clips them (the
likelihoods of the policy gradient are those of the samples, as in the references).

Imports: :mod:`meta.rl` only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from meta.rl.envs import BatchEnv, check_finite
from meta.rl.policy import distribution

__all__ = ["Episodes", "random_streams", "sample"]


@dataclass(frozen=True)
class Episodes:
    """``N`` trajectories of ``H`` steps for each of ``T`` tasks.

    Attributes:
        observations: ``(T, N, H, D)`` in the policy's dtype; ``observations[..., t, :]`` is the
            observation the action of step ``t`` was chosen on.
        actions: ``(T, N, H, A)``, the policy's samples (before the environment clips them).
        rewards: ``(T, N, H)`` float64, 0 on masked steps.
        mask: ``(T, N, H)`` in the policy's dtype: 1 while the trajectory is alive, then 0.
    """

    observations: Tensor
    actions: Tensor
    rewards: Tensor
    mask: Tensor

    @property
    def tasks(self) -> int:
        return self.rewards.shape[0]

    def returns(self) -> Tensor:
        """Undiscounted return of each trajectory, ``sum_t r_t``: ``(T, N)`` float64."""
        return self.rewards.sum(-1)

    def task_returns(self) -> Tensor:
        """Mean return over each task's trajectories: ``(T,)`` float64."""
        return self.returns().mean(-1)

    def flat(self) -> tuple[Tensor, Tensor, Tensor]:
        """Observations ``(T, N*H, D)``, actions ``(T, N*H, A)`` and mask ``(T, N*H)`` (each task's
        steps in one row, for the per-task batched policy)."""
        t = self.tasks
        return (
            self.observations.reshape(t, -1, self.observations.shape[-1]),
            self.actions.reshape(t, -1, self.actions.shape[-1]),
            self.mask.reshape(t, -1),
        )


def random_streams(*key: int) -> tuple[np.random.Generator, torch.Generator]:
    """A numpy generator (tasks, starts) and a torch generator (action noise), both a pure function
    of the integers ``key`` (e.g. ``(seed, iteration)``): ``numpy.random.default_rng(key)``, and
    torch seeded from its first draw. A meta-iteration seeded so depends on nothing else, which is
    what makes a resumed run repeat an uninterrupted one bit for bit."""
    rng = np.random.default_rng([int(k) for k in key])
    return rng, torch.Generator().manual_seed(int(rng.integers(2**62)))


@torch.no_grad()
def sample(
    env: BatchEnv,
    policy: nn.Module,
    params: Mapping[str, Tensor],
    tasks: np.ndarray,
    trajectories: int,
    rng: np.random.Generator,
    generator: torch.Generator,
) -> Episodes:
    """Run ``trajectories`` episodes of ``env.horizon`` steps for each task of ``tasks`` ``(T, ...)``
    with the policy's ``params`` (shared, or per task with a leading ``T``; module docstring).
    ``rng`` draws the environment's starts, ``generator`` the action noise."""
    dtype = params["log_std"].dtype
    n_tasks, horizon = len(tasks), env.horizon
    observations = np.empty((n_tasks, trajectories, horizon, env.observation_size))
    actions = torch.empty((n_tasks, trajectories, horizon, env.action_size), dtype=dtype)
    rewards = np.zeros((n_tasks, trajectories, horizon))
    mask = np.zeros((n_tasks, trajectories, horizon))
    alive = np.ones((n_tasks, trajectories), dtype=bool)
    obs = env.reset(tasks, trajectories, rng)
    for t in range(horizon):
        observations[:, :, t] = obs
        mean, log_std = distribution(policy, params, torch.as_tensor(obs, dtype=dtype))
        noise = torch.randn(mean.shape, generator=generator, dtype=dtype)
        action = mean + torch.exp(log_std) * noise
        actions[:, :, t] = action
        obs, reward, done = env.step(action.numpy())
        check_finite(env, t, obs, reward)
        mask[:, :, t] = alive
        rewards[:, :, t] = np.where(alive, reward, 0.0)
        alive &= ~done
    return Episodes(
        torch.as_tensor(observations, dtype=dtype),
        actions,
        torch.from_numpy(rewards),
        torch.as_tensor(mask, dtype=dtype),
    )
