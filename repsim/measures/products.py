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
import scipy.linalg
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

    One pass over the data where it can be certified (:func:`shifted_products`, with the row
    norms of debiased CKA corrected by :class:`RowNormMoments`), else two
    (:func:`two_pass_products`). In
    both, block by block of :data:`ROWS_PER_BLOCK` rows, each block shifted into a buffer that
    stays in cache and its products added up (BLAS's symmetric update for ``Sxx`` and ``Syy``):
    the centred data never exist in full. Data so large or small
    that a product could overflow or underflow are left to the caller (the Gram diagonals tell;
    a NaN or infinity makes them NaN or infinite).
    """
    if x.device.type != "cpu" or y.device.type != "cpu":
        return None
    xn, yn = _as_numpy(x), _as_numpy(y)
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):  # extremes are told below
        products = shifted_products(xn, yn, row_norms=row_norms) or two_pass_products(xn, yn, row_norms=row_norms)
    if products is None or not all(_ordinary(np.diagonal(s)) for s in (products.sxx, products.syy)):
        return None
    return products


def _blocks(n: int, rows: int) -> list[tuple[int, int]]:
    """``[start, stop)`` of equal blocks of at most ``rows`` rows (no small last block)."""
    count = -(-n // rows)
    edges = [n * i // count for i in range(count + 1)]
    return list(zip(edges[:-1], edges[1:]))


#: Fewest rows per column that make blocks of unshifted data pay (measured: ``benchmarks/README.md``,
#: "Blocks of unshifted data").
MIN_BLOCK_ROWS_PER_COLUMN = 8


def _rows_per_block(n: int, d: int, *, shifted: bool) -> int:
    """Rows per block of :func:`shifted_products` for ``n`` rows of at most ``d`` columns. A
    shifted side needs blocks (its shifted copy lives in a buffer in cache). Unshifted data are
    blocked only where a block has at least :data:`MIN_BLOCK_ROWS_PER_COLUMN` rows per column:
    each block adds ``d x d`` partial products, which at fewer rows cost more than the column
    sums (and row norms) that blocks take from the cache; elsewhere the data are multiplied
    whole."""
    rows = min(ROWS_PER_BLOCK, n)
    block = n // len(_blocks(n, rows))
    return rows if shifted or block >= MIN_BLOCK_ROWS_PER_COLUMN * d else n


def _wrap(n, mean_x, mean_y, sxx, syy, sxy, norms) -> CentredProducts:
    as_torch = torch.from_numpy
    sums = None if norms is None else tuple(float(v) for v in norms)
    return CentredProducts(n, as_torch(mean_x), as_torch(mean_y), as_torch(sxx), as_torch(syy), as_torch(sxy), sums)


def two_pass_products(xn: np.ndarray, yn: np.ndarray, *, row_norms: bool = False) -> CentredProducts | None:
    """The column means first (``None`` if not finite), then each block centred at them and its
    products added up: the textbook two-pass algorithm, as accurate as explicit centring however
    large the means."""
    mx, my = xn.mean(axis=0), yn.mean(axis=0)
    if not (np.isfinite(mx).all() and np.isfinite(my).all()):
        return None
    dx, dy, dtype = xn.shape[1], yn.shape[1], xn.dtype
    sxx, syy, sxy = np.zeros((dx, dx), dtype), np.zeros((dy, dy), dtype), np.zeros((dx, dy), dtype)
    norms = np.zeros(3) if row_norms else None
    rows = min(ROWS_PER_BLOCK, xn.shape[0])
    bx, by = np.empty((rows, dx), dtype), np.empty((rows, dy), dtype)
    for start, stop in _blocks(xn.shape[0], rows):
        cx = np.subtract(xn[start:stop], mx, out=bx[: stop - start])
        cy = np.subtract(yn[start:stop], my, out=by[: stop - start])
        sxx += cx.T @ cx
        syy += cy.T @ cy
        sxy += cx.T @ cy
        if norms is not None:
            a, b = np.einsum("ij,ij->i", cx, cx), np.einsum("ij,ij->i", cy, cy)
            norms += (a @ a, b @ b, a @ b)
    return _wrap(xn.shape[0], mx, my, sxx, syy, sxy, norms)


#: Rows of the strided sample that decides each side's shift in :func:`shifted_products`.
SHIFT_SAMPLE_ROWS = 256
#: The most that :func:`shifted_products` lets its correction amplify rounding errors: every
#: column's ``C_jj / S_jj`` (shifted over centred sum of squares) stays at or below it (checked).
MAX_AMPLIFICATION = 16.0
#: The most that :class:`RowNormMoments` lets its correction amplify rounding errors (``p'p`` over
#: ``sum a^2``, and ``q'q`` over ``sum b^2``, checked on the computed sums).
ROW_NORM_AMPLIFICATION = 64.0


def _side_shift(sample: np.ndarray) -> np.ndarray | None:
    """The shift of one side: ``None`` (the data as they are, no copy) where the sample's mean
    is small beside its spread, ``m_j^2 <= 3 v_j`` for every column (so ``C_jj / S_jj`` is near
    ``1 + m^2 / v <= 4``), else the sample's mean."""
    mean = sample.mean(axis=0)
    return None if (mean * mean <= 3 * sample.var(axis=0)).all() else mean


def _shifted_block(data: np.ndarray, shift: np.ndarray | None, buffer: np.ndarray | None) -> np.ndarray:
    """``data - shift`` ``(k, d)`` in ``buffer`` (the rows themselves, a view, without a shift)."""
    return data if shift is None else np.subtract(data, shift, out=buffer[: data.shape[0]])


def shifted_products(xn: np.ndarray, yn: np.ndarray, *, row_norms: bool = False) -> CentredProducts | None:
    """The centred products in one pass over the data, or ``None`` where the pass cannot certify
    them (then :func:`two_pass_products` is used).

    A strided sample of at most :data:`SHIFT_SAMPLE_ROWS` rows (near the mean for any order of
    the rows) decides each side's shift ``s`` (:func:`_side_shift`: none, or the sample's mean,
    subtracted block by block into a buffer that stays in cache). With ``c_i = x_i - s`` and
    ``e_i = y_i - t``, the blocks add up ``Cxx = sum c c'``, ``Cyy``, ``Cxy`` and the column sums
    (``1'c``, a BLAS call on the block in cache), and the sums are corrected with
    ``delta = mean - s = sum c / n`` (the corrected two-pass algorithm of Chan, Golub & LeVeque
    1983, with a shift for its first pass)::

        Sxx = Cxx - n delta delta',   Sxy = Cxy - n delta eps',   mean = s + delta

    Each entry's rounding error is then at most ``sqrt(C_jj C_kk / (S_jj S_kk))`` times that of
    centring at the exact mean; the route is taken only where every ``C_jj / S_jj <=``
    :data:`MAX_AMPLIFICATION` (``n delta_j^2 <= (1 - 1/16) C_jj``). ``row_norms``: also the sums of
    the centred squared row norms, by :class:`RowNormMoments` (``None`` where it cannot certify them).
    """
    n, dtype = xn.shape[0], xn.dtype
    step = -(-n // SHIFT_SAMPLE_ROWS)
    samples = xn[::step], yn[::step]
    if not all(np.isfinite(sample).all() for sample in samples):
        return None
    shifts = [_side_shift(sample) for sample in samples]
    rows = _rows_per_block(n, max(xn.shape[1], yn.shape[1]), shifted=any(s is not None for s in shifts))
    buffers = [None if s is None else np.empty((rows, data.shape[1]), dtype) for s, data in zip(shifts, (xn, yn))]
    ones = np.ones(rows, dtype)
    sums = None  # [Cxx, Cyy, Cxy, 1'c, 1'e], from the first block on
    moments = RowNormMoments(xn.shape[1], yn.shape[1]) if row_norms else None
    for start, stop in _blocks(n, rows):
        c = _shifted_block(xn[start:stop], shifts[0], buffers[0])
        e = _shifted_block(yn[start:stop], shifts[1], buffers[1])
        block = (c.T @ c, e.T @ e, c.T @ e, c.T @ ones[: stop - start], e.T @ ones[: stop - start])
        sums = list(block) if sums is None else [np.add(total, part, out=total) for total, part in zip(sums, block)]
        if moments is not None:
            moments.add(c, e)
    cxx, cyy, cxy, sum_c, sum_e = sums
    delta, eps = sum_c / n, sum_e / n
    for shift_error, c in ((delta, cxx), (eps, cyy)):
        if not (MAX_AMPLIFICATION * n * shift_error * shift_error <= (MAX_AMPLIFICATION - 1) * np.diagonal(c)).all():
            return None
    norms = None if moments is None else moments.centred(n, delta, eps, cxx, cyy, cxy)
    if row_norms and norms is None:
        return None
    sxx, syy, sxy = (
        _minus_rank_one(s, n, u, v) for s, u, v in ((cxx, delta, delta), (cyy, eps, eps), (cxy, delta, eps))
    )
    means = [(d if s is None else s + d).astype(dtype) for s, d in zip(shifts, (delta, eps))]
    return _wrap(n, *means, sxx, syy, sxy, norms)


def _minus_rank_one(s: np.ndarray, n: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``s - n u v'`` in place (BLAS ``ger`` on the row-major ``s`` as its column-major transpose):
    no temporary ``(d, d)`` arrays, which cost more than the update at small sizes."""
    ger = scipy.linalg.blas.get_blas_funcs("ger", (s,))
    return ger(-float(n), v.astype(s.dtype), u.astype(s.dtype), a=s.T, overwrite_a=True).T


class RowNormMoments:
    """The sums of debiased CKA, ``sum a^2``, ``sum b^2`` and ``sum a b`` of the centred squared
    row norms ``a_i = ||c_i - delta||^2``, ``b_i = ||e_i - eps||^2``, in the same pass as the
    shifted products (``c_i``, ``e_i`` the shifted rows, ``delta``, ``eps`` known only at the end).

    With ``p_i = ||c_i||^2``, ``q_i = ||e_i||^2``, ``D = ||delta||^2``, ``E = ||eps||^2``, each
    block adds ``p'p``, ``q'q``, ``p'q`` and the vectors ``Pc = sum p_i c_i``, ``Pe``, ``Qc``,
    ``Qe`` (four matrix-vector products on the block in cache); expanding
    ``a_i = p_i - 2 c_i'delta + D`` (and ``sum_i c_i'delta = n D``) gives::

        sum a b = p'q - 2 eps'Pe - 2 delta'Qc + 4 delta'Cxy eps + E tr Cxx + D tr Cyy - 3 n D E

    and ``sum a^2``, ``sum b^2`` as its special cases. The terms are bounded by ``p'p`` and
    ``q'q``; the sums are returned only where ``p'p <= A sum a^2`` and ``q'q <= A sum b^2`` with
    ``A =`` :data:`ROW_NORM_AMPLIFICATION`, so their rounding errors stay within ``A`` times
    those of centring first.
    """

    def __init__(self, dx: int, dy: int) -> None:
        self.pp = self.qq = self.pq = 0.0
        self.pc, self.qc, self.pe, self.qe = np.zeros(dx), np.zeros(dx), np.zeros(dy), np.zeros(dy)

    def add(self, c: np.ndarray, e: np.ndarray) -> None:
        """Add a block of shifted rows ``c`` ``(k, dx)``, ``e`` ``(k, dy)`` (matrix-vector products
        as ``c' p``: BLAS's fastest orientation for row-major blocks, measured)."""
        p, q = np.einsum("ij,ij->i", c, c), np.einsum("ij,ij->i", e, e)
        self.pp, self.qq, self.pq = self.pp + p @ p, self.qq + q @ q, self.pq + p @ q
        self.pc += c.T @ p
        self.qc += c.T @ q
        self.pe += e.T @ p
        self.qe += e.T @ q

    def centred(self, n: int, delta, eps, cxx, cyy, cxy) -> tuple[float, float, float] | None:
        """``(sum a^2, sum b^2, sum a b)``, or ``None`` beyond the certified amplification."""
        tr_x, tr_y = float(np.trace(cxx)), float(np.trace(cyy))
        aa = _centred_norm_dot(n, self.pp, self.pc, self.pc, delta, delta, cxx, tr_x, tr_x)
        bb = _centred_norm_dot(n, self.qq, self.qe, self.qe, eps, eps, cyy, tr_y, tr_y)
        ab = _centred_norm_dot(n, self.pq, self.pe, self.qc, delta, eps, cxy, tr_x, tr_y)
        if not (self.pp <= ROW_NORM_AMPLIFICATION * aa and self.qq <= ROW_NORM_AMPLIFICATION * bb):
            return None
        return aa, bb, ab


def _centred_norm_dot(n: int, pq: float, p_e, q_c, delta, eps, c_xy, tr_x: float, tr_y: float) -> float:
    """``sum_i a_i b_i`` of :class:`RowNormMoments`' formula from the shifted moments."""
    big_d, big_e = float(delta @ delta), float(eps @ eps)
    corrections = -2 * float(eps @ p_e) - 2 * float(delta @ q_c) + 4 * float(delta @ c_xy @ eps)
    return pq + corrections + big_e * tr_x + big_d * tr_y - 3 * n * big_d * big_e


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
