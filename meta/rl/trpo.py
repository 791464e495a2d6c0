"""TRPO's step (Schulman et al. 2015) as MAML's outer loop uses it: conjugate gradient on
Hessian-vector products of the mean KL, a step scaled to the trust region, a backtracking line
search.

With ``g`` the gradient of the loss ``L`` (minus the surrogate objective) at ``theta`` and ``H``
the Hessian of the mean KL divergence ``KL(pi_old || pi_theta)`` (zero with zero gradient at
``theta = theta_old``), damped by ``d``::

    x     = CG(H + d I, g)                       (``cg_iters`` iterations, from x = 0)
    beta  = sqrt(2 * max_kl / (x^T (H + d I) x))
    theta_new = theta - s * beta * x,   s = 1, 0.8, 0.8^2, ...   (``ls_steps`` tries)

The first ``s`` whose loss is lower than before (``L(theta_new) < L(theta)``) **and** whose
mean KL is below ``max_kl`` is taken; if none is, ``theta`` stays. Settings of MAML's RL
experiments (tristandeleu/pytorch-maml-rl ``configs/maml/halfcheetah-vel.yaml`` and
``halfcheetah-dir.yaml``: ``max-kl 1.0e-2``, ``cg-iters 10``, ``cg-damping 1.0e-5``,
``ls-max-steps 15``, ``ls-backtrack-ratio 0.8``; ``maml_rl/metalearners/maml_trpo.py`` for the
step; cbfinn/maml_rl ``maml_examples/cluster_maml_trpo_cheetah.py`` ``meta_step_size = 0.01``).

``H v`` is computed by differentiating ``grad KL . v`` (Pearlmutter's trick) through the graph of
the KL, which for MAML includes the inner step (so it holds third derivatives of the inner loss).

Imports: :mod:`meta.validation` only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from meta.validation import check_int, check_number

__all__ = ["TRPO", "TRPOStep", "conjugate_gradient", "hessian_vector_product", "line_search", "trpo_step"]


@dataclass(frozen=True)
class TRPO:
    """TRPO's settings (module docstring; the defaults are MAML's).

    Attributes:
        max_kl: the trust region, mean ``KL(pi_old || pi_new)`` at most this.
        cg_iters: conjugate-gradient iterations.
        cg_damping: ``d``, added to the KL's Hessian.
        ls_steps: line-search tries.
        ls_backtrack: the step's factor between tries.
    """

    max_kl: float = 0.01
    cg_iters: int = 10
    cg_damping: float = 1e-5
    ls_steps: int = 15
    ls_backtrack: float = 0.8

    def __post_init__(self) -> None:
        check_number("max_kl", self.max_kl, minimum=0)
        check_int("cg_iters", self.cg_iters, minimum=1)
        check_number("cg_damping", self.cg_damping, minimum=0)
        check_int("ls_steps", self.ls_steps, minimum=1)
        if not 0 < check_number("ls_backtrack", self.ls_backtrack) < 1:
            raise ValueError(f"ls_backtrack must be in (0, 1), got {self.ls_backtrack!r}")

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class TRPOStep:
    """What a step did: the loss and mean KL before and after, and the accepted step fraction
    ``s`` (0.0 when the line search kept ``theta``)."""

    loss_before: float
    loss_after: float
    kl_after: float
    step_fraction: float


def flat(tensors: Sequence[Tensor]) -> Tensor:
    """The tensors' entries in one vector."""
    return torch.cat([t.reshape(-1) for t in tensors])


def unflat(vector: Tensor, like: Sequence[Tensor]) -> list[Tensor]:
    """Inverse of :func:`flat`: ``vector`` cut into tensors shaped as ``like``."""
    out, start = [], 0
    for t in like:
        out.append(vector[start : start + t.numel()].view_as(t))
        start += t.numel()
    return out


def conjugate_gradient(product: Callable[[Tensor], Tensor], b: Tensor, iters: int, tol: float = 1e-10) -> Tensor:
    """``x ~ A^{-1} b`` by ``iters`` conjugate-gradient iterations from ``x = 0`` (``product(v) =
    A v``, ``A`` symmetric positive definite); stops early once ``||r||^2 < tol``."""
    x = torch.zeros_like(b)
    r, p = b.clone(), b.clone()
    rr = r @ r
    for _ in range(iters):
        if rr < tol:
            break
        ap = product(p)
        alpha = rr / (p @ ap)
        x = x + alpha * p
        r = r - alpha * ap
        rr_new = r @ r
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x


def hessian_vector_product(kl: Tensor, params: Sequence[Tensor], damping: float) -> Callable[[Tensor], Tensor]:
    """``v -> (H + d I) v`` with ``H`` the Hessian of the scalar ``kl`` w.r.t. ``params``."""
    grads = flat(torch.autograd.grad(kl, list(params), create_graph=True))

    def product(v: Tensor) -> Tensor:
        hv = torch.autograd.grad(grads @ v, list(params), retain_graph=True)
        return flat(hv) + damping * v

    return product


def line_search(
    evaluate: Callable[[list[Tensor]], tuple[float, float]],
    params: Sequence[Tensor],
    step: Tensor,
    loss_before: float,
    trpo: TRPO,
) -> tuple[list[Tensor], TRPOStep]:
    """Try ``theta - s * step`` for ``s = 1, b, b^2, ...`` (``ls_steps`` tries, ``b = ls_backtrack``):
    the first with ``loss < loss_before`` and ``kl < max_kl`` (``evaluate(candidate) -> (loss,
    kl)``) is returned; if none, ``params`` unchanged (detached) with ``step_fraction = 0``."""
    theta = flat([p.detach() for p in params])
    fraction = 1.0
    for _ in range(trpo.ls_steps):
        candidate = unflat(theta - fraction * step, params)
        loss, kl = evaluate(candidate)
        if loss < loss_before and kl < trpo.max_kl:
            return candidate, TRPOStep(loss_before, loss, kl, fraction)
        fraction *= trpo.ls_backtrack
    kept = [p.detach() for p in params]
    return kept, TRPOStep(loss_before, loss_before, 0.0, 0.0)


def trpo_step(
    loss: Tensor,
    kl: Tensor,
    params: Sequence[Tensor],
    evaluate: Callable[[list[Tensor]], tuple[float, float]],
    trpo: TRPO,
) -> tuple[list[Tensor], TRPOStep]:
    """One TRPO step from ``theta = params`` (module docstring): ``loss`` and the mean ``kl``
    are scalars with graphs to ``params``; ``evaluate(candidate)`` gives a candidate's ``(loss,
    kl)``. Returns the new parameters (detached) and the :class:`TRPOStep`."""
    gradient = flat(torch.autograd.grad(loss, list(params), retain_graph=True))
    product = hessian_vector_product(kl, params, trpo.cg_damping)
    direction = conjugate_gradient(product, gradient, trpo.cg_iters)
    curvature = float(direction @ product(direction))
    if not (math.isfinite(curvature) and curvature > 0):
        return [p.detach() for p in params], TRPOStep(float(loss.detach()), float(loss.detach()), 0.0, 0.0)
    step = math.sqrt(2 * trpo.max_kl / curvature) * direction
    return line_search(evaluate, params, step.detach(), float(loss.detach()), trpo)
