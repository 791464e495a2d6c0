"""The dense ``d x d`` linear algebra of the CCA routes, on the CPU through scipy's LAPACK and
BLAS, elsewhere through torch (tensors on a GPU stay there).

At the sizes of a layer (``d`` in the hundreds), float64, one thread, scipy's OpenBLAS runs
these faster than torch's CPU kernels, and a symmetric eigendecomposition with vectors gives the
left singular vectors in less than half an SVD's time (``benchmarks/bench_dense.py``, figures in
``benchmarks/README.md``). Every helper takes and returns torch tensors; other dtypes (which
LAPACK lacks) and tensors that need gradients go to torch.

Formulas, with ``R`` upper triangular ``(d, d)`` and ``op(R)`` ``R`` or ``R'``:

- :func:`solve_upper`: ``op(R)^-1 M`` or ``M op(R)^-1`` (BLAS ``trsm``, no copy of ``R``);
- :func:`times_upper`: ``M R`` (BLAS ``trmm``);
- :func:`cholesky_upper`: ``R`` with ``S = R'R`` (LAPACK ``potrf``), or ``None``;
- :func:`singular_values`: ``svd(M)``'s values (``gesvd``);
- :func:`gram_eigenvalues`: the eigenvalues of ``M'M`` (``syrk`` + ``syevd``);
- :func:`left_gram_eigh`: the eigenvalues and eigenvectors of ``M M'`` (``syrk`` + ``syevd``);
- :func:`apply_reflectors` and :func:`householder_qr`: Householder reflectors (``ormqr``,
  ``geqrf``).

Imports: nothing of ``repsim`` (numpy, scipy and torch only).
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import torch
from scipy.linalg import blas, lapack

__all__ = [
    "apply_reflectors",
    "cholesky_upper",
    "gram_eigenvalues",
    "householder_qr",
    "left_gram_eigh",
    "singular_values",
    "solve_upper",
    "times_upper",
]

_LAPACK_DTYPES = (torch.float32, torch.float64)


def _on_lapack(*tensors: torch.Tensor) -> bool:
    """Whether every tensor is a CPU float32/float64 tensor (the scipy path)."""
    return all(t.device.type == "cpu" and t.dtype in _LAPACK_DTYPES and not t.requires_grad for t in tensors)


def solve_upper(r: torch.Tensor, m: torch.Tensor, *, transpose: bool = False, left: bool = True) -> torch.Tensor:
    """``op(R)^-1 M`` (``left``) or ``M op(R)^-1`` for ``R`` ``(d, d)`` upper triangular and
    ``op(R) = R'`` where ``transpose``, else ``R`` (BLAS ``trsm`` on the CPU)."""
    if not _on_lapack(r, m):
        a = r.T if transpose else r
        return torch.linalg.solve_triangular(a, m, upper=not transpose, left=left)
    return _triangular_blas("trsm", r, m, transpose=transpose, left=left)


def times_upper(m: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """``M R`` for ``R`` ``(d, d)`` upper triangular and ``M`` ``(p, d)`` (BLAS ``trmm`` on the
    CPU: half a general product's work)."""
    if not _on_lapack(r, m):
        return m @ r
    return _triangular_blas("trmm", r, m, transpose=False, left=False)


def _triangular_blas(routine: str, r: torch.Tensor, m: torch.Tensor, *, transpose: bool, left: bool) -> torch.Tensor:
    """BLAS ``trsm`` (``op(R)^-1`` applied) or ``trmm`` (``op(R)`` applied) to ``M`` from the left
    or right, on Fortran-order views: a row-major ``R`` is the column-major ``R'`` (lower), and a
    row-major ``M`` turns the equation around (``op(R) X = M`` is ``X' op(R)' = M'``), so ``R`` is
    never copied and ``M`` once (BLAS writes the result over its copy)."""
    a, b, lower = r.numpy(), m.numpy(), False
    if not a.flags.f_contiguous:
        a, lower, transpose = a.T, True, not transpose
    flipped = not b.flags.f_contiguous
    if flipped:
        b, left, transpose = b.T, not left, not transpose
    function = blas.get_blas_funcs(routine, (a, b))
    x = function(1.0, a, b, side=0 if left else 1, lower=int(lower), trans_a=int(transpose))
    return torch.from_numpy(x.T if flipped else x)


def cholesky_upper(s: torch.Tensor) -> torch.Tensor | None:
    """``R`` ``(d, d)`` upper triangular with ``S = R'R`` for a symmetric ``s``, or ``None`` where
    ``s`` is not positive definite in floating point (or the factor is not finite)."""
    if not _on_lapack(s):
        lower, info = torch.linalg.cholesky_ex(s)
        return lower.T if int(info) == 0 and bool(torch.isfinite(lower).all()) else None
    # s is symmetric: its row-major array is its column-major one; potrf with lower=1 writes L
    # into the column-major result, whose row-major view is L' = R
    potrf = lapack.get_lapack_funcs("potrf", (s.numpy(),))
    factor, info = potrf(s.numpy().T, lower=1, clean=1)
    return torch.from_numpy(factor.T) if info == 0 and np.isfinite(factor).all() else None


def singular_values(m: torch.Tensor) -> torch.Tensor:
    """The singular values of ``m``, descending: LAPACK's ``gesvd`` on the CPU (the fastest
    values-only driver there, measured), torch's elsewhere."""
    if not _on_lapack(m):
        return torch.linalg.svdvals(m)
    values = scipy.linalg.svd(m.numpy(), compute_uv=False, lapack_driver="gesvd", check_finite=False)
    return torch.from_numpy(values).to(m.dtype)


def gram_eigenvalues(m: torch.Tensor) -> torch.Tensor:
    """The eigenvalues of ``m'm`` ``(k, k)`` for ``m`` ``(j, k)``, ascending: on the CPU the
    product by BLAS's symmetric update (numpy's ``syrk``) and LAPACK's values-only ``syevd``."""
    if not _on_lapack(m):
        return torch.linalg.eigvalsh(m.T @ m)
    a = m.numpy()
    return torch.from_numpy(scipy.linalg.eigvalsh(a.T @ a, driver="evd", overwrite_a=True, check_finite=False))


def left_gram_eigh(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The eigenvalues ``(j,)`` (descending) and eigenvectors ``(j, j)`` (columns) of
    ``G = m m'`` for ``m`` ``(j, k)``: the squared singular values and left singular vectors of
    ``m`` (LAPACK's divide-and-conquer ``syevd`` on the CPU)."""
    if not _on_lapack(m):
        lam, vectors = torch.linalg.eigh(m @ m.T)
    else:
        a = m.numpy()
        gram = a @ a.T
        lam, vectors = (
            torch.from_numpy(t) for t in scipy.linalg.eigh(gram, driver="evd", overwrite_a=True, check_finite=False)
        )
    return lam.flip(0), vectors.flip(1)


def apply_reflectors(
    reflectors: np.ndarray, tau: np.ndarray, c: np.ndarray, *, side: str, transpose: bool
) -> np.ndarray:
    """``H c``, ``H' c`` (``side="L"``) or ``c H``, ``c H'`` (``"R"``) for ``H`` the product of the
    Householder reflectors stored by ``geqrf``/``sytrd`` in ``reflectors`` ``(m, len(tau))``
    (LAPACK ``ormqr``)."""
    ormqr = lapack.get_lapack_funcs("ormqr", (reflectors, c))
    width = c.shape[1] if side == "L" else c.shape[0]
    out, _, info = ormqr(side, "T" if transpose else "N", reflectors, tau, c, lwork=max(1, 64 * width))
    check_info("ormqr", info)
    return out


def householder_qr(b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``geqrf`` of ``b`` ``(d, m)``, ``m >= 1``: the reflectors (in ``b``'s shape) and ``tau``."""
    geqrf = lapack.get_lapack_funcs("geqrf", (b,))
    reflectors, tau, _, info = geqrf(b, lwork=max(1, 64 * b.shape[1]))
    check_info("geqrf", info)
    return reflectors, tau


def check_info(routine: str, info: int) -> None:
    """Raise ``FloatingPointError`` naming the LAPACK routine that reported ``info != 0``."""
    if info != 0:
        raise FloatingPointError(f"LAPACK {routine} failed (info={info})")
