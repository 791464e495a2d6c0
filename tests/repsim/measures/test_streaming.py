"""Exact streaming accumulators (repsim.measures.streaming) against the in-memory measures."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import repsim
from repsim.measures import MomentAccumulator, StreamingCCA, StreamingCKA

N = 240


@pytest.fixture
def data(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Large means (1e4), unit spread, related sides: post-ReLU-like offsets stress centring."""
    x = rng.standard_normal((N, 7)) + 1e4
    y = np.hstack([(x[:, :4] - 1e4) @ rng.standard_normal((4, 3)), rng.standard_normal((N, 3))])
    return x, y + rng.normal(0.0, 0.5, (N, 6)) + 1e4 * rng.uniform(0.5, 1.5, 6)


def splits(n: int) -> dict[str, list[int]]:
    """Named ways of cutting ``n`` rows into consecutive batches (their sizes)."""
    uneven = [1, 2, 5, 17, 3, 64]
    return {
        "one batch": [n],
        "size 1": [1] * n,
        "uneven": uneven + [n - sum(uneven)],
        "halves": [n // 2, n - n // 2],
    }


def feed(acc: MomentAccumulator, x: np.ndarray, y: np.ndarray, sizes: list[int]) -> MomentAccumulator:
    start = 0
    for size in sizes:
        acc.update(x[start : start + size], y[start : start + size])
        start += size
    assert acc.n == len(x) and acc.batches == len(sizes)
    return acc


def relative(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-300)


# --------------------------------------------------------------------------------- moments
@pytest.mark.parametrize("split", ["one batch", "size 1", "uneven"])
def test_moments_are_exact(data, split):
    x, y = data
    acc = feed(MomentAccumulator(), x, y, splits(N)[split])
    xc, yc = x - x.mean(0), y - y.mean(0)
    np.testing.assert_allclose(acc.mean_x.numpy(), x.mean(0), rtol=1e-14, atol=0)
    np.testing.assert_allclose(acc.mean_y.numpy(), y.mean(0), rtol=1e-14, atol=0)
    for got, want in ((acc.sxx, xc.T @ xc), (acc.syy, yc.T @ yc), (acc.sxy, xc.T @ yc)):
        np.testing.assert_allclose(got.numpy(), want, atol=1e-10 * np.abs(want).max())


def test_naive_sums_would_cancel(data):
    """The accumulator is exact where the textbook sum(x x') - n m m' loses everything."""
    x, _ = data
    naive = x.T @ x - N * np.outer(x.mean(0), x.mean(0))
    xc = x - x.mean(0)
    acc = feed(MomentAccumulator(), x, x, [N])
    assert np.abs(naive - xc.T @ xc).max() > 1e-6
    assert np.abs(acc.sxx.numpy() - xc.T @ xc).max() < 1e-10


def test_merge_is_associative_and_commutative(data):
    x, y = data
    parts = [feed(StreamingCKA(), x[a:b], y[a:b], [b - a]) for a, b in ((0, 50), (50, 51), (51, N))]
    left = parts[0].copy().merge(parts[1]).merge(parts[2])
    right = parts[0].copy().merge(parts[1].copy().merge(parts[2]))
    swapped = parts[2].copy().merge(parts[0]).merge(parts[1])
    whole = feed(StreamingCKA(), x, y, [N])
    for acc in (left, right, swapped):
        assert acc.n == N and acc.batches == 3
        for key, want in whole._stats.items():
            # means of ~1e4 are known to ~1e4 eps, which moves third moments by ~1e4 eps tr(Sxx)
            scale = 1e-10 * float(want.abs().max())
            np.testing.assert_allclose(acc._stats[key].numpy(), want.numpy(), rtol=0, atol=scale, err_msg=key)
        assert relative(float(acc.linear_cka(debiased=True)), float(whole.linear_cka(debiased=True))) < 1e-12
    assert parts[1].n == 1  # copies were merged, the parts are untouched
    empty = StreamingCKA()
    assert float(empty.merge(whole).result()) == float(whole.result())
    assert float(whole.copy().merge(StreamingCKA()).result()) == float(whole.result())


# ------------------------------------------------------------------------------------- CKA
def hsic_u_gram(x: np.ndarray, y: np.ndarray) -> float:
    """Song et al. (2012) unbiased HSIC from raw (uncentred) linear Gram matrices, literally."""
    n = len(x)
    k, l = x @ x.T, y @ y.T
    np.fill_diagonal(k, 0)
    np.fill_diagonal(l, 0)
    one = np.ones(n)
    value = np.sum(k * l) + (one @ k @ one) * (one @ l @ one) / ((n - 1) * (n - 2))
    value -= 2 / (n - 2) * (one @ k @ l @ one)
    return value / (n * (n - 3))


def test_unbiased_hsic_is_shift_invariant(rng):
    """The claim the streaming derivation rests on: HSIC_1 ignores a constant shift of X or Y."""
    x, y = rng.standard_normal((40, 5)), rng.standard_normal((40, 3))
    y[:, 0] += x[:, 0]
    base = hsic_u_gram(x, y)
    shifted = hsic_u_gram(x + rng.uniform(-5, 5, 5), y - rng.uniform(-5, 5, 3))
    centred = hsic_u_gram(x - x.mean(0), y - y.mean(0))
    assert relative(shifted, base) < 1e-10 and relative(centred, base) < 1e-10
    # while the biased (plug-in) statistic on raw Gram matrices is not:
    assert relative(np.sum((x + 3) @ (x + 3).T * (y @ y.T)), np.sum(x @ x.T * (y @ y.T))) > 1e-2


@pytest.mark.parametrize("split", list(splits(N)))
@pytest.mark.parametrize("debiased", [False, True])
def test_streaming_cka_equals_in_memory(data, split, debiased):
    x, y = data
    got = feed(StreamingCKA(debiased=debiased), x, y, splits(N)[split]).result()
    want = repsim.linear_cka(x, y, debiased=debiased)
    assert relative(float(got), float(want)) < 1e-10
    assert got.measure == want.measure and got.details["n"] == N


def test_debiased_streaming_cka_equals_gram_reference(data):
    x, y = data
    x, y = x - x.mean(0) + 2.0, y - y.mean(0) - 1.0  # raw Gram matrices need modest means to be exact
    ref = hsic_u_gram(x, y) / np.sqrt(hsic_u_gram(x, x) * hsic_u_gram(y, y))
    acc = feed(StreamingCKA(), x, y, splits(N)["uneven"])
    assert relative(float(acc.linear_cka(debiased=True)), ref) < 1e-10
    assert float(acc.linear_cka(debiased=True)) != pytest.approx(float(acc.result()), abs=1e-4)


# ------------------------------------------------------------------------------------- CCA
@pytest.mark.parametrize("split", list(splits(N)))
def test_streaming_cca_family_equals_in_memory(data, split):
    x, y = data
    acc = feed(StreamingCCA(), x, y, splits(N)[split])
    got, want = acc.cca(), repsim.cca(x, y)
    np.testing.assert_allclose(got.coefficients, want.coefficients, atol=1e-10)
    assert (got.rank_x, got.rank_y, got.n) == (want.rank_x, want.rank_y, want.n)
    assert float(acc.mean_cca()) == pytest.approx(float(repsim.mean_cca(x, y)), abs=1e-10)
    for keep in (0.9, 3):
        got_sv, want_sv = acc.svcca(keep), repsim.svcca(x, y, keep=keep)
        assert float(got_sv) == pytest.approx(float(want_sv), abs=1e-10)
        assert got_sv.details["dims_x"] == want_sv.details["dims_x"]
    for symmetric in (False, True):
        want_pw = float(repsim.pwcca(x, y, symmetric=symmetric))
        assert float(acc.pwcca(symmetric)) == pytest.approx(want_pw, abs=1e-10)


def test_result_returns_the_chosen_measure(data):
    x, y = data
    for measure, fn in (("cca", repsim.mean_cca), ("mean_cca", repsim.mean_cca), ("svcca", repsim.svcca)):
        acc = feed(StreamingCCA(measure), x, y, [100, N - 100])
        assert float(acc.result()) == pytest.approx(float(fn(x, y)), abs=1e-10)
    acc = feed(StreamingCCA("pwcca", symmetric=True), x, y, [N])
    assert acc.result().measure == "pwcca" and acc.result().details["symmetric"]
    acc = feed(StreamingCCA("svcca", keep=2), x, y, [N])
    assert acc.result().details["dims_x"] == 2


def test_streaming_cca_rank_deficient(data):
    x, y = data
    x_dup = np.hstack([x, x[:, :3], 2.0 * x[:, [4]]])  # exact copies (sums of large means are not)
    acc = feed(StreamingCCA(), x_dup, y, splits(N)["uneven"])
    got, want = acc.cca(), repsim.cca(x_dup, y)
    assert (got.rank_x, want.rank_x) == (7, 7)
    np.testing.assert_allclose(got.coefficients, want.coefficients, atol=1e-10)


@pytest.mark.parametrize("policy", ["channels", "mean"])
def test_conv_batches(rng, policy):
    a = rng.standard_normal((24, 3, 3, 3)) + 2.0
    b = np.concatenate([np.maximum(a[:, :2], 0), rng.standard_normal((24, 2, 3, 3))], axis=1)
    cca = StreamingCCA(conv=policy)
    cka = StreamingCKA(conv=policy, debiased=True)
    for i in range(0, 24, 5):
        cca.update(a[i : i + 5], b[i : i + 5])
        cka.update(torch.from_numpy(a[i : i + 5]), b[i : i + 5])
    np.testing.assert_allclose(cca.cca().coefficients, repsim.cca(a, b, conv=policy).coefficients, atol=1e-10)
    assert relative(float(cka.result()), float(repsim.linear_cka(a, b, conv=policy, debiased=True))) < 1e-10
    assert cca.mean_cca().conv == policy


def test_float32_batches_accumulate_in_float64(data):
    x, y = (torch.from_numpy(a - 1e4).float() for a in data)
    acc = feed(StreamingCKA(), x, y, [N])
    assert acc.sxx.dtype == torch.float64
    assert relative(float(acc.result()), float(repsim.linear_cka(x.double(), y.double()))) < 1e-12


# ------------------------------------------------------------------------------ bad input
def test_bad_use_raises_value_error(data, rng):
    x, y = data
    acc = StreamingCCA()
    with pytest.raises(ValueError, match="no data"):
        _ = acc.sxx
    with pytest.raises(ValueError, match="at least 3"):
        acc.update(x[:2], y[:2]).cca()
    with pytest.raises(ValueError, match="neurons"):
        acc.update(x[:5, :3], y[:5])
    with pytest.raises(ValueError, match="same datapoints"):
        acc.update(x[:5], y[:4])
    with pytest.raises(ValueError, match="NaN"):
        acc.update(np.full((2, 7), np.nan), y[:2])
    with pytest.raises(ValueError, match="at least 4"):
        feed(StreamingCKA(debiased=True), x[:3], y[:3], [3]).result()
    with pytest.raises(ValueError, match="X is constant"):
        feed(StreamingCKA(), np.full((20, 7), 1e4), y[:20], [7, 13]).result()
    with pytest.raises(ValueError, match="Y is constant"):
        feed(StreamingCCA(), x[:20], np.full((20, 6), -3.0), [20]).cca()
    with pytest.raises(ValueError, match="n=8"):
        feed(StreamingCCA(), x[:8], y[:8], [8]).cca()  # rank 7 = n - 1: trivial
    with pytest.raises(ValueError, match="one kind"):
        StreamingCCA().merge(StreamingCKA())
    with pytest.raises(ValueError, match="measure"):
        StreamingCCA("cka")
    with pytest.raises(ValueError, match="keep"):
        StreamingCCA(keep=0)
    with pytest.raises(ValueError, match="dtype"):
        StreamingCKA(dtype=torch.int32)
    with pytest.raises(ValueError, match="conv="):
        StreamingCKA().update(rng.standard_normal((2, 3, 2, 2)), rng.standard_normal((2, 3, 2, 2)))


# ----------------------------------------------------------------------------------- CUDA
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_batches(data):
    x, y = data
    cka, cca = StreamingCKA(debiased=True), StreamingCCA("pwcca")
    for i in range(0, N, 50):
        bx, by = torch.from_numpy(x[i : i + 50]).cuda(), torch.from_numpy(y[i : i + 50]).cuda()
        cka.update(bx, by)
        cca.update(bx, by)
    assert relative(float(cka.result()), float(repsim.linear_cka(x, y, debiased=True))) < 1e-10
    assert float(cca.result()) == pytest.approx(float(repsim.pwcca(x, y)), abs=1e-10)
