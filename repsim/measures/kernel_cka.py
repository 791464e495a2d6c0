"""Kernel CKA: centred kernel alignment of two Gram matrices ``(n, n)``, RBF by default.

``CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))`` with the biased or unbiased HSIC estimators
defined in :mod:`repsim.measures.cka`, for the Gram matrices ``K``, ``L`` of an RBF kernel (with
Kornblith et al.'s median bandwidth, :func:`median_bandwidth`), the linear kernel, or a callable.

Imports: :mod:`repsim.measures.cka`, :mod:`repsim.measures.result` (nothing of ``repsim``
outside :mod:`repsim.measures`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from repsim.measures.cka import centred_scaled, checked_pair
from repsim.measures.hsic import cka_ratio, gram_hsics
from repsim.measures.inputs import scale_
from repsim.measures.products import gram
from repsim.measures.result import Similarity

#: Named kernels of :func:`kernel_cka` (a callable kernel is accepted too).
KERNELS = ("rbf", "linear")
#: Bandwidth rules of :func:`kernel_cka`.
SIGMA_METHODS = ("median",)

GramFn = Callable[[torch.Tensor], torch.Tensor]


def _sq_distances(xc: torch.Tensor) -> torch.Tensor:
    """``(n, n)`` squared Euclidean distances between the rows of ``xc`` (zero diagonal, >= 0)."""
    dist = gram(xc.T)
    sq = dist.diagonal().clone()
    dist.mul_(-2.0).add_(sq[:, None]).add_(sq[None, :])
    return dist.clamp_(min=0).fill_diagonal_(0)


def _median(values: torch.Tensor) -> float:
    """Median of a 1-D tensor, the mean of the two middle values for an even count (numpy's)."""
    m = values.numel()
    upper = torch.kthvalue(values, m // 2 + 1).values
    if m % 2:
        return float(upper)
    return 0.5 * (float(torch.kthvalue(values, m // 2).values) + float(upper))


def median_bandwidth(sq_dist: torch.Tensor, factor: float = 1.0, *, name: str = "X") -> float:
    """RBF bandwidth ``sigma = factor * sqrt(median(D^2))`` from squared distances ``(n, n)``.

    Kornblith et al. (2019)'s convention, as in their reference code (``gram_rbf(x, threshold)``
    of google-research/representation_similarity): the median is taken over all ``n^2`` entries
    of the squared-distance matrix, *including* its ``n`` zero diagonal entries and both
    triangles, with numpy's mean-of-middles for an even count; ``factor`` is their
    ``threshold`` (the paper reports fractions of the median distance).
    """
    med = _median(sq_dist.reshape(-1))
    if not med > 0:
        raise ValueError(
            f"the median squared distance between datapoints of {name} is 0 (most pairs of"
            " datapoints coincide): pass an explicit sigma"
        )
    return factor * med**0.5


def _rbf_gram(xc: torch.Tensor, sigma: float | None, factor: float, name: str) -> tuple[torch.Tensor, float]:
    """RBF Gram ``exp(-||x_i - x_j||^2 / (2 sigma^2))`` ``(n, n)`` and the bandwidth used."""
    sq_dist = _sq_distances(xc)
    if sigma is None:
        sigma = median_bandwidth(sq_dist, factor, name=name)
    elif not sigma > 0:
        raise ValueError(f"sigma for {name} must be positive; got {sigma}")
    return sq_dist.mul_(-0.5 / sigma**2).exp_(), float(sigma)


def _callable_gram(kernel: GramFn, t: torch.Tensor, name: str) -> torch.Tensor:
    """Call a user kernel on ``t`` ``(n, d)``; check that it returns a finite symmetric ``(n, n)``."""
    n = t.shape[0]
    gram = torch.as_tensor(kernel(t)).to(device=t.device, dtype=t.dtype).clone()
    if gram.shape != (n, n):
        raise ValueError(f"kernel returned shape {tuple(gram.shape)} for {name}; expected ({n}, {n})")
    if not bool(torch.isfinite(gram).all()):
        raise ValueError(f"kernel returned NaN or infinite values for {name}")
    if not torch.allclose(gram, gram.T, rtol=1e-10, atol=1e-12 * float(gram.abs().max())):
        raise ValueError(f"kernel returned a non-symmetric Gram matrix for {name}")
    return gram


def _pair_sigmas(sigma: float | tuple[float, float] | None) -> tuple[float | None, float | None]:
    """Split ``sigma`` (one value for both sides, a pair, or ``None``) into ``(sigma_x, sigma_y)``."""
    if sigma is None or isinstance(sigma, (int, float)):
        return sigma, sigma
    sigma_x, sigma_y = sigma
    return sigma_x, sigma_y


def kernel_cka(
    X: Any,
    Y: Any,
    *,
    kernel: str | GramFn = "rbf",
    sigma: float | tuple[float, float] | None = None,
    sigma_factor: float = 1.0,
    sigma_method: str = "median",
    debiased: bool = False,
    conv: str | None = None,
    dtype: torch.dtype = torch.float64,
) -> Similarity:
    """Kernel CKA with Gram matrices ``(n, n)`` (Kornblith et al. 2019, section 3).

    ``CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))`` with ``K``, ``L`` the Gram matrices of the
    column-centred ``X``, ``Y`` and HSIC biased or unbiased (``debiased``, Song et al. 2012).

    Kernels:
        ``"rbf"``: ``K_ij = exp(-||x_i - x_j||^2 / (2 sigma^2))``. Without ``sigma`` the
        bandwidth of each side is ``sigma_factor * sqrt(median of its n^2 squared distances)``
        (``sigma_method="median"``, Kornblith et al.'s rule, see :func:`median_bandwidth`), so
        the value is invariant to isotropic scaling of either side. ``sigma`` may be one value
        for both sides or a pair ``(sigma_x, sigma_y)``.
        ``"linear"``: ``K = XX'`` (equals :func:`linear_cka`; a check).
        a callable: ``kernel(t)`` takes an ``(n, d)`` tensor and returns its ``(n, n)`` Gram.

    Memory is ``O(n^2)`` (two Gram matrices plus one squared-distance matrix).

    Returns:
        :class:`repsim.Similarity` named ``"kernel_cka"`` with details ``kernel``, ``debiased``,
        ``n`` and, for RBF, ``sigma_x``, ``sigma_y`` (the bandwidths used) and ``sigma_method``.

    Examples:
        With the median bandwidth RBF CKA is invariant to rotations, isotropic scaling and shifts
        (the bandwidth scales with the data); the linear kernel gives linear CKA.

        >>> import numpy as np
        >>> from repsim.measures import kernel_cka, linear_cka
        >>> rng = np.random.default_rng(0)
        >>> X = rng.standard_normal((100, 5))
        >>> Q, _ = np.linalg.qr(rng.standard_normal((5, 5)))
        >>> s = kernel_cka(X, 4.0 * X @ Q - 2.0)
        >>> round(float(s), 6), round(s.details["sigma_y"] / s.details["sigma_x"], 6)
        (1.0, 4.0)
        >>> Y = X[:, :2] + rng.standard_normal((100, 2))
        >>> bool(abs(kernel_cka(X, Y, kernel="linear") - linear_cka(X, Y)) < 1e-12)
        True
    """
    if sigma_method not in SIGMA_METHODS:
        raise ValueError(f"sigma_method must be one of {SIGMA_METHODS}; got {sigma_method!r}")
    if not (callable(kernel) or kernel in KERNELS):
        raise ValueError(f"kernel must be one of {KERNELS} or a callable; got {kernel!r}")
    if sigma is not None and kernel != "rbf":
        raise ValueError(f"sigma applies to the RBF kernel only; got kernel={kernel!r}")
    x, y = checked_pair(X, Y, conv=conv, dtype=dtype, debiased=debiased, measure="kernel CKA")
    (xc, ex), (yc, ey) = centred_scaled(x, "X"), centred_scaled(y, "Y")
    details: dict[str, Any] = {"debiased": debiased, "n": xc.shape[0]}
    if callable(kernel):  # the user's kernel sees the centred data in their own units
        gx = _callable_gram(kernel, scale_(xc, -ex), "X")
        gy = _callable_gram(kernel, scale_(yc, -ey), "Y")
        details["kernel"] = getattr(kernel, "__name__", repr(kernel))
    elif kernel == "linear":
        gx, gy = gram(xc.T), gram(yc.T)
        details["kernel"] = "linear"
    else:  # bandwidths in the data's units, applied to the sides as scaled by 2^-ex, 2^-ey
        sigma_x, sigma_y = (None if s is None else math.ldexp(s, -e) for s, e in zip(_pair_sigmas(sigma), (ex, ey)))
        gx, sigma_x = _rbf_gram(xc, sigma_x, sigma_factor, "X")
        gy, sigma_y = _rbf_gram(yc, sigma_y, sigma_factor, "Y")
        details.update(kernel="rbf", sigma_x=math.ldexp(sigma_x, ex), sigma_y=math.ldexp(sigma_y, ey))
        if sigma is None:
            details.update(sigma_method=sigma_method, sigma_factor=sigma_factor)
    value = cka_ratio(*gram_hsics(gx, gy, debiased), debiased=debiased)
    return Similarity(value, measure="kernel_cka", conv=conv, **details)
