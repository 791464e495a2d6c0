"""The Gaussian MLP policy of MAML's RL experiments (Finn et al. 2017, App. A.2), and the
log-likelihood and KL divergence of its action distribution.

::

    h1 = f(W_fc1 s + b_fc1)          fc1: observation -> 100 units
    h2 = f(W_fc2 h1 + b_fc2)         fc2: 100 -> 100 units
    mu = W_head h2 + b_head          head: the mean's output layer, 100 -> action size
    pi(a | s) = N(mu, diag(sigma^2)),  sigma = exp(log_std), log_std learnt, state-independent

``f`` is ReLU (the MAML paper, cbfinn/maml_rl's ``hidden_nonlinearity=tf.nn.relu``) or tanh
(tristandeleu/pytorch-maml-rl's default). Weights start Xavier-uniform, biases at zero, ``log_std``
at zero (sigma = 1), as in both references. With ``A`` action dimensions::

    log pi(a | s) = -1/2 sum_j ((a_j - mu_j) / sigma_j)^2 - sum_j log sigma_j - A/2 log(2 pi)
    KL(old || new) = sum_j [log(sigma_j / sigma_old_j) + (sigma_old_j^2 + (mu_old_j - mu_j)^2) / (2 sigma_j^2) - 1/2]

Per-task parameters. Every function here also takes parameters with a leading task dimension
``T`` (weights ``(T, out, in)``, biases ``(T, out)``, ``log_std`` ``(T, A)``) with observations
``(T, M, D)``: the tasks of a meta-batch, each adapted to its own task, are evaluated in one batched
matrix product. Shared parameters broadcast over the tasks.

Names. The layers whose outputs are the representations are :data:`LAYERS` (``fc1``, ``fc2``,
``head``); what an inner loop's adapt mask can name is :data:`PARAMETER_GROUPS`, the layers and
``log_std``. The factory :func:`gaussian_mlp` is the model spec of RL run folders and snapshots
(``meta.rl.policy:gaussian_mlp``, on repsim's allowlist through setup.cfg).

Imports: nothing of :mod:`meta` except :mod:`meta.validation`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn
from torch.func import functional_call

from meta.validation import check_choice, check_int

__all__ = [
    "LAYERS",
    "NONLINEARITIES",
    "PARAMETER_GROUPS",
    "POLICY_FACTORY",
    "Dense",
    "GaussianMLP",
    "adapted_names",
    "distribution",
    "gaussian_mlp",
    "kl_divergence",
    "log_prob",
]

#: The policy's layers in forward order (their outputs are the representations compared).
LAYERS: tuple[str, ...] = ("fc1", "fc2", "head")
#: What an adapt mask may name: the layers and the log standard deviation.
PARAMETER_GROUPS: tuple[str, ...] = (*LAYERS, "log_std")
#: The hidden layers' nonlinearities by name.
NONLINEARITIES = {"relu": torch.relu, "tanh": torch.tanh}
#: The factory spec of the policy (model specs of run folders and snapshots).
POLICY_FACTORY = "meta.rl.policy:gaussian_mlp"


class Dense(nn.Module):
    """``y = f(x W^T + b)`` (``f``: a name of :data:`NONLINEARITIES`, or ``None`` for the identity),
    parameters ``weight (out, in)`` and ``bias (out,)``; ``x (..., in)``, or per-task parameters
    ``(T, out, in)``, ``(T, out)`` with ``x (T, M, in)``."""

    def __init__(self, n_in: int, n_out: int, nonlinearity: str | None) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_out, n_in))
        self.bias = nn.Parameter(torch.zeros(n_out))
        nn.init.xavier_uniform_(self.weight)
        self.nonlinearity = nonlinearity

    def forward(self, x: Tensor) -> Tensor:
        bias = self.bias if self.bias.dim() == 1 else self.bias.unsqueeze(-2)  # per task: (T, 1, out)
        y = torch.matmul(x, self.weight.transpose(-1, -2)) + bias
        return y if self.nonlinearity is None else NONLINEARITIES[self.nonlinearity](y)


class GaussianMLP(nn.Module):
    """The policy (module docstring): ``forward(observations)`` is the mean ``mu``; the
    standard deviation is ``exp(log_std)``."""

    layers = LAYERS

    def __init__(self, observation_size: int, action_size: int, hidden: int = 100, nonlinearity: str = "relu") -> None:
        super().__init__()
        check_choice("nonlinearity", nonlinearity, tuple(NONLINEARITIES))
        self.fc1 = Dense(observation_size, hidden, nonlinearity)
        self.fc2 = Dense(hidden, hidden, nonlinearity)
        self.head = Dense(hidden, action_size, None)
        self.log_std = nn.Parameter(torch.zeros(action_size))

    def forward(self, observations: Tensor) -> Tensor:
        return self.head(self.fc2(self.fc1(observations)))


def gaussian_mlp(observation_size: int, action_size: int, hidden: int = 100, nonlinearity: str = "relu") -> GaussianMLP:
    """The factory of :class:`GaussianMLP` (model specs name it, :data:`POLICY_FACTORY`).

    Examples:
        >>> policy = gaussian_mlp(2, 2)
        >>> [name for name, _ in policy.named_parameters()]  # doctest: +NORMALIZE_WHITESPACE
        ['log_std', 'fc1.weight', 'fc1.bias', 'fc2.weight', 'fc2.bias', 'head.weight', 'head.bias']
    """
    sizes = {"observation_size": observation_size, "action_size": action_size, "hidden": hidden}
    for name, value in sizes.items():
        check_int(name, value, minimum=1)
    return GaussianMLP(observation_size, action_size, hidden, nonlinearity)


def adapted_names(params: Iterable[str], groups: Iterable[str]) -> list[str]:
    """The parameter names of ``params`` that belong to ``groups`` (:data:`PARAMETER_GROUPS`:
    ``"head"`` owns ``head.weight`` and ``head.bias``, ``"log_std"`` owns ``log_std``); an unknown
    group is a ``ValueError``."""
    wanted = set(groups)
    unknown = sorted(wanted - set(PARAMETER_GROUPS))
    if unknown:
        raise ValueError(f"unknown policy layers {unknown}; the layers are {', '.join(PARAMETER_GROUPS)}")
    return [name for name in params if name.split(".")[0] in wanted]


def distribution(policy: nn.Module, params: Mapping[str, Tensor], observations: Tensor) -> tuple[Tensor, Tensor]:
    """``(mu, log_std)`` of the policy with ``params`` on ``observations`` ``(..., D)``: ``mu``
    ``(..., A)``; ``log_std`` ``(A,)``, or ``(T, 1, A)`` for per-task parameters (it broadcasts
    against ``mu`` ``(T, M, A)``). A pure function of ``params`` (``torch.func.functional_call``)."""
    mean = functional_call(policy, dict(params), (observations,))
    log_std = params["log_std"]
    return mean, log_std.unsqueeze(-2) if log_std.dim() > 1 else log_std


def log_prob(mean: Tensor, log_std: Tensor, actions: Tensor) -> Tensor:
    """``log pi(a | s)`` of a diagonal Gaussian, summed over the action dimensions (module
    docstring): ``(..., A)`` -> ``(...)``."""
    z = (actions - mean) * torch.exp(-log_std)
    return -0.5 * (z**2).sum(-1) - log_std.expand_as(mean).sum(-1) - 0.5 * mean.shape[-1] * math.log(2 * math.pi)


def kl_divergence(old_mean: Tensor, old_log_std: Tensor, mean: Tensor, log_std: Tensor) -> Tensor:
    """``KL(old || new)`` of two diagonal Gaussians, summed over the action dimensions (module
    docstring): ``(..., A)`` -> ``(...)``."""
    old_var, var = torch.exp(2 * old_log_std), torch.exp(2 * log_std)
    terms = log_std - old_log_std + (old_var + (old_mean - mean) ** 2) / (2 * var) - 0.5
    return terms.expand_as(mean if mean.dim() >= old_mean.dim() else old_mean).sum(-1)
