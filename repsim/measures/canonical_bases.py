"""One side of a CCA problem: its numerical rank, the directions kept, and an orthonormal basis.

A centred side ``C`` ``(n, d)`` enters canonical correlation analysis only through an orthonormal
basis ``Q`` ``(n, k)`` of the directions kept: every direction above the rank tolerance
(:func:`default_rtol`, :func:`check_rtol`) for CCA, mean CCA and PWCCA, or SVCCA's leading
directions (:func:`svcca_dims`, :func:`check_keep`). :class:`SideBasis` holds ``Q`` in factored
form, built from a certified well-conditioned triangular factor (:func:`certified_full_rank`) or
from a singular value decomposition (:func:`side_from_spectrum`). The in-memory path
(:mod:`repsim.measures.canonical`, from a QR factor of the data) and the streaming path
(:mod:`repsim.measures.streaming`, from co-moments) share these; the algorithm and its accuracy
are described in :mod:`repsim.measures.canonical`.

Imports: :mod:`repsim.measures.dense` only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from repsim.measures.dense import gram_eigenvalues, left_gram_eigh, singular_values, solve_upper


@dataclass(frozen=True)
class SideBasis:
    """The kept directions of one centred side ``C`` ``(n, d)``, in factored form.

    ``Q = C @ w`` ``(n, k)`` is an orthonormal basis of the kept directions and ``f = Q' C``
    ``(k, d)``. ``rank`` is the numerical rank of ``C`` (``k <= rank``); ``rounding`` bounds the
    loss of orthonormality of the computed ``Q``. ``triangular``: ``f`` is the upper triangular
    ``R`` of ``C = QR`` (or of the Cholesky factorisation of ``C'C``) and ``w = R^-1``, which may
    be left unformed (``None``): products with it are then triangular solves with ``f``.
    """

    w: torch.Tensor | None
    f: torch.Tensor
    rank: int
    rounding: float
    triangular: bool = False

    @property
    def dims(self) -> int:
        return self.f.shape[0]

    def times_w(self, m: torch.Tensor) -> torch.Tensor:
        """``m @ w`` (``m`` ``(p, d)``): a triangular solve for a triangular side."""
        if self.triangular:
            return solve_upper(self.f, m, left=False)
        return m @ self.w

    def w_t_times(self, m: torch.Tensor) -> torch.Tensor:
        """``w' @ m`` (``m`` ``(d, p)``): a triangular solve for a triangular side."""
        if self.triangular:
            return solve_upper(self.f, m, transpose=True)
        return self.w.T @ m

    def basis_t(self, c: torch.Tensor) -> torch.Tensor:
        """``Q'`` ``(k, n)`` for the side's centred data ``c`` ``(n, d)``: ``R^-T C'`` by a
        triangular solve (cheaper than the product with ``w``), else ``(C w)'``."""
        if self.triangular:
            return solve_upper(self.f, c.T, transpose=True)
        return (c @ self.w).T


def certified_singular_values(m: torch.Tensor, budget: float, *, mean: bool = False) -> tuple[torch.Tensor, float]:
    """The singular values of ``m`` ``(k1, k2)`` (norm at most about 1: a matrix of canonical
    correlations), descending, with a bound on their absolute errors (``mean``: on the error of
    their mean): ``(values, bound)``.

    The cheap way where it is accurate to ``budget``: the square roots of the eigenvalues of the
    smaller Gram matrix ``G = m'm`` (or ``m m'``), within :func:`gram_value_errors`; ``G`` costs a
    symmetric product and its eigenvalues about a third of the singular value decomposition's
    time. Where the largest error (``mean``: their mean) exceeds ``budget``, the values come from
    the singular value decomposition of ``m`` itself (:func:`singular_values`, backward stable:
    within ``k u max(values)``, ``k = min(k1, k2)``).
    """
    k = min(m.shape)
    if budget > 0 and k > 0:
        lam = gram_eigenvalues(m if m.shape[1] <= m.shape[0] else m.T).flip(0)
        values, errors = gram_value_errors(lam, max(m.shape))
        bound = float(errors.mean() if mean else errors.max())
        if bound <= budget:
            return values, bound
    values = singular_values(m)
    return values, svd_error(values, k)


def certified_left_singular(
    m: torch.Tensor, budget: float, weigh: Callable[[torch.Tensor], torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The ``k = min(k1, k2)`` largest singular values ``s`` of ``m`` ``(k1, k2)`` (descending),
    weights ``w = weigh(P)`` ``(k,)`` of their left singular vectors ``P`` ``(k1, k)`` (summing to
    1), and a bound on the error of the weighted mean ``w's``: ``(s, w, bound)``.

    From the eigendecomposition of ``G = m m'`` (LAPACK's ``syevd`` on the CPU, less than half the
    SVD's time: ``benchmarks/bench_dense.py``) where the weighted errors of the values
    (:func:`gram_value_errors`), ``sum_i w_i e_i``, stay within ``budget``; else from the SVD of
    ``m`` (every value within :func:`svd_error`). The bound covers the values, the weights as
    computed (as on the SVD's route)."""
    k = min(m.shape)
    if budget > 0 and k > 0:
        lam, vectors = left_gram_eigh(m)
        values, errors = gram_value_errors(lam, m.shape[1])
        weights = weigh(vectors[:, :k])
        bound = float(weights @ errors[:k])
        if bound <= budget:
            return values[:k], weights, bound
    p, values, _ = torch.linalg.svd(m, full_matrices=False)
    return values, weigh(p), svd_error(values, k)


def gram_value_errors(lam: torch.Tensor, inner: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``sqrt(lambda)`` and a bound on each one's error, for the computed eigenvalues ``lambda``
    ``(j,)`` (descending) of a Gram matrix ``G = a a'`` ``(j, j)`` whose entries sum ``inner``
    products. Forming ``G`` and the symmetric eigensolver perturb every eigenvalue by at most
    (first order, with the probabilistic bound of Higham & Mary 2019 for the sums of ``G``, as
    :mod:`repsim.measures.canonical_gram`; ``u`` the unit roundoff)::

        dl = u (6 sqrt(inner) sum(lambda) + j max(lambda))

    so each ``sqrt(lambda)`` is within ``min(sqrt(dl), dl / (sqrt(lambda) + sqrt(max(lambda -
    dl, 0))))`` of the exact singular value of ``a``."""
    lam = lam.clamp(min=0)
    u = torch.finfo(lam.dtype).eps / 2
    dl = u * (6 * inner**0.5 * float(lam.sum()) + lam.shape[0] * float(lam[0]))
    values = lam.sqrt()
    if dl == 0:
        return values, torch.zeros_like(values)
    return values, (dl / (values + (lam - dl).clamp(min=0).sqrt())).clamp(max=dl**0.5)


def svd_error(values: torch.Tensor, k: int) -> float:
    """The SVD's backward-stable error bound on ``k`` singular values: ``k u max(values)``."""
    return k * torch.finfo(values.dtype).eps / 2 * float(values.max()) if k else 0.0


def default_rtol(n: int, d: int, dtype: torch.dtype, source_eps: float = 0.0) -> float:
    """Rank tolerance relative to the largest singular value: ``max(n, d) * eps`` (numpy's),
    with ``eps`` the larger of the computing dtype's and ``source_eps``, the rounding unit of the
    data as given (float32 activations are only linear-dependent to ~1e-7, and that noise must
    not count as signal when they are upcast to float64)."""
    return max(n, d) * max(torch.finfo(dtype).eps, source_eps)


def check_rtol(rtol: float | None) -> None:
    """``rtol`` must be ``None`` (the default tolerance) or a number in ``[0, 1)``."""
    if rtol is None:
        return
    if isinstance(rtol, bool) or not isinstance(rtol, (int, float)) or not 0 <= rtol < 1:
        raise ValueError(f"rtol must be None or a number in [0, 1); got {rtol!r}")


def certified_full_rank(r: torch.Tensor, rtol: float, rounding_unit: float) -> SideBasis | None:
    """The side ``w = R^-1``, ``f = R`` if every singular value of square ``R`` is certainly above
    ``rtol * s_max`` (``||R||_F ||R^-1||_F < 1/(2 rtol)``), else ``None``."""
    eye = torch.eye(r.shape[0], dtype=r.dtype, device=r.device)
    w = solve_upper(r, eye)
    cond = float(torch.linalg.matrix_norm(w) * torch.linalg.matrix_norm(r))
    if not 2 * rtol * cond < 1:  # also catches inf / nan from an exactly singular R
        return None
    return SideBasis(w=w, f=r, rank=r.shape[0], rounding=rounding_unit * cond, triangular=True)


def side_from_spectrum(
    s: torch.Tensor, vh: torch.Tensor, rtol: float, keep: float | int | None, rounding_unit: float, power: int
) -> SideBasis:
    """A side from the singular values ``s`` (descending) and right vectors ``vh`` of its data.

    Rank = number of ``s_i > rtol * s_0``; kept ``k`` = rank (``keep=None``) or
    :func:`svcca_dims`; ``w = V_k / s_k``, ``f = s_k V_k'``; ``rounding = rounding_unit *
    cond^power`` with ``cond = s_0 / s_{k-1}``.
    """
    rank = int((s > rtol * s[0]).sum())
    k = rank if keep is None else svcca_dims(s[:rank], keep)
    s_k, v_k = s[:k], vh[:k]
    cond = float(s[0] / s_k[-1])
    rounding = rounding_unit * cond**power
    return SideBasis(w=v_k.T / s_k, f=s_k[:, None] * v_k, rank=rank, rounding=rounding)


def svcca_dims(singular_values: torch.Tensor, keep: float | int) -> int:
    """How many leading directions SVCCA keeps, given the kept-rank singular values (descending).

    ``keep`` a float in ``(0, 1]``: the fewest leading directions whose explained variance
    ``sum_{i<k} s_i^2`` is ``>= keep * sum_i s_i^2`` (Raghu et al. 2017: "99% of the variance").
    ``keep`` an int ``>= 1``: that many directions, at most the rank.
    """
    rank = singular_values.shape[0]
    if isinstance(keep, (int, np.integer)):
        return min(int(keep), rank)
    energy = torch.cumsum(singular_values.square(), 0)
    short = int((energy < keep * energy[-1]).sum())  # leading prefixes below the target
    return min(short + 1, rank)


def check_keep(keep: Any) -> float | int:
    """Validate SVCCA's ``keep``: an int ``>= 1`` (dimensions) or a float in ``(0, 1]`` (variance)."""
    if isinstance(keep, bool) or not isinstance(keep, (int, float, np.integer, np.floating)):
        raise ValueError(f"keep must be an int (dimensions) or a float in (0, 1] (variance); got {keep!r}")
    if isinstance(keep, (int, np.integer)):
        if keep < 1:
            raise ValueError(f"keep as a number of dimensions must be >= 1; got {keep}")
        return int(keep)
    if not 0 < keep <= 1:
        raise ValueError(f"keep as a fraction of variance must be in (0, 1]; got {keep}")
    return float(keep)
