"""The HSIC estimators of CKA, and CKA from them (Kornblith et al. 2019; Song et al. 2012).

``HSIC_0(K, L) = tr(K H L H) / (n - 1)^2`` (biased, plug-in) and Song et al.'s unbiased
``HSIC_1`` (:mod:`repsim.measures.cka` states both), from Gram matrices (:func:`gram_hsics`) or,
for linear kernels, from feature-space products and the squared row norms of the centred data
(:func:`scaled_unbiased_hsic`); ``CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))``
(:func:`cka_ratio`). The in-memory, minibatch, kernel and streaming CKA all use these.

Imports: nothing of ``repsim`` (torch only).
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["centre_gram_", "cka_ratio", "gram_hsics", "hsic_normaliser", "scaled_unbiased_hsic"]


def hsic_normaliser(n: int, debiased: bool) -> float:
    """``(n-1)^2`` for the biased HSIC estimator, ``n (n-3)`` for the unbiased one."""
    return float(n * (n - 3)) if debiased else float((n - 1) ** 2)


def scaled_unbiased_hsic(
    cross: torch.Tensor, diag_dot: torch.Tensor, trace_x: torch.Tensor, trace_y: torch.Tensor, n: int
) -> torch.Tensor:
    """``n(n-3) HSIC_1`` (Song et al. 2012) for linear kernels of column-centred ``X``, ``Y``.

    With ``K = XX'``, ``L = YY'`` (``K1 = 0``) and ``k = diag K``, ``l = diag L``:
    ``tr(K~L~) = ||X'Y||_F^2 - k'l``, ``1'K~1 = -1'k``, ``K~1 = -k`` so ``1'K~L~1 = k'l``, and
    Song et al.'s estimator becomes::

        n(n-3) HSIC_1 = ||X'Y||_F^2 - n/(n-2) k'l + (1'k)(1'l) / ((n-1)(n-2))

    ``cross`` is ``||X'Y||_F^2``, ``diag_dot`` is ``k'l``, ``trace_x`` = ``1'k`` = ``tr X'X`` and
    ``trace_y`` = ``1'l``: all available from feature-space products or streamed moments.
    """
    return cross - n / (n - 2) * diag_dot + trace_x * trace_y / ((n - 1) * (n - 2))


def centre_gram_(gram: torch.Tensor, *, unbiased: bool = False) -> torch.Tensor:
    """Centre a symmetric Gram matrix ``(n, n)`` in place and return it.

    Biased: ``HKH`` (``H = I - 11'/n``), so that ``<HKH, HLH> = tr(KHLH)``. Unbiased: the
    U-centring of Szekely & Rizzo (2014, "Partial distance correlation", Ann. Stat. 42(6)):
    ``U_ij = K_ij - s_i/(n-2) - s_j/(n-2) + S/((n-1)(n-2))`` for ``i != j`` and ``U_ii = 0``,
    with ``s`` the row sums and ``S`` the total of ``K`` with a zeroed diagonal; then
    ``<U(K), U(L)> / (n(n-3))`` equals Song et al.'s unbiased ``HSIC_1`` (a rearrangement with
    less cancellation than the three-term formula).
    """
    n = gram.shape[0]
    if unbiased:
        gram.fill_diagonal_(0)
        means = gram.sum(dim=0) / (n - 2)
        means -= means.sum() / (2 * (n - 1))
    else:
        means = gram.mean(dim=0)
        means -= means.mean() / 2
    gram -= means[:, None]
    gram -= means[None, :]
    if unbiased:
        gram.fill_diagonal_(0)
    return gram


def gram_hsics(
    gram_x: torch.Tensor, gram_y: torch.Tensor, debiased: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(HSIC(K, L), HSIC(K, K), HSIC(L, L))`` from Gram matrices ``(n, n)`` (centred in place)."""
    n = gram_x.shape[0]
    norm = hsic_normaliser(n, debiased)
    kc = centre_gram_(gram_x, unbiased=debiased).reshape(-1)
    lc = centre_gram_(gram_y, unbiased=debiased).reshape(-1)
    return torch.dot(kc, lc) / norm, torch.dot(kc, kc) / norm, torch.dot(lc, lc) / norm


def cka_ratio(hxy: Any, hxx: Any, hyy: Any, *, debiased: bool) -> float:
    """``hxy / sqrt(hxx hyy)``; a non-positive self-HSIC (possible only debiased) is an error."""
    hxx, hyy = float(hxx), float(hyy)
    for name, value in (("X", hxx), ("Y", hyy)):
        if not value > 0:
            why = (
                "the unbiased estimator can be <= 0 for very few or degenerate datapoints; use"
                " more datapoints or debiased=False"
                if debiased
                else "the representation has no variance"
            )
            raise ValueError(f"HSIC of {name} with itself is {value:.3g}, not positive: {why}")
    return float(hxy) / (hxx**0.5 * hyy**0.5)
