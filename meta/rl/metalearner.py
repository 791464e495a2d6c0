"""MAML-TRPO and ANIL-TRPO (Finn et al. 2017, App. A.2; Raghu et al. 2020, section 4.2): one
meta-iteration, and the test procedure (adaptation by several inner steps).

One meta-iteration on a meta-batch of ``T`` tasks, with ``theta`` the policy's parameters::

    D_t  = N trajectories of task t with pi_theta                    (sampling)
    theta'_t = theta - alpha grad L_t(theta; D_t)                    (inner step, meta.rl.inner)
    D'_t = N trajectories of task t with pi_theta'_t                 (sampling)
    J(theta) = (1/T) sum_t (1/sum m) sum m * pi_theta'_t(a|s) / pi_old(a|s) * A'      on D'_t
    KL(theta) = (1/T) sum_t (1/sum m) sum m * KL(pi_old(.|s) || pi_theta'_t(.|s))     on D'_t
    theta <- TRPO step on the loss -J with KL <= max_kl                               (meta.rl.trpo)

``pi_old`` is ``pi_theta'_t`` at the current ``theta`` (detached), so ``J = mean A' = 0`` and
``KL = 0`` there; the gradient of ``J`` is MAML's meta-policy-gradient, second order through the
inner step unless first order (cbfinn/maml_rl ``sandbox/rocky/tf/algos/maml_npo.py``,
tristandeleu/pytorch-maml-rl ``maml_rl/metalearners/maml_trpo.py``). ANIL-TRPO is the same with
only ``head`` adapting in the inner step (any frozen set works). The line search re-adapts each
candidate ``theta`` on the same ``D_t`` (no graph).

Test procedure (:func:`adaptation_trajectories`): from ``theta_0 = theta``, for ``k = 0 .. S``
sample ``N`` trajectories with ``theta_k``, then (while ``k < S``) take an inner step on them with
``alpha_k`` (0.1, then 0.05 for further steps, as in MAML's evaluation) to get ``theta_{k+1}``.
The average return after ``k`` steps is that of the trajectories of ``theta_k``.

Imports: :mod:`meta.core.inner` and :mod:`meta.rl`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from meta.core.inner import InnerLoop
from meta.rl.envs import BatchEnv
from meta.rl.inner import adapt
from meta.rl.policy import PARAMETER_GROUPS, distribution, kl_divergence, log_prob
from meta.rl.returns import advantages
from meta.rl.sampler import Episodes, sample
from meta.rl.trpo import TRPO, trpo_step

__all__ = [
    "ALGORITHMS",
    "AdaptationStep",
    "MetaRL",
    "adaptation_trajectories",
    "describe",
    "inner_loop_of",
    "meta_iteration",
    "surrogate",
]

#: The meta-RL algorithms (``--algorithm``).
ALGORITHMS: tuple[str, ...] = ("maml-trpo", "anil-trpo")


def inner_loop_of(algorithm: str, lr: float, frozen: Sequence[str] = (), first_order: bool = False) -> InnerLoop:
    """The training inner loop of ``algorithm``: one step of ``lr``; ANIL adapts ``head`` only,
    MAML every group not in ``frozen``."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown meta-RL algorithm {algorithm!r}; choose from {', '.join(ALGORITHMS)}")
    if algorithm == "anil-trpo":
        if frozen:
            raise ValueError("anil-trpo already adapts only the head; --freeze-inner applies to maml-trpo")
        return InnerLoop(1, lr, adapt=frozenset({"head"}), first_order=first_order)
    adapt_set = [g for g in PARAMETER_GROUPS if g not in frozen]
    unknown = sorted(set(frozen) - set(PARAMETER_GROUPS))
    if unknown or not adapt_set:
        raise ValueError(
            f"--freeze-inner {list(frozen)}: "
            + (f"unknown layers {unknown}" if unknown else "every layer is frozen, nothing would adapt")
            + f"; the layers are {', '.join(PARAMETER_GROUPS)}"
        )
    return InnerLoop(
        1, lr, adapt=None if len(adapt_set) == len(PARAMETER_GROUPS) else frozenset(adapt_set), first_order=first_order
    )


@dataclass(frozen=True)
class MetaRL:
    """The settings of a meta-iteration besides the policy and the environment.

    Attributes:
        inner: the inner step (:func:`inner_loop_of`): ``lr`` is alpha, ``adapt`` the groups,
            ``first_order``.
        trajectories: ``N``, trajectories per task for the inner step and for the outer one.
        gamma, gae_lambda: discount and GAE's lambda (0.99, 1.0).
        normalize_advantages: normalise each task's advantages (rllab's ``center_adv``).
        trpo: the outer step's settings.
    """

    inner: InnerLoop
    trajectories: int = 20
    gamma: float = 0.99
    gae_lambda: float = 1.0
    normalize_advantages: bool = True
    trpo: TRPO = field(default_factory=TRPO)

    def advantages(self, episodes: Episodes) -> Tensor:
        return advantages(episodes, self.gamma, self.gae_lambda, normalize=self.normalize_advantages)


def surrogate(
    policy: nn.Module, adapted: Mapping[str, Tensor], episodes: Episodes, adv: Tensor, old: tuple[Tensor, Tensor]
) -> tuple[Tensor, Tensor]:
    """``(-J, KL)`` of the module docstring for per-task parameters ``adapted`` on the tasks'
    ``episodes`` (advantages ``adv`` ``(T, N, H)``) against ``old = (mu_old, log_std_old)``."""
    observations, actions, mask = episodes.flat()
    mean, log_std = distribution(policy, adapted, observations)
    ratio = torch.exp(log_prob(mean, log_std, actions) - log_prob(*old, actions))
    count = mask.sum(-1)
    loss = -((ratio * adv.reshape(mask.shape) * mask).sum(-1) / count).mean()
    kl = ((kl_divergence(*old, mean, log_std) * mask).sum(-1) / count).mean()
    return loss, kl


def meta_iteration(
    policy: nn.Module,
    env: BatchEnv,
    tasks: np.ndarray,
    rl: MetaRL,
    rng: np.random.Generator,
    generator: torch.Generator,
) -> dict[str, float]:
    """One meta-iteration on ``tasks`` (module docstring); updates ``policy`` in place. Returns
    the metrics: ``return_before`` and ``return_after`` (mean undiscounted return of ``D`` and
    ``D'``), ``loss_before``/``loss_after`` (``-J``), ``kl`` (after the step), ``step_fraction``,
    and the seconds spent ``sampling_s``, ``inner_s``, ``trpo_s``."""
    theta = dict(policy.named_parameters())
    clock = time.perf_counter()
    train = sample(env, policy, theta, tasks, rl.trajectories, rng, generator)
    train_adv = rl.advantages(train)
    sampling = time.perf_counter() - clock

    clock = time.perf_counter()
    adapted = adapt(policy, theta, train, train_adv, rl.inner)
    inner_s = time.perf_counter() - clock

    clock = time.perf_counter()
    valid = sample(env, policy, {k: v.detach() for k, v in adapted.items()}, tasks, rl.trajectories, rng, generator)
    valid_adv = rl.advantages(valid)
    sampling += time.perf_counter() - clock

    clock = time.perf_counter()
    with torch.no_grad():
        old = tuple(t.detach() for t in distribution(policy, adapted, valid.flat()[0]))
    loss, kl = surrogate(policy, adapted, valid, valid_adv, old)
    names = list(theta)

    def evaluate(candidate: list[Tensor]) -> tuple[float, float]:
        params = dict(zip(names, candidate))
        with torch.no_grad():
            new = adapt(policy, params, train, train_adv, rl.inner, meta_grad=False)
            loss_c, kl_c = surrogate(policy, new, valid, valid_adv, old)
        return float(loss_c), float(kl_c)

    new_theta, step = trpo_step(loss, kl, list(theta.values()), evaluate, rl.trpo)
    with torch.no_grad():
        for p, value in zip(theta.values(), new_theta):
            p.copy_(value)
    trpo_s = time.perf_counter() - clock
    return {
        "return_before": float(train.task_returns().mean()),
        "return_after": float(valid.task_returns().mean()),
        "loss_before": step.loss_before,
        "loss_after": step.loss_after,
        "kl": step.kl_after,
        "step_fraction": step.step_fraction,
        "sampling_s": sampling,
        "inner_s": inner_s,
        "trpo_s": trpo_s,
    }


@dataclass(frozen=True)
class AdaptationStep:
    """The policy after ``k`` inner steps (per-task parameters, detached) and the trajectories it
    sampled."""

    k: int
    params: dict[str, Tensor]
    episodes: Episodes


def adaptation_trajectories(
    policy: nn.Module,
    env: BatchEnv,
    tasks: np.ndarray,
    inner: InnerLoop,
    lrs: Sequence[float],
    trajectories: int,
    rng: np.random.Generator,
    generator: torch.Generator,
    *,
    gamma: float = 0.99,
    gae_lambda: float = 1.0,
    normalize_advantages: bool = True,
) -> list[AdaptationStep]:
    """The test procedure (module docstring): ``len(lrs) + 1`` :class:`AdaptationStep` (``k = 0``
    the meta-learned policy), adapting the groups of ``inner`` with step sizes ``lrs``."""
    rl = MetaRL(inner, trajectories, gamma, gae_lambda, normalize_advantages)
    params: dict[str, Tensor] = {k: v.detach() for k, v in policy.named_parameters()}
    steps = []
    for k in range(len(lrs) + 1):
        episodes = sample(env, policy, params, tasks, trajectories, rng, generator)
        steps.append(AdaptationStep(k, params, episodes))
        if k < len(lrs):
            params = adapt(policy, params, episodes, rl.advantages(episodes), inner, lrs[k], meta_grad=False)
    return steps


def describe(rl: MetaRL) -> dict[str, Any]:
    """The settings of ``rl`` as JSON (for ``config.json``)."""
    return {
        "inner": rl.inner.as_dict(),
        "trajectories": rl.trajectories,
        "gamma": rl.gamma,
        "gae_lambda": rl.gae_lambda,
        "normalize_advantages": rl.normalize_advantages,
        "trpo": rl.trpo.as_dict(),
    }
