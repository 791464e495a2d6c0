"""CCA family (repsim.measures.canonical): closed forms, invariances, float64 references, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import repsim


# ----------------------------------------------------------------------------- constructions
def centred_orthonormal(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """``(n, k)`` orthonormal columns, each exactly (to rounding) orthogonal to the ones vector."""
    q, _ = np.linalg.qr(np.hstack([np.ones((n, 1)), rng.standard_normal((n, k))]))
    return q[:, 1:]


def random_map(rng: np.random.Generator, d: int, cond: float = 10.0) -> np.ndarray:
    """A random invertible ``(d, d)`` matrix with condition number ``cond``."""
    u, _ = np.linalg.qr(rng.standard_normal((d, d)))
    v, _ = np.linalg.qr(rng.standard_normal((d, d)))
    return (u * np.logspace(0, -np.log10(cond), d)) @ v.T


def with_correlations(
    rng: np.random.Generator, n: int, rho: np.ndarray, extra_x: int = 0, extra_y: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``X = [z_1..z_k, w_1..]``, ``Y = [rho_i z_i + sqrt(1 - rho_i^2) e_i, v_1..]`` with all of
    ``z, w, e, v`` orthonormal and centred: the sample canonical correlations are exactly
    ``rho`` (and zeros for the extra columns)."""
    k = len(rho)
    z = centred_orthonormal(rng, n, 2 * k + extra_x + extra_y)
    zx, e, wx, vy = np.split(z, [k, 2 * k, 2 * k + extra_x], axis=1)
    x = np.hstack([zx, wx])
    y = np.hstack([zx * rho + e * np.sqrt(1 - rho**2), vy])
    return x, y


def expected(rho: np.ndarray, dx: int, dy: int) -> np.ndarray:
    out = np.zeros(min(dx, dy))
    out[: len(rho)] = np.sort(rho)[::-1]
    return out


# ------------------------------------------------------------------------ float64 references
def whiten(c: np.ndarray) -> np.ndarray:
    """``(C'C)^-1/2`` by a plain eigendecomposition (well-conditioned data only)."""
    lam, v = np.linalg.eigh(c.T @ c)
    return (v / np.sqrt(lam)) @ v.T


def reference_cca(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Coefficients and X's canonical weight vectors by covariance whitening."""
    xc, yc = x - x.mean(0), y - y.mean(0)
    wx, wy = whiten(xc), whiten(yc)
    u, s, _ = np.linalg.svd(wx @ (xc.T @ yc) @ wy, full_matrices=False)
    return s, wx @ u


def reference_pwcca(x: np.ndarray, y: np.ndarray) -> float:
    """Morcos et al.'s formula, literally: unit-norm variates h_i, centred neurons x_j."""
    rho, a = reference_cca(x, y)
    xc = x - x.mean(0)
    h = xc @ a[:, : len(rho)]
    h /= np.linalg.norm(h, axis=0)
    alpha = np.abs(h.T @ xc).sum(axis=1)
    return float((alpha / alpha.sum()) @ rho)


def reference_svcca(x: np.ndarray, y: np.ndarray, keep: float) -> tuple[float, int, int]:
    def reduce(a: np.ndarray) -> np.ndarray:
        u, s, _ = np.linalg.svd(a - a.mean(0), full_matrices=False)
        frac = np.cumsum(s**2) / np.sum(s**2)
        k = int(np.argmax(frac >= keep)) + 1
        return u[:, :k] * s[:k]

    rx, ry = reduce(x), reduce(y)
    return float(reference_cca(rx, ry)[0].mean()), rx.shape[1], ry.shape[1]


@pytest.fixture
def pair(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A generic well-conditioned pair with related but different column spaces."""
    n = 300
    x = rng.standard_normal((n, 12)) + rng.uniform(-3, 3, 12)
    y = x[:, :6] @ rng.standard_normal((6, 9)) + 0.7 * rng.standard_normal((n, 9)) + 5.0
    return x, y


# ------------------------------------------------------------------------------ closed forms
@pytest.mark.parametrize("extra", [(0, 0), (3, 0), (0, 4), (2, 5)])
def test_constructed_correlations_are_recovered(rng, extra):
    rho = np.array([0.99, 0.9, 0.7, 0.5, 0.3, 0.1, 0.0])
    x, y = with_correlations(rng, 200, rho, *extra)
    # invertible maps and offsets change nothing
    x = x @ random_map(rng, x.shape[1], 1e3) + 7.0
    y = y @ random_map(rng, y.shape[1], 1e2) - 3.0
    result = repsim.cca(x, y)
    np.testing.assert_allclose(result.coefficients, expected(rho, 7 + extra[0], 7 + extra[1]), atol=1e-10)
    assert (result.rank_x, result.rank_y, result.n) == (7 + extra[0], 7 + extra[1], 200)
    assert float(result) == pytest.approx(result.coefficients.mean(), abs=0)
    assert float(repsim.mean_cca(x, y)) == pytest.approx(float(result), abs=1e-15)


def test_ill_conditioned_sides_keep_qr_accuracy(rng):
    """Condition number 1e6 per side: QR path errs ~eps*cond (covariance whitening: ~eps*cond^2 = 1e-4)."""
    rho = np.linspace(0.95, 0.05, 8)
    x, y = with_correlations(rng, 400, rho)
    x, y = x @ random_map(rng, 8, 1e6), y @ random_map(rng, 8, 1e6)
    np.testing.assert_allclose(repsim.cca(x, y).coefficients, np.sort(rho)[::-1], atol=1e-8)


def test_identical_inputs_give_ones(pair):
    x, _ = pair
    result = repsim.cca(x, x)
    np.testing.assert_allclose(result.coefficients, 1.0, atol=1e-12)
    assert result.coefficients.max() <= 1.0
    assert float(repsim.pwcca(x, x)) == pytest.approx(1.0, abs=1e-12)
    assert float(repsim.svcca(x, x)) == pytest.approx(1.0, abs=1e-12)


def test_coefficients_are_read_only_descending_and_in_unit_interval(pair):
    coef = repsim.cca(*pair).coefficients
    assert coef.dtype == np.float64 and not coef.flags.writeable
    assert np.all(np.diff(coef) <= 0) and coef.min() >= 0 and coef.max() <= 1
    assert len(coef) == 9


# ------------------------------------------------------------------------------ invariances
def test_cca_is_invariant_to_invertible_maps_scaling_and_translation(pair, rng):
    x, y = pair
    base = repsim.cca(x, y).coefficients
    moved = repsim.cca(3.0 * x @ random_map(rng, 12, 1e4) + 100.0, y @ random_map(rng, 9, 1e3) - 1e3)
    np.testing.assert_allclose(moved.coefficients, base, atol=1e-10)


def test_svcca_is_invariant_to_orthogonal_maps_scaling_and_translation(pair, rng):
    x, y = pair
    qx, _ = np.linalg.qr(rng.standard_normal((12, 12)))
    qy, _ = np.linalg.qr(rng.standard_normal((9, 9)))
    base = repsim.svcca(x, y, keep=0.9)
    moved = repsim.svcca(0.01 * x @ qx + 50.0, 20.0 * y @ qy - 4.0, keep=0.9)
    assert float(moved) == pytest.approx(float(base), abs=1e-10)
    for key in ("dims_x", "dims_y"):
        assert moved.details[key] == base.details[key]


def test_pwcca_invariances(pair, rng):
    """Invariant to isotropic scaling and translation of X, neuron permutations and sign flips
    of X, and any invertible map of Y; not (in general) to a rotation of X's neurons."""
    x, y = pair
    base = float(repsim.pwcca(x, y))
    perm_signs = np.eye(12)[rng.permutation(12)] * rng.choice([-1.0, 1.0], 12)
    moved = float(repsim.pwcca(4.0 * x @ perm_signs - 9.0, y @ random_map(rng, 9, 1e3) + 2.0))
    assert moved == pytest.approx(base, abs=1e-10)
    q, _ = np.linalg.qr(rng.standard_normal((12, 12)))
    assert abs(float(repsim.pwcca(x @ q, y)) - base) > 1e-4


# --------------------------------------------------------------------- float64 references
def test_agrees_with_covariance_whitening_reference(pair):
    x, y = pair
    ref, _ = reference_cca(x, y)
    np.testing.assert_allclose(repsim.cca(x, y).coefficients, ref, atol=1e-8)


def test_pwcca_agrees_with_literal_formula(pair):
    x, y = pair
    assert float(repsim.pwcca(x, y)) == pytest.approx(reference_pwcca(x, y), abs=1e-8)
    assert float(repsim.pwcca(y, x)) == pytest.approx(reference_pwcca(y, x), abs=1e-8)
    sym = repsim.pwcca(x, y, symmetric=True)
    assert float(sym) == pytest.approx(0.5 * (reference_pwcca(x, y) + reference_pwcca(y, x)), abs=1e-8)
    assert sym.details["pwcca_x"] == pytest.approx(float(repsim.pwcca(x, y)), abs=1e-12)


def test_pwcca_closed_form_with_scaled_variates(rng):
    """X = [c_i z_i]: the variates are h_i = z_i, <h_i, x_j> = c_i delta_ij, so the weights are
    proportional to c; likewise for Y with its scales d_i."""
    rho = np.array([0.9, 0.6, 0.2])
    x, y = with_correlations(rng, 150, rho)
    c, d = np.array([5.0, 1.0, 0.5]), np.array([0.1, 2.0, 4.0])
    x, y = x * c, y * d
    assert float(repsim.pwcca(x, y)) == pytest.approx(c @ rho / c.sum(), abs=1e-10)
    assert float(repsim.pwcca(y, x)) == pytest.approx(d @ rho / d.sum(), abs=1e-10)
    sym = repsim.pwcca(x, y, symmetric=True)
    assert float(sym) == pytest.approx(0.5 * (c @ rho / c.sum() + d @ rho / d.sum()), abs=1e-10)
    assert sym.details["weights_from"] == "mean of X and Y"
    assert repsim.pwcca(x, y).details["weights_from"] == "X"


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.99])
def test_svcca_agrees_with_reference(pair, keep):
    x, y = pair
    ref, kx, ky = reference_svcca(x, y, keep)
    got = repsim.svcca(x, y, keep=keep)
    assert (got.details["dims_x"], got.details["dims_y"]) == (kx, ky)
    assert float(got) == pytest.approx(ref, abs=1e-8)


def test_svcca_keep_rule_is_fraction_of_squared_singular_values(rng):
    """Variances 50, 30, 15, 4, 1 (%): cumulative 0.50, 0.80, 0.95, 0.99, 1.00 (keep just below
    and above each step; exact ties are at the mercy of rounding)."""
    z = centred_orthonormal(rng, 100, 5)
    x = z * np.sqrt([50.0, 30.0, 15.0, 4.0, 1.0])
    y = rng.standard_normal((100, 3))
    steps = [(0.49, 1), (0.51, 2), (0.79, 2), (0.81, 3), (0.94, 3), (0.96, 4), (0.989, 4), (0.991, 5)]
    steps.append((1.0, 5))
    for keep, dims in steps:
        assert repsim.svcca(x, y, keep=keep).details["dims_x"] == dims, keep
    assert repsim.svcca(x, y, keep=2).details["dims_x"] == 2
    capped = repsim.svcca(x, y, keep=50)  # at most the rank
    assert (capped.details["dims_x"], capped.details["dims_y"]) == (5, 3)
    assert float(capped) == pytest.approx(float(repsim.mean_cca(x, y)), abs=1e-12)


def test_svcca_works_where_cca_is_trivial(rng):
    """d > n: CCA raises, SVCCA with few kept directions is fine."""
    n = 40
    x = rng.standard_normal((n, 3)) @ rng.standard_normal((3, 60)) + 1e-3 * rng.standard_normal((n, 60))
    y = x[:, :30] + 0.1 * rng.standard_normal((n, 30))
    with pytest.raises(ValueError, match="svcca"):
        repsim.cca(x, y)
    got = repsim.svcca(x, y, keep=3)
    assert (got.details["dims_x"], got.details["dims_y"]) == (3, 3) and 0.9 < float(got) <= 1.0


@pytest.mark.parametrize("keep", [0, -1, 0.0, 1.5, True, "all", None])
def test_svcca_rejects_bad_keep(pair, keep):
    with pytest.raises(ValueError, match="keep"):
        repsim.svcca(*pair, keep=keep)


# ---------------------------------------------------------------------------- input forms
def test_numpy_and_torch_inputs_agree(pair):
    x, y = pair
    a = repsim.cca(x, y).coefficients
    b = repsim.cca(torch.from_numpy(x), torch.from_numpy(y)).coefficients
    c = repsim.cca(x.tolist(), torch.from_numpy(y)).coefficients
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)


def test_float32_input_is_computed_in_float64(pair):
    x32, y32 = (torch.from_numpy(a).float() for a in pair)
    got = repsim.cca(x32, y32).coefficients
    np.testing.assert_allclose(got, repsim.cca(x32.double(), y32.double()).coefficients, atol=1e-13)
    low = repsim.cca(x32, y32, dtype=torch.float32).coefficients
    assert np.abs(low - got).max() < 1e-4  # float32 arithmetic is allowed on request, and differs
    assert float(repsim.pwcca(x32, y32)) == pytest.approx(float(repsim.pwcca(*pair)), abs=1e-6)


def test_rank_deficient_sides(pair):
    """Duplicated and all-zero columns: ranks and coefficients as without them."""
    x, y = pair
    base = repsim.cca(x, y)
    x_dup = np.hstack([x, x[:, :4], 2.0 * x[:, [0]], np.zeros((x.shape[0], 1))])
    y_dup = np.hstack([y, y @ np.ones((9, 1))])
    got = repsim.cca(x_dup, y_dup)
    assert (got.rank_x, got.rank_y) == (12, 9)
    np.testing.assert_allclose(got.coefficients, base.coefficients, atol=1e-10)
    # every neuron of Y twice (once negated): each |<h_i, y_j>| sum doubles, the weights do not change
    assert float(repsim.pwcca(np.hstack([y, -y]), x)) == pytest.approx(float(repsim.pwcca(y, x)), abs=1e-10)


def test_rank_tolerance_is_adjustable(rng):
    x = rng.standard_normal((100, 6))
    x[:, 5] = x[:, 4] + 1e-9 * rng.standard_normal(100)  # singular value ~1e-9 of ~10
    y = rng.standard_normal((100, 4))
    assert repsim.cca(x, y).rank_x == 6
    assert repsim.cca(x, y, rtol=1e-6).rank_x == 5
    with pytest.raises(ValueError, match="rtol"):
        repsim.cca(x, y, rtol=1.0)


def test_float32_inputs_use_their_own_rounding_unit_for_the_rank(rng):
    """A float32 layer that is a linear map of 3 signals spans 3 dimensions: float32 rounding of
    the other directions (~1e-7 relative) is noise, not signal, after upcasting to float64."""
    z = rng.standard_normal((400, 3))
    x64 = z @ rng.standard_normal((3, 8))
    y64 = np.hstack([z[:, :2], rng.standard_normal((400, 3))]) @ rng.standard_normal((5, 5))
    exact = repsim.cca(x64, y64)
    got = repsim.cca(x64.astype(np.float32), torch.from_numpy(y64.astype(np.float32)))
    assert (got.rank_x, got.rank_y) == (exact.rank_x, exact.rank_y) == (3, 5)
    np.testing.assert_allclose(got.coefficients, exact.coefficients, atol=1e-5)


@pytest.mark.parametrize("policy", ["channels", "flatten", "mean"])
def test_conv_policies(rng, policy):
    a = rng.standard_normal((30, 3, 4, 4))
    b = np.concatenate([a[:, :2] ** 2, rng.standard_normal((30, 2, 4, 4))], axis=1)
    flat = {
        "channels": lambda t: t.transpose(0, 2, 3, 1).reshape(-1, t.shape[1]),
        "flatten": lambda t: t.reshape(t.shape[0], -1),
        "mean": lambda t: t.mean(axis=(2, 3)),
    }[policy]
    if policy == "flatten":  # 48 and 64 neurons for 30 datapoints: trivial CCA, so use SVCCA
        got, ref = repsim.svcca(a, b, keep=5, conv=policy), repsim.svcca(flat(a), flat(b), keep=5)
        assert float(got) == pytest.approx(float(ref), abs=1e-12)
    else:
        got, ref = repsim.cca(a, b, conv=policy), repsim.cca(flat(a), flat(b))
        np.testing.assert_allclose(got.coefficients, ref.coefficients, atol=1e-12)
        assert got.conv == policy and got.n == ref.n
    assert repsim.pwcca(a, b, conv="channels").conv == "channels"


# ------------------------------------------------------------------------------ bad input
def test_trivial_cca_raises_naming_ranks_and_n(rng):
    x, y = rng.standard_normal((10, 9)), rng.standard_normal((10, 3))
    with pytest.raises(ValueError, match=r"rank_x=9, rank_y=3 but n=10.*svcca"):
        repsim.cca(x, y)
    with pytest.raises(ValueError, match="n=10"):
        repsim.pwcca(y, x)
    with pytest.raises(ValueError, match="n=10"):
        repsim.mean_cca(rng.standard_normal((10, 20)), y)
    assert repsim.cca(x[:, :8], y).rank_x == 8  # rank n - 2 is fine


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda x, y: (np.where(np.arange(x.size).reshape(x.shape) == 5, np.nan, x), y), "NaN or infinite"),
        (lambda x, y: (x, np.where(np.arange(y.size).reshape(y.shape) == 7, np.inf, y)), "Y contains 1 NaN"),
        (lambda x, y: (x[:-1], y), "same datapoints"),
        (lambda x, y: (x[:, 0], y), "2-D"),
        (lambda x, y: (x[:, :0], y), "empty"),
        (lambda x, y: (np.ones_like(x) * 3.0, y), "X is constant"),
        (lambda x, y: (x[:2], y[:2]), "at least 3"),
        (lambda x, y: (x.reshape(30, 10, 2, 6), y), "conv="),
        (lambda x, y: (x.astype(object), y), "non-numeric"),
    ],
)
def test_bad_input_raises_value_error(pair, make, match):
    x, y = make(*pair)
    for fn in (repsim.cca, repsim.mean_cca, repsim.svcca, repsim.pwcca):
        with pytest.raises(ValueError, match=match):
            fn(x, y)


def test_bad_dtype_raises(pair):
    with pytest.raises(ValueError, match="dtype"):
        repsim.cca(*pair, dtype=torch.int64)


# ------------------------------------------------------------------------------ properties
@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(12, 60),
    dx=st.integers(1, 6),
    dy=st.integers(1, 6),
    seed=st.integers(0, 2**32 - 1),
    shared=st.integers(0, 3),
)
def test_properties(n, dx, dy, seed, shared):
    """Coefficients in [0, 1], descending, as many as the smaller rank, symmetric in X and Y,
    unchanged by invertible maps; SVCCA with keep=1.0 is mean CCA."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dx))
    y = rng.standard_normal((n, dy))
    y[:, : min(shared, dx, dy)] += x[:, : min(shared, dx, dy)]
    res = repsim.cca(x, y)
    coef = res.coefficients
    assert len(coef) == min(dx, dy) == min(res.rank_x, res.rank_y)
    assert coef.min() >= 0 and coef.max() <= 1 and np.all(np.diff(coef) <= 0)
    np.testing.assert_allclose(repsim.cca(y, x).coefficients, coef, atol=1e-12)
    mapped = repsim.cca(x @ random_map(rng, dx, 100.0), y @ random_map(rng, dy, 100.0))
    np.testing.assert_allclose(mapped.coefficients, coef, atol=1e-10)
    assert float(repsim.svcca(x, y, keep=1.0)) == pytest.approx(float(res), abs=1e-12)
    assert 0 <= float(repsim.pwcca(x, y)) <= 1


@pytest.mark.parametrize("name", ["cca", "mean_cca", "pwcca", "svcca"])
def test_advice_never_points_back_at_the_measure_that_raised(name):
    """A trivial CCA (3 datapoints, 2 neurons) says what to do instead, never "use <itself>"."""
    x, y = np.random.default_rng(0).standard_normal((2, 3, 2))
    fn = getattr(repsim, name)
    with pytest.raises(ValueError, match="CCA is trivially 1") as info:
        fn(x, y)
    advice = str(info.value).split("contains the other.")[1]
    assert f"use {name}" not in advice.lower()
    assert ("smaller keep" if name == "svcca" else "use svcca") in advice.lower()
    streamed = repsim.StreamingCCA("svcca" if name == "svcca" else "mean_cca").update(x, y)
    with pytest.raises(ValueError, match="smaller keep" if name == "svcca" else "Use svcca"):
        streamed.result()


# ----------------------------------------------------------------------------------- CUDA
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu(pair):
    x, y = pair
    gx, gy = torch.from_numpy(x).cuda(), torch.from_numpy(y).cuda()
    np.testing.assert_allclose(repsim.cca(gx, gy).coefficients, repsim.cca(x, y).coefficients, atol=1e-10)
    for fn in (repsim.mean_cca, repsim.svcca, repsim.pwcca):
        assert float(fn(gx, y)) == pytest.approx(float(fn(x, y)), abs=1e-10)
