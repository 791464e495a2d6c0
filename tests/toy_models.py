"""Small model factories for the repsim capture/compare/report tests (factory specs
``toy_models:mlp`` etc., importable when ``tests/`` is on ``sys.path``)."""

from __future__ import annotations

import torch
from torch import nn


def _build(cls: type[nn.Module], seed: int | None, **kwargs) -> nn.Module:
    """``cls(**kwargs)`` initialised from ``seed`` (when given) without touching the global RNG."""
    with torch.random.fork_rng():
        if seed is not None:
            torch.manual_seed(seed)
        return cls(**kwargs)


class MLP(nn.Module):
    """``fc1 -> relu1 -> fc2 -> relu2 -> head``; input ``(N, in_features)``."""

    def __init__(self, in_features: int = 6, hidden: int = 8, out_features: int = 3):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden)
        self.relu1 = nn.ReLU()
        self.fc2 = nn.Linear(hidden, hidden)
        self.relu2 = nn.ReLU()
        self.head = nn.Linear(hidden, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.relu2(self.fc2(self.relu1(self.fc1(x)))))


def mlp(in_features: int = 6, hidden: int = 8, out_features: int = 3, seed: int | None = None) -> MLP:
    """An :class:`MLP`, initialised from ``seed`` when given."""
    return _build(MLP, seed, in_features=in_features, hidden=hidden, out_features=out_features)


class ConvNet(nn.Module):
    """A two-block conv4-like net: ``conv1``/``conv2`` = Conv3x3-BN-ReLU-MaxPool2 blocks, then
    ``head`` (Linear). Batch norm keeps no running statistics (MAML's "batch" semantics) unless
    ``running_stats``. Input ``(N, in_channels, 8, 8)``."""

    def __init__(self, in_channels: int = 1, channels: int = 4, ways: int = 3, running_stats: bool = False):
        super().__init__()

        def block(cin: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, channels, 3, padding=1),
                nn.BatchNorm2d(channels, track_running_stats=running_stats),
                nn.ReLU(),
                nn.MaxPool2d(2),
            )

        self.conv1 = block(in_channels)
        self.conv2 = block(channels)
        self.head = nn.Linear(channels * 2 * 2, ways)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv2(self.conv1(x)).flatten(1))


def convnet(
    in_channels: int = 1,
    channels: int = 4,
    ways: int = 3,
    running_stats: bool = False,
    seed: int | None = None,
) -> ConvNet:
    """A :class:`ConvNet`, initialised from ``seed`` when given."""
    return _build(ConvNet, seed, in_channels=in_channels, channels=channels, ways=ways, running_stats=running_stats)


class Reuse(nn.Module):
    """``fc1 -> shared -> tanh -> shared -> head``: ``shared`` runs twice per forward pass."""

    def __init__(self, in_features: int = 6, hidden: int = 8):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden)
        self.shared = nn.Linear(hidden, hidden)
        self.head = nn.Linear(hidden, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.shared(torch.tanh(self.shared(self.fc1(x)))))


def reuse(seed: int | None = None) -> Reuse:
    """A :class:`Reuse` model."""
    return _build(Reuse, seed)


class Boom(MLP):
    """An MLP whose forward raises after ``fc1`` ran (to test hook removal on errors)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.fc1(x)
        raise RuntimeError("boom")


def not_a_module() -> int:
    """A factory that returns no ``nn.Module``."""
    return 3


NOT_CALLABLE = 5


#: The factory a toy snapshot's manifest names (not on the allowlist: tests trust it by name).
SNAPSHOT_FACTORY = "toy_models:convnet"


def write_toy_snapshot(
    root,
    *,
    tasks: int = 2,
    steps: int = 2,
    ways: int = 3,
    shots: int = 1,
    queries: int = 5,
    inner_lr: float = 0.5,
    seed: int = 0,
) -> dict:
    """Write an adaptation snapshot (docs/formats.md) of :func:`convnet` to ``root``.

    Each task has random ``(ways*shots, 1, 8, 8)`` support and ``(ways*queries, 1, 8, 8)`` query
    inputs; the inner loop takes ``steps`` real SGD steps on the support cross-entropy from the
    meta weights (a fresh seeded init). Returns the manifest.
    """
    import json
    from pathlib import Path

    import safetensors.torch

    from repsim.weights import save_state_dict

    root = Path(root)
    generator = torch.Generator().manual_seed(seed)
    spec = {"factory": SNAPSHOT_FACTORY, "kwargs": {"ways": ways, "seed": seed}}
    model = convnet(**spec["kwargs"])
    meta_state = {k: v.clone() for k, v in model.state_dict().items()}
    save_state_dict(root / "meta.safetensors", meta_state)
    entries = []
    for t in range(tasks):
        task_dir = f"task_{t:04d}"
        labels = torch.arange(ways)
        data = {
            "support_x": torch.randn(ways * shots, 1, 8, 8, generator=generator),
            "support_y": labels.repeat_interleave(shots),
            "query_x": torch.randn(ways * queries, 1, 8, 8, generator=generator),
            "query_y": labels.repeat_interleave(queries),
        }
        (root / task_dir).mkdir(parents=True, exist_ok=True)
        safetensors.torch.save_file(data, str(root / task_dir / "inputs.safetensors"))
        model.load_state_dict(meta_state)
        step_files = []
        for s in range(1, steps + 1):
            loss = nn.functional.cross_entropy(model(data["support_x"]), data["support_y"])
            grads = torch.autograd.grad(loss, list(model.parameters()))
            with torch.no_grad():
                for p, g in zip(model.parameters(), grads):
                    p -= inner_lr * g
            step_files.append(f"{task_dir}/step_{s:02d}.safetensors")
            save_state_dict(root / step_files[-1], model.state_dict())
        entries.append(
            {
                "id": t,
                "dir": task_dir,
                "inputs": f"{task_dir}/inputs.safetensors",
                "steps": step_files,
                "classes": list(range(ways)),
            }
        )
    manifest = {
        "format": "adaptation-snapshot",
        "version": 1,
        "model": spec,
        "meta_weights": "meta.safetensors",
        "layers": ["conv1", "conv2", "head"],
        "batch_norm": "batch",
        "forward_batch": "whole",
        "algorithm": "maml",
        "adapted_layers": ["conv1", "conv2", "head"],
        "inner_steps": steps,
        "inner_lr": inner_lr,
        "ways": ways,
        "shots": shots,
        "queries": queries,
        "dataset": "toy",
        "tasks": entries,
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    """Standard-normal float32 inputs from a private generator (independent of test order)."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
