"""Centred kernel alignment: linear and debiased CKA, Nguyen's minibatch CKA, and the HSIC estimators.

CKA (Kornblith, Norouzi, Lee & Hinton, "Similarity of neural network representations
revisited", ICML 2019) normalises the Hilbert-Schmidt independence criterion (HSIC, Gretton et
al. 2005) of two Gram matrices ``K`` (of ``X``) and ``L`` (of ``Y``), both ``(n, n)``::

    CKA(K, L) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))

Two HSIC estimators are offered:

- biased (plug-in): ``HSIC_0(K, L) = tr(K H L H) / (n - 1)^2`` with ``H = I - 11'/n``;
- unbiased ("debiased", Song, Smola, Gretton, Bedo & Borgwardt, "Feature selection via
  dependence maximization", JMLR 2012, eq. 5; as used in CKA by Nguyen, Raghu & Kornblith 2021),
  with ``K~``, ``L~`` the Gram matrices with zeroed diagonals::

      HSIC_1(K, L) = [tr(K~ L~) + (1'K~1)(1'L~1) / ((n-1)(n-2)) - 2/(n-2) 1'K~L~1] / (n (n-3))

  It needs ``n >= 4``, is exactly unbiased for the population HSIC, and can be negative, so
  debiased CKA can be (slightly, or for tiny ``n`` strongly) negative: values are never clamped.

Every function centres the data itself, computes in float64 by default (inputs are upcast
*before* centring, so float32 activations with large means lose nothing) and returns a
:class:`repsim.Similarity` that records the form and estimator used. Kernel (RBF) CKA, built on
the Gram-matrix estimators here, is in :mod:`repsim.measures.kernel_cka`.

The feature form computes ``X'X``, ``Y'Y`` and ``X'Y`` of the centred data block by block of
rows, reading the data from memory once where a shift certifies it (debiased CKA's row norms
included), else twice (the means, then the products), never holding a full centred copy, with
BLAS's symmetric updates for the Gram matrices (:func:`repsim.measures.products.centred_products`).
How fast, beside plain numpy and the peers: ``benchmarks/README.md``.

Imports: :mod:`repsim.measures.hsic`, :mod:`repsim.measures.inputs`,
:mod:`repsim.measures.products` and :mod:`repsim.measures.result` only (nothing of ``repsim``
outside :mod:`repsim.measures`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

from repsim.measures.hsic import cka_ratio, gram_hsics, hsic_normaliser, scaled_unbiased_hsic
from repsim.measures.inputs import as_pair, as_representation, centre, finite_max_abs, normalising_exponent
from repsim.measures.products import centred_products, gram, is_constant, products_of_centred
from repsim.measures.result import Similarity

#: Forms of linear CKA: ``"features"`` (d x d products), ``"gram"`` (n x n Gram matrices) or
#: ``"auto"`` (the one with fewer multiply-adds, see :func:`linear_cka_form`).
LINEAR_FORMS = ("auto", "features", "gram")

_DEBIASED_NAME = "debiased CKA (the unbiased HSIC estimator of Song et al. 2012)"


def linear_cka_form(n: int, dx: int, dy: int) -> str:
    """The cheaper exact form of linear CKA for ``n`` datapoints of ``dx`` and ``dy`` neurons.

    The feature form costs ``n (dx^2 + dy^2 + dx dy)`` multiply-adds (``X'X``, ``Y'Y``, ``X'Y``)
    and ``O(d^2)`` memory; the Gram form costs ``n^2 (dx + dy)`` (``XX'``, ``YY'``) and
    ``O(n^2)`` memory. Returns ``"features"`` unless the Gram form is strictly cheaper, i.e. for
    ``dx = dy = d`` the feature form is used while ``d <= 2n/3``. (The rule counts full products;
    the symmetric ones, ``X'X``, ``Y'Y``, ``XX'``, ``YY'``, cost half as much:
    :func:`repsim.measures.products.gram`.)
    """
    return "features" if dx * dx + dy * dy + dx * dy <= n * (dx + dy) else "gram"


def centred_scaled(t: torch.Tensor, name: str) -> tuple[torch.Tensor, int]:
    """A side checked for NaN and infinities, centred and scaled by a power of two where its
    magnitude requires (:func:`repsim.measures.inputs.centre`): ``(centred, exponent)``."""
    exponent = normalising_exponent(finite_max_abs(t, name))
    return centre(t, name=name, exponent=exponent), exponent


def _linear_hsics(
    x: torch.Tensor, y: torch.Tensor, debiased: bool, form: str
) -> tuple[tuple[float, float, float], str, tuple[int, int]]:
    """The three HSICs of the linear kernels of ``x`` ``(n, dx)``
    and ``y`` ``(n, dy)`` (validated, not centred), by ``form``; returns them, the form used and
    the exponents ``(ex, ey)`` of the powers of two the sides were scaled by (HSIC(X, Y) scales
    as ``2^(2 ex + 2 ey)``)."""
    if form not in LINEAR_FORMS:
        raise ValueError(f"form must be one of {LINEAR_FORMS}; got {form!r}")
    if form == "auto":
        form = linear_cka_form(x.shape[0], x.shape[1], y.shape[1])
    if form == "features":
        hsics, exponents = _feature_hsics(x, y, debiased)
        return hsics, form, exponents
    (xc, ex), (yc, ey) = centred_scaled(x, "X"), centred_scaled(y, "Y")
    hsics = tuple(float(h) for h in gram_hsics(gram(xc.T), gram(yc.T), debiased))
    return hsics, form, (ex, ey)


def _feature_hsics(
    x: torch.Tensor, y: torch.Tensor, debiased: bool
) -> tuple[tuple[float, float, float], tuple[int, int]]:
    """The three HSICs in feature space, from ``X'Y``, ``X'X``, ``Y'Y`` of the centred data (and
    the squared row norms when debiased: :func:`repsim.measures.hsic.scaled_unbiased_hsic`), never
    forming an ``n x n`` matrix. The products come from :func:`centred_products` (CPU data of
    ordinary magnitude: one certified pass or two, no centred copy), else from the sides centred in full and
    scaled by powers of two (every magnitude, every device): CKA is the same either way. Returns
    the HSICs and the exponents of those scalings (``(0, 0)`` on the fast path)."""
    products, exponents = centred_products(x, y, row_norms=debiased), (0, 0)
    if products is None:
        (xc, ex), (yc, ey) = centred_scaled(x, "X"), centred_scaled(y, "Y")
        products, exponents = products_of_centred(xc, yc, row_norms=debiased), (ex, ey)
    for name, constant in zip(("X", "Y"), is_constant(products, torch.finfo(x.dtype).eps)):
        if constant:
            raise ValueError(f"{name} is constant: every neuron has zero variance over the datapoints")
    n, p = products.n, products
    xy, xx, yy = (_squared_norm(s) for s in (p.sxy, p.sxx, p.syy))
    if not debiased:
        norm = hsic_normaliser(n, False)
        return (xy / norm, xx / norm, yy / norm), exponents
    saa, sbb, sab = p.row_norm_sums
    big_a, big_b = float(torch.trace(p.sxx)), float(torch.trace(p.syy))
    norm = hsic_normaliser(n, True)
    hsics = (
        float(scaled_unbiased_hsic(xy, sab, big_a, big_b, n)) / norm,
        float(scaled_unbiased_hsic(xx, saa, big_a, big_a, n)) / norm,
        float(scaled_unbiased_hsic(yy, sbb, big_b, big_b, n)) / norm,
    )
    return hsics, exponents


def _squared_norm(s: torch.Tensor) -> float:
    """``||S||_F^2`` (the entries are of ordinary magnitude here, scaled where they were not)."""
    return float(torch.linalg.matrix_norm(s).square())


#: Fewest datapoints of biased CKA: with 2, both centred sides are multiples of ``(1, -1)``
#: and every CKA is 1, whatever the data.
CKA_MIN_N = 3
#: Fewest datapoints of the unbiased HSIC estimator (its normaliser is ``n (n - 3)``).
DEBIASED_MIN_N = 4


def checked_pair(
    X: Any, Y: Any, *, conv: str | None, dtype: torch.dtype, debiased: bool, measure: str = "linear CKA"
) -> tuple[torch.Tensor, torch.Tensor]:
    """``X``, ``Y`` as 2-D tensors of ``dtype`` with at least :data:`CKA_MIN_N` datapoints
    (:data:`DEBIASED_MIN_N` when debiased); finiteness is checked where the data are read."""
    return as_pair(
        X,
        Y,
        conv=conv,
        dtype=dtype,
        min_n=DEBIASED_MIN_N if debiased else CKA_MIN_N,
        measure=_DEBIASED_NAME if debiased else measure,
        check_finite=False,
    )


def linear_cka(
    X: Any,
    Y: Any,
    *,
    debiased: bool = False,
    conv: str | None = None,
    dtype: torch.dtype = torch.float64,
    form: str = "auto",
) -> Similarity:
    """Linear CKA of two representations of the same ``n`` datapoints (Kornblith et al. 2019).

    With ``X`` ``(n, dx)`` and ``Y`` ``(n, dy)`` column-centred (done here, after the cast to
    ``dtype``)::

        CKA = ||Y'X||_F^2 / (||X'X||_F ||Y'Y||_F)             (feature form, d x d products)
            = <XX', YY'>_F / (||XX'||_F ||YY'||_F)              (Gram form, n x n matrices)

    Both forms give the same value; ``form="auto"`` takes the cheaper one
    (:func:`linear_cka_form`: the feature form unless ``dx^2 + dy^2 + dx dy > n (dx + dy)``).
    With ``debiased=True`` every HSIC is Song et al.'s (2012) unbiased estimator (see the module
    docstring), as in Nguyen, Raghu & Kornblith (2021, ICLR, "Do wide and deep networks learn
    the same things?"); in the feature form it is evaluated from ``X'Y``, ``X'X``, ``Y'Y`` and
    the squared row norms in ``O(n d^2)`` without any ``n x n`` matrix. Debiased CKA needs
    ``n >= 4`` and can be negative; nothing is clamped.

    Args:
        X, Y: ``(n, dx)``, ``(n, dy)`` arrays or tensors (or ``(N, C, H, W)`` with ``conv``).
        debiased: use the unbiased HSIC estimator.
        conv: policy for 4-D inputs, one of :data:`repsim.CONV_POLICIES`.
        dtype: computation dtype (inputs are cast before centring).
        form: ``"auto"``, ``"features"`` or ``"gram"``.

    Returns:
        :class:`repsim.Similarity` named ``"linear_cka"`` (or ``"debiased_cka"``) with details
        ``form``, ``debiased``, ``n``, ``dx``, ``dy``, ``dtype``.

    Examples:
        One neuron each: linear CKA is the squared correlation, ``(4/5)^2`` by hand.

        >>> import numpy as np
        >>> from repsim.measures import linear_cka
        >>> round(float(linear_cka([[1.0], [2.0], [3.0], [4.0]], [[1.0], [3.0], [2.0], [4.0]])), 6)
        0.64

        Biased or debiased, CKA is invariant to orthogonal transforms, isotropic scaling and shifts;
        the two forms give one value.

        >>> rng = np.random.default_rng(0)
        >>> X = rng.standard_normal((200, 6))
        >>> Q, _ = np.linalg.qr(rng.standard_normal((6, 6)))
        >>> Y = 3.0 * X @ Q + 1.0
        >>> round(float(linear_cka(X, Y)), 6), round(float(linear_cka(X, Y, debiased=True)), 6)
        (1.0, 1.0)
        >>> Z = X[:, :3] + rng.standard_normal((200, 3))
        >>> bool(abs(linear_cka(X, Z, form="features") - linear_cka(X, Z, form="gram")) < 1e-12)
        True

        Independent data with ``d`` not small against ``n``: the biased estimate is far from 0,
        the debiased one near 0 (it can be negative).

        >>> rng = np.random.default_rng(0)
        >>> A, B = rng.standard_normal((40, 30)), rng.standard_normal((40, 30))
        >>> round(float(linear_cka(A, B)), 2), round(float(linear_cka(A, B, debiased=True)), 2)
        (0.42, -0.01)
    """
    measure = "debiased_cka" if debiased else "linear_cka"
    x, y = checked_pair(X, Y, conv=conv, dtype=dtype, debiased=debiased)
    (hxy, hxx, hyy), used, _ = _linear_hsics(x, y, debiased, form)
    value = cka_ratio(hxy, hxx, hyy, debiased=debiased)
    return Similarity(
        value,
        measure=measure,
        conv=conv,
        form=used,
        debiased=debiased,
        n=x.shape[0],
        dx=x.shape[1],
        dy=y.shape[1],
        dtype=str(dtype).removeprefix("torch."),
    )


class _ScaledSum:
    """A sum of terms ``v 2^e`` kept as ``m 2^E``, ``E`` the largest exponent seen, so that no
    term overflows or underflows whatever the magnitude of the data (exact rescalings)."""

    def __init__(self) -> None:
        self.mantissa, self.exponent = 0.0, None

    def add(self, value: float, exponent: int) -> None:
        if self.exponent is None or exponent > self.exponent:
            if self.exponent is not None:
                self.mantissa = math.ldexp(self.mantissa, self.exponent - exponent)
            self.exponent = exponent
        self.mantissa += math.ldexp(value, exponent - self.exponent)

    @staticmethod
    def cka(hxy: _ScaledSum, hxx: _ScaledSum, hyy: _ScaledSum) -> float:
        """``hxy / sqrt(hxx hyy)`` of three sums (their common count cancels)."""
        ratio = cka_ratio(hxy.mantissa, hxx.mantissa, hyy.mantissa, debiased=True)
        return ratio * 2.0 ** (hxy.exponent - (hxx.exponent + hyy.exponent) / 2)


def _row_batches(X: Any, Y: Any, batch_size: int, conv: str | None, dtype: torch.dtype) -> Iterable[tuple[Any, Any]]:
    """Consecutive row blocks ``(X[i:i+b], Y[i:i+b])`` of two full representations."""
    x = as_representation(X, name="X", conv=conv, dtype=dtype, check_finite=False)
    y = as_representation(Y, name="Y", conv=conv, dtype=dtype, check_finite=False)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"X and Y must describe the same datapoints: {x.shape[0]} vs {y.shape[0]} rows")
    return ((x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, x.shape[0], batch_size))


def minibatch_cka(
    batches_or_X: Any,
    Y: Any = None,
    *,
    batch_size: int = 256,
    conv: str | None = None,
    dtype: torch.dtype = torch.float64,
    progress: Callable[..., Iterable[Any]] | None = None,
) -> Similarity:
    """Minibatch linear CKA of Nguyen, Raghu & Kornblith (2021, ICLR, section 3.1)::

        CKA_mb = mean_i HSIC_1(X_i, Y_i) / sqrt(mean_i HSIC_1(X_i, X_i) * mean_i HSIC_1(Y_i, Y_i))

    over minibatches ``(X_i, Y_i)`` of the same datapoints, with ``HSIC_1`` the unbiased
    linear-kernel estimator of Song et al. (2012) computed inside each minibatch (equal weight
    per minibatch, as in the paper).

    What it estimates: each ``HSIC_1`` is unbiased for the *population* HSIC, so for minibatches
    sampled i.i.d. this converges (many batches) to the population linear CKA
    ``||C_xy||_F^2 / (||C_xx||_F ||C_yy||_F)`` of the data distribution (``C`` covariances),
    using only pairs of datapoints within a minibatch. It is therefore NOT the full-data
    :func:`linear_cka` (which carries the plug-in bias, large when ``d`` is not small against
    ``n``) and not the full-data debiased CKA either (that uses all pairs); it depends on the
    batch size and on how datapoints are grouped (sorted data gives non-i.i.d. batches: shuffle
    first). With a single batch it equals ``linear_cka(X, Y, debiased=True)``. For exact
    full-data CKA over more datapoints than fit in memory use :mod:`repsim.measures.streaming`.

    Args:
        batches_or_X: an iterable of ``(X_i, Y_i)`` pairs (each ``(b_i, dx)``, ``(b_i, dy)``,
            ``b_i >= 4``), or the full ``X`` ``(n, dx)`` when ``Y`` is given.
        Y: the full ``Y`` ``(n, dy)``; ``X``, ``Y`` are then cut into consecutive batches of
            ``batch_size`` rows; a last batch of fewer than 4 rows is dropped (``n_dropped``).
        batch_size: rows per batch when ``Y`` is given.
        conv: policy for 4-D inputs. dtype: computation dtype.
        progress: ``None`` (nothing shown), or a wrapper of the iterable of batches that shows
            progress, called as ``progress(batches, desc="minibatch CKA")``: e.g.
            :func:`repsim.progress.progress_bar` (a bar on a terminal, one line in a log).

    Returns:
        :class:`repsim.Similarity` named ``"minibatch_cka"`` with details ``n_batches``, ``n``
        (datapoints used), ``n_dropped``, ``dx``, ``dy``, ``batch_size`` (``None`` for an
        iterable).

    Examples:
        One batch is debiased linear CKA; consecutive batches of ``batch_size`` rows equal the
        same batches given as an iterable of pairs; a scaled copy gives 1 in every batch.

        >>> import numpy as np
        >>> from repsim.measures import linear_cka, minibatch_cka
        >>> rng = np.random.default_rng(0)
        >>> X = rng.standard_normal((64, 8))
        >>> Y = X @ rng.standard_normal((8, 8)) + rng.standard_normal((64, 8))
        >>> bool(abs(minibatch_cka(X, Y, batch_size=64) - linear_cka(X, Y, debiased=True)) < 1e-12)
        True
        >>> halves = [(X[:32], Y[:32]), (X[32:], Y[32:])]
        >>> bool(abs(minibatch_cka(halves) - minibatch_cka(X, Y, batch_size=32)) < 1e-12)
        True
        >>> s = minibatch_cka(X, 2.0 * X, batch_size=16)
        >>> round(float(s), 6), s.details["n_batches"]
        (1.0, 4)
    """
    if Y is None:
        if isinstance(batches_or_X, (torch.Tensor,)) or hasattr(batches_or_X, "__array__"):
            raise ValueError("minibatch_cka got one array: pass Y too, or an iterable of (X, Y) pairs")
        batches, size = batches_or_X, None
    else:
        if not (isinstance(batch_size, int) and batch_size >= 4):
            raise ValueError(f"batch_size must be an integer >= 4; got {batch_size!r}")
        batches, size = _row_batches(batches_or_X, Y, batch_size, conv, dtype), batch_size
    if progress is not None:
        if not callable(progress):
            raise ValueError(
                f"progress must be None or a wrapper of the batches (repsim.progress.progress_bar); got {progress!r}"
            )
        batches = progress(batches, desc="minibatch CKA")
    sums, dims, n_used, n_dropped, count = [_ScaledSum(), _ScaledSum(), _ScaledSum()], None, 0, 0, 0
    for index, (xb, yb) in enumerate(batches):
        if size is not None and xb.shape[0] < 4:
            n_dropped += xb.shape[0]
            continue
        try:
            xc, yc = checked_pair(xb, yb, conv=conv, dtype=dtype, debiased=True)
            hsics, _, (ex, ey) = _linear_hsics(xc, yc, True, "auto")
        except ValueError as err:
            raise ValueError(f"minibatch {index}: {err}") from None
        if dims is None:
            dims = (xc.shape[1], yc.shape[1])
        elif dims != (xc.shape[1], yc.shape[1]):
            raise ValueError(f"minibatch {index} has {xc.shape[1]}, {yc.shape[1]} neurons; earlier ones {dims}")
        for total, h, exponent in zip(sums, hsics, (2 * ex + 2 * ey, 4 * ex, 4 * ey)):
            total.add(float(h), exponent)  # HSIC scales as the product of the two kernels' scales
        n_used, count = n_used + xc.shape[0], count + 1
    if count == 0:
        raise ValueError("minibatch_cka got no minibatch of at least 4 datapoints")
    value = _ScaledSum.cka(*sums)
    return Similarity(
        value,
        measure="minibatch_cka",
        conv=conv,
        n_batches=count,
        n=n_used,
        n_dropped=n_dropped,
        dx=dims[0],
        dy=dims[1],
        batch_size=size,
    )
