"""Representational similarity analysis (Kriegeskorte, Mur & Bandettini 2008).

Imports: :mod:`repsim.measures.inputs` and :mod:`repsim.measures.result` only.
"""

from __future__ import annotations

from typing import Any

import torch

from repsim.measures.inputs import as_pair, centre, scale_, scale_exponent, shares_memory
from repsim.measures.result import Similarity

#: Dissimilarities between datapoints for the RDMs.
RDM_METRICS = ("correlation", "euclidean")
#: Correlations used to compare two RDMs.
RDM_COMPARISONS = ("spearman", "pearson")


def rdm(t: torch.Tensor, metric: str = "correlation", *, name: str = "X") -> torch.Tensor:
    """Representational dissimilarity matrix ``(n, n)`` of the rows of ``t`` ``(n, d)``.

    ``"correlation"``: ``1 - corr(t_i, t_j)``, the Pearson correlation of two datapoints'
    patterns across the ``d`` neurons (needs ``d >= 2`` and no constant row).
    ``"euclidean"``: ``||t_i - t_j||`` (computed from the column-centred rows).
    Raises ``ValueError`` if ``t`` is constant (every row the same).
    """
    if metric not in RDM_METRICS:
        raise ValueError(f"metric must be one of {RDM_METRICS}; got {metric!r}")
    centred = centre(t, name=name)
    if metric == "euclidean":
        return torch.cdist(centred, centred)
    if t.shape[1] < 2:
        raise ValueError(f"correlation RDM of {name} needs at least 2 neurons; got {t.shape[1]}")
    rows = t - t.mean(dim=1, keepdim=True)
    norms = torch.linalg.vector_norm(rows, dim=1)
    flat = norms <= 64 * torch.finfo(t.dtype).eps * t.abs().amax(dim=1)
    if bool(flat.any()):
        first = int(flat.nonzero()[0])
        raise ValueError(
            f"{name} has {int(flat.sum())} datapoint(s) with a constant pattern across neurons"
            f" (first: row {first}); their correlation distance is undefined: use"
            " metric='euclidean'"
        )
    rows = rows / norms[:, None]
    return 1.0 - rows @ rows.T


def _upper_triangle(m: torch.Tensor) -> torch.Tensor:
    """The ``n(n-1)/2`` entries of ``m`` ``(n, n)`` above the diagonal, row by row."""
    i, j = torch.triu_indices(m.shape[0], m.shape[0], offset=1, device=m.device)
    return m[i, j]


def average_ranks(v: torch.Tensor) -> torch.Tensor:
    """Ranks ``1..m`` of the entries of ``v`` ``(m,)``, ties sharing their average rank."""
    ordered, order = torch.sort(v)
    _, counts = torch.unique_consecutive(ordered, return_counts=True)
    ends = torch.cumsum(counts, 0).to(v.dtype)
    mean_rank = ends - (counts.to(v.dtype) - 1) / 2
    ranks = torch.empty_like(v)
    ranks[order] = torch.repeat_interleave(mean_rank, counts)
    return ranks


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson correlation of two vectors ``(m,)``; a constant vector is a ``ValueError``."""
    a, b = a - a.mean(), b - b.mean()
    na, nb = torch.linalg.vector_norm(a), torch.linalg.vector_norm(b)
    for name, norm in (("X", na), ("Y", nb)):
        if not float(norm) > 0:
            raise ValueError(f"the RDM of {name} is constant: all datapoints are equally dissimilar")
    return float(torch.dot(a, b) / (na * nb))


def rsa(
    X: Any,
    Y: Any,
    *,
    metric: str = "correlation",
    compare: str = "spearman",
    max_n: int = 5000,
    conv: str | None = None,
    dtype: torch.dtype = torch.float64,
) -> Similarity:
    """Representational similarity analysis (Kriegeskorte, Mur & Bandettini 2008, Front. Syst.
    Neurosci. 2:4).

    Builds the representational dissimilarity matrix (RDM, ``(n, n)``) of each representation
    (:func:`rdm`: ``1 - Pearson correlation`` of two datapoints' patterns, or Euclidean
    distance) and returns the Spearman (rank) or Pearson correlation of their upper triangles
    (the ``n(n-1)/2`` pairs ``i < j``)::

        RSA = corr(triu(RDM(X)), triu(RDM(Y)))

    The data are not centred over datapoints (RDMs are the classic definition). Invariances:
    with ``"correlation"``, to scaling each datapoint's pattern by a positive number and adding
    a constant to it; with ``"euclidean"``, to translation, isotropic scaling and orthogonal
    transforms of the neurons; with ``"spearman"`` also to any increasing transform of the
    dissimilarities. In ``[-1, 1]``; ``1`` for identical RDM orderings.

    Memory is ``O(n^2)``: two RDMs and their upper triangles (~ ``4 n^2`` floats, 800 MB in
    float64 at ``n = 5000``). ``n > max_n`` raises ``ValueError``; raise ``max_n`` deliberately.

    Returns:
        :class:`repsim.Similarity` named ``"rsa"`` with details ``metric``, ``compare``, ``n``.

    Examples:
        Three datapoints on a line: the Euclidean RDMs' upper triangles are ``(1, 3, 2)`` and
        ``(2, 3, 1)``, whose ranks correlate at ``1/2`` by hand. Scaling and shifting every pattern
        leaves the correlation RDM, and RSA, unchanged.

        >>> import numpy as np
        >>> from repsim.measures import rsa
        >>> round(float(rsa([[0.0], [1.0], [3.0]], [[0.0], [2.0], [3.0]], metric="euclidean")), 6)
        0.5
        >>> X = np.random.default_rng(0).standard_normal((30, 5))
        >>> round(float(rsa(X, 2.0 * X + 1.0)), 6)
        1.0
    """
    if compare not in RDM_COMPARISONS:
        raise ValueError(f"compare must be one of {RDM_COMPARISONS}; got {compare!r}")
    if metric not in RDM_METRICS:
        raise ValueError(f"metric must be one of {RDM_METRICS}; got {metric!r}")
    x, y = as_pair(X, Y, conv=conv, dtype=dtype, min_n=3, measure="RSA")
    if x.shape[0] > max_n:
        raise ValueError(
            f"RSA builds n x n dissimilarity matrices: n = {x.shape[0]} exceeds max_n = {max_n}"
            f" (~{4 * x.shape[0] ** 2 * x.element_size() / 1e9:.1f} GB); pass a larger max_n or"
            " subsample the datapoints"
        )
    # RSA does not depend on a side's scale: bring each into [0.5, 1) first (exact), so that
    # squared distances and norms neither overflow nor underflow at any magnitude
    x = scale_(x.clone() if shares_memory(x, X) else x, scale_exponent(x))
    y = scale_(y.clone() if shares_memory(y, Y) else y, scale_exponent(y))
    a = _upper_triangle(rdm(x, metric, name="X"))
    b = _upper_triangle(rdm(y, metric, name="Y"))
    if compare == "spearman":
        a, b = average_ranks(a), average_ranks(b)
    return Similarity(_pearson(a, b), measure="rsa", conv=conv, metric=metric, compare=compare, n=x.shape[0])
