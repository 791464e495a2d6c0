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

Imports: :mod:`repsim.measures.canonical_bases` only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
import torch
from scipy.linalg import lapack

from repsim.measures.canonical_bases import SideBasis, svcca_dims

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
        iteration on ``T`` (``stebz`` + ``stein``, reorthogonalised within clusters), then ``H``."""
        _, vectors = scipy.linalg.eigh_tridiagonal(
            self.diagonal, self.off_diagonal, select="i", select_range=(0, count - 1), check_finite=False
        )
        # H = diag(1, H1), H1 the product of the reflectors stored below the subdiagonal (LAPACK ormtr, lower)
        vectors[1:] = _apply_reflectors(self.reflectors[1:, :-1], self.tau, vectors[1:], side="L", transpose=False)
        return vectors


def tridiagonal_spectrum(s: np.ndarray) -> TridiagonalSpectrum:
    """:class:`TridiagonalSpectrum` of a symmetric ``s`` ``(d, d)`` (float32 or float64, ``d >= 2``)."""
    sytrd, sytrd_lwork = lapack.get_lapack_funcs(("sytrd", "sytrd_lwork"), (s,))
    lwork, _ = sytrd_lwork(s.shape[0], lower=1)
    reflectors, diagonal, off_diagonal, tau, info = sytrd(s, lower=1, lwork=int(lwork))
    _check_info("sytrd", info)
    eigenvalues = scipy.linalg.eigvalsh_tridiagonal(diagonal, off_diagonal, check_finite=False)
    return TridiagonalSpectrum(reflectors, tau, diagonal, off_diagonal, eigenvalues)


def _apply_reflectors(
    reflectors: np.ndarray, tau: np.ndarray, c: np.ndarray, *, side: str, transpose: bool
) -> np.ndarray:
    """``H c``, ``H' c`` (``side="L"``) or ``c H``, ``c H'`` (``"R"``) for ``H`` the product of the
    Householder reflectors stored by ``geqrf``/``sytrd`` in ``reflectors`` ``(m, len(tau))``
    (LAPACK ``ormqr``)."""
    ormqr = lapack.get_lapack_funcs("ormqr", (reflectors, c))
    width = c.shape[1] if side == "L" else c.shape[0]
    out, _, info = ormqr(side, "T" if transpose else "N", reflectors, tau, c, lwork=max(1, 64 * width))
    _check_info("ormqr", info)
    return out


def _check_info(routine: str, info: int) -> None:
    if info != 0:
        raise FloatingPointError(f"LAPACK {routine} failed (info={info})")


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
        z = torch.linalg.solve_triangular(self.r.T, m, upper=False).numpy()
        return torch.from_numpy(
            _apply_reflectors(self.reflectors, self.tau, z, side="L", transpose=True)[self.tau.shape[0] :]
        )

    def times_w(self, m: torch.Tensor) -> torch.Tensor:
        """``m R^-1 U`` ``(p, k)`` for ``m`` ``(p, d)``."""
        z = torch.linalg.solve_triangular(self.r, m, upper=True, left=False).numpy()
        return torch.from_numpy(
            _apply_reflectors(self.reflectors, self.tau, z, side="R", transpose=False)[:, self.tau.shape[0] :]
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
    complement = torch.linalg.solve_triangular(r.T, directions, upper=False).numpy()
    reflectors, tau = _householder_qr(complement)
    return KeptTriangularSide(r, reflectors, tau, d, rounding)


def _householder_qr(b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``geqrf`` of ``b`` ``(d, m)``, ``m >= 1``: the reflectors (in ``b``'s shape) and ``tau``."""
    geqrf = lapack.get_lapack_funcs("geqrf", (b,))
    reflectors, tau, _, info = geqrf(b, lwork=max(1, 64 * b.shape[1]))
    _check_info("geqrf", info)
    return reflectors, tau
