"""A meta-batch as stacked tensors: the plumbing between the episodes of :mod:`meta.data` and
the execution paths of :mod:`meta.core.paths` and the regimes of :mod:`meta.core.regimes`.

Imports: nothing of :mod:`meta` (tensors and episode-like objects only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = ["TaskBatch", "as_tasks"]

_FIELDS = ("support_x", "support_y", "query_x", "query_y")


@dataclass(frozen=True)
class TaskBatch:
    """``T`` tasks of equal shapes: support ``(T, n_s, C, H, W)`` / ``(T, n_s)``, query
    ``(T, n_q, C, H, W)`` / ``(T, n_q)``."""

    support_x: Tensor
    support_y: Tensor
    query_x: Tensor
    query_y: Tensor

    def __len__(self) -> int:
        return self.support_x.shape[0]

    def slice(self, start: int, stop: int) -> TaskBatch:
        """Tasks ``start .. stop - 1``."""
        return TaskBatch(*(getattr(self, f)[start:stop] for f in _FIELDS))


def as_tasks(batch: Any) -> TaskBatch:
    """An ``EpisodeBatch`` (stacked fields) or a sequence of episodes -> :class:`TaskBatch`
    (``ValueError`` for no tasks, unequal shapes or labels that do not match the inputs)."""
    if isinstance(getattr(batch, "support_x", None), Tensor) and batch.support_x.dim() == 5:
        tasks = TaskBatch(*(getattr(batch, f) for f in _FIELDS))
    else:
        episodes = list(batch)
        if not episodes:
            raise ValueError("the meta-batch has no tasks")
        try:
            tasks = TaskBatch(*(torch.stack([getattr(e, f) for e in episodes]) for f in _FIELDS))
        except RuntimeError as error:
            raise ValueError(f"the tasks of a meta-batch must have equal shapes: {error}") from error
    if tasks.support_x.dim() != 5 or tasks.query_x.dim() != 5:
        raise ValueError(f"task inputs must be (T, n, C, H, W); got {tuple(tasks.support_x.shape)}")
    if tasks.support_y.shape != tasks.support_x.shape[:2] or tasks.query_y.shape != tasks.query_x.shape[:2]:
        raise ValueError("task labels must be (T, n) matching the inputs")
    return tasks
