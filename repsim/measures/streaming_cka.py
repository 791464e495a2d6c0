"""Streaming linear CKA and debiased linear CKA: the exact in-memory values of
:func:`repsim.measures.linear_cka` from minibatches, in ``O(d^2)`` memory
(:mod:`repsim.measures.streaming` says how the statistics are kept).

Imports: :mod:`repsim.measures.hsic`, :mod:`repsim.measures.result` and
:mod:`repsim.measures.streaming` only.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from repsim.measures.hsic import cka_ratio, scaled_unbiased_hsic
from repsim.measures.result import Similarity
from repsim.measures.streaming import MomentAccumulator, Stats

__all__ = ["StreamingCKA"]


class StreamingCKA(MomentAccumulator):
    """Exact linear CKA and debiased linear CKA over minibatches (same values as
    ``repsim.linear_cka(X, Y, debiased=...)`` on all the data).

    **Linear CKA** (Kornblith et al. 2019) from the centred co-moments::

        CKA = ||Sxy||_F^2 / (||Sxx||_F ||Syy||_F)

    **Debiased linear CKA** uses the unbiased HSIC estimator of Song et al. (2012, eq. 5), as in
    Nguyen, Raghu & Kornblith (2021)::

        HSIC_1(K, L) = [tr(K~L~) + (1'K~1)(1'L~1)/((n-1)(n-2)) - 2/(n-2) 1'K~L~1] / (n(n-3))

    with ``K~``, ``L~`` the Gram matrices with zeroed diagonals. *Derivation for the linear
    kernel.* ``HSIC_1`` is invariant to a constant shift of either representation (it is the
    U-statistic of ``||Cov(x, y)||_F^2``; ``tests/repsim/measures/test_streaming.py`` checks this numerically), so
    take ``K = Xc Xc'``, ``L = Yc Yc'`` of the centred data, whence ``K 1 = 0``, ``L 1 = 0``. With
    ``a_i = ||xc_i||^2 = K_ii`` and ``b_i = ||yc_i||^2``:

    - ``tr(K~L~) = sum_{i != j} K_ij L_ij = tr(KL) - sum_i a_i b_i = ||Sxy||_F^2 - sum a b``;
    - ``1'K~1 = 1'K1 - sum a = -A`` with ``A = sum_i a_i = tr Sxx``; ``1'L~1 = -B = -tr Syy``;
    - ``K~1 = K1 - a = -a`` and ``L~1 = -b``, so ``1'K~L~1 = sum_i a_i b_i``.

    Hence ``n(n-3) HSIC_1 = ||Sxy||_F^2 - n/(n-2) sum_i a_i b_i + A B / ((n-1)(n-2))`` (and the
    same with ``Y = X`` or ``X = Y`` for the self terms), so besides the co-moments we stream
    ``sum a b``, ``sum a^2`` and ``sum b^2`` about the running mean. Moving them to a new mean
    (``u -> u + d``, ``v -> v + e``; ``a -> a + 2u.d + |d|^2``) needs the third moments
    ``sum a u``, ``sum a v``, ``sum b u``, ``sum b v``, which move in turn by the co-moments; the
    formulas (all exact, with ``sum u = sum v = 0``) are in :meth:`_shifted`. Debiased CKA needs
    ``n >= 4`` and can be negative; nothing is clamped.

    Args:
        debiased: what :meth:`result` returns (both are always available from
            :meth:`linear_cka`).
        conv, dtype: as :class:`MomentAccumulator`.

    Examples:
        Batches of any size (one row included), merged in any order, give the in-memory values,
        whatever the means.

        >>> import numpy as np
        >>> from repsim.measures import StreamingCKA, linear_cka
        >>> rng = np.random.default_rng(0)
        >>> X = rng.standard_normal((300, 8)) + 1e4
        >>> Y = X[:, :4] @ rng.standard_normal((4, 5)) + rng.standard_normal((300, 5))
        >>> left = StreamingCKA().update(X[:1], Y[:1]).update(X[1:100], Y[1:100])
        >>> right = StreamingCKA().update(X[100:], Y[100:])
        >>> acc = right.merge(left)
        >>> bool(abs(acc.result() - linear_cka(X, Y)) < 1e-10)
        True
        >>> bool(abs(acc.linear_cka(debiased=True) - linear_cka(X, Y, debiased=True)) < 1e-10)
        True
    """

    _POWERS: ClassVar[dict[str, tuple[int, int]]] = {
        **MomentAccumulator._POWERS,
        "saa": (4, 0),
        "sbb": (0, 4),
        "sab": (2, 2),
        "au": (3, 0),
        "av": (2, 1),
        "bu": (1, 2),
        "bv": (0, 3),
    }

    def __init__(self, *, debiased: bool = False, conv: str | None = None, dtype: torch.dtype = torch.float64):
        super().__init__(conv=conv, dtype=dtype)
        self.debiased = debiased

    @staticmethod
    def _centred_stats(u: torch.Tensor, v: torch.Tensor) -> Stats:
        a, b = torch.linalg.vector_norm(u, dim=1).square(), torch.linalg.vector_norm(v, dim=1).square()
        stats = MomentAccumulator._centred_stats(u, v)
        stats.update(saa=a @ a, sbb=b @ b, sab=a @ b, au=a @ u, av=a @ v, bu=b @ u, bv=b @ v)
        return stats

    @staticmethod
    def _shifted(stats: Stats, n: int, dx: torch.Tensor, dy: torch.Tensor) -> Stats:
        """All statistics about the moved centre (``u -> u + dx``, ``v -> v + dy``).

        With ``A = tr Sxx``, ``B = tr Syy``, ``|dx|^2 = p``, ``|dy|^2 = q`` (old statistics on the
        right)::

            sum a'u' = sum a u + A dx + 2 Sxx dx + n p dx
            sum a'v' = sum a v + A dy + 2 Sxy' dx + n p dy
            sum b'u' = sum b u + B dx + 2 Sxy dy + n q dx
            sum b'v' = sum b v + B dy + 2 Syy dy + n q dy
            sum a'a' = sum a a + 4 dx.(sum a u) + 4 dx'Sxx dx + 2 p A + n p^2
            sum b'b' = sum b b + 4 dy.(sum b v) + 4 dy'Syy dy + 2 q B + n q^2
            sum a'b' = sum a b + 2 dy.(sum a v) + 2 dx.(sum b u) + 4 dx'Sxy dy + q A + p B + n p q
        """
        moved = MomentAccumulator._shifted(stats, n, dx, dy)
        sxx, syy, sxy = stats["sxx"], stats["syy"], stats["sxy"]
        big_a, big_b = torch.trace(sxx), torch.trace(syy)
        p, q = dx @ dx, dy @ dy
        moved.update(
            au=stats["au"] + big_a * dx + 2 * (sxx @ dx) + n * p * dx,
            av=stats["av"] + big_a * dy + 2 * (sxy.T @ dx) + n * p * dy,
            bu=stats["bu"] + big_b * dx + 2 * (sxy @ dy) + n * q * dx,
            bv=stats["bv"] + big_b * dy + 2 * (syy @ dy) + n * q * dy,
            saa=stats["saa"] + 4 * (dx @ stats["au"]) + 4 * (dx @ sxx @ dx) + 2 * p * big_a + n * p * p,
            sbb=stats["sbb"] + 4 * (dy @ stats["bv"]) + 4 * (dy @ syy @ dy) + 2 * q * big_b + n * q * q,
            sab=stats["sab"]
            + 2 * (dy @ stats["av"])
            + 2 * (dx @ stats["bu"])
            + 4 * (dx @ sxy @ dy)
            + q * big_a
            + p * big_b
            + n * p * q,
        )
        return moved

    def linear_cka(self, *, debiased: bool | None = None) -> Similarity:
        """Linear CKA (``debiased=False``) or debiased linear CKA of all the data seen.

        ``debiased=None`` uses the accumulator's setting. Raises ``ValueError`` for fewer than 2
        (4 when debiased) datapoints, a constant side, or a non-positive self-HSIC (debiased).
        """
        debiased = self.debiased if debiased is None else debiased
        hxy, hxx, hyy = self.hsics(debiased)
        s = self._stats
        return Similarity(
            cka_ratio(hxy, hxx, hyy, debiased=debiased),
            measure="debiased_cka" if debiased else "linear_cka",
            conv=self.conv,
            form="streaming",
            debiased=debiased,
            n=self.n,
            dx=s["sxx"].shape[0],
            dy=s["syy"].shape[0],
            batches=self.batches,
        )

    def hsics(self, debiased: bool) -> tuple[float, float, float]:
        """``(HSIC(X, Y), HSIC(X, X), HSIC(Y, Y))`` of all the data seen, each times its common
        normaliser (``(n-1)^2`` or ``n (n-3)``, which cancels in CKA) and scaled as the
        statistics are (:attr:`exponents`: ``2^-(2 ex + 2 ey)``, ``2^-4ex``, ``2^-4ey``).
        ``ValueError`` for fewer than 3 (4 when debiased) datapoints or a constant side."""
        self._check_ready(4 if debiased else 3, "debiased CKA" if debiased else "linear CKA")
        s, n = self._stats, self.n
        big_a, big_b = torch.trace(s["sxx"]), torch.trace(s["syy"])
        return (
            _scaled_hsic(s["sxy"], s["sab"], big_a, big_b, n, debiased),
            _scaled_hsic(s["sxx"], s["saa"], big_a, big_a, n, debiased),
            _scaled_hsic(s["syy"], s["sbb"], big_b, big_b, n, debiased),
        )

    def result(self) -> Similarity:
        """:meth:`linear_cka` with the accumulator's ``debiased`` setting."""
        return self.linear_cka()


def _scaled_hsic(
    s_pq: torch.Tensor,
    diag_dot: torch.Tensor,
    trace_p: torch.Tensor,
    trace_q: torch.Tensor,
    n: int,
    debiased: bool,
) -> float:
    """``n(n-3) HSIC_1`` (debiased) or ``(n-1)^2 HSIC_0`` from the co-moment ``S_pq``,
    ``sum_i a_i b_i`` (squared norms of the centred rows of each side), ``tr S_pp`` and ``tr S_qq``;
    the normalisations cancel in CKA."""
    cross = torch.linalg.matrix_norm(s_pq).square()
    if not debiased:
        return float(cross)
    return float(scaled_unbiased_hsic(cross, diag_dot, trace_p, trace_q, n))
