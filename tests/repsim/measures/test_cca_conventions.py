"""The two conventions of "mean CCA": every coefficient (``cca``, ``mean_cca``) and google/svcca's
``get_cca_similarity`` (``cca98``: the leading coefficients whose sum reaches 98% of the total),
the second checked against that algorithm written out (covariance, inverse square root, SVD,
``sum_threshold``; google/svcca ``cca_core.py``)."""

from __future__ import annotations

import numpy as np
import pytest

import repsim
from repsim.measures import get_measure
from repsim.measures.canonical import leading_count
from repsim.measures.registry import check_options


def sum_threshold(array: np.ndarray, threshold: float):
    """google/svcca cca_core.sum_threshold, as published: the first i with
    sum(array[:i]) / sum(array) >= threshold, else None."""
    for i in range(len(array)):
        if np.sum(array[:i]) / np.sum(array) >= threshold:
            return i
    return None


def get_cca_similarity_mean(x: np.ndarray, y: np.ndarray, threshold: float = 0.98) -> float:
    """The "mean" of get_cca_similarity (epsilon 0): x, y are (n, d) here, (d, n) there."""
    d = x.shape[1]
    cov = np.cov(x.T, y.T)
    sxx, sxy, syy = cov[:d, :d], cov[:d, d:], cov[d:, d:]
    xmax, ymax = np.abs(sxx).max(), np.abs(syy).max()

    def inv_sqrt(s):
        w, v = np.linalg.eigh(np.linalg.pinv(s))
        return (v * np.sqrt(w)) @ v.T

    s = np.abs(
        np.linalg.svd(inv_sqrt(sxx / xmax) @ (sxy / np.sqrt(xmax * ymax)) @ inv_sqrt(syy / ymax), compute_uv=False)
    )
    return float(np.mean(s[: sum_threshold(s, threshold)]))


@pytest.mark.parametrize("seed", range(4))
def test_cca98_is_get_cca_similaritys_mean(seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2000, 12))
    y = x[:, :6] @ rng.standard_normal((6, 12)) + rng.standard_normal((2000, 12)) * rng.uniform(0.1, 3, 12)
    assert float(repsim.cca98(x, y)) == pytest.approx(get_cca_similarity_mean(x, y), abs=1e-9)
    assert repsim.cca98(x, y).details["kept"] < 12  # the conventions differ here
    assert float(repsim.cca98(x, y)) > float(repsim.mean_cca(x, y)) + 0.1


@pytest.mark.parametrize("fraction", [0.5, 0.9, 0.98, 1.0])
def test_the_leading_count_is_sum_threshold(fraction):
    rho = np.sort(np.random.default_rng(1).uniform(0, 1, 20))[::-1]
    expected = sum_threshold(rho, fraction)
    assert leading_count(rho, fraction) == (len(rho) if expected is None else expected)


def test_the_worked_example_of_the_docs():
    rho = np.array([0.9, 0.8, 0.5, 0.1, 0.05, 0.01])
    assert leading_count(rho, 0.98) == 5  # 2.35 of 2.36 is the first sum >= 2.3128
    assert rho[:5].mean() == pytest.approx(0.47) and rho.mean() == pytest.approx(0.39333, abs=1e-5)


def test_both_conventions_by_name_and_bad_options():
    assert get_measure("cca") is get_measure("mean_cca") and get_measure("cca98").__name__ == "cca98"
    with pytest.raises(ValueError, match="leading must be a fraction"):
        check_options("mean_cca", {"leading": 1.5})
    with pytest.raises(ValueError, match="leading"):
        check_options("cca98", {"leading": 0.9})  # fixed by the name
