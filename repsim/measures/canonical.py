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
coefficients are the singular values of a small matrix ``M = Qx'Qy``, taken from the eigenvalues
of its Gram matrix (a third of the SVD's time) where those are certified to the same accuracy,
else from its SVD (:func:`~repsim.measures.canonical_bases.certified_singular_values`); PWCCA's
left singular vectors come from the eigendecomposition of ``M M'`` (less than half the SVD's
time) where its weighted mean is so certified, else from the SVD
(:func:`~repsim.measures.canonical_bases.certified_left_singular`). ``.details`` names the route
(``"cholesky"`` or ``"qr"``) and its ``error_bound``: on every coefficient for :func:`cca`, on the
value (a mean, or PWCCA's weighted mean of the coefficients, its weights as computed) for
:func:`mean_cca`, :func:`svcca` and :func:`pwcca`.
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

The machinery (problems, bases, the coefficients and their error bounds) is in
:mod:`repsim.measures.canonical_problems`; this module holds the measures.

Imports: :mod:`repsim.measures.canonical_problems` and :mod:`repsim.measures.result` only
(nothing of ``repsim`` outside :mod:`repsim.measures`).
"""

from __future__ import annotations

from typing import Any

import torch

from repsim.measures.canonical_problems import (
    CCA_MIN_N,
    CCAResult,
    cca_of,
    check_leading,
    data_problem,
    leading_count,
    mean_cca_of,
    pwcca_of,
    svcca_of,
)
from repsim.measures.result import Similarity

__all__ = ["CCA_MIN_N", "CCAResult", "cca", "cca98", "check_leading", "leading_count", "mean_cca", "pwcca", "svcca"]


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
    return cca_of(data_problem(X, Y, conv, dtype, "CCA"), rtol=rtol, conv=conv)


def mean_cca(
    X: Any,
    Y: Any,
    *,
    conv: str | None = None,
    dtype: torch.dtype = torch.float64,
    rtol: float | None = None,
    leading: float | None = None,
) -> Similarity:
    """Mean canonical correlation ``(1/k) sum_i rho_i`` over all ``k = min(rank_x, rank_y)``
    coefficients of :func:`cca` (same arguments and errors), or with ``leading`` (a fraction in
    ``(0, 1]``) the convention of google/svcca's ``get_cca_similarity`` (its ``"mean"``): the mean
    of the leading coefficients whose sum first reaches ``leading`` of the total
    (:func:`leading_count`; ``0.98`` there, :func:`cca98` here). The second is never below the
    first; docs/cca_conventions.md works an example.

    Returns:
        :class:`repsim.Similarity` named ``"mean_cca"`` (``"cca98"`` with ``leading``) with details
        ``rank_x``, ``rank_y``, ``n`` (and ``leading``, ``kept``).

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
    return mean_cca_of(data_problem(X, Y, conv, dtype, "CCA"), rtol=rtol, conv=conv, leading=leading)


def cca98(X: Any, Y: Any, **kwargs: Any) -> Similarity:
    """google/svcca's convention of mean CCA: ``mean_cca(X, Y, leading=0.98, ...)``, the mean of
    the leading coefficients whose sum reaches 98% of the total (``get_cca_similarity``'s
    ``"mean"`` with its default ``threshold=0.98``).

    Examples:
        >>> import numpy as np
        >>> from repsim.measures import cca98, mean_cca
        >>> rng = np.random.default_rng(0)
        >>> X = rng.standard_normal((400, 6))
        >>> Y = X @ rng.standard_normal((6, 6)) + 2.0 * rng.standard_normal((400, 6))
        >>> bool(cca98(X, Y) >= mean_cca(X, Y)), cca98(X, Y).details["kept"] <= 6
        (True, True)
    """
    return mean_cca(X, Y, leading=0.98, **kwargs)


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
    return svcca_of(data_problem(X, Y, conv, dtype, "SVCCA"), keep, rtol=rtol, conv=conv)


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
    return pwcca_of(data_problem(X, Y, conv, dtype, "PWCCA"), symmetric=symmetric, rtol=rtol, conv=conv)
