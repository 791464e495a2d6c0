"""Test procedures on one task: adapt with the test-time inner loop and score the query set, or
NIL-test the body (no head, no inner loop).

- :func:`evaluate_task`: a copy of the meta-learned weights adapted to the task's support set by
  an :class:`~meta.core.inner.InnerLoop` (any adapted set: the layers outside ``adapt`` are
  frozen), then query accuracy and loss; the model's own parameters are not changed.
- :func:`nil_accuracy` (:mod:`meta.core.nil`): queries classified by cosine similarity of
  penultimate features to the support set.
- :class:`Procedure` names one of the two, so that a run, a table row or a file name can say
  which was used.

Imports: :mod:`meta.core` only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from meta.core.inner import InnerLoop, Params, inner_loop, module_forward, task_accuracies, task_losses
from meta.core.names import LAYERS
from meta.core.nil import nil_accuracy

__all__ = ["Procedure", "TaskResult", "check_head", "evaluate_task", "task_accuracy"]


@dataclass(frozen=True)
class TaskResult:
    """One test task: query ``accuracy`` and ``loss`` after adaptation; with ``record_steps`` the
    full parameter dict after each inner step (detached), else ``None``."""

    accuracy: float
    loss: float
    params_per_step: list[Params] | None = field(default=None, repr=False)


def evaluate_task(model: nn.Module, episode: Any, inner: InnerLoop, *, record_steps: bool = False) -> TaskResult:
    """Adapt ``model`` to one task's support set with ``inner`` (any adapted set) and score its
    query set. The model's own parameters are not changed.

    Args:
        model: a staged model (:class:`meta.core.models.Conv4`).
        episode: ``support_x (N*K, C, H, W)``, ``support_y (N*K,)``, ``query_x``, ``query_y``.
        inner: the test-time inner loop (``first_order`` is irrelevant here).
        record_steps: return the parameters after every step (adaptation snapshots).
    """
    params = dict(model.named_parameters())
    adapted = inner_loop(
        module_forward(model),
        params,
        tuple(model.layers),
        episode.support_x,
        episode.support_y,
        inner,
        meta_grad=False,
        record_steps=record_steps,
    )
    with torch.no_grad():
        logits = adapted.query_forward(episode.query_x)
        loss = task_losses(logits, episode.query_y)
        accuracy = task_accuracies(logits, episode.query_y)
    return TaskResult(float(accuracy), float(loss), adapted.steps)


@dataclass(frozen=True)
class Procedure:
    """How a test task is scored: ``kind`` ``"inner"`` (with ``inner``) or ``"nil"``."""

    kind: str
    inner: InnerLoop | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("inner", "nil") or (self.kind == "inner") != (self.inner is not None):
            raise ValueError(f"a procedure is 'inner' with an InnerLoop or 'nil' without; got {self.kind!r}")

    def describe(self, layers: Sequence[str] = LAYERS) -> dict[str, Any]:
        """JSON-ready: the kind, and for ``inner`` the steps, learning rate, adapted and frozen
        layers."""
        if self.inner is None:
            return {"kind": "nil"}
        adapted = self.inner.adapted_layers(layers)
        return {
            "kind": "inner",
            "steps": self.inner.steps,
            "lr": self.inner.lr,
            "adapted_layers": list(adapted),
            "frozen_layers": [name for name in layers if name not in adapted],
        }

    def tag(self) -> str:
        """Short name for file names, e.g. ``nil`` or ``inner-10steps-frozen-conv1+conv2``."""
        if self.inner is None:
            return "nil"
        frozen = self.describe()["frozen_layers"]
        return f"inner-{self.inner.steps}steps" + (f"-frozen-{'+'.join(frozen)}" if frozen else "")


def task_accuracy(model: nn.Module, episode: Any, procedure: Procedure) -> float:
    """Query accuracy (fraction) of one task under ``procedure``."""
    if procedure.inner is None:
        return nil_accuracy(model, episode)
    return evaluate_task(model, episode, procedure.inner).accuracy


def check_head(model: nn.Module, ways: int, inner: InnerLoop | None) -> None:
    """ValueError if an inner loop would adapt a head whose width is not the tasks' ``ways``."""
    outputs = getattr(getattr(model, "head", None), "out_features", ways)
    if inner is not None and outputs != ways:
        raise ValueError(
            f"the model's head has {outputs} outputs but the tasks are {ways}-way; a head trained over"
            " all training classes (multiclass) can only be tested with NIL (--nil)"
        )
