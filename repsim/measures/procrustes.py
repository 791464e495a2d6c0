"""Orthogonal Procrustes distance between representations (Ding, Denain & Steinhardt 2021).

Imports: :mod:`repsim.measures.inputs` and :mod:`repsim.measures.result` only.
"""

from __future__ import annotations

from typing import Any

import torch

from repsim.measures.inputs import as_pair, centre, scale_exponent, shares_memory
from repsim.measures.result import Similarity

#: Fewest datapoints: with 2, both centred unit-norm sides are ``(1, -1)/sqrt(2)`` times a unit
#: vector, and the distance is 0 whatever the data.
PROCRUSTES_MIN_N = 3


def _row_space_factor(t: torch.Tensor) -> torch.Tensor:
    """An ``(n, min(n, d))`` matrix ``R`` with ``RR' = tt'`` for ``t`` ``(n, d)``.

    For ``d > n`` this is ``R = r'`` from the QR factorisation ``t' = q r``: then
    ``t'u = q (r u)`` for any ``u``, so nuclear norms of ``t'u`` equal those of ``R'u`` at
    ``O(n^2 d)`` cost instead of ``O(n d^2)``. For ``d <= n`` ``t`` is returned unchanged.
    """
    if t.shape[1] <= t.shape[0]:
        return t
    return torch.linalg.qr(t.T, mode="r").R.T


def procrustes(
    X: Any,
    Y: Any,
    *,
    conv: str | None = None,
    dtype: torch.dtype = torch.float64,
) -> Similarity:
    """Squared orthogonal Procrustes distance (Ding, Denain & Steinhardt, NeurIPS 2021,
    "Grounding representation similarity with statistical testing", section 2).

    ``X`` ``(n, dx)`` and ``Y`` ``(n, dy)`` are column-centred and scaled to unit Frobenius norm;
    then::

        d^2 = min_{Q: Q'Q = I} ||X - Y Q||_F^2 = ||X||_F^2 + ||Y||_F^2 - 2 ||X'Y||_*
            = 2 - 2 ||X'Y||_*

    with ``||.||_*`` the nuclear norm (sum of singular values). Different widths are allowed:
    for ``dx != dy`` the narrower side is treated as zero-padded (``Q`` has orthonormal columns
    or rows), which is what the nuclear-norm formula computes. The value returned is this
    *squared* distance, as Ding et al. define and report it: ``0`` for ``Y = a X Q + 1b'``
    (orthogonal ``Q``, ``a > 0``), at most ``2``; rounding can leave it a few ``1e-16`` below
    ``0`` (not clamped). Details give ``distance = sqrt(max(d^2, 0))`` and
    ``similarity = ||X'Y||_*`` in ``[0, 1]`` (``1 - d^2 / 2``). Symmetric in ``X``, ``Y``.

    Cost ``O(n dx dy + min(dx, dy)^3)``; widths above ``n`` are first reduced to ``n`` by a QR
    factorisation, so the cost never exceeds ``O(n^2 (dx + dy) + n^3)``.

    Returns:
        :class:`repsim.Similarity` named ``"procrustes"`` (a *distance*: lower is more similar)
        with details ``kind="squared_distance"``, ``distance``, ``similarity``, ``n``, ``dx``,
        ``dy``.

    Examples:
        One neuron each: centred, unit-norm ``x`` and ``y`` have ``x'y = 4/5``, so
        ``d^2 = 2 - 2 * 4/5`` by hand; a rotated, scaled, shifted copy is at distance 0.

        >>> import numpy as np
        >>> from repsim.measures import procrustes
        >>> round(float(procrustes([[1.0], [2.0], [3.0], [4.0]], [[1.0], [3.0], [2.0], [4.0]])), 6)
        0.4
        >>> rng = np.random.default_rng(0)
        >>> X = rng.standard_normal((50, 4))
        >>> Q, _ = np.linalg.qr(rng.standard_normal((4, 4)))
        >>> d = procrustes(X, 2.0 * X @ Q + 1.0)
        >>> round(abs(float(d)), 6), round(d.details["similarity"], 6)
        (0.0, 1.0)
    """
    x, y = as_pair(X, Y, conv=conv, dtype=dtype, min_n=PROCRUSTES_MIN_N, measure="Procrustes distance")
    # the distance does not depend on a side's scale: centre each scaled into [0.5, 1) (exact)
    xc = centre(x, name="X", exponent=scale_exponent(x), in_place=not shares_memory(x, X))
    yc = centre(y, name="Y", exponent=scale_exponent(y), in_place=not shares_memory(y, Y))
    xn = _row_space_factor(xc / torch.linalg.matrix_norm(xc))
    yn = _row_space_factor(yc / torch.linalg.matrix_norm(yc))
    nuclear = float(torch.linalg.svdvals(xn.T @ yn).sum())
    squared = 2.0 - 2.0 * nuclear
    return Similarity(
        squared,
        measure="procrustes",
        conv=conv,
        kind="squared_distance",
        distance=max(squared, 0.0) ** 0.5,
        similarity=nuclear,
        n=x.shape[0],
        dx=x.shape[1],
        dy=y.shape[1],
    )
