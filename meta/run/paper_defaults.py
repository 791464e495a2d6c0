"""The paper's hyperparameters of each benchmark setting: :data:`PAPER_DEFAULTS`.

MAML paper (Finn et al. 2017), appendix A.1, and the reference code, cbfinn/maml at commit
a7f45f1 (cited by file and line); Raghu et al. 2020 reuse MAML's settings.

- Inner loops: Omniglot 5-way 1 step of 0.4 at training, 3 at test, meta-batch 32; 20-way 5
  steps of 0.1 at training and test, meta-batch 16; miniImageNet 5 steps of 0.01 at training,
  10 at test, meta-batch 4 (1-shot) and 2 (5-shot). Outer Adam 1e-3 (``main.py`` ``meta_lr``).
- Iterations: 60,000 for every setting (the commands at the top of ``main.py``, lines 11-20:
  ``--metatrain_iterations=60000``).
- Query examples per class (``main.py`` lines 245-251): Omniglot draws ``2K`` examples per class
  (``DataGenerator(FLAGS.update_batch_size*2, ...)``), K support and K queries, at training
  and at test; miniImageNet draws ``K + 15`` at training (15 queries) and ``2K`` at test (K
  queries). Validation here uses the test-time count. The count matters beyond the loss's
  variance: the query set is one batch-norm batch.
- Meta-gradient clipping (``maml.py`` lines 147-148): miniImageNet clips every meta-gradient
  entry to ``[-10, 10]`` (``tf.clip_by_value``) before Adam; Omniglot does not clip.
- Padding: TensorFlow's ``SAME`` (``utils.py`` lines 26-33; :mod:`meta.core.models`).

The learning rates are for the reference's inner loss (``utils.xent``: per-example
cross-entropies divided by K, summed by ``tf.gradients``), which :mod:`meta.core.inner` uses: N
times the mean cross-entropy.

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
        queries: query examples per class at meta-training.
        test_queries: query examples per class at validation and test.
        grad_clip: each meta-gradient entry clipped to ``[-grad_clip, grad_clip]`` (0: none).
        padding: conv4's padding (``meta.core.models.PADDINGS``).
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
    test_queries: int = 15
    grad_clip: float = 0.0
    padding: str = "same"
    iterations: int = 60000

    def model_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``meta.core.models:conv4`` for this setting (a model spec's kwargs)."""
        return {"ways": self.ways, "in_channels": self.in_channels, "variant": self.variant, "padding": self.padding}


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
        queries=shots,
        test_queries=shots,
    )


def _miniimagenet(shots: int, meta_batch_size: int) -> PaperDefaults:
    return PaperDefaults(
        "miniimagenet",
        5,
        shots,
        "miniimagenet",
        3,
        InnerLoop(5, 0.01),
        InnerLoop(10, 0.01),
        meta_batch_size,
        queries=15,
        test_queries=shots,
        grad_clip=10.0,
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
