"""Returns, the linear feature baseline and advantages (GAE), for every task of a meta-batch at
once.

Discounted sums are products with an upper-triangular matrix, ``y_t = sum_{s >= t} c^{s-t} x_s``
(:func:`discounted_cumsum`), over the last axis of ``(T, N, H)`` arrays, in float64.

The baseline is rllab's ``LinearFeatureBaseline`` (cbfinn/maml_rl
``rllab/baselines/linear_feature_baseline.py``; Duan et al. 2016), fitted per task on that task's
own trajectories (as tristandeleu/pytorch-maml-rl ``maml_rl/baseline.py``): with the
observation clipped to ``[-10, 10]`` and ``u = t / 100``, the features of step ``t`` are::

    phi_t = [o_t, o_t^2, u, u^2, u^3, 1] * m_t                 (2 D + 4 numbers, 0 on masked steps)
    w = argmin ||Phi w - G||^2 + reg ||w||^2 = (Phi^T Phi + reg I)^{-1} Phi^T G,   reg = 1e-5

``G_t = sum_{s >= t} gamma^{s-t} r_s`` the discounted return; a task whose solve fails (singular
or non-finite) is solved again with ``reg`` ten times larger, up to five times, as rllab does.
With ``V_t = phi_t w`` (``V_H = 0``) the advantages are GAE (Schulman et al. 2016)::

    delta_t = r_t + gamma V_{t+1} - V_t,   A_t = sum_{s >= t} (gamma lambda)^{s-t} delta_s

``lambda = 1`` gives ``A_t = G_t - V_t``. Finally each task's advantages are normalised over its
unmasked steps, ``(A - mean) / (std + 1e-8)`` (rllab's ``center_adv``, the port's
``weighted_normalize``), and set to 0 on masked steps.

Imports: :mod:`meta.rl` only.
"""

from __future__ import annotations

import torch
from torch import Tensor

from meta.rl.sampler import Episodes

__all__ = ["advantages", "baseline_features", "discounted_cumsum", "fit_baseline"]

#: rllab's ridge coefficient, and how many times it is multiplied by 10 when a solve fails.
BASELINE_REG, BASELINE_RETRIES = 1e-5, 5


def discounted_cumsum(x: Tensor, factor: float) -> Tensor:
    """``y_t = sum_{s >= t} factor^{s-t} x_s`` along the last axis of ``x`` ``(..., H)``.

    Examples:
        >>> discounted_cumsum(torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64), 0.5).tolist()
        [1.75, 1.5, 1.0]
    """
    h = x.shape[-1]
    steps = torch.arange(h, dtype=x.dtype, device=x.device)
    gap = steps[:, None] - steps[None, :]  # s - t
    matrix = torch.where(gap >= 0, torch.tensor(factor, dtype=x.dtype) ** gap.clamp(min=0), 0.0)
    return x @ matrix


def baseline_features(observations: Tensor, mask: Tensor) -> Tensor:
    """rllab's features ``(T, N, H, 2 D + 4)`` of observations ``(T, N, H, D)`` (module docstring),
    float64, zero where ``mask`` ``(T, N, H)`` is 0."""
    o = observations.to(torch.float64).clamp(-10.0, 10.0)
    u = (torch.arange(o.shape[-2], dtype=torch.float64) / 100.0).expand(*o.shape[:-1]).unsqueeze(-1)
    phi = torch.cat([o, o**2, u, u**2, u**3, torch.ones_like(u)], dim=-1)
    return phi * mask.to(torch.float64).unsqueeze(-1)


def fit_baseline(features: Tensor, returns: Tensor, reg: float = BASELINE_REG) -> Tensor:
    """Per-task ridge least squares (module docstring): features ``(T, M, F)``, returns ``(T, M)``
    -> coefficients ``(T, F)``."""
    gram = features.transpose(1, 2) @ features
    target = (features.transpose(1, 2) @ returns.unsqueeze(-1)).squeeze(-1)
    eye = torch.eye(gram.shape[-1], dtype=gram.dtype)
    coefficients = torch.full_like(target, float("nan"))
    todo = torch.ones(len(gram), dtype=torch.bool)
    for _ in range(BASELINE_RETRIES):
        solution, info = torch.linalg.solve_ex(gram[todo] + reg * eye, target[todo])
        good = (info == 0) & torch.isfinite(solution).all(-1)
        index = torch.nonzero(todo).squeeze(-1)
        coefficients[index[good]] = solution[good]
        todo[index[good]] = False
        if not todo.any():
            break
        reg *= 10
    return coefficients


def advantages(episodes: Episodes, gamma: float, gae_lambda: float, *, normalize: bool = True) -> Tensor:
    """GAE advantages ``(T, N, H)`` in the episodes' dtype, with the linear feature baseline fitted
    per task (module docstring); normalised per task unless ``normalize=False``."""
    t, n, h = episodes.rewards.shape
    mask = episodes.mask.to(torch.float64)
    rewards = episodes.rewards * mask
    returns = discounted_cumsum(rewards, gamma)
    phi = baseline_features(episodes.observations, episodes.mask)
    w = fit_baseline(phi.reshape(t, n * h, -1), returns.reshape(t, n * h))
    values = (phi @ w[:, None, :, None]).squeeze(-1)
    following = torch.cat([values[..., 1:], torch.zeros_like(values[..., :1])], dim=-1)
    deltas = (rewards + gamma * following - values) * mask
    adv = discounted_cumsum(deltas, gamma * gae_lambda) * mask
    if normalize:
        count = mask.sum((1, 2), keepdim=True)
        mean = adv.sum((1, 2), keepdim=True) / count
        std = torch.sqrt((((adv - mean) * mask) ** 2).sum((1, 2), keepdim=True) / count)
        adv = (adv - mean) / (std + 1e-8) * mask
    return adv.to(episodes.mask.dtype)
