"""Linear, debiased, kernel and minibatch CKA: closed forms, invariances, float64 references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import pdist, squareform

import repsim
from repsim.measures.cka import linear_cka, linear_cka_form, minibatch_cka
from repsim.measures.kernel_cka import kernel_cka, median_bandwidth
from repsim.measures.products import cross_product, gram

TIGHT = 1e-10


# ---------------------------------------------------------------- plain float64 references
def reference_hsic(K: np.ndarray, L: np.ndarray, debiased: bool) -> float:
    """HSIC from explicit n x n Gram matrices: tr(KHLH)/(n-1)^2, or Song et al. 2012's HSIC_1."""
    n = K.shape[0]
    if not debiased:
        H = np.eye(n) - np.ones((n, n)) / n
        return np.trace(K @ H @ L @ H) / (n - 1) ** 2
    Kt, Lt, one = K - np.diag(np.diag(K)), L - np.diag(np.diag(L)), np.ones(n)
    return (
        np.trace(Kt @ Lt)
        + (one @ Kt @ one) * (one @ Lt @ one) / ((n - 1) * (n - 2))
        - 2.0 / (n - 2) * one @ Kt @ Lt @ one
    ) / (n * (n - 3))


def reference_cka(K: np.ndarray, L: np.ndarray, debiased: bool = False) -> float:
    return reference_hsic(K, L, debiased) / np.sqrt(reference_hsic(K, K, debiased) * reference_hsic(L, L, debiased))


def reference_rbf(X: np.ndarray, factor: float = 1.0) -> np.ndarray:
    """RBF Gram with sigma = factor * sqrt(median of all n^2 squared distances)."""
    sq = squareform(pdist(X, "sqeuclidean"))
    return np.exp(-sq / (2 * factor**2 * np.median(sq)))


def related_pair(rng: np.random.Generator, n: int, dx: int, dy: int, noise: float = 1.0):
    X = rng.normal(size=(n, dx)) @ rng.normal(size=(dx, dx)) + rng.normal(size=dx) * 5
    Y = X @ rng.normal(size=(dx, dy)) + noise * rng.normal(size=(n, dy)) - 3.0
    return X, Y


def orthogonal(rng: np.random.Generator, d: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    return q * np.sign(np.diag(r))


ALL_CKA = {
    "linear": lambda X, Y: linear_cka(X, Y),
    "debiased": lambda X, Y: linear_cka(X, Y, debiased=True),
    "rbf": lambda X, Y: kernel_cka(X, Y),
    "rbf_debiased": lambda X, Y: kernel_cka(X, Y, debiased=True, sigma_factor=0.5),
    "kernel_linear": lambda X, Y: kernel_cka(X, Y, kernel="linear"),
}


# ---------------------------------------------------------------- identity and invariances
@pytest.mark.parametrize("name", sorted(ALL_CKA))
def test_identical_inputs_give_one(rng, name):
    X = rng.normal(size=(40, 7))
    assert ALL_CKA[name](X, X) == pytest.approx(1.0, abs=TIGHT)


def test_minibatch_of_identical_inputs_is_one(rng):
    X = rng.normal(size=(100, 6))
    assert minibatch_cka(X, X, batch_size=16) == pytest.approx(1.0, abs=TIGHT)


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    scale=st.floats(1e-3, 1e3, allow_subnormal=False),
    shift=st.floats(-100, 100, allow_subnormal=False),
    name=st.sampled_from(["linear", "debiased", "rbf", "rbf_debiased"]),
)
def test_invariant_to_orthogonal_transform_isotropic_scaling_and_translation(seed, scale, shift, name):
    rng = np.random.default_rng(seed)
    X, Y = related_pair(rng, 30, 5, 4)
    moved = scale * X @ orthogonal(rng, 5) + shift * rng.normal(size=5)
    measure = ALL_CKA[name]
    assert measure(moved, Y) == pytest.approx(float(measure(X, Y)), rel=1e-9, abs=1e-12)


def test_linear_cka_is_not_invariant_to_anisotropic_scaling(rng):
    X, Y = related_pair(rng, 50, 4, 4)
    stretched = X * np.array([1.0, 10.0, 0.1, 1.0])
    assert abs(linear_cka(stretched, Y) - linear_cka(X, Y)) > 1e-3


# ---------------------------------------------------------------- forms and references
@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("shape", [(200, 5, 9), (30, 50, 70), (12, 3, 40)])
def test_feature_form_equals_gram_form(rng, shape, debiased):
    n, dx, dy = shape
    X, Y = related_pair(rng, n, dx, dy)
    features = linear_cka(X, Y, debiased=debiased, form="features")
    gram = linear_cka(X, Y, debiased=debiased, form="gram")
    assert (features.details["form"], gram.details["form"]) == ("features", "gram")
    assert float(features) == pytest.approx(float(gram), abs=TIGHT)


@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("shape", [(120, 6, 4), (25, 40, 60)])
def test_linear_cka_agrees_with_explicit_gram_reference(rng, shape, debiased):
    n, dx, dy = shape
    X, Y = related_pair(rng, n, dx, dy)  # un-centred: Song's HSIC_1 is translation invariant
    expected = reference_cka(X @ X.T, Y @ Y.T, debiased)
    assert linear_cka(X, Y, debiased=debiased) == pytest.approx(expected, abs=1e-8)
    assert kernel_cka(X, Y, kernel="linear", debiased=debiased) == pytest.approx(expected, abs=1e-8)


@pytest.mark.parametrize("debiased", [False, True])
def test_rbf_cka_agrees_with_explicit_reference_and_records_bandwidths(rng, debiased):
    X, Y = related_pair(rng, 81, 6, 3)
    got = kernel_cka(X, Y, sigma_factor=0.8, debiased=debiased)
    expected = reference_cka(reference_rbf(X, 0.8), reference_rbf(Y, 0.8), debiased)
    assert got == pytest.approx(expected, abs=1e-8)
    for name, data in (("sigma_x", X), ("sigma_y", Y)):
        median = np.median(squareform(pdist(data, "sqeuclidean")))
        assert got.details[name] == pytest.approx(0.8 * np.sqrt(median), rel=1e-10)


def test_median_bandwidth_uses_numpy_median_of_all_entries_for_even_counts():
    # 4 points on a line: squared distances 0 (x4), 1 (x6), 4 (x4), 9 (x2): numpy median = 1.
    sq = squareform(pdist(np.array([[0.0], [1.0], [2.0], [3.0]]), "sqeuclidean"))
    assert median_bandwidth(torch.tensor(sq), 2.0) == pytest.approx(2.0 * np.sqrt(np.median(sq)))


def test_rbf_with_explicit_sigma_pair(rng):
    X, Y = related_pair(rng, 40, 3, 3)
    got = kernel_cka(X, Y, sigma=(2.0, 5.0))
    Kx = np.exp(-squareform(pdist(X, "sqeuclidean")) / (2 * 2.0**2))
    Ky = np.exp(-squareform(pdist(Y, "sqeuclidean")) / (2 * 5.0**2))
    assert got == pytest.approx(reference_cka(Kx, Ky), abs=1e-8)
    assert (got.details["sigma_x"], got.details["sigma_y"]) == (2.0, 5.0)


def test_callable_kernel(rng):
    X, Y = related_pair(rng, 30, 4, 5)

    def cubic(t: torch.Tensor) -> torch.Tensor:
        return (t @ t.T + 1.0) ** 3

    got = kernel_cka(X, Y, kernel=cubic)
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    assert got == pytest.approx(reference_cka((Xc @ Xc.T + 1) ** 3, (Yc @ Yc.T + 1) ** 3), abs=1e-8)
    assert got.details["kernel"] == "cubic"


def test_float32_uncentred_relu_activations_give_the_float64_answer():
    rng = np.random.default_rng(7)
    n = 5000
    X = np.maximum(rng.normal(3.0, 1.0, size=(n, 64)), 0) + 1e5 * rng.random(64)
    Y = np.maximum(rng.normal(3.0, 1.0, size=(n, 32)) + X[:, :32] % 7, 0) + 1e5
    X32, Y32 = X.astype(np.float32), Y.astype(np.float32)
    X64, Y64 = X32.astype(np.float64), Y32.astype(np.float64)
    Xc, Yc = X64 - X64.mean(0), Y64 - Y64.mean(0)
    truth = np.linalg.norm(Yc.T @ Xc) ** 2 / (np.linalg.norm(Xc.T @ Xc) * np.linalg.norm(Yc.T @ Yc))
    assert linear_cka(X32, Y32) == pytest.approx(truth, abs=1e-8)
    assert linear_cka(torch.from_numpy(X32), torch.from_numpy(Y32)) == pytest.approx(truth, abs=1e-8)
    assert linear_cka(X32, Y32, debiased=True) == pytest.approx(float(linear_cka(X64, Y64, debiased=True)), abs=1e-8)
    # the data are hard enough: computing in float32 (after centring, even) misses by far more
    assert abs(linear_cka(X32, Y32, dtype=torch.float32) - truth) > 1e-7


# ---------------------------------------------------------------- closed forms
def test_debiased_cka_is_never_clamped_closed_form_negative():
    # x'y = 0, k = x^2 = (1,1,0,0,0,0), l = y^2 = (1,1,1,1,0,0), n = 6:
    # n(n-3) HSIC_1 = ||X'Y||^2 - n/(n-2) k'l + |X|^2|Y|^2/((n-1)(n-2)):
    # xy: 0 - 3 + 0.4 = -2.6; xx: 4 - 3 + 0.2 = 1.2; yy: 16 - 6 + 0.8 = 10.8.
    x = np.array([[1.0], [-1.0], [0.0], [0.0], [0.0], [0.0]])
    y = np.array([[1.0], [1.0], [-1.0], [-1.0], [0.0], [0.0]])
    assert linear_cka(x, y, debiased=True) == pytest.approx(-2.6 / np.sqrt(1.2 * 10.8), abs=1e-12)
    assert linear_cka(x, y, debiased=True, form="gram") == pytest.approx(-13 / 18, abs=1e-12)
    assert linear_cka(x, y) == pytest.approx(0.0, abs=1e-15)


def test_single_neurons_give_squared_correlation(rng):
    x = rng.normal(size=(300, 1))
    y = 2 * x + rng.normal(size=(300, 1)) + 4
    assert linear_cka(x, y) == pytest.approx(np.corrcoef(x[:, 0], y[:, 0])[0, 1] ** 2, abs=1e-12)


def test_rescaled_permuted_orthogonal_columns_closed_form(rng):
    n, d = 500, 6
    Z = rng.normal(size=(n, d))
    q, _ = np.linalg.qr(Z - Z.mean(0))  # orthonormal columns spanning centred ones: 1'q = 0
    s = np.array([1.0, 2.0, 3.0, 0.5, 4.0, 1.5])
    X = q * s + 7.0
    a = np.array([3.0, 0.2, 1.0, 5.0, 2.0, 0.7])
    perm = rng.permutation(d)
    Y = (q * s * a)[:, perm]
    expected = np.sum(a**2 * s**4) / np.sqrt(np.sum(s**4) * np.sum(a**4 * s**4))
    assert linear_cka(X, Y) == pytest.approx(expected, abs=1e-12)


def test_independent_gaussians_debiased_near_zero_biased_near_d_over_n_plus_d():
    rng = np.random.default_rng(11)
    n, d = 20000, 32
    X, Y = rng.normal(size=(n, d)), rng.normal(size=(n, d))
    # Debiased: mean 0, standard deviation about sqrt(2)/n. Biased: about d/(n + d).
    assert abs(linear_cka(X, Y, debiased=True)) < 10 * np.sqrt(2) / n
    assert linear_cka(X, Y) == pytest.approx(d / (n + d), rel=0.1)


@pytest.mark.parametrize("d", [100, 600, 2100])
def test_the_symmetric_products_equal_the_full_products(rng, d):
    a = torch.from_numpy(rng.normal(size=(50, d)))
    b = torch.from_numpy(rng.normal(size=(50, 7)))
    full = a.T @ a
    assert torch.allclose(gram(a), full, rtol=0, atol=1e-12) and torch.equal(gram(a), gram(a).T)
    assert torch.allclose(gram(a[:, :30].T), a[:, :30] @ a[:, :30].T, rtol=0, atol=1e-12)  # a transposed view
    assert torch.allclose(cross_product(a, b), a.T @ b, rtol=0, atol=1e-12)


@pytest.mark.parametrize("debiased", [False, True])
def test_blocked_forms_agree_at_widths_and_sizes_above_one_block(rng, debiased):
    X, Y = related_pair(rng, 700, 520, 300)  # feature form: X'X in 2 blocks; Gram form: 2 blocks
    features = linear_cka(X, Y, debiased=debiased, form="features")
    assert features == pytest.approx(float(linear_cka(X, Y, debiased=debiased, form="gram")), abs=TIGHT)
    assert features == pytest.approx(reference_cka(X @ X.T, Y @ Y.T, debiased), abs=1e-8)
    rbf = kernel_cka(X, Y, debiased=debiased)
    assert rbf == pytest.approx(reference_cka(reference_rbf(X), reference_rbf(Y), debiased), abs=1e-8)


def test_auto_form_follows_the_cost_rule(rng):
    assert linear_cka_form(1000, 64, 64) == "features"
    assert linear_cka_form(100, 500, 500) == "gram"
    X, Y = related_pair(rng, 20, 30, 30)
    assert linear_cka(X, Y).details["form"] == "gram"
    assert linear_cka(X[:, :3], Y[:, :2]).details["form"] == "features"


# ---------------------------------------------------------------- input kinds
def test_numpy_and_torch_inputs_agree(rng):
    X, Y = related_pair(rng, 60, 5, 7)
    for measure in ALL_CKA.values():
        assert measure(torch.from_numpy(X), torch.from_numpy(Y)) == pytest.approx(float(measure(X, Y)), abs=1e-13)


@pytest.mark.parametrize("conv", repsim.CONV_POLICIES)
def test_conv_policies(rng, conv):
    A = rng.normal(size=(10, 3, 4, 4))
    B = A[:, :2] ** 2 + rng.normal(size=(10, 2, 4, 4))
    flat = {
        "channels": lambda t: t.transpose(0, 2, 3, 1).reshape(-1, t.shape[1]),
        "flatten": lambda t: t.reshape(t.shape[0], -1),
        "mean": lambda t: t.mean(axis=(2, 3)),
    }[conv]
    got = linear_cka(A, B, conv=conv, debiased=True)
    assert got.conv == conv
    assert got == pytest.approx(float(linear_cka(flat(A), flat(B), debiased=True)), abs=1e-13)
    assert kernel_cka(A, B, conv=conv) == pytest.approx(float(kernel_cka(flat(A), flat(B))), abs=1e-13)


def test_similarity_records_what_was_computed(rng):
    X, Y = related_pair(rng, 50, 4, 3)
    got = linear_cka(X, Y, debiased=True)
    assert got.measure == "debiased_cka" and got.details["debiased"] is True
    assert (got.details["n"], got.details["dx"], got.details["dy"]) == (50, 4, 3)
    assert linear_cka(X, Y).measure == "linear_cka"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(rng):
    X, Y = related_pair(rng, 300, 20, 10)
    for measure in ALL_CKA.values():
        assert measure(torch.tensor(X).cuda(), torch.tensor(Y).cuda()) == pytest.approx(float(measure(X, Y)), abs=1e-10)


# ---------------------------------------------------------------- minibatch CKA
def test_minibatch_single_batch_equals_debiased_cka(rng):
    X, Y = related_pair(rng, 64, 5, 6)
    assert minibatch_cka(X, Y, batch_size=64) == pytest.approx(float(linear_cka(X, Y, debiased=True)), abs=TIGHT)


def test_minibatch_averages_per_batch_unbiased_hsic(rng):
    X, Y = related_pair(rng, 100, 4, 3)
    bounds = [(0, 40), (40, 80), (80, 100)]
    h = np.array(
        [
            [reference_hsic(a @ a.T, b @ b.T, True) for a, b in ((x, y), (x, x), (y, y))]
            for x, y in ((X[i:j], Y[i:j]) for i, j in bounds)
        ]
    ).mean(axis=0)
    got = minibatch_cka(X, Y, batch_size=40)
    assert got == pytest.approx(h[0] / np.sqrt(h[1] * h[2]), abs=1e-10)
    assert (got.details["n_batches"], got.details["n"], got.details["n_dropped"]) == (3, 100, 0)
    pairs = ((X[i:j], torch.from_numpy(Y[i:j])) for i, j in bounds)
    assert minibatch_cka(pairs) == pytest.approx(float(got), abs=1e-13)


def test_minibatch_drops_a_remainder_below_four_rows(rng):
    X, Y = related_pair(rng, 43, 3, 3)
    got = minibatch_cka(X, Y, batch_size=20)
    assert (got.details["n_batches"], got.details["n_dropped"]) == (2, 3)
    assert got == pytest.approx(float(minibatch_cka(X[:40], Y[:40], batch_size=20)), abs=1e-13)


def test_minibatch_estimates_population_cka_where_full_data_linear_cka_is_biased():
    # x ~ N(0, I_64), y = first 16 coordinates: population CKA = 16 / sqrt(64 * 16) = 0.5.
    rng = np.random.default_rng(3)
    X = rng.normal(size=(12800, 64))
    Y = X[:, :16]
    assert minibatch_cka(X, Y, batch_size=64) == pytest.approx(0.5, abs=0.02)
    # the plug-in estimate inside 64-row batches is far off (what minibatching must avoid)
    Xb, Yb = X[:64], Y[:64]
    assert linear_cka(Xb, Yb) > 0.6


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "X, Y, kwargs, message",
    [
        (np.full((5, 2), np.nan), np.ones((5, 2)), {}, "NaN"),
        (np.array([[1.0, np.inf], [2, 3], [4, 5]]), np.eye(3), {}, "infinite"),
        (np.eye(5), np.eye(4), {}, "same datapoints"),
        (np.arange(5.0), np.arange(5.0), {}, "2-D"),
        (np.zeros((0, 3)), np.zeros((0, 3)), {}, "empty"),
        (np.ones((6, 3)), np.eye(6), {}, "constant"),
        (np.eye(3), np.eye(3), {"debiased": True}, "at least 4"),
        (np.eye(5), np.eye(5), {"form": "fast"}, "form"),
        (np.zeros((4, 3, 2, 2)), np.zeros((4, 3, 2, 2)), {}, "conv="),
    ],
)
def test_linear_cka_rejects_bad_input(X, Y, kwargs, message):
    with pytest.raises(ValueError, match=message):
        linear_cka(X, Y, **kwargs)


def test_kernel_cka_rejects_bad_options(rng):
    X, Y = related_pair(rng, 10, 3, 3)
    with pytest.raises(ValueError, match="kernel must be"):
        kernel_cka(X, Y, kernel="poly")
    with pytest.raises(ValueError, match="sigma_method"):
        kernel_cka(X, Y, sigma_method="mean")
    with pytest.raises(ValueError, match="positive"):
        kernel_cka(X, Y, sigma=-1.0)
    with pytest.raises(ValueError, match="RBF kernel only"):
        kernel_cka(X, Y, kernel="linear", sigma=1.0)
    with pytest.raises(ValueError, match="shape"):
        kernel_cka(X, Y, kernel=lambda t: t)
    with pytest.raises(ValueError, match="symmetric"):
        kernel_cka(X, Y, kernel=lambda t: torch.triu(t @ t.T))
    duplicated = np.repeat(X[:2], [9, 1], axis=0)
    with pytest.raises(ValueError, match="median squared distance"):
        kernel_cka(duplicated, Y)


def test_minibatch_cka_rejects_bad_input(rng):
    X, Y = related_pair(rng, 30, 3, 3)
    with pytest.raises(ValueError, match="pass Y"):
        minibatch_cka(X)
    with pytest.raises(ValueError, match="batch_size"):
        minibatch_cka(X, Y, batch_size=2)
    with pytest.raises(ValueError, match="minibatch 1"):
        minibatch_cka([(X[:10], Y[:10]), (X[10:13], Y[10:13])])
    with pytest.raises(ValueError, match="minibatch 1 has"):
        minibatch_cka([(X[:10], Y[:10]), (X[10:20, :2], Y[10:20])])
    with pytest.raises(ValueError, match="no minibatch"):
        minibatch_cka([])


# ---------------------------------------------------------------- the registry
def test_registry_names_and_aliases(rng):
    expected = {
        "cca",
        "cca98",
        "mean_cca",
        "svcca",
        "pwcca",
        "cka",
        "linear_cka",
        "debiased_cka",
        "kernel_cka",
        "procrustes",
        "rsa",
    }
    assert set(repsim.MEASURES) == expected
    assert repsim.get_measure("cka") is repsim.get_measure("linear_cka") is linear_cka
    X, Y = related_pair(rng, 60, 4, 3)
    assert repsim.get_measure("debiased_cka")(X, Y) == float(linear_cka(X, Y, debiased=True))
    assert repsim.get_measure("cca")(X, Y) == float(repsim.get_measure("mean_cca")(X, Y))


@pytest.mark.parametrize("name", sorted(repsim.MEASURES))
def test_every_registered_measure_takes_conv_and_returns_a_similarity(rng, name):
    A = rng.normal(size=(20, 3, 2, 2))
    B = np.tanh(A[:, :2]) + 0.5 * rng.normal(size=(20, 2, 2, 2))
    got = repsim.MEASURES[name](A, B, conv="channels")
    assert isinstance(got, repsim.Similarity) and got.conv == "channels" and np.isfinite(got)


def test_get_measure_rejects_unknown_names_listing_the_known_ones():
    with pytest.raises(ValueError, match="unknown measure 'ckaa'.*debiased_cka.*pwcca"):
        repsim.get_measure("ckaa")
