"""``synthetic``: a tiny, easy data set for tests and smoke runs (not a benchmark), generated in
memory.

Class ``c`` of a split is a random 7x7 binary pattern blown up to the image size; each of its 20
examples flips every cell with probability 0.1, is shifted by up to 2 pixels and gets Gaussian
noise (sd 20 grey levels).

Imports: :mod:`meta.data.base` and :mod:`meta.validation` only.
"""

from __future__ import annotations

import numpy as np

from meta.data.base import SPLITS, FewShotSplit, check_split
from meta.validation import check_int

SYNTHETIC_CLASSES = {"train": 48, "val": 16, "test": 16}
SYNTHETIC_PER_CLASS = 20


def synthetic_split(split: str, *, image_size: int = 28, seed: int = 0) -> FewShotSplit:
    """A tiny, easy data set for tests (not a benchmark): class ``c`` of a split is a random
    7x7 binary pattern (``SeedSequence(seed, spawn_key=(split_index, c))``) blown up to
    ``image_size``; each of its 20 examples flips every cell with probability 0.1, is shifted by
    up to 2 pixels and gets Gaussian noise (sd 20 grey levels). uint8 ``(n, 20, 1, S, S)``."""
    check_split(split)
    image_size = check_int("image_size", image_size, minimum=7)
    seed = check_int("seed", seed, minimum=0)
    index = SPLITS.index(split)
    images = np.stack(
        [
            _synthetic_class(np.random.SeedSequence(seed, spawn_key=(index, c)), image_size)
            for c in range(SYNTHETIC_CLASSES[split])
        ]
    )
    names = tuple(f"synthetic/{split}/{c:03d}" for c in range(len(images)))
    return FewShotSplit(
        f"synthetic/{split}",
        images,
        names,
        ("synthetic",) * len(names),
        {"generator": "meta.data.synthetic.synthetic_split", "seed": seed},
    )


def _synthetic_class(seq: np.random.SeedSequence, size: int) -> np.ndarray:
    rng = np.random.default_rng(seq)
    pattern = rng.random((7, 7)) < 0.5
    flips = rng.random((SYNTHETIC_PER_CLASS, 7, 7)) < 0.1
    cells = (pattern ^ flips).astype(np.float64)
    rows = np.minimum(np.arange(size) * 7 // size, 6)
    big = cells[:, rows][:, :, rows] * 255.0
    shifts = rng.integers(-2, 3, size=(SYNTHETIC_PER_CLASS, 2))
    big = np.stack([np.roll(img, tuple(s), axis=(0, 1)) for img, s in zip(big, shifts)])
    noisy = big + rng.normal(0.0, 20.0, big.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)[:, None]
