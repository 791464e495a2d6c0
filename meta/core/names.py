"""The vocabulary of the toolkit, defined once: conv4's layer names, the frozen sets of the
freezing ablation (the paper's Table 1) and the names of the training regimes.

Every other module (the trainer, the reproduction's schema and report, the notebooks, the
tests) imports these names instead of spelling them out.

Imports: nothing.
"""

from __future__ import annotations

#: conv4's layers, in forward order: four convolutional blocks and the linear head.
LAYERS: tuple[str, ...] = ("conv1", "conv2", "conv3", "conv4", "head")
#: The body: every layer but the head (what NIL-testing and feature reuse are about).
BODY: tuple[str, ...] = LAYERS[:-1]
#: The freezing ablation of Table 1: (label, layers frozen in the test-time inner loop), from
#: nothing frozen to the whole body frozen (the paper: None, 1, 1,2, 1,2,3, 1,2,3,4).
FREEZING_ROWS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("none", ()),
    *((f"conv1-{i}" if i > 1 else "conv1", BODY[:i]) for i in range(1, len(BODY) + 1)),
)
#: The labels of :data:`FREEZING_ROWS`, in order.
FROZEN_LABELS: tuple[str, ...] = tuple(label for label, _ in FREEZING_ROWS)
#: Regimes whose test procedure is the inner loop (MAML, first-order MAML, ANIL).
META_LEARNERS: tuple[str, ...] = ("maml", "fomaml", "anil")
#: The body-training baselines of Table 5 (section 5.2 of the paper), each tested with NIL.
BODY_BASELINES: tuple[str, ...] = ("multiclass", "multitask", "random", "nil")
#: Every training regime (``--algorithm``).
REGIMES: tuple[str, ...] = (*META_LEARNERS, *BODY_BASELINES)
