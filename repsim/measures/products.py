"""The products every exact CCA and CKA must compute, at the speed of the machine's BLAS.

For representations ``X`` ``(n, dx)`` and ``Y`` ``(n, dy)`` the measures need ``X'X``, ``Y'Y``
and ``X'Y`` (or the Gram matrices ``XX'``, ``YY'`` when ``n`` is small). A symmetric product
``A'A`` needs only half the work of a general one: BLAS's symmetric rank-k update (``syrk``).
torch's ``A.T @ A`` does not use it; numpy's does (it recognises a matrix times its own
transpose). So on the CPU the products go through numpy, sharing memory with the tensors (no
copy), and on other devices (CUDA) through torch, where the tensors stay. The results are the
same sums in another order: equal to rounding.

Imports: nothing of ``repsim`` (torch and numpy only).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["CentredProducts", "centred_products", "cross_product", "gram"]


def _as_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy()


def gram(a: torch.Tensor) -> torch.Tensor:
    """``a'a`` ``(d, d)`` of ``a`` ``(n, d)``: a symmetric rank-k update on the CPU (numpy's
    BLAS ``syrk``, half the multiply-adds of a general product), ``a.T @ a`` elsewhere.
    ``gram(t.T)`` is the ``(n, n)`` Gram matrix ``tt'``.

    Examples:
        >>> import torch
        >>> gram(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
        tensor([[10., 14.],
                [14., 20.]])
    """
    if a.device.type != "cpu":
        return a.T @ a
    x = _as_numpy(a)
    return torch.from_numpy(x.T @ x)


def cross_product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a'b`` ``(da, db)`` of ``a`` ``(n, da)`` and ``b`` ``(n, db)`` (numpy's BLAS on the CPU,
    so that it sums as :func:`gram` does; torch elsewhere)."""
    if a.device.type != "cpu":
        return a.T @ b
    return torch.from_numpy(_as_numpy(a).T @ _as_numpy(b))


#: Rows per block of :func:`centred_products`: a block of both sides, centred, stays in cache.
ROWS_PER_BLOCK = 4096
#: Centred Gram diagonals within ``2^-LIMIT .. 2^LIMIT`` prove that no product overflowed or
#: underflowed (entries are bounded by the diagonal, fourth powers stay representable).
_DIAGONAL_LIMIT = 2.0**240


@dataclass(frozen=True)
class CentredProducts:
    """``Sxx = Xc'Xc``, ``Syy``, ``Sxy`` of the column-centred data, the column means, and for
    debiased CKA the sums ``sum a^2``, ``sum b^2``, ``sum a b`` of the squared row norms
    ``a_i = ||xc_i||^2``, ``b_i = ||yc_i||^2`` (``None`` when not asked for)."""

    n: int
    mean_x: torch.Tensor
    mean_y: torch.Tensor
    sxx: torch.Tensor
    syy: torch.Tensor
    sxy: torch.Tensor
    row_norm_sums: tuple[float, float, float] | None = None


def centred_products(x: torch.Tensor, y: torch.Tensor, *, row_norms: bool = False) -> CentredProducts | None:
    """The products of the centred data, computed where they are fastest: ``None`` unless ``x``,
    ``y`` are CPU tensors of ordinary magnitude (then the caller centres the data in full, scaled
    as :func:`repsim.measures.inputs.centre` does, and checks them there).

    Two passes over the data, the least any exact method makes: the column means (whose
    finiteness proves every entry finite), then, block by block of :data:`ROWS_PER_BLOCK` rows,
    each block centred into a buffer that stays in cache and its products added up (BLAS's
    symmetric update for ``Sxx`` and ``Syy``): the centred data never exist in full, and the data
    are read from memory once for all three products. Centring at the exact means keeps the
    accuracy of explicit centring, however large the means. Data so large or small that a
    product could overflow or underflow are left to the caller (the Gram diagonals tell).
    """
    if x.device.type != "cpu" or y.device.type != "cpu":
        return None
    xn, yn = _as_numpy(x), _as_numpy(y)
    mx, my = xn.mean(axis=0), yn.mean(axis=0)
    if not (np.isfinite(mx).all() and np.isfinite(my).all()):
        return None
    n, dx, dy = xn.shape[0], xn.shape[1], yn.shape[1]
    sxx, syy, sxy = np.zeros((dx, dx), xn.dtype), np.zeros((dy, dy), xn.dtype), np.zeros((dx, dy), xn.dtype)
    norms = np.zeros(3) if row_norms else None
    rows = min(ROWS_PER_BLOCK, n)
    bx, by = np.empty((rows, dx), xn.dtype), np.empty((rows, dy), yn.dtype)
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):  # extremes are told below
        _accumulate(xn, yn, mx, my, (bx, by), (sxx, syy, sxy), norms)
    if not all(_ordinary(np.diagonal(s)) for s in (sxx, syy)):
        return None
    as_torch = torch.from_numpy
    sums = None if norms is None else tuple(float(v) for v in norms)
    return CentredProducts(n, as_torch(mx), as_torch(my), as_torch(sxx), as_torch(syy), as_torch(sxy), sums)


def _accumulate(xn, yn, mx, my, buffers, sums, norms) -> None:
    """Add the products of each block of rows, centred into ``buffers``, to ``sums`` (and the
    row-norm sums to ``norms``)."""
    (bx, by), (sxx, syy, sxy) = buffers, sums
    n, blocks = xn.shape[0], -(-xn.shape[0] // bx.shape[0])
    edges = [n * i // blocks for i in range(blocks + 1)]  # equal blocks: no small last one
    for start, stop in zip(edges[:-1], edges[1:]):
        k = stop - start
        cx = np.subtract(xn[start:stop], mx, out=bx[:k])
        cy = np.subtract(yn[start:stop], my, out=by[:k])
        sxx += cx.T @ cx
        syy += cy.T @ cy
        sxy += cx.T @ cy
        if norms is not None:
            a, b = np.einsum("ij,ij->i", cx, cx), np.einsum("ij,ij->i", cy, cy)
            norms += (a @ a, b @ b, a @ b)


def _ordinary(diagonal: np.ndarray) -> bool:
    """A Gram diagonal that no overflow or underflow can have touched (a zero one may be an
    underflow, or a constant side: the caller's full path tells them apart)."""
    largest = float(diagonal.max())
    return 1 / _DIAGONAL_LIMIT < largest < _DIAGONAL_LIMIT


def products_of_centred(xc: torch.Tensor, yc: torch.Tensor, *, row_norms: bool = False) -> CentredProducts:
    """:class:`CentredProducts` of data already centred in full (any device; means zero)."""
    norms = None
    if row_norms:
        a, b = torch.einsum("ij,ij->i", xc, xc), torch.einsum("ij,ij->i", yc, yc)
        norms = (float(a @ a), float(b @ b), float(a @ b))
    zero_x, zero_y = xc.new_zeros(xc.shape[1]), yc.new_zeros(yc.shape[1])
    return CentredProducts(xc.shape[0], zero_x, zero_y, gram(xc), gram(yc), cross_product(xc, yc), norms)


def is_constant(products: CentredProducts, eps: float) -> tuple[bool, bool]:
    """Whether each side is constant: every column's centred sum of squares at the rounding level
    of its raw one (``sum c^2 <= (64 eps)^2 sum x^2``, as :func:`repsim.measures.inputs.centre`
    asks of the largest entries)."""
    out = []
    for s, m in ((products.sxx, products.mean_x), (products.syy, products.mean_y)):
        centred = torch.diagonal(s)
        raw = centred + products.n * m * m
        out.append(bool(centred.max() <= (64 * eps) ** 2 * raw.max()))
    return out[0], out[1]
