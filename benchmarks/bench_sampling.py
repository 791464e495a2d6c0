"""Is episode sampling ever the bottleneck? Times one meta-batch of 32 tasks of 20-way 5-shot
15-query Omniglot-shaped (1x28x28) episodes against one ANIL training iteration on that
meta-batch, one intra-op thread, and prints both medians and their ratio (target: sampling
under 5% of the iteration). Sampling is timed as a trainer calls it:
``EpisodeSampler.sample(32)`` (draw indices, gather uint8, convert to float32).

Data: the real Omniglot ``maml`` train split if the archives are found (``--omniglot DIR`` or
``$OMNIGLOT_DIR`` or ../shared/data/omniglot), else the built-in glyphs set, else random binary
images of the same shape. The ANIL iteration is ``meta.core.algorithms``' when that module provides
one (see :func:`anil_iteration`); only where it cannot be imported, a stand-in (conv4 body
forward once per task, five inner SGD steps of the head with ``create_graph=True``, query loss
backward through the adapted head into the body, an Adam step) is timed and the output says so.

Run: ``python benchmarks/bench_sampling.py [--repeats 7] [--iteration-repeats 3]``.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from meta.data import EpisodeBatch, EpisodeSampler, FewShotSplit, load_split  # noqa: E402

torch.set_num_threads(1)
torch.set_flush_denormal(True)

WAYS, SHOTS, QUERIES, META_BATCH = 20, 5, 15, 32
INNER_STEPS, INNER_LR = 5, 0.1


def omniglot_shaped_split(omniglot: Path | None) -> FewShotSplit:
    """Real Omniglot (maml/train) if present, else glyphs train, else random binary images."""
    root = omniglot or Path(os.environ.get("OMNIGLOT_DIR", REPO.parent / "shared" / "data" / "omniglot"))
    if (root / "images_background.zip").exists() and (root / "images_evaluation.zip").exists():
        return load_split("omniglot", "train", root=root)
    try:
        return load_split("glyphs", "train")
    except ImportError:
        pass
    rng = np.random.default_rng(0)
    images = ((rng.random((4400, 20, 1, 28, 28)) < 0.15) * 255).astype(np.uint8)
    names = tuple(f"synthetic{i}" for i in range(len(images)))
    return FewShotSplit("synthetic/train", images, names, ("synthetic",) * len(images))


def median_seconds(run: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``repeats`` calls after one warm-up call."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def conv4_body(in_channels: int = 1, hidden: int = 64) -> nn.Sequential:
    """MAML's Omniglot conv4: four [3x3 conv stride 2, batch norm, ReLU] blocks, then the
    spatial mean -> (64,) features."""
    layers: list[nn.Module] = []
    for i in range(4):
        layers += [nn.Conv2d(in_channels if i == 0 else hidden, hidden, 3, stride=2, padding=1),
                   nn.BatchNorm2d(hidden), nn.ReLU()]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())


def standin_anil_iteration(batch: EpisodeBatch) -> Callable[[], None]:
    """One ANIL meta-training iteration on ``batch`` with a local conv4 (the stand-in)."""
    body, head = conv4_body(batch.support_x.shape[2]), nn.Linear(64, WAYS)
    optimizer = torch.optim.Adam([*body.parameters(), *head.parameters()], lr=1e-3)

    def iteration() -> None:
        optimizer.zero_grad()
        for episode in batch:
            features = body(torch.cat([episode.support_x, episode.query_x]))
            support, query = features[: len(episode.support_y)], features[len(episode.support_y):]
            weight, bias = head.weight, head.bias
            for _ in range(INNER_STEPS):
                loss = F.cross_entropy(F.linear(support, weight, bias), episode.support_y)
                grad_w, grad_b = torch.autograd.grad(loss, (weight, bias), create_graph=True)
                weight, bias = weight - INNER_LR * grad_w, bias - INNER_LR * grad_b
            (F.cross_entropy(F.linear(query, weight, bias), episode.query_y) / len(batch)).backward()
        optimizer.step()

    return iteration


def anil_iteration(batch: EpisodeBatch) -> tuple[Callable[[], None], str]:
    """``(one ANIL training iteration on batch, what it is)``: ``meta.core.algorithms``' ANIL regime
    with the 20-way 5-shot Omniglot preset's inner loop on ``meta.core.models.conv4``, driven as a
    trainer does (zero grads, ``regime.step``, Adam step); the stand-in if that is missing."""
    try:
        from meta.core.algorithms import make_regime, preset
        from meta.core.models import conv4
    except ImportError as error:
        return standin_anil_iteration(batch), f"STAND-IN (meta.core.algorithms not importable: {error})"
    setting = preset("omniglot", WAYS, SHOTS)
    model = conv4(**setting.model_kwargs())
    regime = make_regime("anil", inner=setting.train_inner, meta_batch_size=len(batch))
    optimizer = torch.optim.Adam(model.parameters(), lr=setting.meta_lr)

    def iteration() -> None:
        optimizer.zero_grad()
        regime.step(model, batch)
        optimizer.step()

    inner = setting.train_inner
    return iteration, f"meta.core.algorithms ANIL (make_regime('anil'), {inner.steps} inner steps, lr {inner.lr})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--omniglot", type=Path, default=None, help="folder with the Omniglot zips")
    parser.add_argument("--repeats", type=int, default=15, help="timed repeats of sampling")
    parser.add_argument("--iteration-repeats", type=int, default=3, help="timed repeats of the ANIL iteration")
    args = parser.parse_args()

    split = omniglot_shaped_split(args.omniglot)
    sampler = EpisodeSampler(split, WAYS, SHOTS, QUERIES, seed=0)
    batch = sampler.sample(META_BATCH)
    iteration, what = anil_iteration(batch)
    sampling = median_seconds(lambda: sampler.sample(META_BATCH), args.repeats)
    training = median_seconds(iteration, args.iteration_repeats)
    print(f"data: {split.name} {split.images.shape}; torch threads: {torch.get_num_threads()}")
    print(f"meta-batch: {META_BATCH} tasks x {WAYS}-way {SHOTS}-shot {QUERIES}-query")
    print(f"ANIL iteration: {what}")
    print(f"sampling one meta-batch (median of {args.repeats}): {sampling * 1e3:9.2f} ms")
    print(f"one ANIL iteration (median of {args.iteration_repeats}):     {training * 1e3:9.2f} ms")
    ratio = sampling / training
    print(f"ratio sampling / iteration: {ratio:.2%} (target < 5%: {'met' if ratio < 0.05 else 'NOT met'})")


if __name__ == "__main__":
    main()
