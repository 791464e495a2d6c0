"""The machinery of :mod:`repsim.measures.canonical`: a CCA problem (centred data in memory, or
streamed co-moments), its two sides' bases, and the coefficients with their certified error, for
:func:`cca_of`, :func:`mean_cca_of`, :func:`svcca_of` and :func:`pwcca_of` (the in-memory measures
and the streaming accumulators share them). The algorithms, their routes and error bounds are
described in :mod:`repsim.measures.canonical`.

Imports: :mod:`repsim.measures.canonical_bases`, :mod:`repsim.measures.canonical_gram`,
:mod:`repsim.measures.dense`, :mod:`repsim.measures.inputs`, :mod:`repsim.measures.products` and
:mod:`repsim.measures.result` only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from repsim.measures.canonical_bases import (
    SideBasis,
    certified_full_rank,
    certified_left_singular,
    certified_singular_values,
    check_keep,
    check_rtol,
    default_rtol,
    side_from_spectrum,
    svd_error,
)
from repsim.measures.canonical_gram import (
    CHEAP_ROUTE_MAX_ERROR,
    MIN_DATAPOINTS_PER_NEURON,
    GramProblem,
    certified_cholesky,
)
from repsim.measures.dense import times_upper
from repsim.measures.inputs import as_pair, centre, finite_max_abs, normalising_exponent, shares_memory, source_eps
from repsim.measures.products import centred_products, is_constant
from repsim.measures.result import Similarity

#: Fewest datapoints for which CCA is not trivially 1 (a side needs rank < n - 1 and rank >= 1).
CCA_MIN_N = 3


@dataclass(frozen=True, eq=False)
class CCAResult:
    """Canonical correlations of two representations.

    Attributes:
        coefficients: ``(min(rank_x, rank_y),)`` numpy float64 canonical correlations, descending,
            in ``[0, 1]`` (read-only).
        rank_x, rank_y: numerical ranks of the centred ``X`` and ``Y`` (see :func:`cca`).
        n: number of datapoints (after the ``conv`` policy).
        conv: the policy applied to 4-D inputs (``None`` for 2-D inputs).
        details: how it was computed: ``route`` and ``error_bound`` (as every measure's
            :class:`~repsim.measures.result.Similarity` has).

    ``float(result)`` is the mean CCA, ``coefficients.mean()`` (the similarity of Raghu et al.
    2017 without the SVD step).
    """

    coefficients: np.ndarray
    rank_x: int
    rank_y: int
    n: int
    conv: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def __float__(self) -> float:
        return float(self.coefficients.mean())

    def __repr__(self) -> str:
        k = len(self.coefficients)
        shown = ", ".join(f"{c:.4g}" for c in self.coefficients[:3]) + (", ..." if k > 3 else "")
        return (
            f"CCAResult(mean={float(self):.6g}, {k} coefficients [{shown}], rank_x={self.rank_x},"
            f" rank_y={self.rank_y}, n={self.n}, route={self.details.get('route')!r})"
        )


class _Problem(Protocol):
    """Where the two sides come from: centred data in memory, or streamed co-moments."""

    n: int

    def side(self, which: int, rtol: float | None, keep: float | int | None) -> SideBasis:
        """Side 0 (X) or 1 (Y) with ``keep`` (``None``: every direction above the tolerance)."""

    def cross(self, side_x: SideBasis, side_y: SideBasis) -> torch.Tensor:
        """``Qx' Qy`` ``(kx, ky)`` for the bases of two sides."""

    def details(self, side_x: SideBasis, side_y: SideBasis) -> dict[str, Any]:
        """``route`` and ``error_bound`` (for ``.details``)."""


@dataclass
class _DataProblem:
    """Both centred sides in memory: ``cx`` ``(n, dx)``, ``cy`` ``(n, dy)``, and the rounding
    unit of each side's data as it was given (see
    :func:`~repsim.measures.canonical_bases.default_rtol`)."""

    cx: torch.Tensor
    cy: torch.Tensor
    source_eps: tuple[float, float] = (0.0, 0.0)

    @property
    def n(self) -> int:
        return self.cx.shape[0]

    def side(self, which: int, rtol: float | None, keep: float | int | None) -> SideBasis:
        c = (self.cx, self.cy)[which]
        n, d = c.shape
        rtol = default_rtol(n, d, c.dtype, self.source_eps[which]) if rtol is None else rtol
        unit = max(n, d) * torch.finfo(c.dtype).eps
        r = torch.linalg.qr(c, mode="r").R
        if keep is None and r.shape[0] == d:
            side = certified_full_rank(r, rtol, unit)
            if side is not None:
                return side
        _, s, vh = torch.linalg.svd(r, full_matrices=False)
        return side_from_spectrum(s, vh, rtol, keep, unit, power=1)

    def cross(self, side_x: SideBasis, side_y: SideBasis) -> torch.Tensor:
        """``Qx'Qy``, forming the basis of the side with fewer kept directions (the cheaper one):
        ``(Qx' Yc) W_y`` or ``((Qy' Xc) W_x)'``; either way the error is ``O(eps cond)``."""
        if side_x.dims <= side_y.dims:
            return side_y.times_w(side_x.basis_t(self.cx) @ self.cy)
        return side_x.times_w(side_y.basis_t(self.cy) @ self.cx).T

    def details(self, side_x: SideBasis, side_y: SideBasis) -> dict[str, Any]:
        return {"route": "qr", "error_bound": side_x.rounding + side_y.rounding}


def data_problem(X: Any, Y: Any, conv: str | None, dtype: torch.dtype, measure: str) -> _Problem:
    """Validate ``X``, ``Y`` (at least :data:`CCA_MIN_N` datapoints), centre them (scaled by a
    power of two), and choose the route: the Cholesky route where it is certified
    (:mod:`repsim.measures.canonical_gram`), else the QR route."""
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point torch dtype; got {dtype}")
    x, y = as_pair(X, Y, conv=conv, dtype=dtype, min_n=CCA_MIN_N, measure=measure, check_finite=False)
    eps = (source_eps(X), source_eps(Y))
    n, d = x.shape[0], max(x.shape[1], y.shape[1])
    products = centred_products(x, y) if n >= MIN_DATAPOINTS_PER_NEURON * d else None
    if products is not None and not any(is_constant(products, torch.finfo(x.dtype).eps)):
        factors = certified_cholesky(n, products.sxx, products.syy)
        if factors is not None and factors.bound <= CHEAP_ROUTE_MAX_ERROR:
            return GramProblem(n, products.sxx, products.syy, products.sxy, factors, eps)
    cx, cy = (_centred_in_full(t, given, name) for t, given, name in ((x, X, "X"), (y, Y, "Y")))
    return _DataProblem(cx, cy, eps)


def _centred_in_full(t: torch.Tensor, given: Any, name: str) -> torch.Tensor:
    """A side checked for NaN and infinities, centred (scaled by a power of two where its
    magnitude requires), as one new tensor (or in place where ``t`` is already a copy)."""
    exponent = normalising_exponent(finite_max_abs(t, name))
    return centre(t, name=name, exponent=exponent, in_place=not shares_memory(t, given))


def _check_not_trivial(dims_x: int, dims_y: int, n: int, *, what: str = "rank") -> None:
    """Raise when a side spans all ``n - 1`` centred dimensions (every coefficient would be 1),
    with advice that never names the raising measure: SVCCA (``"kept dims"``) keeps fewer."""
    if max(dims_x, dims_y) >= n - 1:
        fewer = "Use svcca (it keeps fewer directions)" if what == "rank" else "Keep fewer directions (a smaller keep)"
        raise ValueError(
            f"CCA is trivially 1 here: {what}_x={dims_x}, {what}_y={dims_y} but n={n} centred"
            f" datapoints span at most n - 1 = {n - 1} dimensions, and a side of {what} >= n - 1"
            f" contains the other. {fewer} or use more datapoints"
        )


@dataclass(frozen=True)
class _Correlations:
    """Canonical correlations ``rho`` (descending) and ``error``: the bound on every
    coefficient's error, or on their mean's, or on the weighted mean ``weights @ rho``'s (the
    bases' rounding plus the singular values'). With ``weights``: PWCCA's weights from X's
    canonical variates; ``qh`` ``(k, ky)``: the right singular vectors of ``Qx'Qy`` (for the
    weights from Y)."""

    rho: torch.Tensor
    error: float
    weights: torch.Tensor | None = None
    qh: torch.Tensor | None = None


def _correlations(
    problem: _Problem,
    side_x: SideBasis,
    side_y: SideBasis,
    *,
    mean: bool = False,
    weigh: Callable[[torch.Tensor], torch.Tensor] | None = None,
    symmetric: bool = False,
) -> _Correlations:
    """The canonical correlations of two sides: the singular values of ``M = Qx'Qy``, within
    :data:`~repsim.measures.canonical_gram.CHEAP_ROUTE_MAX_ERROR` with the bases' rounding.

    - Values alone: from the eigenvalues of ``M``'s Gram matrix where that keeps every error
      (``mean``: their mean) within budget, else by its SVD
      (:func:`~repsim.measures.canonical_bases.certified_singular_values`).
    - ``weigh`` (PWCCA): with the weights ``weigh(P)`` of the left singular vectors ``P``, from
      the eigendecomposition of ``M M'`` where the weighted mean's error stays within budget,
      else by the SVD (:func:`~repsim.measures.canonical_bases.certified_left_singular`); where
      ``symmetric``, by the SVD, which also gives the right vectors.
    """
    m = problem.cross(side_x, side_y)
    rounding = side_x.rounding + side_y.rounding
    budget = CHEAP_ROUTE_MAX_ERROR - rounding
    weights = qh = None
    if weigh is None:
        rho, values_error = certified_singular_values(m, budget, mean=mean)
    elif symmetric:
        p, rho, qh = torch.linalg.svd(m, full_matrices=False)
        weights, values_error = weigh(p), svd_error(rho, min(m.shape))
    else:
        rho, weights, values_error = certified_left_singular(m, budget, weigh)
    error = rounding + values_error
    return _Correlations(_clip_rounding(rho, error), error, weights, qh)


def _details(problem: _Problem, side_x: SideBasis, side_y: SideBasis, found: _Correlations) -> dict[str, Any]:
    """``route`` and ``error_bound`` (the coefficients' total error bound)."""
    return {**problem.details(side_x, side_y), "error_bound": found.error}


def _clip_rounding(rho: torch.Tensor, bound: float) -> torch.Tensor:
    """Set coefficients in ``(1, 1 + bound]`` (rounding of the bases) to 1; more is a failure."""
    excess = float(rho.max()) - 1
    if excess > bound:
        raise FloatingPointError(
            f"a canonical correlation came out as 1 + {excess:.3g}, beyond the rounding bound"
            f" {bound:.3g}: the computation failed"
        )
    return rho.clamp(max=1.0)


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    out = t.detach().to(device="cpu", dtype=torch.float64).numpy().copy()
    out.setflags(write=False)
    return out


def cca_of(problem: _Problem, *, rtol: float | None = None, conv: str | None = None, mean: bool = False) -> CCAResult:
    """:func:`cca` of a prepared problem (in-memory data or streamed moments); ``details``'
    ``error_bound`` bounds every coefficient's error (``mean``: only their mean's)."""
    check_rtol(rtol)
    side_x, side_y = problem.side(0, rtol, None), problem.side(1, rtol, None)
    _check_not_trivial(side_x.rank, side_y.rank, problem.n)
    found = _correlations(problem, side_x, side_y, mean=mean)
    return CCAResult(
        _to_numpy(found.rho),
        rank_x=side_x.rank,
        rank_y=side_y.rank,
        n=problem.n,
        conv=conv,
        details=_details(problem, side_x, side_y, found),
    )


def check_leading(fraction: Any) -> float:
    """``fraction`` if it is a number in ``(0, 1]`` (the share of the coefficients' sum), else
    ``ValueError``."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise ValueError(f"leading must be a fraction of the coefficients' sum in (0, 1]; got {fraction!r}")
    return float(fraction)


def leading_count(rho: np.ndarray, fraction: float) -> int:
    """How many leading coefficients google/svcca's ``get_cca_similarity`` averages (its
    ``sum_threshold``, ``cca_core.py``): the smallest ``i`` in ``1 .. k-1`` with
    ``sum(rho[:i]) >= fraction * sum(rho)``, else all ``k``.

    Examples:
        >>> import numpy as np
        >>> leading_count(np.array([0.9, 0.8, 0.5, 0.1, 0.05, 0.01]), 0.98)  # 2.35 >= 0.98 * 2.36
        5
    """
    check_leading(fraction)
    sums = np.cumsum(rho)
    reached = np.flatnonzero(sums[:-1] >= fraction * sums[-1])
    return int(reached[0]) + 1 if reached.size else len(rho)


def mean_cca_of(
    problem: _Problem,
    *,
    rtol: float | None = None,
    conv: str | None = None,
    leading: float | None = None,
    **extra: Any,
) -> Similarity:
    """:func:`mean_cca` of a prepared problem."""
    result = cca_of(problem, rtol=rtol, conv=conv, mean=True)
    rho = result.coefficients
    count = len(rho) if leading is None else leading_count(rho, leading)
    chosen = {} if leading is None else {"leading": leading, "kept": count}
    return Similarity(
        float(rho[:count].mean()),
        measure="mean_cca" if leading is None else "cca98",
        conv=conv,
        rank_x=result.rank_x,
        rank_y=result.rank_y,
        n=result.n,
        **chosen,
        **result.details,
        **extra,
    )


def svcca_of(
    problem: _Problem,
    keep: float | int = 0.99,
    *,
    rtol: float | None = None,
    conv: str | None = None,
    **extra: Any,
) -> Similarity:
    """:func:`svcca` of a prepared problem."""
    keep = check_keep(keep)
    check_rtol(rtol)
    side_x, side_y = problem.side(0, rtol, keep), problem.side(1, rtol, keep)
    _check_not_trivial(side_x.dims, side_y.dims, problem.n, what="kept dims")
    found = _correlations(problem, side_x, side_y, mean=True)
    return Similarity(
        float(found.rho.mean()),
        measure="svcca",
        conv=conv,
        keep=keep,
        dims_x=side_x.dims,
        dims_y=side_y.dims,
        rank_x=side_x.rank,
        rank_y=side_y.rank,
        n=problem.n,
        **_details(problem, side_x, side_y, found),
        **extra,
    )


def projection_weights(vectors: torch.Tensor, side: SideBasis) -> torch.Tensor:
    """Morcos et al.'s weights ``alpha_i = sum_j |<h_i, x_j>|``, normalised to sum 1.

    ``vectors`` ``(kx, k)`` are the canonical directions in the side's orthonormal basis ``Q``
    (so ``H = Q vectors`` are unit-norm canonical variates) and ``f = Q' Xc`` ``(kx, dx)``, so
    ``H' Xc = vectors' f`` ``(k, dx)`` holds every ``<h_i, x_j>`` without any ``n``-sized product
    (a triangular product where ``f`` is the side's triangular factor).
    """
    product = times_upper(vectors.T, side.f) if side.triangular else vectors.T @ side.f
    alpha = product.abs().sum(dim=1)
    return alpha / alpha.sum()


def pwcca_of(
    problem: _Problem,
    *,
    symmetric: bool = False,
    rtol: float | None = None,
    conv: str | None = None,
    **extra: Any,
) -> Similarity:
    """:func:`pwcca` of a prepared problem."""
    check_rtol(rtol)
    side_x, side_y = problem.side(0, rtol, None), problem.side(1, rtol, None)
    _check_not_trivial(side_x.rank, side_y.rank, problem.n)
    found = _correlations(problem, side_x, side_y, weigh=lambda p: projection_weights(p, side_x), symmetric=symmetric)
    from_x = float(found.weights @ found.rho)
    details: dict[str, Any] = {"weights_from": "X"}
    value = from_x
    if symmetric:
        from_y = float(projection_weights(found.qh.T, side_y) @ found.rho)
        value = 0.5 * (from_x + from_y)
        details = {"weights_from": "mean of X and Y", "pwcca_x": from_x, "pwcca_y": from_y}
    return Similarity(
        value,
        measure="pwcca",
        conv=conv,
        symmetric=symmetric,
        rank_x=side_x.rank,
        rank_y=side_y.rank,
        n=problem.n,
        **details,
        **_details(problem, side_x, side_y, found),
        **extra,
    )
