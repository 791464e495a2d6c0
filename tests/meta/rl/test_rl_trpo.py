"""TRPO's parts: conjugate gradient on the KL's Hessian-vector products against a direct solve on a
small policy, the line search's acceptance rule, and the returns, baseline and advantages."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from rl_helpers import advantages_like, small_policy, synthetic_episodes

from meta.rl.inner import adapt
from meta.rl.metalearner import inner_loop_of, surrogate
from meta.rl.policy import distribution
from meta.rl.returns import advantages, baseline_features, discounted_cumsum, fit_baseline
from meta.rl.trpo import TRPO, conjugate_gradient, flat, hessian_vector_product, line_search, trpo_step, unflat


def kl_problem():
    """A small policy's meta-surrogate and mean KL (through a second-order inner step) at theta."""
    policy = small_policy()
    train, valid = synthetic_episodes(seed=1), synthetic_episodes(seed=5)
    theta = dict(policy.named_parameters())
    adapted = adapt(policy, theta, train, advantages_like(train), inner_loop_of("maml-trpo", 0.1))
    with torch.no_grad():
        old = tuple(t.detach() for t in distribution(policy, adapted, valid.flat()[0]))
    loss, kl = surrogate(policy, adapted, valid, advantages_like(valid, 3), old)
    return policy, list(theta.values()), loss, kl


def test_hessian_vector_products_match_finite_differences_of_the_kl_gradient():
    policy, params, _, kl = kl_problem()
    product = hessian_vector_product(kl, params, damping=0.0)
    train, valid, inner = synthetic_episodes(seed=1), synthetic_episodes(seed=5), inner_loop_of("maml-trpo", 0.1)
    names = [n for n, _ in policy.named_parameters()]
    with torch.no_grad():
        theta = {n: p.detach() for n, p in policy.named_parameters()}
        old = distribution(
            policy, adapt(policy, theta, train, advantages_like(train), inner, meta_grad=False), valid.flat()[0]
        )
    v = torch.randn(sum(p.numel() for p in params), dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    eps = 1e-6

    def kl_gradient(sign: float) -> torch.Tensor:
        """The KL's gradient at theta + sign * eps * v (pi_old fixed at theta's adapted policy)."""
        shifted = [t.requires_grad_() for t in unflat(flat([p.detach() for p in params]) + sign * eps * v, params)]
        adapted = adapt(policy, dict(zip(names, shifted)), train, advantages_like(train), inner)
        _, kl_s = surrogate(policy, adapted, valid, advantages_like(valid, 3), old)
        return flat(torch.autograd.grad(kl_s, shifted))

    numeric = (kl_gradient(1) - kl_gradient(-1)) / (2 * eps)
    torch.testing.assert_close(product(v), numeric, rtol=1e-5, atol=1e-8)


def test_conjugate_gradient_matches_a_direct_solve_on_a_small_policy():
    _, params, loss, kl = kl_problem()
    damping = 1e-5
    product = hessian_vector_product(kl, params, damping)
    n = sum(p.numel() for p in params)
    hessian = torch.stack([product(e) for e in torch.eye(n, dtype=torch.float64)], dim=1)
    torch.testing.assert_close(hessian, hessian.T, rtol=1e-8, atol=1e-10)
    g = flat(torch.autograd.grad(loss, params, retain_graph=True))
    direct = torch.linalg.solve(hessian, g)
    solved = conjugate_gradient(product, g, iters=4 * n, tol=1e-30)
    torch.testing.assert_close(solved, direct, rtol=1e-5, atol=1e-6)
    # the paper's 10 iterations already reduce the residual
    ten = conjugate_gradient(product, g, iters=10)
    assert torch.linalg.norm(product(ten) - g) < 0.5 * torch.linalg.norm(g)


def test_a_trpo_step_stays_in_the_trust_region_and_improves_the_surrogate():
    policy, params, loss, kl = kl_problem()
    train, valid = synthetic_episodes(seed=1), synthetic_episodes(seed=5)
    names = [n for n, _ in policy.named_parameters()]
    with torch.no_grad():
        theta = {n: p.detach() for n, p in policy.named_parameters()}
        old = distribution(
            policy,
            adapt(policy, theta, train, advantages_like(train), inner_loop_of("maml-trpo", 0.1), meta_grad=False),
            valid.flat()[0],
        )
    tried = []

    def evaluate(candidate):
        with torch.no_grad():
            new = adapt(
                policy,
                dict(zip(names, candidate)),
                train,
                advantages_like(train),
                inner_loop_of("maml-trpo", 0.1),
                meta_grad=False,
            )
            loss_c, kl_c = surrogate(policy, new, valid, advantages_like(valid, 3), old)
        tried.append((float(loss_c), float(kl_c)))
        return tried[-1]

    trpo = TRPO(max_kl=1e-3)
    new_params, step = trpo_step(loss, kl, params, evaluate, trpo)
    assert step.step_fraction > 0 and step.loss_after < step.loss_before and step.kl_after < trpo.max_kl
    assert all(loss_t >= step.loss_before or kl_t >= trpo.max_kl for loss_t, kl_t in tried[:-1])
    assert any(not torch.equal(a, b.detach()) for a, b in zip(new_params, params))


@pytest.mark.parametrize(
    "outcomes, accepted",
    [
        ([(-1.0, 0.5), (0.5, 0.001), (-0.2, 0.009)], 2),  # too far, then worse, then both good
        ([(-1.0, 0.02), (-0.5, 0.01), (-0.1, 0.0099)], 2),  # KL exactly at the limit is refused
        ([(0.1, 0.0)] * 15, None),  # never better: theta stays
        ([(-1.0, float("nan"))] * 15, None),  # a NaN KL is never accepted
    ],
)
def test_the_line_search_never_accepts_a_step_that_breaks_the_kl_limit_or_lowers_the_surrogate(outcomes, accepted):
    params = [torch.ones(3, dtype=torch.float64)]
    step = torch.full((3,), 0.5, dtype=torch.float64)
    calls = iter(outcomes)
    result, info = line_search(lambda candidate: next(calls), params, step, 0.0, TRPO(max_kl=0.01))
    if accepted is None:
        assert info.step_fraction == 0.0 and torch.equal(result[0], params[0])
    else:
        fraction = 0.8**accepted
        assert info.step_fraction == pytest.approx(fraction)
        torch.testing.assert_close(result[0], params[0] - fraction * step)
        assert info.loss_after < 0 and info.kl_after < 0.01


# --------------------------------------------------------------------------- returns and baseline


def test_discounted_cumsum_is_the_backward_recursion():
    x = torch.randn(2, 3, 7, dtype=torch.float64)
    expected = torch.zeros_like(x)
    running = torch.zeros(2, 3, dtype=torch.float64)
    for t in reversed(range(7)):
        running = x[..., t] + 0.9 * running
        expected[..., t] = running
    torch.testing.assert_close(discounted_cumsum(x, 0.9), expected)


def test_baseline_is_rllabs_ridge_regression_per_task():
    episodes = synthetic_episodes(tasks=2, n=4, h=6)
    phi = baseline_features(episodes.observations, episodes.mask)
    assert phi.shape == (2, 4, 6, 2 * 3 + 4)
    o = episodes.observations[0, 0, 2].clamp(-10, 10)
    torch.testing.assert_close(
        phi[0, 0, 2], torch.cat([o, o**2, torch.tensor([0.02, 0.0004, 0.000008, 1.0], dtype=torch.float64)])
    )
    assert not phi[0, -1, -1].any()  # masked step
    returns = torch.randn(2, 24, dtype=torch.float64)
    w = fit_baseline(phi.reshape(2, 24, -1), returns)
    for t in range(2):
        x, y = phi[t].reshape(24, -1).numpy(), returns[t].numpy()
        expected = np.linalg.lstsq(x.T @ x + 1e-5 * np.eye(x.shape[1]), x.T @ y, rcond=None)[0]
        np.testing.assert_allclose(w[t].numpy(), expected, rtol=1e-6, atol=1e-8)


def test_advantages_with_lambda_one_are_returns_minus_the_baseline_normalised():
    episodes = synthetic_episodes(tasks=2, n=5, h=6)
    raw = advantages(episodes, 0.99, 1.0, normalize=False)
    mask = episodes.mask
    returns = discounted_cumsum(episodes.rewards, 0.99)
    phi = baseline_features(episodes.observations, mask)
    w = fit_baseline(phi.reshape(2, 30, -1), returns.reshape(2, 30))
    values = (phi @ w[:, None, :, None]).squeeze(-1)
    torch.testing.assert_close(raw, (returns - values) * mask, rtol=1e-8, atol=1e-8)
    normal = advantages(episodes, 0.99, 1.0)
    for t in range(2):
        kept = normal[t][mask[t] > 0]
        assert abs(float(kept.mean())) < 1e-9 and abs(float(kept.std(unbiased=False)) - 1) < 1e-6
    assert not normal[mask == 0].any()
