"""Procrustes distance and RSA: closed forms, invariances, scipy references, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.linalg import orthogonal_procrustes
from scipy.spatial.distance import pdist
from scipy.stats import pearsonr, rankdata, spearmanr

import repsim
from repsim.measures.procrustes import procrustes
from repsim.measures.rsa import average_ranks, rsa

positive = st.floats(1e-3, 1e3, allow_subnormal=False)
shift = st.floats(-100, 100, allow_subnormal=False)


def orthonormal_columns(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    q, _ = np.linalg.qr(rng.normal(size=(rows, cols)))
    return q


def normalised(A: np.ndarray) -> np.ndarray:
    A = A - A.mean(0)
    return A / np.linalg.norm(A)


# ---------------------------------------------------------------- Procrustes
@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), scale=positive, offset=shift, wider=st.integers(0, 4))
def test_procrustes_is_zero_for_rotated_scaled_shifted_copies(seed, scale, offset, wider):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(25, 4))
    # Q (4, 4 + wider) has orthonormal rows: Y = X Q keeps every distance of X.
    Y = scale * X @ orthonormal_columns(rng, 4 + wider, 4).T + offset
    assert procrustes(X, Y) == pytest.approx(0.0, abs=1e-12)
    assert procrustes(Y, X) == pytest.approx(0.0, abs=1e-12)


def test_procrustes_agrees_with_scipy_orthogonal_procrustes(rng):
    X, Y = rng.normal(size=(40, 6)), rng.normal(size=(40, 6)) + 2
    A, B = normalised(X), normalised(Y)
    R, _ = orthogonal_procrustes(B, A)
    got = procrustes(X, Y)
    assert got == pytest.approx(np.linalg.norm(A - B @ R) ** 2, abs=1e-12)
    assert got.details["distance"] == pytest.approx(np.linalg.norm(A - B @ R), abs=1e-12)
    assert got.details["similarity"] == pytest.approx(1 - float(got) / 2, abs=1e-15)


def test_procrustes_one_neuron_closed_form(rng):
    # unit-norm centred vectors: ||x'y||_* = |corr(x, y)|, so d^2 = 2 - 2 |rho|
    x = rng.normal(size=(100, 1))
    y = -3 * x + rng.normal(size=(100, 1))
    rho = np.corrcoef(x[:, 0], y[:, 0])[0, 1]
    assert procrustes(x, y) == pytest.approx(2 - 2 * abs(rho), abs=1e-12)


def test_procrustes_is_symmetric_and_between_zero_and_two(rng):
    X, Y = rng.normal(size=(30, 3)), rng.normal(size=(30, 8))
    forward, backward = procrustes(X, Y), procrustes(Y, X)
    assert forward == pytest.approx(float(backward), abs=1e-14)
    assert 0 < forward < 2
    assert (forward.details["dx"], forward.details["dy"]) == (3, 8)


@pytest.mark.parametrize("shape", [(10, 40, 3), (10, 40, 60), (50, 5, 7)])
def test_procrustes_matches_direct_nuclear_norm_for_any_widths(rng, shape):
    n, dx, dy = shape
    X, Y = rng.normal(size=(n, dx)), rng.normal(size=(n, dy))
    nuclear = np.linalg.norm(normalised(X).T @ normalised(Y), ord="nuc")
    assert procrustes(X, Y) == pytest.approx(2 - 2 * nuclear, abs=1e-12)
    assert procrustes(torch.from_numpy(X), torch.from_numpy(Y)) == pytest.approx(2 - 2 * nuclear, abs=1e-12)


def test_procrustes_conv_policy(rng):
    A = rng.normal(size=(6, 3, 2, 2))
    B = A * 2 + 1
    assert procrustes(A, B, conv="channels") == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="conv="):
        procrustes(A, B)


@pytest.mark.parametrize(
    "X, Y, message",
    [
        (np.ones((5, 2)), np.eye(5), "constant"),
        (np.eye(5), np.eye(6), "same datapoints"),
        (np.array([[np.nan, 1.0], [2.0, 3.0]]), np.eye(2), "NaN"),
        (np.arange(4.0), np.arange(4.0), "2-D"),
    ],
)
def test_procrustes_rejects_bad_input(X, Y, message):
    with pytest.raises(ValueError, match=message):
        procrustes(X, Y)


# ---------------------------------------------------------------- RSA
@pytest.mark.parametrize("metric", ["correlation", "euclidean"])
@pytest.mark.parametrize("compare", ["spearman", "pearson"])
def test_rsa_agrees_with_scipy(rng, metric, compare):
    X = rng.normal(size=(50, 6))
    Y = X @ rng.normal(size=(6, 4)) + rng.normal(size=(50, 4))
    a, b = pdist(X, metric), pdist(Y, metric)
    expected = (spearmanr if compare == "spearman" else pearsonr)(a, b)[0]
    got = rsa(X, Y, metric=metric, compare=compare)
    assert got == pytest.approx(expected, abs=1e-12)
    assert (got.details["metric"], got.details["compare"], got.details["n"]) == (metric, compare, 50)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), scale=positive, offset=shift)
def test_rsa_of_scaled_shifted_copy_is_one(seed, scale, offset):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(20, 5))
    for metric in ("correlation", "euclidean"):
        for compare in ("spearman", "pearson"):
            assert rsa(X, scale * X + offset, metric=metric, compare=compare) == pytest.approx(1.0, abs=1e-9)


def test_rsa_correlation_ignores_per_datapoint_scale_and_offset(rng):
    X, Y = rng.normal(size=(30, 8)), rng.normal(size=(30, 5))
    rescaled = X * rng.uniform(0.1, 10, size=(30, 1)) + rng.normal(size=(30, 1)) * 50
    assert rsa(rescaled, Y) == pytest.approx(float(rsa(X, Y)), abs=1e-12)
    assert abs(rsa(rescaled, Y, metric="euclidean") - rsa(X, Y, metric="euclidean")) > 1e-3


def test_rsa_euclidean_ignores_rotation_and_translation_of_neurons(rng):
    X, Y = rng.normal(size=(30, 4)), rng.normal(size=(30, 6))
    moved = X @ orthonormal_columns(rng, 4, 4) + rng.normal(size=4) * 20
    assert rsa(moved, Y, metric="euclidean") == pytest.approx(float(rsa(X, Y, metric="euclidean")), abs=1e-12)


def test_average_ranks_match_scipy_with_ties():
    v = torch.tensor([3.0, 1.0, 2.0, 3.0, 1.0, 3.0, 0.5])
    assert np.allclose(average_ranks(v).numpy(), rankdata(v.numpy()))


def test_rsa_size_limit_and_bad_input(rng):
    X = rng.normal(size=(30, 3))
    with pytest.raises(ValueError, match="max_n"):
        rsa(X, X, max_n=20)
    with pytest.raises(ValueError, match="metric"):
        rsa(X, X, metric="cosine")
    with pytest.raises(ValueError, match="compare"):
        rsa(X, X, compare="kendall")
    flat_row = X.copy()
    flat_row[4] = 2.0
    with pytest.raises(ValueError, match="row 4"):
        rsa(flat_row, X)
    with pytest.raises(ValueError, match="at least 2 neurons"):
        rsa(X[:, :1], X)
    with pytest.raises(ValueError, match="constant"):
        rsa(np.ones((30, 3)), X, metric="euclidean")
    with pytest.raises(ValueError, match="same datapoints"):
        rsa(X, X[:10])


def test_measures_are_exported():
    assert repsim.measures.procrustes is procrustes and repsim.measures.rsa is rsa
