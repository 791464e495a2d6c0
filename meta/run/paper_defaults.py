"""The paper's hyperparameters of each benchmark setting: :data:`PAPER_DEFAULTS`.

MAML paper (Finn et al. 2017), appendix A.1, and the commands at the top of cbfinn/maml
``main.py``; Raghu et al. 2020 reuse MAML's settings. Omniglot 5-way: 1 inner step of 0.4 at
training, 3 at test, meta-batch 32; 20-way: 5 steps of 0.1 at training and test, meta-batch 16;
miniImageNet: 5 steps of 0.01 at training, 10 at test, meta-batch 4 (1-shot) and 2 (5-shot), 15
queries per class (Ravi & Larochelle). Outer Adam 1e-3 (``main.py`` ``meta_lr``). The reference
Omniglot code draws K query examples per class; here 15 everywhere. The learning rates are for
the reference's inner loss (``utils.xent``: per-example cross-entropies divided by K, summed by
``tf.gradients``), which :mod:`meta.core.inner` uses: N times the mean cross-entropy.

Imports: :mod:`meta.core` only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from meta.core.inner import InnerLoop

__all__ = ["PAPER_DEFAULTS", "PaperDefaults", "nearest_paper_defaults", "paper_defaults"]


@dataclass(frozen=True)
class PaperDefaults:
    """Hyperparameters of one benchmark setting (MAML paper, Finn et al. 2017, appendix A.1, and
    the commands at the top of cbfinn/maml ``main.py``; Raghu et al. 2020 use MAML's settings).

    Attributes:
        dataset, ways, shots: the setting.
        variant: conv4 variant (``meta.core.models.VARIANTS``); ``in_channels``: 1 or 3.
        train_inner, test_inner: inner loops at meta-training and at test time (all layers).
        meta_batch_size: tasks per meta-update.
        meta_lr: outer Adam learning rate.
        queries: query examples per class.
        iterations: meta-training iterations of the reference runs.
    """

    dataset: str
    ways: int
    shots: int
    variant: str
    in_channels: int
    train_inner: InnerLoop
    test_inner: InnerLoop
    meta_batch_size: int
    meta_lr: float = 1e-3
    queries: int = 15
    iterations: int = 60000

    def model_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``meta.core.models:conv4`` for this setting (a model spec's kwargs)."""
        return {"ways": self.ways, "in_channels": self.in_channels, "variant": self.variant}


def _omniglot(ways: int, shots: int, steps: int, test_steps: int, lr: float, meta_batch_size: int) -> PaperDefaults:
    return PaperDefaults(
        "omniglot",
        ways,
        shots,
        "omniglot",
        1,
        InnerLoop(steps, lr),
        InnerLoop(test_steps, lr),
        meta_batch_size,
        iterations=40000,
    )


def _miniimagenet(shots: int, meta_batch_size: int) -> PaperDefaults:
    return PaperDefaults(
        "miniimagenet", 5, shots, "miniimagenet", 3, InnerLoop(5, 0.01), InnerLoop(10, 0.01), meta_batch_size
    )


#: The paper's settings (see the module docstring), keyed by (dataset, ways, shots).
PAPER_DEFAULTS: dict[tuple[str, int, int], PaperDefaults] = {
    ("omniglot", 5, 1): _omniglot(5, 1, steps=1, test_steps=3, lr=0.4, meta_batch_size=32),
    ("omniglot", 5, 5): _omniglot(5, 5, steps=1, test_steps=3, lr=0.4, meta_batch_size=32),
    ("omniglot", 20, 1): _omniglot(20, 1, steps=5, test_steps=5, lr=0.1, meta_batch_size=16),
    ("omniglot", 20, 5): _omniglot(20, 5, steps=5, test_steps=5, lr=0.1, meta_batch_size=16),
    ("miniimagenet", 5, 1): _miniimagenet(1, meta_batch_size=4),
    ("miniimagenet", 5, 5): _miniimagenet(5, meta_batch_size=2),
}


def paper_defaults(dataset: str, ways: int, shots: int) -> PaperDefaults:
    """The :data:`PAPER_DEFAULTS` entry for a setting (ValueError naming the known ones otherwise)."""
    key = (dataset, ways, shots)
    if key not in PAPER_DEFAULTS:
        raise ValueError(f"no paper defaults for {key}; known: {sorted(PAPER_DEFAULTS)}")
    return PAPER_DEFAULTS[key]


def nearest_paper_defaults(dataset: str, ways: int, shots: int) -> PaperDefaults:
    """The paper defaults of a setting, or of the nearest setting of its data set family
    (``glyphs`` and ``synthetic`` use Omniglot's, as Omniglot-shaped sets): nearest ways first,
    then nearest shots."""
    family = "miniimagenet" if dataset == "miniimagenet" else "omniglot"
    candidates = [p for (d, _, _), p in PAPER_DEFAULTS.items() if d == family]
    return min(candidates, key=lambda p: (abs(p.ways - ways), abs(p.shots - shots)))
