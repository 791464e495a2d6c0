"""Canonical correlation analysis of representations: CCA coefficients, mean CCA, SVCCA, PWCCA.

For two representations of the same ``n`` datapoints, ``X`` ``(n, dx)`` and ``Y`` ``(n, dy)``,
column-centred to ``Xc``, ``Yc``, the canonical correlations ``rho_1 >= rho_2 >= ... >= 0`` are
the cosines of the principal angles between the column spaces of ``Xc`` and ``Yc``: with ``Qx``
``(n, rank_x)`` and ``Qy`` ``(n, rank_y)`` orthonormal bases of those spaces, they are the
singular values of ``Qx' Qy`` (Hotelling 1936; Bjorck & Golub 1973). There are
``min(rank_x, rank_y)`` of them; they are invariant to invertible linear maps of either side and
to translation.

**Two routes.** Where the data are well conditioned, the coefficients come from the Gram
matrices ``Xc'Xc``, ``Yc'Yc``, ``Xc'Yc`` and their Cholesky factors
(:mod:`repsim.measures.canonical_gram`: the products any exact method computes, plus ``O(d^3)``),
taken only where a bound computed from the factors certifies every coefficient to ``1e-10``.
Elsewhere (ill-conditioned sides, fewer than two datapoints per neuron) they come from the QR
route below, whose error grows like ``eps cond`` instead of ``eps cond^2``. On either route the
coefficients are the singular values of a small matrix ``Qx'Qy``, taken from the eigenvalues of
its Gram matrix (a third of the SVD's time) where those are certified to the same accuracy, else
from its SVD (:func:`~repsim.measures.canonical_bases.certified_singular_values`). ``.details``
names the route (``"cholesky"`` or ``"qr"``) and its ``error_bound``: on every coefficient for
:func:`cca` and :func:`pwcca`, on the value (a mean) for :func:`mean_cca` and :func:`svcca`.
Every side is scaled by a power of two before anything is summed
(:func:`repsim.measures.inputs.centre`), so the values at magnitudes ``1e-300`` and ``1e300``
are those at 1.

**The QR route** (never by inverting covariance matrices). Each centred side is
factorised by Householder QR, ``Xc = Q R`` (``R`` upper triangular, ``Q`` never formed). Its
numerical rank is the number of singular values of ``R`` (those of ``Xc``) above
``rtol * s_max`` with ``rtol = max(n, d) * eps`` by default (numpy's ``matrix_rank`` rule, ``eps`` the
larger of the computing dtype's and the input's own: float32 data is rank-deficient only to ~1e-7).
When ``R`` is square and ``||R||_F ||R^-1||_F < 1 / (2 rtol)`` every singular value is
certified above the tolerance (``s_min >= 1/||R^-1||_F``, ``s_max <= ||R||_F``) and the basis is
``Qx = Xc R^-1``; otherwise ``R = U S V'`` and the basis of the kept directions is
``Qx = Xc V_k S_k^-1``. One side's basis is formed explicitly (``Qx' = R^-T Xc'`` by a
triangular solve, or ``(Xc V_k S_k^-1)'``) and ``Qx' Qy = (Qx' Yc) W_y`` with ``W_y`` the other
side's ``R^-1`` (or ``V_k S_k^-1``). In float64 this is as accurate as the textbook
explicit-``Q`` path: the absolute error of the coefficients is of order ``eps (cond_x + cond_y)``
(``cond``: condition number of the kept part of a side), about ``1e-11`` at ``cond = 1e6``
(measured against a 60-digit reference; the cheaper ``R_x^-T (Xc'Yc) R_y^-1`` form errs by
``eps cond_x cond_y``, ``1e-8`` there, and covariance whitening by ``eps cond^2``, ``1e-4``).
Values above 1 can only come from that rounding: values in ``(1, 1 + bound]``, with
``bound = max(n, d) eps (cond_x + cond_y)``, are set to 1, and nothing else is changed (a
larger excess raises ``FloatingPointError``).

**When CCA is trivial.** After centring, ``n`` datapoints span at most ``n - 1`` dimensions, so
if either side has rank ``>= n - 1`` its span contains the other's and every coefficient is 1
whatever the data. :func:`cca`, :func:`mean_cca` and :func:`pwcca` raise ``ValueError`` then
(use :func:`svcca`, which keeps fewer directions, or more datapoints); :func:`svcca` raises only
if the *kept* dimensions reach ``n - 1``.

References: Raghu, Gilmer, Yosinski & Sohl-Dickstein, "SVCCA", NeurIPS 2017; Morcos, Raghu &
Bengio, "Insights on representational similarity in neural networks with canonical
correlation", NeurIPS 2018; Raghu, Raghu, Bengio & Vinyals, ICLR 2020 (CCA on conv layers with
channels as neurons, ``conv="channels"``).

Imports: :mod:`repsim.measures.canonical_bases`, :mod:`repsim.measures.inputs` and
:mod:`repsim.measures.result` only (nothing of ``repsim`` outside :mod:`repsim.measures`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from repsim.measures.canonical_bases import (
    SideBasis,
    certified_full_rank,
    certified_singular_values,
    check_keep,
    check_rtol,
    default_rtol,
    side_from_spectrum,
)
from repsim.measures.canonical_gram import (
    CHEAP_ROUTE_MAX_ERROR,
    MIN_DATAPOINTS_PER_NEURON,
    GramProblem,
    certified_cholesky,
)
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


def _data_problem(X: Any, Y: Any, conv: str | None, dtype: torch.dtype, measure: str) -> _Problem:
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
    """Canonical correlations ``rho`` (descending), with ``vectors`` the singular vectors ``p``
    ``(kx, k)`` and ``qh`` ``(k, ky)`` of ``Qx'Qy = P diag(rho) Qh``, and ``error``: the bound on
    every coefficient's error, or on their mean's (the bases' rounding plus the singular
    values')."""

    rho: torch.Tensor
    p: torch.Tensor | None
    qh: torch.Tensor | None
    error: float


def _correlations(
    problem: _Problem, side_x: SideBasis, side_y: SideBasis, *, vectors: bool = False, mean: bool = False
) -> _Correlations:
    """The canonical correlations of two sides: the singular values of ``Qx'Qy``, by the
    eigenvalues of its Gram matrix where that keeps the total error (``mean``: of their mean)
    within :data:`~repsim.measures.canonical_gram.CHEAP_ROUTE_MAX_ERROR`
    (:func:`~repsim.measures.canonical_bases.certified_singular_values`), else by its SVD."""
    m = problem.cross(side_x, side_y)
    rounding = side_x.rounding + side_y.rounding
    if vectors:
        p, rho, qh = torch.linalg.svd(m, full_matrices=False)
        error = rounding + min(m.shape) * torch.finfo(m.dtype).eps * float(rho.max())
    else:
        (rho, values_error), p, qh = (
            certified_singular_values(m, CHEAP_ROUTE_MAX_ERROR - rounding, mean=mean),
            None,
            None,
        )
        error = rounding + values_error
    return _Correlations(_clip_rounding(rho, error), p, qh, error)


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


def mean_cca_of(problem: _Problem, *, rtol: float | None = None, conv: str | None = None, **extra: Any) -> Similarity:
    """:func:`mean_cca` of a prepared problem."""
    result = cca_of(problem, rtol=rtol, conv=conv, mean=True)
    return Similarity(
        float(result),
        measure="mean_cca",
        conv=conv,
        rank_x=result.rank_x,
        rank_y=result.rank_y,
        n=result.n,
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


def projection_weights(vectors: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Morcos et al.'s weights ``alpha_i = sum_j |<h_i, x_j>|``, normalised to sum 1.

    ``vectors`` ``(kx, k)`` are the canonical directions in the side's orthonormal basis ``Q``
    (so ``H = Q vectors`` are unit-norm canonical variates) and ``f = Q' Xc`` ``(kx, dx)``, so
    ``H' Xc = vectors' f`` ``(k, dx)`` holds every ``<h_i, x_j>`` without any ``n``-sized product.
    """
    alpha = (vectors.T @ f).abs().sum(dim=1)
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
    found = _correlations(problem, side_x, side_y, vectors=True)
    rho, p, qh = found.rho, found.p, found.qh
    from_x = float(projection_weights(p, side_x.f) @ rho)
    details: dict[str, Any] = {"weights_from": "X"}
    value = from_x
    if symmetric:
        from_y = float(projection_weights(qh.T, side_y.f) @ rho)
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


def cca(
    X: Any, Y: Any, *, conv: str | None = None, dtype: torch.dtype = torch.float64, rtol: float | None = None
) -> CCAResult:
    """Canonical correlations of two representations of the same datapoints.

    Centres ``X`` ``(n, dx)`` and ``Y`` ``(n, dy)`` (after the cast to ``dtype``) and returns the
    singular values of ``Qx'Qy`` for orthonormal bases of the two column spaces, computed by
    Householder QR and a rank-revealing SVD of the small triangular factor (see the module
    docstring for the algorithm and its accuracy).

    Args:
        X, Y: arrays or tensors ``(n, dx)``, ``(n, dy)`` (CPU or CUDA), or ``(N, C, H, W)`` with
            ``conv``.
        conv: policy for 4-D inputs, one of :data:`repsim.CONV_POLICIES`.
        dtype: computation dtype (float64 by default; float32 inputs are upcast).
        rtol: rank tolerance: singular values ``<= rtol * s_max`` of a centred side count as 0.
            Default ``max(n, d) * eps`` (numpy's ``matrix_rank``), with ``eps`` the larger of
            ``dtype``'s and the input's own: float32 activations are exact only to float32
            rounding, so a linear relation between their neurons survives as a direction of
            relative size ~``1e-7``, which the float32 ``eps`` treats as null.

    Returns:
        :class:`CCAResult` with ``min(rank_x, rank_y)`` coefficients; ``float(result)`` is the
        mean CCA.

    Raises:
        ValueError: bad input (NaN/inf, mismatched ``n``, fewer than 3 datapoints, 1-D, empty,
            constant, 4-D without ``conv``), or a side of rank ``>= n - 1`` (CCA would be all
            ones: use :func:`svcca` or more datapoints).

    Examples:
        One neuron each: the single coefficient is ``|corr(x, y)|``, ``4/5`` by hand (centred
        ``x = (-3, -1, 1, 3) / 2`` and ``y = (-3, 1, -1, 3) / 2``):

        >>> from repsim.measures import cca
        >>> cca([[1.0], [2.0], [3.0], [4.0]], [[1.0], [3.0], [2.0], [4.0]]).coefficients.round(6).tolist()
        [0.8]

        An invertible linear map and a shift keep the column space: every coefficient is 1.

        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> X = rng.standard_normal((100, 4))
        >>> result = cca(X, X @ rng.standard_normal((4, 4)) + 3.0)
        >>> result.coefficients.round(6).tolist(), result.rank_x, result.rank_y
        ([1.0, 1.0, 1.0, 1.0], 4, 4)
    """
    return cca_of(_data_problem(X, Y, conv, dtype, "CCA"), rtol=rtol, conv=conv)


def mean_cca(
    X: Any, Y: Any, *, conv: str | None = None, dtype: torch.dtype = torch.float64, rtol: float | None = None
) -> Similarity:
    """Mean canonical correlation ``(1/k) sum_i rho_i`` over all ``k = min(rank_x, rank_y)``
    coefficients of :func:`cca` (same arguments and errors).

    Returns:
        :class:`repsim.Similarity` named ``"mean_cca"`` with details ``rank_x``, ``rank_y``, ``n``.

    Examples:
        ``Y`` shares one of its two directions with ``X``: the coefficients are 1 and a small one,
        the mean CCA is their average, and an invertible map and shift of ``X`` leave it unchanged.

        >>> import numpy as np
        >>> from repsim.measures import cca, mean_cca
        >>> rng = np.random.default_rng(0)
        >>> X = rng.standard_normal((500, 3))
        >>> Y = np.column_stack([X[:, 0], rng.standard_normal(500)])
        >>> cca(X, Y).coefficients.round(6).tolist(), round(float(mean_cca(X, Y)), 6)
        ([1.0, 0.063404], 0.531702)
        >>> X_mapped = 2.0 * X @ rng.standard_normal((3, 3)) + 5.0
        >>> bool(abs(mean_cca(X_mapped, Y) - mean_cca(X, Y)) < 1e-12)
        True
    """
    return mean_cca_of(_data_problem(X, Y, conv, dtype, "CCA"), rtol=rtol, conv=conv)


def svcca(
    X: Any,
    Y: Any,
    keep: float | int = 0.99,
    *,
    conv: str | None = None,
    dtype: torch.dtype = torch.float64,
    rtol: float | None = None,
) -> Similarity:
    """SVCCA (Raghu et al. 2017): mean CCA of the leading singular directions of each side.

    Each centred side ``C = U S V'`` is reduced to its ``k`` leading directions ``U_k S_k`` and
    the mean CCA of the two reduced sides is returned. Conventions differ between libraries
    (some fix the number of directions, some a fraction of the variance, some a fraction of the
    *sum of singular values*); here:

    - ``keep`` a float in ``(0, 1]`` (default ``0.99``): per side, the fewest leading directions
      whose explained variance reaches the fraction: the smallest ``k`` with
      ``sum_{i<k} s_i^2 >= keep * sum_i s_i^2`` (singular values of the centred data, over the
      directions above the rank tolerance ``rtol``); ``keep=1.0`` keeps the full rank.
    - ``keep`` an int: that many leading directions per side (at most the side's rank).

    Raises ``ValueError`` for a bad ``keep``, for the input errors of :func:`cca`, and when a
    side keeps ``>= n - 1`` directions (trivially 1).

    Returns:
        :class:`repsim.Similarity` named ``"svcca"`` with details ``keep``, ``dims_x``,
        ``dims_y`` (directions kept), ``rank_x``, ``rank_y``, ``n``.

    Examples:
        Three of five directions hold the variance, so ``keep=0.99`` keeps 3 per side; a rotation
        and an isotropic scaling change neither the kept span nor the value.

        >>> import numpy as np
        >>> from repsim.measures import svcca
        >>> rng = np.random.default_rng(0)
        >>> X = rng.standard_normal((200, 5)) * [10.0, 10.0, 10.0, 0.01, 0.01]
        >>> Q, _ = np.linalg.qr(rng.standard_normal((5, 5)))
        >>> s = svcca(X, 2.0 * X @ Q, keep=0.99)
        >>> round(float(s), 6), s.details["dims_x"], s.details["dims_y"]
        (1.0, 3, 3)
    """
    return svcca_of(_data_problem(X, Y, conv, dtype, "SVCCA"), keep, rtol=rtol, conv=conv)


def pwcca(
    X: Any,
    Y: Any,
    *,
    symmetric: bool = False,
    conv: str | None = None,
    dtype: torch.dtype = torch.float64,
    rtol: float | None = None,
) -> Similarity:
    """Projection-weighted CCA (Morcos, Raghu & Bengio 2018, eq. in section 2.3)::

        PWCCA = sum_i alpha_i rho_i,   alpha_i = a_i / sum_k a_k,   a_i = sum_j |<h_i, x_j>|

    with ``rho_i`` the coefficients of :func:`cca`, ``h_i`` the ``i``-th canonical variate of
    ``X`` (the centred ``X`` projected on its ``i``-th canonical direction, scaled to a unit-norm
    ``n``-vector; the ``h_i`` are orthonormal) and ``x_j`` the ``j``-th centred neuron (column)
    of ``X``. **The weights come from X, the first argument**, so ``pwcca(X, Y) != pwcca(Y, X)``
    in general; ``symmetric=True`` returns the mean of the two. Sums run over the
    ``min(rank_x, rank_y)`` canonical pairs.

    Conventions against Morcos et al.'s reference code (google/svcca ``pwcca.compute_pwcca``),
    chosen so that PWCCA keeps CCA's invariance to translation: we use centred neurons ``x_j``
    and the exact unit-norm canonical variates. The reference code (a) takes the variates of
    whichever side has fewer neurons (the first argument when they tie, ours always X), (b)
    forms them from the whitened-space directions without the ``Sigma_xx^-1/2`` factor, adds the
    neuron means back and re-orthonormalises them by QR, and (c) projects uncentred
    activations; so its values differ from the paper's formula (discussed in google/svcca PR 9
    and moskomule/anatome issues 27 and 30).

    Ties: canonical variates of equal coefficients are defined only up to a rotation within
    their group, and ``sum_j |<h_i, x_j>|`` is not rotation invariant, so with exactly tied
    coefficients (e.g. several equal to 1 when the two spans share dimensions) the weights, and
    PWCCA, depend on the basis the SVD returns; in-memory and streaming PWCCA can then differ by
    more than rounding. Untied coefficients give a unique value.

    Returns:
        :class:`repsim.Similarity` named ``"pwcca"`` with details ``symmetric``, ``rank_x``,
        ``rank_y``, ``n``, ``weights_from`` (and ``pwcca_x``, ``pwcca_y`` when symmetric).
        Errors as :func:`cca`.

    Examples:
        One neuron each: one coefficient of weight 1, so PWCCA is ``|corr(x, y)| = 4/5``; a scaled,
        shifted copy has every coefficient 1 (weights sum to 1); ``symmetric=True`` averages the
        weights from X and from Y.

        >>> import numpy as np
        >>> from repsim.measures import pwcca
        >>> round(float(pwcca([[1.0], [2.0], [3.0], [4.0]], [[1.0], [3.0], [2.0], [4.0]])), 6)
        0.8
        >>> rng = np.random.default_rng(0)
        >>> X = rng.standard_normal((300, 4))
        >>> Y = X[:, :2] + rng.standard_normal((300, 2))
        >>> round(float(pwcca(X, 3.0 * X + 1.0)), 6)
        1.0
        >>> both = pwcca(X, Y, symmetric=True)
        >>> bool(abs(both - (pwcca(X, Y) + pwcca(Y, X)) / 2) < 1e-12)
        True
    """
    return pwcca_of(_data_problem(X, Y, conv, dtype, "PWCCA"), symmetric=symmetric, rtol=rtol, conv=conv)
