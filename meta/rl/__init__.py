"""Meta-RL: batched environments (2D navigation; HalfCheetah-Direction and -Velocity on MuJoCo),
the Gaussian MLP policy, returns and the linear feature baseline, the REINFORCE inner loop with a
per-layer adapt mask, TRPO, and MAML-TRPO / ANIL-TRPO.

One topic per module: :mod:`~meta.rl.navigation` and :mod:`~meta.rl.cheetah` (the tasks and their
rewards), :mod:`~meta.rl.envs` (by name), :mod:`~meta.rl.policy`, :mod:`~meta.rl.sampler`
(episodes of every task stepped together), :mod:`~meta.rl.returns` (baseline, GAE),
:mod:`~meta.rl.inner` (the inner step), :mod:`~meta.rl.trpo`, :mod:`~meta.rl.metalearner` (a
meta-iteration, the test procedure), :mod:`~meta.rl.errors`.

Imports: :mod:`meta.core` and :mod:`meta.validation` only (and torch, numpy; ``mujoco`` lazily).
"""

from meta.rl.envs import DEFAULT_HORIZONS, ENVS, make_env
from meta.rl.errors import DivergedError, MissingExtraError
from meta.rl.metalearner import ALGORITHMS, MetaRL, adaptation_trajectories, inner_loop_of, meta_iteration
from meta.rl.policy import LAYERS, PARAMETER_GROUPS, POLICY_FACTORY, GaussianMLP, gaussian_mlp
from meta.rl.sampler import Episodes, random_streams, sample
from meta.rl.trpo import TRPO

__all__ = [
    "ALGORITHMS",
    "DEFAULT_HORIZONS",
    "ENVS",
    "LAYERS",
    "PARAMETER_GROUPS",
    "POLICY_FACTORY",
    "TRPO",
    "DivergedError",
    "Episodes",
    "GaussianMLP",
    "MetaRL",
    "MissingExtraError",
    "adaptation_trajectories",
    "gaussian_mlp",
    "inner_loop_of",
    "make_env",
    "meta_iteration",
    "random_streams",
    "sample",
]
