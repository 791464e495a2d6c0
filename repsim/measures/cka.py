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

Imports: :mod:`repsim.measures.inputs` and :mod:`repsim.measures.result` only (nothing of
``repsim`` outside :mod:`repsim.measures`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from tqdm.auto import tqdm

from repsim.measures.inputs import as_pair, as_representation, centre
from repsim.measures.result import Similarity

#: Forms of linear CKA: ``"features"`` (d x d products), ``"gram"`` (n x n Gram matrices) or
#: ``"auto"`` (the one with fewer multiply-adds, see :func:`linear_cka_form`).
LINEAR_FORMS = ("auto", "features", "gram")

_DEBIASED_NAME = "debiased CKA (the unbiased HSIC estimator of Song et al. 2012)"
#: Column-block width of :func:`symmetric_product` (narrower blocks make slower products).
_BLOCK = 256


def linear_cka_form(n: int, dx: int, dy: int) -> str:
    """The cheaper exact form of linear CKA for ``n`` datapoints of ``dx`` and ``dy`` neurons.

    The feature form costs ``n (dx^2 + dy^2 + dx dy)`` multiply-adds (``X'X``, ``Y'Y``, ``X'Y``)
    and ``O(d^2)`` memory; the Gram form costs ``n^2 (dx + dy)`` (``XX'``, ``YY'``) and
    ``O(n^2)`` memory. Returns ``"features"`` unless the Gram form is strictly cheaper, i.e. for
    ``dx = dy = d`` the feature form is used while ``d <= 2n/3``. (The rule counts full products;
    the symmetric ones, ``X'X``, ``Y'Y``, ``XX'``, ``YY'``, cost less by
    :func:`symmetric_product`.)
    """
    return "features" if dx * dx + dy * dy + dx * dy <= n * (dx + dy) else "gram"


def symmetric_product(a: torch.Tensor) -> torch.Tensor:
    """``a'a`` ``(d, d)`` for ``a`` ``(n, d)``, computing only its lower block triangle.

    With ``b`` column blocks (``b = min(d // 256, 8)``) the products ``a_i' [a_1 ... a_i]`` cost
    ``(b + 1) / (2b)`` of a full ``a'a`` (0.75 at ``b = 2``, 0.56 at ``b = 8``); the upper blocks
    are mirrored. ``symmetric_product(t.T)`` is the Gram matrix ``tt'``.
    """
    d = a.shape[1]
    blocks = min(d // _BLOCK, 8)
    if blocks < 2:
        return a.T @ a
    edges = [d * i // blocks for i in range(blocks + 1)]
    out = a.new_empty((d, d))
    for lo, hi in zip(edges[:-1], edges[1:]):
        rows = a[:, lo:hi].T @ a[:, :hi]
        out[lo:hi, :hi] = rows
        out[:lo, lo:hi] = rows[:, :lo].T
    return out


def _hsic_normaliser(n: int, debiased: bool) -> float:
    """``(n-1)^2`` for the biased HSIC estimator, ``n (n-3)`` for the unbiased one."""
    return float(n * (n - 3)) if debiased else float((n - 1) ** 2)


def _sq_row_norms(t: torch.Tensor) -> torch.Tensor:
    """``(n,)`` squared Euclidean norms of the rows of ``t`` ``(n, d)``: the diagonal of ``tt'``."""
    return torch.linalg.vector_norm(t, dim=1).square()


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


def _unbiased_from_features(cross: torch.Tensor, kx: torch.Tensor, ky: torch.Tensor, n: int) -> torch.Tensor:
    """Unbiased linear HSIC from ``cross = ||X'Y||_F^2`` and the squared row norms ``kx``, ``ky``
    ``(n,)`` of centred ``X``, ``Y`` (:func:`scaled_unbiased_hsic`); cost ``O(n)`` beyond ``cross``."""
    return scaled_unbiased_hsic(cross, torch.dot(kx, ky), kx.sum(), ky.sum(), n) / _hsic_normaliser(n, True)


def _feature_hsics(
    xc: torch.Tensor, yc: torch.Tensor, debiased: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(HSIC(X, Y), HSIC(X, X), HSIC(Y, Y))`` for the linear kernel in feature space.

    ``xc`` ``(n, dx)`` and ``yc`` ``(n, dy)`` are column-centred. Biased:
    ``HSIC_0 = ||X'Y||_F^2 / (n-1)^2`` (Kornblith et al. 2019, eq. for linear CKA). Unbiased: see
    :func:`_unbiased_from_features`. Cost ``O(n (dx^2 + dy^2 + dx dy))``; never forms ``n x n``.
    """
    n = xc.shape[0]
    xy = torch.linalg.matrix_norm(xc.T @ yc).square()
    xx = torch.linalg.matrix_norm(symmetric_product(xc)).square()
    yy = torch.linalg.matrix_norm(symmetric_product(yc)).square()
    if not debiased:
        norm = _hsic_normaliser(n, False)
        return xy / norm, xx / norm, yy / norm
    kx, ky = _sq_row_norms(xc), _sq_row_norms(yc)
    return (
        _unbiased_from_features(xy, kx, ky, n),
        _unbiased_from_features(xx, kx, kx, n),
        _unbiased_from_features(yy, ky, ky, n),
    )


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
    norm = _hsic_normaliser(n, debiased)
    kc = centre_gram_(gram_x, unbiased=debiased).reshape(-1)
    lc = centre_gram_(gram_y, unbiased=debiased).reshape(-1)
    return torch.dot(kc, lc) / norm, torch.dot(kc, kc) / norm, torch.dot(lc, lc) / norm


def _linear_hsics(
    xc: torch.Tensor, yc: torch.Tensor, debiased: bool, form: str
) -> tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor], str]:
    """Linear-kernel HSICs of centred ``xc``, ``yc`` by ``form``; returns them and the form used."""
    if form not in LINEAR_FORMS:
        raise ValueError(f"form must be one of {LINEAR_FORMS}; got {form!r}")
    if form == "auto":
        form = linear_cka_form(xc.shape[0], xc.shape[1], yc.shape[1])
    if form == "features":
        return _feature_hsics(xc, yc, debiased), form
    return gram_hsics(symmetric_product(xc.T), symmetric_product(yc.T), debiased), form


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


def centred_pair(
    X: Any, Y: Any, *, conv: str | None, dtype: torch.dtype, debiased: bool, measure: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate ``X``, ``Y`` (``n >= 4`` when debiased) and return them column-centred."""
    x, y = as_pair(
        X,
        Y,
        conv=conv,
        dtype=dtype,
        min_n=4 if debiased else 2,
        measure=_DEBIASED_NAME if debiased else measure,
    )
    return centre(x, name="X"), centre(y, name="Y")


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
    xc, yc = centred_pair(X, Y, conv=conv, dtype=dtype, debiased=debiased, measure="linear CKA")
    (hxy, hxx, hyy), used = _linear_hsics(xc, yc, debiased, form)
    value = cka_ratio(hxy, hxx, hyy, debiased=debiased)
    return Similarity(
        value,
        measure=measure,
        conv=conv,
        form=used,
        debiased=debiased,
        n=xc.shape[0],
        dx=xc.shape[1],
        dy=yc.shape[1],
        dtype=str(dtype).removeprefix("torch."),
    )


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
    progress: bool = False,
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
        conv: policy for 4-D inputs. dtype: computation dtype. progress: show a tqdm bar.

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
    sums, dims, n_used, n_dropped, count = [0.0, 0.0, 0.0], None, 0, 0, 0
    for index, (xb, yb) in enumerate(tqdm(batches, disable=not progress, desc="minibatch CKA")):
        if size is not None and xb.shape[0] < 4:
            n_dropped += xb.shape[0]
            continue
        try:
            xc, yc = centred_pair(xb, yb, conv=conv, dtype=dtype, debiased=True, measure="")
        except ValueError as err:
            raise ValueError(f"minibatch {index}: {err}") from None
        if dims is None:
            dims = (xc.shape[1], yc.shape[1])
        elif dims != (xc.shape[1], yc.shape[1]):
            raise ValueError(f"minibatch {index} has {xc.shape[1]}, {yc.shape[1]} neurons; earlier ones {dims}")
        hsics, _ = _linear_hsics(xc, yc, True, "auto")
        sums = [s + float(h) for s, h in zip(sums, hsics)]
        n_used, count = n_used + xc.shape[0], count + 1
    if count == 0:
        raise ValueError("minibatch_cka got no minibatch of at least 4 datapoints")
    value = cka_ratio(*(s / count for s in sums), debiased=True)
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
