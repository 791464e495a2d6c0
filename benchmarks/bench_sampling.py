"""Is episode sampling ever the bottleneck? Times one meta-batch of 32 tasks of 20-way 5-shot
15-query Omniglot-shaped (1x28x28) episodes against one ANIL training iteration on that
meta-batch, one intra-op thread, and prints both medians and their ratio (target: sampling
under 5% of the iteration). Sampling is timed as a trainer calls it:
``EpisodeSampler.sample(32)`` (draw indices, gather uint8, convert to float32).

Data: the real Omniglot ``maml`` train split if the archives are found (``--omniglot DIR`` or
``$OMNIGLOT_DIR`` or ../shared/data/omniglot), else the built-in glyphs set, else random binary
images of the same shape. The ANIL iteration is the trainer's (:func:`anil_iteration`).

Run: ``python benchmarks/bench_sampling.py [--repeats 7] [--iteration-repeats 3]``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from meta.core.models import conv4
from meta.core.regimes import make_regime
from meta.data import EpisodeBatch, EpisodeSampler, FewShotSplit, load_split
from meta.run.paper_defaults import paper_defaults

REPO = Path(__file__).resolve().parents[1]

torch.set_num_threads(1)
torch.set_flush_denormal(True)

WAYS, SHOTS, QUERIES, META_BATCH = 20, 5, 15, 32


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


def anil_iteration(batch: EpisodeBatch) -> tuple[Callable[[], None], str]:
    """``(one ANIL training iteration on batch, what it is)``: the ANIL regime
    (:func:`meta.core.regimes.make_regime`) with the 20-way 5-shot Omniglot paper defaults' inner
    loop on ``meta.core.models.conv4``, driven as a trainer does (zero grads, ``regime.step``,
    Adam step)."""
    setting = paper_defaults("omniglot", WAYS, SHOTS)
    model = conv4(**setting.model_kwargs())
    regime = make_regime("anil", inner=setting.train_inner, meta_batch_size=len(batch))
    optimizer = torch.optim.Adam(model.parameters(), lr=setting.meta_lr)

    def iteration() -> None:
        optimizer.zero_grad()
        regime.step(model, batch)
        optimizer.step()

    inner = setting.train_inner
    return iteration, f"meta.core.regimes ANIL (make_regime('anil'), {inner.steps} inner steps, lr {inner.lr})"


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
