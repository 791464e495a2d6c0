"""The RL inner loop: one REINFORCE step per task on that task's trajectories, as a pure function
of the policy's parameters, with a per-layer adapt mask.

For task ``t`` with trajectories sampled by ``pi_theta`` and advantages ``A`` (:mod:`meta.rl.returns`),
the inner loss is the REINFORCE surrogate averaged over the task's unmasked steps (cbfinn/maml_rl
``sandbox/rocky/tf/algos/maml_npo.py``: ``-tf.reduce_mean(logli * adv)``)::

    L_t(theta) = -(1 / sum m) sum_{n, h} m_{nh} A_{nh} log pi_theta(a_{nh} | s_{nh})
    theta'_t[g] = theta[g] - alpha * dL_t / dtheta[g]      (g in the adapted groups)
    theta'_t[g] = theta[g]                                   (the frozen ones)

``alpha = 0.1`` in MAML's RL experiments. The groups are the names of
:data:`meta.rl.policy.PARAMETER_GROUPS` (``fc1``, ``fc2``, ``head``, ``log_std``), chosen by a
:class:`meta.core.inner.InnerLoop` (the classifier's inner loop settings: ``adapt=None`` adapts
everything, MAML; ``adapt={"head"}`` is ANIL; any other set freezes the rest). All tasks adapt at
once: the adapted parameters get a leading task dimension (``p.expand(T, *p.shape)``) and the
gradient of ``sum_t L_t`` gives every task its own step. Second order (MAML): the step keeps its
graph (``create_graph=True``) so that a loss at ``theta'`` differentiates through it; first order
(``InnerLoop(first_order=True)``): the step is a constant and ``d theta' / d theta = I``.

Imports: :mod:`meta.core.inner` (the inner loop's settings) and :mod:`meta.rl`.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from meta.core.inner import InnerLoop
from meta.rl.policy import PARAMETER_GROUPS, adapted_names, distribution, log_prob
from meta.rl.sampler import Episodes

__all__ = ["adapt", "adapted_groups", "reinforce_loss"]

Params = dict[str, Tensor]


def adapted_groups(inner: InnerLoop) -> tuple[str, ...]:
    """The parameter groups ``inner`` adapts, in forward order (unknown names: ``ValueError``)."""
    return inner.adapted_layers(PARAMETER_GROUPS)


def reinforce_loss(policy: nn.Module, params: Mapping[str, Tensor], episodes: Episodes, adv: Tensor) -> Tensor:
    """``L_t`` of every task (module docstring): ``(T,)``; ``adv`` ``(T, N, H)``."""
    observations, actions, mask = episodes.flat()
    mean, log_std = distribution(policy, params, observations)
    logp = log_prob(mean, log_std, actions)
    return -(logp * adv.reshape(mask.shape) * mask).sum(-1) / mask.sum(-1)


def adapt(
    policy: nn.Module,
    params: Mapping[str, Tensor],
    episodes: Episodes,
    adv: Tensor,
    inner: InnerLoop,
    lr: float | None = None,
    *,
    meta_grad: bool = True,
) -> Params:
    """One inner step for every task of ``episodes``: the parameters ``theta'`` (adapted groups
    per task, ``(T, *shape)``; frozen ones as given).

    Args:
        policy: the :class:`meta.rl.policy.GaussianMLP` (its own tensors are not used).
        params: ``theta``, shared (``shape``) or already per task (``(T, *shape)``).
        episodes, adv: the tasks' trajectories sampled with ``theta`` and their advantages.
        inner: which groups adapt (``adapt``) and ``first_order``; ``inner.lr`` unless ``lr``.
        meta_grad: keep the graph back to ``params`` (second order unless ``inner.first_order``);
            ``False``: everything returned is detached (testing, sampling).
    """
    names = adapted_names(params, adapted_groups(inner))
    own_dims = {name: p.dim() for name, p in policy.named_parameters()}
    base = dict(params) if meta_grad else {k: v.detach() for k, v in params.items()}
    fast = {}
    with torch.enable_grad():
        for name in names:
            weight = base[name] if meta_grad else base[name].requires_grad_()
            fast[name] = weight if weight.dim() > own_dims[name] else weight.expand(episodes.tasks, *weight.shape)
        loss = reinforce_loss(policy, {**base, **fast}, episodes, adv).sum()
        create_graph = meta_grad and not inner.first_order
        grads = torch.autograd.grad(loss, list(fast.values()), create_graph=create_graph)
    step = inner.lr if lr is None else lr
    updated = {name: w - step * g for (name, w), g in zip(fast.items(), grads)}
    if not meta_grad:
        return {k: v.detach() for k, v in {**base, **updated}.items()}
    return {**base, **updated}
