"""Streaming CCA, mean CCA, SVCCA and PWCCA: the in-memory definitions of
:mod:`repsim.measures.canonical` from minibatches, in ``O(d^2)`` memory. The coefficients come
from the co-moments (:mod:`repsim.measures.canonical_gram`): by the Cholesky route where its
error bound certifies them to ``1e-10`` (as in memory), else by the eigendecomposition route;
``.details`` names the route and its error bound.

Imports: :mod:`repsim.measures.canonical`, :mod:`repsim.measures.canonical_bases`,
:mod:`repsim.measures.canonical_gram`, :mod:`repsim.measures.result` and
:mod:`repsim.measures.streaming` only.
"""

from __future__ import annotations

import torch

from repsim.measures.canonical_bases import check_keep, check_rtol
from repsim.measures.canonical_gram import CHEAP_ROUTE_MAX_ERROR, GramProblem, certified_cholesky
from repsim.measures.canonical_problems import CCA_MIN_N, CCAResult, cca_of, mean_cca_of, pwcca_of, svcca_of
from repsim.measures.result import Similarity
from repsim.measures.streaming import MomentAccumulator

__all__ = ["STREAMING_CCA_MEASURES", "StreamingCCA"]

#: Measures :class:`StreamingCCA` can return from :meth:`StreamingCCA.result`.
STREAMING_CCA_MEASURES = ("cca", "mean_cca", "svcca", "pwcca")


class StreamingCCA(MomentAccumulator):
    """The CCA family over minibatches: :meth:`cca`, :meth:`mean_cca`, :meth:`svcca`,
    :meth:`pwcca`, with the definitions of :mod:`repsim.measures.canonical`.

    Everything comes from the co-moments: CCA by the Cholesky factors of the co-moment matrices
    where that route is certified, else by whitening each side with the eigendecomposition of its
    co-moment matrix, with rank truncation (:mod:`repsim.measures.canonical_gram`; errors grow as
    ``eps cond^2`` there, against ``eps cond`` for the in-memory QR route, so prefer the in-memory
    functions for ill-conditioned data that fits in memory). PWCCA streams too: with
    ``h_i = Xc a_i`` (unit norm) its weights need ``<h_i, x_j> = (Xc'Xc a_i)_j = (Sxx a_i)_j``,
    a function of the co-moments.

    Args:
        measure: what :meth:`result` returns: ``"mean_cca"`` (or ``"cca"``), ``"svcca"`` or
            ``"pwcca"``.
        keep: SVCCA's ``keep`` (see :func:`repsim.svcca`). symmetric: PWCCA's ``symmetric``.
        rtol: rank tolerance on ``s_i / s_0``; default ``sqrt(max(n, d) eps)``.
        conv, dtype: as :class:`MomentAccumulator`.

    Examples:
        Mean CCA and PWCCA of batches equal the in-memory values on all the data.

        >>> import numpy as np
        >>> from repsim.measures import StreamingCCA, mean_cca, pwcca
        >>> rng = np.random.default_rng(0)
        >>> X = rng.standard_normal((400, 5))
        >>> Y = X[:, :3] @ rng.standard_normal((3, 4)) + 0.5 * rng.standard_normal((400, 4))
        >>> acc = StreamingCCA()
        >>> for start in range(0, 400, 64):
        ...     _ = acc.update(X[start : start + 64], Y[start : start + 64])
        >>> bool(abs(acc.result() - mean_cca(X, Y)) < 1e-10)
        True
        >>> bool(abs(acc.pwcca() - pwcca(X, Y)) < 1e-10)
        True
    """

    def __init__(
        self,
        measure: str = "mean_cca",
        *,
        keep: float | int = 0.99,
        symmetric: bool = False,
        rtol: float | None = None,
        conv: str | None = None,
        dtype: torch.dtype = torch.float64,
    ):
        if measure not in STREAMING_CCA_MEASURES:
            raise ValueError(f"measure must be one of {STREAMING_CCA_MEASURES}; got {measure!r}")
        super().__init__(conv=conv, dtype=dtype)
        self.measure = measure
        self.keep = check_keep(keep)
        check_rtol(rtol)
        self.symmetric = symmetric
        self.rtol = rtol

    def _problem(self, measure: str) -> GramProblem:
        """The co-moments as a CCA problem, by the certified Cholesky route where it applies."""
        self._check_ready(CCA_MIN_N, measure)
        s = self._stats
        factors = certified_cholesky(self.n, s["sxx"], s["syy"])
        if factors is not None and factors.bound > CHEAP_ROUTE_MAX_ERROR:
            factors = None
        return GramProblem(self.n, s["sxx"], s["syy"], s["sxy"], factors)

    def cca(self) -> CCAResult:
        """Canonical correlations of all the data seen (:func:`repsim.cca`)."""
        return cca_of(self._problem("CCA"), rtol=self.rtol, conv=self.conv)

    def mean_cca(self) -> Similarity:
        """Mean CCA of all the data seen (:func:`repsim.mean_cca`)."""
        return mean_cca_of(self._problem("CCA"), rtol=self.rtol, conv=self.conv, streamed=True, batches=self.batches)

    def svcca(self, keep: float | int | None = None) -> Similarity:
        """SVCCA of all the data seen (:func:`repsim.svcca`); ``keep=None`` uses the accumulator's."""
        keep = self.keep if keep is None else keep
        return svcca_of(
            self._problem("SVCCA"), keep, rtol=self.rtol, conv=self.conv, streamed=True, batches=self.batches
        )

    def pwcca(self, symmetric: bool | None = None) -> Similarity:
        """PWCCA of all the data seen (:func:`repsim.pwcca`), weights from X (or both if symmetric)."""
        symmetric = self.symmetric if symmetric is None else symmetric
        return pwcca_of(
            self._problem("PWCCA"),
            symmetric=symmetric,
            rtol=self.rtol,
            conv=self.conv,
            streamed=True,
            batches=self.batches,
        )

    def result(self) -> Similarity:
        """The accumulator's ``measure`` (``"cca"`` means mean CCA) with its settings."""
        if self.measure == "svcca":
            return self.svcca()
        if self.measure == "pwcca":
            return self.pwcca()
        return self.mean_cca()
