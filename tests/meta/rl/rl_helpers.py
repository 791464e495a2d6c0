"""Small policies and synthetic episodes for the meta-RL tests (float64 where gradients are
compared)."""

from __future__ import annotations

import torch

from meta.rl.policy import gaussian_mlp
from meta.rl.sampler import Episodes


def small_policy(seed: int = 0, dtype: torch.dtype = torch.float64, hidden: int = 5) -> torch.nn.Module:
    torch.manual_seed(seed)
    policy = gaussian_mlp(3, 2, hidden=hidden).to(dtype)
    with torch.no_grad():
        policy.log_std.copy_(torch.tensor([-0.3, 0.2], dtype=dtype))
        for name, p in policy.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.3)  # nonzero biases: every parameter's gradient is exercised
    return policy


def synthetic_episodes(tasks: int = 2, n: int = 3, h: int = 4, seed: int = 1, dtype=torch.float64) -> Episodes:
    """Random observations and actions; the last trajectory of each task ends early (masked)."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(tasks, n, h, dtype=dtype)
    mask[:, -1, h // 2 :] = 0
    rewards = torch.randn(tasks, n, h, generator=g, dtype=torch.float64) * mask.to(torch.float64)
    return Episodes(
        torch.randn(tasks, n, h, 3, generator=g, dtype=dtype),
        torch.randn(tasks, n, h, 2, generator=g, dtype=dtype),
        rewards,
        mask,
    )


def advantages_like(episodes: Episodes, seed: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(episodes.mask.shape, generator=g, dtype=episodes.mask.dtype) * episodes.mask
