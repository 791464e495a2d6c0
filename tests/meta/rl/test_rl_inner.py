"""The policy's distribution, the inner loop's policy gradient (against finite differences of the
surrogate, float64) and the meta-gradient (against a plain autograd loop over tasks, float64),
second and first order, and the adapt mask (ANIL)."""

from __future__ import annotations

import math

import pytest
import torch
from rl_helpers import advantages_like, small_policy, synthetic_episodes

from meta.core.inner import InnerLoop
from meta.rl.inner import adapt, reinforce_loss
from meta.rl.metalearner import inner_loop_of, surrogate
from meta.rl.policy import distribution, kl_divergence, log_prob


def test_log_prob_and_kl_are_those_of_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mean, old_mean, actions = (torch.randn(5, 3, generator=g, dtype=torch.float64) for _ in range(3))
    log_std, old_log_std = torch.tensor([0.1, -0.5, 0.3], dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    new = torch.distributions.Normal(mean, log_std.exp())
    old = torch.distributions.Normal(old_mean, old_log_std.exp())
    torch.testing.assert_close(log_prob(mean, log_std, actions), new.log_prob(actions).sum(-1))
    expected = torch.distributions.kl_divergence(old, new).sum(-1)
    torch.testing.assert_close(kl_divergence(old_mean, old_log_std, mean, log_std), expected)


def test_per_task_parameters_evaluate_each_task_with_its_own_policy():
    policy = small_policy()
    params = {k: v.detach() for k, v in policy.named_parameters()}
    stacked = {k: torch.stack([v, 2 * v]) for k, v in params.items()}
    obs = torch.randn(2, 7, 3, dtype=torch.float64)
    mean, log_std = distribution(policy, stacked, obs)
    for t, scale in enumerate((1, 2)):
        one = distribution(policy, {k: scale * v for k, v in params.items()}, obs[t])
        torch.testing.assert_close(mean[t], one[0])
        torch.testing.assert_close(log_std[t, 0], one[1])


def test_inner_policy_gradient_matches_finite_differences_of_the_surrogate():
    """``(theta - theta'_t) / alpha`` is the gradient of ``L_t``: its product with a random direction
    equals the central difference of ``L_t`` along it, for every task."""
    policy, episodes = small_policy(), synthetic_episodes()
    adv = advantages_like(episodes)
    theta = {k: v.detach() for k, v in policy.named_parameters()}
    adapted = adapt(policy, theta, episodes, adv, InnerLoop(1, 0.1), meta_grad=False)
    direction = {k: torch.randn_like(v) for k, v in theta.items()}
    eps = 1e-6

    def loss(sign: float) -> torch.Tensor:
        return reinforce_loss(policy, {k: v + sign * eps * direction[k] for k, v in theta.items()}, episodes, adv)

    numeric = (loss(1) - loss(-1)) / (2 * eps)
    for t in range(episodes.tasks):
        analytic = sum(((theta[k] - adapted[k][t]) / 0.1 * direction[k]).sum() for k in theta)
        assert math.isclose(float(analytic), float(numeric[t]), rel_tol=1e-7, abs_tol=1e-9)


def plain_mlp(params: dict[str, torch.Tensor], obs: torch.Tensor) -> torch.Tensor:
    """The policy's mean written out with plain tensors (no module, no batching over tasks)."""
    h = torch.relu(obs @ params["fc1.weight"].T + params["fc1.bias"])
    h = torch.relu(h @ params["fc2.weight"].T + params["fc2.bias"])
    return h @ params["head.weight"].T + params["head.bias"]


def plain_meta_gradient(policy, train, train_adv, valid, valid_adv, old, first_order):
    """MAML's meta-gradient task by task with ``torch.autograd.grad``: the reference."""
    theta = dict(policy.named_parameters())
    losses = []
    for t in range(train.tasks):
        obs, act, mask = (x[t] for x in train.flat())
        logp = log_prob(plain_mlp(theta, obs), theta["log_std"], act)
        inner = -(logp * train_adv[t].reshape(-1) * mask).sum() / mask.sum()
        grads = torch.autograd.grad(inner, list(theta.values()), create_graph=not first_order)
        fast = {k: v - 0.1 * g for (k, v), g in zip(theta.items(), grads)}
        obs, act, mask = (x[t] for x in valid.flat())
        ratio = torch.exp(log_prob(plain_mlp(fast, obs), fast["log_std"], act) - log_prob(old[0][t], old[1][t], act))
        losses.append(-(ratio * valid_adv[t].reshape(-1) * mask).sum() / mask.sum())
    return torch.autograd.grad(torch.stack(losses).mean(), list(theta.values()))


@pytest.mark.parametrize("first_order", [False, True])
def test_meta_gradient_matches_a_plain_autograd_loop(first_order):
    policy = small_policy()
    train, valid = synthetic_episodes(seed=1), synthetic_episodes(seed=5)
    train_adv, valid_adv = advantages_like(train, 2), advantages_like(valid, 3)
    theta = dict(policy.named_parameters())
    inner = inner_loop_of("maml-trpo", 0.1, first_order=first_order)
    adapted = adapt(policy, theta, train, train_adv, inner)
    with torch.no_grad():
        mean, log_std = distribution(policy, adapted, valid.flat()[0])
    old = (mean + 0.05, log_std.expand_as(mean) - 0.1)  # away from theta', so that the ratio is not 1
    loss, _ = surrogate(policy, adapted, valid, valid_adv, old)
    ours = torch.autograd.grad(loss, list(theta.values()))
    reference = plain_meta_gradient(policy, train, train_adv, valid, valid_adv, old, first_order)
    for a, b in zip(ours, reference):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_anil_adapts_only_the_head_and_any_frozen_set_works():
    policy, episodes = small_policy(), synthetic_episodes()
    adv = advantages_like(episodes)
    theta = {k: v.detach() for k, v in policy.named_parameters()}
    anil = adapt(policy, theta, episodes, adv, inner_loop_of("anil-trpo", 0.1), meta_grad=False)
    changed = {k for k in theta if anil[k].dim() > theta[k].dim()}
    assert changed == {"head.weight", "head.bias"}
    assert all(torch.equal(anil[k], theta[k]) for k in theta if k not in changed)
    frozen_body = adapt(
        policy, theta, episodes, adv, inner_loop_of("maml-trpo", 0.1, frozen=("fc1", "fc2")), meta_grad=False
    )
    assert {k for k in theta if frozen_body[k].dim() > theta[k].dim()} == {"head.weight", "head.bias", "log_std"}
    with pytest.raises(ValueError, match="every layer is frozen"):
        inner_loop_of("maml-trpo", 0.1, frozen=("fc1", "fc2", "head", "log_std"))
    with pytest.raises(ValueError, match="unknown layers \\['conv1'\\]"):
        inner_loop_of("maml-trpo", 0.1, frozen=("conv1",))
