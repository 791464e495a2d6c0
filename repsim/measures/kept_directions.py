"""SVCCA's kept directions of a well-conditioned side, without the side's full eigendecomposition.

SVCCA keeps the leading ``k`` of a side's ``d`` principal directions (the eigenvectors of its
co-moment matrix ``S = Xc'Xc = R'R``, ``R`` its Cholesky factor), the fewest that explain a
fraction ``keep`` of the variance. Its canonical correlations are those of the projections
``Xc V_k``. Computing every eigenvector of ``S`` costs about four times its eigenvalues alone
(LAPACK's ``syevd`` at ``d = 512``: ``benchmarks/README.md``); this module needs only the
eigenvalues and the ``b = d - k`` *dropped* eigenvectors ``V_b``, usually a few.

With ``Q = Xc R^-1`` the orthonormal basis of the whole side (the Cholesky route of
:mod:`repsim.measures.canonical_gram`), the kept directions are ``Xc V_k = Q (R V_k)``: in ``Q``'s
coordinates the span of ``R V_k``, which is the orthogonal complement of ``B = R^-T V_b`` (since
``(R V_k)' R^-T V_b = V_k' V_b = 0``). With the Householder QR ``B = [U_b U] [T; 0]`` (``U``
``(d, k)``, never formed) the kept basis is ``Q U`` and::

    Qx_kept' Qy_kept = Ux' (Rx^-T Sxy Ry^-1) Uy

each factor applied as triangular solves and ``b`` Householder reflections (LAPACK ``ormqr``),
``O(d^2 b)``. The eigenvalues and ``V_b`` come from one Householder tridiagonalisation
``S = H T H'`` (``sytrd``, about a third of ``syevd``'s vectors run), the tridiagonal eigenvalues
(``O(d^2)``), inverse iteration for the ``b`` dropped vectors of ``T`` (``stein``, ``O(d b^2)``) and
``H`` applied to them (``ormqr`` on ``sytrd``'s reflectors, ``O(d^2 b)``). The values are those of
the full eigendecomposition route to rounding (tested), and the error bound of the Cholesky route
is unchanged: it holds for any orthonormal ``U``.

Imports: :mod:`repsim.measures.canonical_bases` and :mod:`repsim.measures.dense` only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
import torch
from scipy.linalg import lapack

from repsim.measures.canonical_bases import SideBasis, svcca_dims
from repsim.measures.dense import apply_reflectors, check_info, householder_qr, solve_upper

__all__ = ["KeptTriangularSide", "TridiagonalSpectrum", "kept_triangular_side", "tridiagonal_spectrum"]


@dataclass(frozen=True)
class TridiagonalSpectrum:
    """``S = H T H'`` ``(d, d)`` by LAPACK's ``sytrd`` (lower storage): the reflectors of ``H``
    (``reflectors``, ``tau``), ``T``'s diagonal and off-diagonal, and its eigenvalues ascending."""

    reflectors: np.ndarray
    tau: np.ndarray
    diagonal: np.ndarray
    off_diagonal: np.ndarray
    eigenvalues: np.ndarray

    def lowest_eigenvectors(self, count: int) -> np.ndarray:
        """The eigenvectors ``(d, count)`` of ``S`` of its ``count`` smallest eigenvalues: inverse
        iteration on ``T`` (``stein``, reorthogonalised within clusters) from the eigenvalues
        already computed where ``T`` does not split (else from ``stebz``'s, which tell the
        blocks apart), then ``H``."""
        d = self.diagonal.shape[0]
        if _splits(self.diagonal, self.off_diagonal):
            _, vectors = scipy.linalg.eigh_tridiagonal(
                self.diagonal, self.off_diagonal, select="i", select_range=(0, count - 1), check_finite=False
            )
        else:
            stein = lapack.get_lapack_funcs("stein", (self.diagonal,))
            one_block, split = np.ones(d, np.int32), np.full(d, d, np.int32)
            vectors, info = stein(self.diagonal, self.off_diagonal, self.eigenvalues[:count], one_block, split)
            if info != 0:
                raise np.linalg.LinAlgError(f"LAPACK stein: {info} eigenvectors did not converge")
        # H = diag(1, H1), H1 the product of the reflectors stored below the subdiagonal (LAPACK ormtr, lower)
        vectors[1:] = apply_reflectors(self.reflectors[1:, :-1], self.tau, vectors[1:], side="L", transpose=False)
        return vectors


def _splits(diagonal: np.ndarray, off_diagonal: np.ndarray) -> bool:
    """Whether the tridiagonal ``T`` splits into blocks by LAPACK ``stebz``'s rule:
    ``e_j^2 <= ulp^2 |d_j d_(j+1)| + safe_min`` for some off-diagonal ``e_j``."""
    info = np.finfo(diagonal.dtype)
    products = np.abs(diagonal[:-1] * diagonal[1:]) * info.eps**2 + info.tiny
    return bool((off_diagonal * off_diagonal <= products).any())


def tridiagonal_spectrum(s: np.ndarray) -> TridiagonalSpectrum:
    """:class:`TridiagonalSpectrum` of a symmetric ``s`` ``(d, d)`` (float32 or float64, ``d >= 2``)."""
    sytrd, sytrd_lwork = lapack.get_lapack_funcs(("sytrd", "sytrd_lwork"), (s,))
    lwork, _ = sytrd_lwork(s.shape[0], lower=1)
    reflectors, diagonal, off_diagonal, tau, info = sytrd(s, lower=1, lwork=int(lwork))
    check_info("sytrd", info)
    eigenvalues = scipy.linalg.eigvalsh_tridiagonal(diagonal, off_diagonal, check_finite=False)
    return TridiagonalSpectrum(reflectors, tau, diagonal, off_diagonal, eigenvalues)


@dataclass(frozen=True)
class KeptTriangularSide:
    """SVCCA's ``k`` kept directions of a side with certified Cholesky factor ``r`` ``(d, d)``:
    ``w = R^-1 U`` with ``U`` ``(d, k)`` the complement of the ``b = d - k`` Householder
    reflectors of ``B = R^-T V_b`` (``reflectors`` ``(d, b)``, ``tau``); see the module docstring.
    Duck-types :class:`~repsim.measures.canonical_bases.SideBasis` for the co-moment route
    (``dims``, ``rank``, ``rounding``, ``times_w``, ``w_t_times``)."""

    r: torch.Tensor
    reflectors: np.ndarray
    tau: np.ndarray
    rank: int
    rounding: float

    @property
    def dims(self) -> int:
        return self.r.shape[0] - self.tau.shape[0]

    def w_t_times(self, m: torch.Tensor) -> torch.Tensor:
        """``U' R^-T m`` ``(k, p)`` for ``m`` ``(d, p)``."""
        z = solve_upper(self.r, m, transpose=True).numpy()
        return torch.from_numpy(
            apply_reflectors(self.reflectors, self.tau, z, side="L", transpose=True)[self.tau.shape[0] :]
        )

    def times_w(self, m: torch.Tensor) -> torch.Tensor:
        """``m R^-1 U`` ``(p, k)`` for ``m`` ``(p, d)``."""
        z = solve_upper(self.r, m, left=False).numpy()
        return torch.from_numpy(
            apply_reflectors(self.reflectors, self.tau, z, side="R", transpose=False)[:, self.tau.shape[0] :]
        )


def kept_triangular_side(
    s: torch.Tensor, r: torch.Tensor, rtol: float, keep: float | int, rounding: float
) -> KeptTriangularSide | SideBasis | None:
    """SVCCA's kept directions of a CPU side with co-moment matrix ``s = r'r`` ``(d, d)``, or
    ``None`` where this route does not pay or does not apply: a numerical rank below ``d`` (at
    ``rtol`` on ``sqrt(eigenvalue / largest)``), more directions dropped than kept (then the
    full eigendecomposition costs less than ``d - k`` vectors by inverse iteration), or inverse
    iteration that did not converge. Keeping
    every direction gives the whole triangular side, ``w = R^-1``."""
    spectrum = tridiagonal_spectrum(s.numpy())
    singular = torch.from_numpy(np.sqrt(np.clip(spectrum.eigenvalues[::-1], 0, None)))
    d = s.shape[0]
    if int((singular > rtol * singular[0]).sum()) < d:
        return None
    dropped = d - svcca_dims(singular, keep)
    if dropped > d - dropped:
        return None
    if dropped == 0:
        return SideBasis(w=None, f=r, rank=d, rounding=rounding, triangular=True)
    try:
        directions = torch.from_numpy(spectrum.lowest_eigenvectors(dropped))
    except np.linalg.LinAlgError:  # inverse iteration did not converge: every eigenvector instead
        return None
    complement = solve_upper(r, directions, transpose=True).numpy()
    reflectors, tau = householder_qr(complement)
    return KeptTriangularSide(r, reflectors, tau, d, rounding)
