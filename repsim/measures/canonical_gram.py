"""CCA from the Gram matrices (co-moments) of the centred data: the fast route of the in-memory
measures, where it is certified, and the route of the streaming ones.

With ``Sxx = Xc'Xc``, ``Syy = Yc'Yc`` and ``Sxy = Xc'Yc`` (the products every exact CCA must
compute: :mod:`repsim.measures.products`), the canonical correlations are the singular values of

    M = Rx^-T Sxy Ry^-1,        Sxx = Rx'Rx,  Syy = Ry'Ry  (Cholesky factors),

since ``Qx = Xc Rx^-1`` is an orthonormal basis of the span of ``Xc`` (``Qx'Qx = Rx^-T Sxx
Rx^-1 = I``) and ``Qx'Qy = M``. This costs the three products plus ``O(d^3)``: two Cholesky
factorisations, two triangular solves and one ``d x d`` SVD, against two Householder QRs of the
``n x d`` data for the QR route of :mod:`repsim.measures.canonical`.

**Accuracy, and when this route is taken.** Forming a Gram matrix squares the condition number:
with ``u`` the unit roundoff and ``kx``, ``ky`` the condition numbers of the centred sides, the
computed coefficients are within (first-order, normwise)::

    bound = u [ (c_n + d + 1) (kx^2 + ky^2) + c_n kx ky ],    c_n = 6 sqrt(n)

of the exact ones: the Gram matrices' errors (``c_n u``, the probabilistic rounding bound of
Higham & Mary 2019 for sums of ``n`` terms, at 6 standard deviations) and the Cholesky
factorisations' (``(d + 1) u``, Higham 2002, thm 10.3) amplified by ``k^2``, and the cross
product's by ``kx ky``. The condition numbers are estimated from the factors by block power
iteration on ``R'R`` and on its inverse (through triangular solves), times a safety factor of 2,
as LAPACK estimates the condition numbers of its error bounds. The in-memory measures take this
route only where ``bound <= CHEAP_ROUTE_MAX_ERROR`` (``1e-10``), every coefficient then certified
to that accuracy; elsewhere they keep the QR route, whose error grows like ``u (kx + ky)``.
``.details`` says which route ran (``route``) and the bound (``error_bound``).

The streaming accumulators have only the co-moments. Where the Cholesky route is certified they
take it (same bound); elsewhere they whiten each side by the eigendecomposition of its co-moment
matrix with rank truncation (``route="eigh"``), whose error bound ``max(n, d) u k^2`` they report.

Imports: :mod:`repsim.measures.canonical_bases`, :mod:`repsim.measures.dense` and
:mod:`repsim.measures.kept_directions` only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from repsim.measures.canonical_bases import SideBasis, default_rtol, side_from_spectrum
from repsim.measures.dense import cholesky_upper, solve_upper
from repsim.measures.kept_directions import KeptTriangularSide, kept_triangular_side

__all__ = ["CHEAP_ROUTE_MAX_ERROR", "GramProblem", "certified_cholesky", "estimated_condition"]

#: The largest error bound at which the Cholesky route is taken in memory.
CHEAP_ROUTE_MAX_ERROR = 1e-10
#: Datapoints per neuron below which the in-memory measures do not try the Cholesky route (the
#: products would cost as much as the QR route, and such data are rarely well conditioned).
MIN_DATAPOINTS_PER_NEURON = 2
_POWER_STEPS, _POWER_BLOCK, _SAFETY = 3, 4, 2.0


def _orthonormal(v: torch.Tensor) -> torch.Tensor:
    return torch.linalg.qr(v).Q


def estimated_condition(r: torch.Tensor) -> float:
    """``sigma_max(R) / sigma_min(R)`` of an upper triangular ``R`` ``(d, d)``, estimated by
    :data:`_POWER_STEPS` steps of block power iteration (``4`` vectors, a fixed start) on ``R'R``
    and on ``(R'R)^-1`` (two triangular solves a step), times the safety factor 2 (power
    iteration approaches both extremes from inside). Cost ``O(d^2)`` a step."""
    start = torch.randn(r.shape[0], min(_POWER_BLOCK, r.shape[0]), generator=torch.Generator().manual_seed(0))
    big = small = _orthonormal(start.to(dtype=r.dtype, device=r.device))
    for _ in range(_POWER_STEPS):
        big = _orthonormal(_thin_product(r.T, _thin_product(r, big)))
        small = _orthonormal(solve_upper(r, solve_upper(r, small, transpose=True)))
    top = torch.linalg.svdvals(_thin_product(r, big))[0]
    bottom_inverse = torch.linalg.svdvals(solve_upper(r, small, transpose=True))[0]
    return _SAFETY * float(top * bottom_inverse)


def _thin_product(a: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``a @ v`` for a square ``a`` and a few columns ``v``, as ``(v' a')'``: on the CPU this
    orientation runs about twice as fast for either layout of ``a`` (``a`` or a transposed view;
    measured at ``d = 512``), with no copy of ``a``."""
    return (v.T @ a.T).T


def error_bound(n: int, d: int, kx: float, ky: float, dtype: torch.dtype) -> float:
    """The module docstring's first-order bound on the coefficients of the Cholesky route."""
    u = torch.finfo(dtype).eps / 2
    c_n = 6.0 * math.sqrt(n)
    return u * ((c_n + d + 1) * (kx * kx + ky * ky) + c_n * kx * ky)


@dataclass(frozen=True)
class CholeskyFactors:
    """The Cholesky factors of both sides' Gram matrices, their estimated condition numbers and
    the route's error bound."""

    rx: torch.Tensor
    ry: torch.Tensor
    conditions: tuple[float, float]
    bound: float


def certified_cholesky(n: int, sxx: torch.Tensor, syy: torch.Tensor) -> CholeskyFactors | None:
    """The factors and their bound, or ``None`` when a Gram matrix is not positive definite in
    floating point (then the Cholesky route does not apply)."""
    rx, ry = cholesky_upper(sxx), cholesky_upper(syy)
    if rx is None or ry is None:
        return None
    kx, ky = estimated_condition(rx), estimated_condition(ry)
    return CholeskyFactors(rx, ry, (kx, ky), error_bound(n, max(rx.shape[0], ry.shape[0]), kx, ky, sxx.dtype))


@dataclass
class GramProblem:
    """The CCA problem from the co-moments of the centred sides (see the module docstring).

    ``factors``: the certified Cholesky factors (the Cholesky route), or ``None`` for the
    eigendecomposition route of the streaming accumulators. ``source_eps``: the rounding unit of
    each side's data as given (:func:`~repsim.measures.canonical_bases.default_rtol`).
    """

    n: int
    sxx: torch.Tensor
    syy: torch.Tensor
    sxy: torch.Tensor
    factors: CholeskyFactors | None = None
    source_eps: tuple[float, float] = (0.0, 0.0)

    @property
    def route(self) -> str:
        return "eigh" if self.factors is None else "cholesky"

    def side(self, which: int, rtol: float | None, keep: float | int | None) -> SideBasis | KeptTriangularSide:
        """Side 0 (X) or 1 (Y) with ``keep`` (``None``: every direction above the tolerance)."""
        if self.factors is None:
            return self._eigh_side(which, rtol, keep)
        r = (self.factors.rx, self.factors.ry)[which]
        d = r.shape[0]
        rtol = default_rtol(self.n, d, r.dtype, self.source_eps[which]) if rtol is None else rtol
        if keep is None and 2 * rtol * self.factors.conditions[which] < 1:
            # every singular value above the tolerance; R^-1 is never formed (solves instead)
            return SideBasis(w=None, f=r, rank=d, rounding=self.factors.bound / 2, triangular=True)
        # SVCCA's leading directions: on the CPU from the eigenvalues and the few dropped
        # eigenvectors (repsim.measures.kept_directions), else (or where that does not pay) from
        # the eigendecomposition of the Gram matrix; both within the certified bound here
        s2 = (self.sxx, self.syy)[which]
        if keep is not None and s2.device.type == "cpu":
            kept = kept_triangular_side(s2, r, rtol, keep, self.factors.bound / 2)
            if kept is not None:
                return kept
        return replace(self._eigh_side(which, rtol, keep), rounding=self.factors.bound / 2)

    def _eigh_side(self, which: int, rtol: float | None, keep: float | int | None) -> SideBasis:
        """Whitening by the eigendecomposition ``S = V diag(s^2) V'``: eigenvalues carry absolute
        errors of about ``eps s_0^2``, so the default rank tolerance is ``sqrt(max(n, d) eps)``
        on ``s_i / s_0`` (``max(n, d) eps`` on the certified route, whose sides have full rank)
        and the rounding grows as ``cond^2``."""
        s2 = (self.sxx, self.syy)[which]
        d = s2.shape[0]
        if rtol is None:
            rtol = default_rtol(self.n, d, s2.dtype, self.source_eps[which])
            rtol = rtol if self.factors is not None else rtol**0.5
        lam, vecs = torch.linalg.eigh(s2)
        s = lam.flip(0).clamp(min=0).sqrt()
        return side_from_spectrum(s, vecs.flip(1).T, rtol, keep, max(self.n, d) * torch.finfo(s2.dtype).eps, power=2)

    def cross(self, side_x: SideBasis | KeptTriangularSide, side_y: SideBasis | KeptTriangularSide) -> torch.Tensor:
        """``Qx'Qy = Wx' Sxy Wy``; for triangular sides by triangular solves,
        ``Rx^-T Sxy Ry^-1``."""
        return side_y.times_w(side_x.w_t_times(self.sxy))

    def details(
        self, side_x: SideBasis | KeptTriangularSide, side_y: SideBasis | KeptTriangularSide
    ) -> dict[str, object]:
        """``route`` and ``error_bound`` of the coefficients."""
        return {"route": self.route, "error_bound": side_x.rounding + side_y.rounding}
