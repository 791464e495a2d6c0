"""The centred products in one pass (shifted, corrected, certified), with the row norms of
debiased CKA, and the certified singular values: against an exact reference, falling back where
they cannot certify."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from repsim.measures import products
from repsim.measures.canonical_bases import certified_left_singular, certified_singular_values
from repsim.measures.dense import singular_values


def exact_centred_products(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, ...]:
    """``Xc'Xc``, ``Yc'Yc``, ``Xc'Yc`` in extended precision, centred at ``math.fsum`` means."""
    mx = np.array([math.fsum(column) / len(column) for column in x.T], dtype=np.longdouble)
    my = np.array([math.fsum(column) / len(column) for column in y.T], dtype=np.longdouble)
    xc, yc = x.astype(np.longdouble) - mx, y.astype(np.longdouble) - my
    return xc.T @ xc, yc.T @ yc, xc.T @ yc


def relative_errors(found: products.CentredProducts, exact: tuple[np.ndarray, ...]) -> list[float]:
    return [
        float(np.abs(got.numpy() - want).max() / np.abs(want).max())
        for got, want in zip((found.sxx, found.syy, found.sxy), exact)
    ]


def pair(rng: np.random.Generator, offset: float, n: int = 6000, sort: bool = False) -> tuple[np.ndarray, ...]:
    x = rng.standard_normal((n, 12)) * rng.uniform(0.1, 3.0, 12) + offset
    y = np.maximum(x @ rng.standard_normal((12, 9)) + 1.0, 0.0)
    order = np.argsort(x[:, 0]) if sort else slice(None)
    return x[order], y[order]


@pytest.mark.parametrize("offset", [0.0, 1.0, 1e3, 1e6])
@pytest.mark.parametrize("sort", [False, True])
def test_one_pass_equals_exact_centring(offset, sort):
    x, y = pair(np.random.default_rng(0), offset, sort=sort)
    found = products.shifted_products(x, y)
    assert found is not None
    assert max(relative_errors(found, exact_centred_products(x, y))) < 1e-14
    np.testing.assert_allclose(found.mean_x.numpy(), x.mean(axis=0), rtol=1e-12)


@pytest.mark.parametrize("offset", [0.0, 1e3])
def test_wide_data_are_multiplied_whole_unless_shifted_and_equal_blocks(monkeypatch, offset):
    """700 rows of 100 columns: two blocks would hold 3.5 rows per column, so unshifted data are
    multiplied whole; a shifted side is still blocked. Both equal the exact products, and the
    blocked products of the same data."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((700, 100)) + offset
    y = np.maximum(x[:, :30] @ rng.standard_normal((30, 80)), 0.0)
    monkeypatch.setattr(products, "ROWS_PER_BLOCK", 350)
    assert products._rows_per_block(700, 100, shifted=False) == 700
    assert products._rows_per_block(700, 100, shifted=True) == 350
    assert products._rows_per_block(700, 40, shifted=False) == 350  # 8.75 rows per column
    exact = exact_centred_products(x, y)
    whole = products.shifted_products(x, y)
    assert max(relative_errors(whole, exact)) < 1e-14
    monkeypatch.setattr(products, "MIN_BLOCK_ROWS_PER_COLUMN", 0)
    blocked = products.shifted_products(x, y)
    assert max(relative_errors(blocked, exact)) < 1e-14
    np.testing.assert_allclose(blocked.sxy.numpy(), whole.sxy.numpy(), rtol=0, atol=1e-12 * float(exact[2].max()))


def test_data_with_a_small_mean_are_not_copied_and_a_large_mean_is_shifted():
    rng = np.random.default_rng(1)
    centred = rng.standard_normal((500, 4))
    assert products._side_shift(centred) is None
    assert products._side_shift(centred + 10.0) == pytest.approx((centred + 10.0).mean(axis=0))


def test_a_misleading_sample_falls_back_to_two_passes():
    """Every sampled row is +-1000 (mean 0: no shift) while the others sit at 1e4: the correction
    would amplify rounding 30-fold, so the one pass is refused and two passes give the products."""
    n = 8192
    step = -(-n // products.SHIFT_SAMPLE_ROWS)
    rng = np.random.default_rng(2)
    x = 1e4 + rng.standard_normal((n, 3))
    x[::step] = 1000.0 * np.where(np.arange(n // step)[:, None] % 2 == 0, 1.0, -1.0)
    y = rng.standard_normal((n, 2))
    assert products.shifted_products(x, y) is None
    found = products.centred_products(torch.from_numpy(x), torch.from_numpy(y))
    assert max(relative_errors(found, exact_centred_products(x, y))) < 1e-13


def test_non_finite_data_are_left_to_the_caller():
    x, y = pair(np.random.default_rng(3), 0.0, n=300)
    x[123, 4] = np.nan
    assert products.centred_products(torch.from_numpy(x), torch.from_numpy(y)) is None


def canonical_like(rng: np.random.Generator, values: np.ndarray, rows: int) -> torch.Tensor:
    """A ``(rows, k)`` matrix with the given singular values."""
    u, _ = np.linalg.qr(rng.standard_normal((rows, len(values))))
    v, _ = np.linalg.qr(rng.standard_normal((len(values), len(values))))
    return torch.from_numpy((u * values) @ v.T)


def test_singular_values_from_the_gram_matrix_are_within_their_bound():
    rng = np.random.default_rng(4)
    values = np.linspace(0.95, 0.05, 40)
    m = canonical_like(rng, values, 60)
    found, bound = certified_singular_values(m, 1e-10)
    assert bound < 1e-12  # the cheap way was certified
    assert np.abs(found.numpy() - values).max() <= bound
    same, _ = certified_singular_values(m.T, 1e-10)  # the smaller Gram matrix either way
    np.testing.assert_allclose(same.numpy(), found.numpy(), atol=2 * bound)


def test_a_tiny_singular_value_takes_the_svd_unless_only_the_mean_matters():
    rng = np.random.default_rng(5)
    values = np.concatenate([np.linspace(0.9, 0.1, 30), [1e-7]])
    m = canonical_like(rng, values, 31)
    each, bound = certified_singular_values(m, 1e-10)
    np.testing.assert_array_equal(each.numpy(), singular_values(m).numpy())  # the SVD's own values
    assert np.abs(each.numpy() - values).max() <= bound
    mean, mean_bound = certified_singular_values(m, 1e-10, mean=True)
    assert mean_bound <= 1e-10 and abs(float(mean.mean()) - values.mean()) <= mean_bound


def weights_of(f: torch.Tensor):
    """PWCCA's weights of left singular vectors ``p``: ``|p' f|`` summed over columns, normalised."""

    def weigh(p: torch.Tensor) -> torch.Tensor:
        alpha = (p.T @ f).abs().sum(dim=1)
        return alpha / alpha.sum()

    return weigh


def test_left_singular_vectors_from_the_gram_matrix_give_the_svds_weights_within_the_bound():
    rng = np.random.default_rng(7)
    values = np.linspace(0.95, 0.05, 40)
    m = canonical_like(rng, values, 60).T.contiguous()  # (40, 60): 40 left vectors
    weigh = weights_of(torch.from_numpy(rng.standard_normal((40, 25))))
    found, weights, bound = certified_left_singular(m, 1e-10, weigh)
    assert bound < 1e-12  # the eigendecomposition of m m' was certified
    assert abs(float(weights @ found) - float(weights.numpy() @ values)) <= bound
    svd_values, svd_weights, svd_bound = certified_left_singular(m, 0.0, weigh)  # no budget: the SVD
    np.testing.assert_allclose(found.numpy(), svd_values.numpy(), atol=2 * bound)
    np.testing.assert_allclose(weights.numpy(), svd_weights.numpy(), atol=1e-12)
    assert svd_bound == pytest.approx(40 * np.finfo(float).eps / 2 * 0.95, rel=1e-6)


@pytest.mark.parametrize("weight_on_tiny", [True, False])
def test_a_tiny_singular_value_takes_the_svd_only_where_its_weight_counts(weight_on_tiny):
    """A singular value of 1e-7 from the Gram matrix errs by up to 1e-9: PWCCA's weighted mean is
    certified only where that value's weight is small."""
    rng = np.random.default_rng(8)
    values = np.concatenate([np.linspace(0.9, 0.1, 30), [1e-7]])
    u, _ = np.linalg.qr(rng.standard_normal((31, 31)))
    v, _ = np.linalg.qr(rng.standard_normal((31, 31)))
    m = torch.from_numpy((u * values) @ v.T)
    # weights from f = U diag(g): the i-th left vector weighs g_i
    g = np.full(31, 1.0)
    g[-1] = 1e3 if weight_on_tiny else 1e-3
    found, weights, bound = certified_left_singular(m, 1e-10, weights_of(torch.from_numpy(u * g)))
    np.testing.assert_allclose(weights.numpy(), g / g.sum(), atol=1e-9)
    assert abs(float(weights @ found) - float(weights.numpy() @ values)) <= bound <= 1e-10
    svd = singular_values(m).numpy()
    if weight_on_tiny:
        np.testing.assert_allclose(found.numpy(), svd, rtol=0, atol=1e-15)  # the SVD's own values
    else:
        assert abs(float(found[-1]) - svd[-1]) > 1e-12  # the Gram matrix's, inaccurate but light


def exact_row_norm_sums(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``sum a^2``, ``sum b^2``, ``sum a b`` of the centred squared row norms, to extended precision
    however large the means: each side minus its first row (exact, Sterbenz), minus the
    ``math.fsum`` mean of those differences in ``longdouble``."""

    def centred(a: np.ndarray) -> np.ndarray:
        differences = a - a[0]
        means = np.array([math.fsum(column) / len(column) for column in differences.T], dtype=np.longdouble)
        return differences.astype(np.longdouble) - means

    xc, yc = centred(x), centred(y)
    a, b = (xc * xc).sum(axis=1), (yc * yc).sum(axis=1)
    return np.array([a @ a, b @ b, a @ b])


@pytest.mark.parametrize("offset", [0.0, 1.0, 1e3, 1e6])
def test_row_norms_of_debiased_cka_in_the_same_pass_equal_exact_centring(offset):
    """The corrected row-norm sums (RowNormMoments) of one pass: exact to 1e-14 at every offset."""
    x, y = pair(np.random.default_rng(4), offset)
    found = products.shifted_products(x, y, row_norms=True)
    assert found is not None
    exact = exact_row_norm_sums(x, y)
    assert (np.abs(np.array(found.row_norm_sums) - exact) / np.abs(exact)).max() < 1e-14


def test_row_norms_beyond_their_amplification_take_two_passes():
    """The sampled rows sit 3.5 standard deviations below the rest: the shift passes the products'
    check (``n delta^2 <= 15 S``) but the row norms' correction would amplify rounding beyond 64
    (``p'p / sum a^2``; 63 at 3 standard deviations), so one pass refuses them and two passes
    give them."""
    n = 65536
    step = -(-n // products.SHIFT_SAMPLE_ROWS)
    rng = np.random.default_rng(5)
    x = 100.0 + rng.standard_normal((n, 6))
    x[::step] -= 3.5
    y = 50.0 + rng.standard_normal((n, 4))
    assert products.shifted_products(x, y) is not None
    assert products.shifted_products(x, y, row_norms=True) is None
    found = products.centred_products(torch.from_numpy(x), torch.from_numpy(y), row_norms=True)
    exact = exact_row_norm_sums(x, y)
    assert (np.abs(np.array(found.row_norm_sums) - exact) / np.abs(exact)).max() < 1e-12
