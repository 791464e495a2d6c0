"""Exact at every magnitude, and the CCA family's two routes.

- Every measure and streaming accumulator gives at magnitudes ``1e-300 .. 1e300`` (each side
  scaled on its own) the value it gives at magnitude 1; fewer datapoints than a measure needs is
  a ValueError stating the minimum.
- The Cholesky route of CCA agrees with the QR route to 1e-10 where it is certified; ill
  conditioned data take the QR route and match a 60-digit reference within the reported bound;
  the switch between the routes happens exactly at its threshold. SVCCA's kept directions from
  the few dropped eigenvectors equal those of every eigenvector.
"""

from __future__ import annotations

import mpmath
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import repsim
from repsim.measures import MEASURES, StreamingCCA, StreamingCKA, canonical_gram, minibatch_cka
from repsim.measures.canonical_problems import data_problem
from repsim.measures.kept_directions import KeptTriangularSide
from repsim.measures.products import centred_products


def related_pair(seed: int, n: int = 80, dx: int = 6, dy: int = 5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dx)) + 0.5
    y = x[:, :3] @ rng.standard_normal((3, dy)) + 0.7 * rng.standard_normal((n, dy))
    return x, y


def streamed(make, x: np.ndarray, y: np.ndarray, batch: int = 13) -> float:
    acc = make()
    for start in range(0, len(x), batch):
        acc.update(x[start : start + batch], y[start : start + batch])
    return float(acc.result())


def as_float(fn):
    return lambda x, y: float(fn(x, y))


#: Every measure by name, plus the ones outside the registry, as ``f(X, Y) -> float``.
ALL_MEASURES = {
    **{name: as_float(fn) for name, fn in MEASURES.items()},
    "rsa_euclidean": lambda x, y: float(repsim.rsa(x, y, metric="euclidean")),
    "kernel_cka_sigma": lambda x, y: float(repsim.kernel_cka(x, y, sigma=(1.5, 2.5))),
    "minibatch_cka": lambda x, y: float(minibatch_cka(x, y, batch_size=16)),
    "streaming_cka": lambda x, y: streamed(StreamingCKA, x, y),
    "streaming_debiased_cka": lambda x, y: streamed(lambda: StreamingCKA(debiased=True), x, y),
    "streaming_mean_cca": lambda x, y: streamed(StreamingCCA, x, y),
    "streaming_svcca": lambda x, y: streamed(lambda: StreamingCCA("svcca"), x, y),
    "streaming_pwcca": lambda x, y: streamed(lambda: StreamingCCA("pwcca"), x, y),
}
#: Measures whose value depends on a side's scale: given a bandwidth, RBF CKA is checked with
#: the bandwidth scaled along (below).
SCALE_DEPENDENT = {"kernel_cka_sigma"}


@pytest.mark.parametrize("name", sorted(ALL_MEASURES))
@settings(max_examples=12, deadline=None, derandomize=True)
@given(ex=st.integers(-300, 300), ey=st.integers(-300, 300))
def test_every_measure_is_the_same_at_every_magnitude(name, ex, ey):
    x, y = related_pair(0)
    at_one = ALL_MEASURES[name](x, y)
    if name in SCALE_DEPENDENT:
        value = float(repsim.kernel_cka(x * 10.0**ex, y * 10.0**ey, sigma=(1.5 * 10.0**ex, 2.5 * 10.0**ey)))
    else:
        value = ALL_MEASURES[name](x * 10.0**ex, y * 10.0**ey)
    assert value == pytest.approx(at_one, abs=1e-12), (name, ex, ey)


@pytest.mark.parametrize(
    ("measure", "minimum"),
    [("cka", 3), ("linear_cka", 3), ("kernel_cka", 3), ("procrustes", 3), ("debiased_cka", 4), ("cca", 3)],
)
def test_fewer_datapoints_than_a_measure_needs_is_an_error_stating_the_minimum(measure, minimum):
    x, y = related_pair(1, n=minimum - 1)
    with pytest.raises(ValueError, match=f"needs at least {minimum} datapoints; got {minimum - 1}"):
        MEASURES[measure](x, y)


def test_with_two_datapoints_cka_and_procrustes_would_be_constant():
    """Why the minimum is 3: two centred datapoints make every CKA 1 and every distance 0."""
    for seed in range(5):
        x, y = related_pair(seed, n=3)
        assert float(repsim.linear_cka(x, y)) < 1 - 1e-6 and float(repsim.procrustes(x, y)) > 1e-6


# ------------------------------------------------------------------------------------ routes


def centred_mp(a: np.ndarray) -> mpmath.matrix:
    """``a`` minus its column means, in mpmath at the working precision."""
    m = mpmath.matrix(a.tolist())
    means = [mpmath.fsum(m[i, j] for i in range(m.rows)) / m.rows for j in range(m.cols)]
    centred = mpmath.matrix(m.rows, m.cols)
    for i in range(m.rows):
        for j in range(m.cols):
            centred[i, j] = m[i, j] - means[j]
    return centred


def reference_cca(x: np.ndarray, y: np.ndarray, digits: int = 60) -> np.ndarray:
    """Canonical correlations of the float64 data, computed with ``digits`` significant digits:
    centring, Householder QR of each side and the singular values of ``Qx'Qy`` in mpmath."""
    with mpmath.workdps(digits):
        qx, qy = (mpmath.qr(centred_mp(a), mode="skinny")[0] for a in (x, y))
        return np.array(sorted((float(s) for s in mpmath.svd_r(qx.T * qy, compute_uv=False)), reverse=True))


def reference_pwcca(x: np.ndarray, y: np.ndarray, digits: int = 60) -> float:
    """PWCCA of the float64 data with ``digits`` significant digits: the canonical variates
    ``h_i = Qx u_i`` from the SVD of ``Qx'Qy``, weights ``sum_j |<h_i, xc_j>|``, in mpmath."""
    with mpmath.workdps(digits):
        xc = centred_mp(x)
        qx, qy = mpmath.qr(xc, mode="skinny")[0], mpmath.qr(centred_mp(y), mode="skinny")[0]
        u, rho, _ = mpmath.svd_r(qx.T * qy)
        projections = (qx * u).T * xc
        alpha = [mpmath.fsum(abs(projections[i, j]) for j in range(xc.cols)) for i in range(len(rho))]
        return float(mpmath.fsum(a * r for a, r in zip(alpha, rho)) / mpmath.fsum(alpha))


def ill_conditioned_pair(cond: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    x, y = related_pair(7, n=60, dx=4, dy=4)
    u, _, vt = np.linalg.svd(rng.standard_normal((4, 4)))
    stretch = u @ np.diag(np.geomspace(1.0, 1.0 / cond, 4)) @ vt
    return x @ stretch, y


def test_both_routes_agree_to_1e_10_on_well_conditioned_data(monkeypatch):
    x, y = related_pair(2, n=400, dx=12, dy=10)
    cheap = {name: getattr(repsim, name)(x, y) for name in ("mean_cca", "svcca", "pwcca")}
    coefficients = repsim.cca(x, y)
    assert all(s.details["route"] == "cholesky" for s in cheap.values()) and coefficients.details["route"] == "cholesky"
    assert all(s.details["error_bound"] <= 1e-10 for s in cheap.values())
    monkeypatch.setattr(canonical_gram, "CHEAP_ROUTE_MAX_ERROR", -1.0)
    monkeypatch.setattr(repsim.measures.canonical_problems, "CHEAP_ROUTE_MAX_ERROR", -1.0)
    for name, value in cheap.items():
        qr = getattr(repsim, name)(x, y)
        assert qr.details["route"] == "qr" and float(qr) == pytest.approx(float(value), abs=1e-10), name
    np.testing.assert_allclose(repsim.cca(x, y).coefficients, coefficients.coefficients, atol=1e-10)


@pytest.mark.parametrize("keep", [0.95, 0.9, 0.7, 30])
def test_svcca_from_the_dropped_directions_equals_the_full_eigendecomposition_and_the_qr_route(monkeypatch, keep):
    """SVCCA's kept directions as the complement of the few dropped eigenvectors
    (kept_directions) give the values of every eigenvector's route and of the QR route."""
    x, y = related_pair(5, n=600, dx=40, dy=36)
    problem = data_problem(x, y, None, torch.float64, "svcca")
    assert isinstance(problem.side(0, None, keep), KeptTriangularSide)
    fast = repsim.svcca(x, y, keep=keep)
    monkeypatch.setattr(canonical_gram, "kept_triangular_side", lambda *args: None)
    full = repsim.svcca(x, y, keep=keep)
    assert (fast.details["dims_x"], fast.details["dims_y"]) == (full.details["dims_x"], full.details["dims_y"])
    assert float(fast) == pytest.approx(float(full), abs=1e-12)
    monkeypatch.setattr(repsim.measures.canonical_problems, "CHEAP_ROUTE_MAX_ERROR", -1.0)
    qr = repsim.svcca(x, y, keep=keep)
    assert qr.details["route"] == "qr" and float(qr) == pytest.approx(float(fast), abs=1e-10)


def test_svcca_dropping_more_than_it_keeps_uses_every_eigenvector():
    x, y = related_pair(6, n=600, dx=40, dy=36)
    problem = data_problem(x, y, None, torch.float64, "svcca")
    assert not isinstance(problem.side(0, None, 10), KeptTriangularSide)
    assert problem.side(0, None, 10).dims == 10


def test_an_ill_conditioned_side_takes_the_qr_route_and_matches_60_digits():
    x, y = ill_conditioned_pair(1e7)
    result = repsim.cca(x, y)
    assert result.details["route"] == "qr"
    error = np.abs(result.coefficients - reference_cca(x, y)).max()
    assert error <= result.details["error_bound"] and error < 1e-8


def test_the_cholesky_route_is_within_its_certified_bound_of_60_digits():
    x, y = ill_conditioned_pair(30.0)
    result = repsim.cca(x, y)
    assert result.details["route"] == "cholesky"
    assert np.abs(result.coefficients - reference_cca(x, y)).max() <= result.details["error_bound"] <= 1e-10


@pytest.mark.parametrize("cond", [30.0, 1e7])
def test_pwcca_is_within_its_certified_bound_of_60_digits_on_either_route(cond):
    """Well conditioned: the Cholesky route, its left vectors from the eigendecomposition of
    ``M M'`` (bound within 1e-10); ill conditioned: the QR route (bound ``O(eps cond)``). Either
    way within the bound on the weighted mean."""
    x, y = ill_conditioned_pair(cond)
    result = repsim.pwcca(x, y)
    cheap = cond < 1e3
    assert result.details["route"] == ("cholesky" if cheap else "qr")
    assert abs(float(result) - reference_pwcca(x, y)) <= result.details["error_bound"]
    assert (result.details["error_bound"] <= 1e-10) == cheap


def cholesky_route_bound(x: np.ndarray, y: np.ndarray) -> float:
    """The bound that decides the route: that of the certified Cholesky factors."""
    p = centred_products(torch.from_numpy(x), torch.from_numpy(y))
    return canonical_gram.certified_cholesky(p.n, p.sxx, p.syy).bound


def test_the_switch_is_at_its_threshold(monkeypatch):
    x, y = related_pair(3, n=200)
    bound = cholesky_route_bound(x, y)
    assert bound <= repsim.mean_cca(x, y).details["error_bound"]  # which adds the singular values' error
    for threshold, route in ((bound * (1 + 1e-9), "cholesky"), (bound * (1 - 1e-9), "qr")):
        monkeypatch.setattr(repsim.measures.canonical_problems, "CHEAP_ROUTE_MAX_ERROR", threshold)
        assert repsim.mean_cca(x, y).details["route"] == route


def test_streaming_takes_the_certified_route_too():
    x, y = related_pair(4, n=300)
    acc = StreamingCCA()
    for start in range(0, 300, 50):
        acc.update(x[start : start + 50], y[start : start + 50])
    assert acc.result().details["route"] == "cholesky" and acc.result().details["error_bound"] <= 1e-10
    assert float(acc.result()) == pytest.approx(float(repsim.mean_cca(x, y)), abs=1e-10)
    ill = StreamingCCA().update(*ill_conditioned_pair(1e7))
    assert ill.result().details["route"] == "eigh"
