"""The meta-gradient of MAML-family training, and the execution paths that compute it.

For a meta-batch of ``T`` tasks, :func:`meta_gradient` adds to each parameter's ``.grad``::

    d/dtheta  (1/T) sum_t CE(query_t; adapt(theta, support_t))

computed part by part (one task, or a chunk of tasks) and summed in part order
(:func:`meta.core.reduction.sum_parts`), so that the ranks of ``torchrun`` sharing the parts add
the same bits as one process computing them all.
with ``adapt`` the one inner loop of :mod:`meta.core.inner` (second or first order, any set of
adapted layers). The paths are identical in exact arithmetic and are checked against each other
and a plain autograd loop in float64 (``tests/meta/core/test_inner.py``):

- ``"loop"``: one task at a time (``torch.func.functional_call``), each task's query loss
  backpropagated before the next task starts, so memory holds one task's graph.
- ``"grouped"``: ``chunk`` tasks at once as grouped convolutions (the tasks side by side in the
  channel dimension: per-task weights and batch-norm statistics in single operations), support
  and query sets alike; meant for GPUs.
- ``"hybrid"`` (:data:`DEFAULT_PATH`): ``chunk`` tasks adapted side by side (support batches of
  at least ``loop_from`` examples per task run task by task, where ordinary convolutions are
  faster on CPUs), then each task's query set alone through ordinary convolutions, its graph
  freed before the next task's, and one backward through the chunk's inner loop.
- ``"compiled"``: ``"loop"``'s work for one task traced into one graph with no autograd left in
  it and compiled ahead of time by inductor (:mod:`meta.core.compiled`). CPUs and
  :class:`meta.core.models.Conv4` models only.

Which path is fastest, and at what memory, is measured in ``benchmarks/README.md``
(``bench_maml.py``); :data:`PATH_BY_VARIANT` holds the choice for each conv4 variant.

Imports: :mod:`meta.core` only.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from meta.core.compiled import compiled_task_program
from meta.core.inner import (
    Adapted,
    InnerLoop,
    Params,
    inner_loop,
    module_forward,
    task_accuracies,
    task_batch_forward,
    task_losses,
)
from meta.core.reduction import ALONE, Reducer, sum_parts
from meta.core.tasks import TaskBatch, as_tasks
from meta.validation import check_choice, check_int

__all__ = ["DEFAULT_CHUNK", "DEFAULT_PATH", "PATHS", "PATH_BY_VARIANT", "default_path", "meta_gradient"]

PATHS = ("loop", "grouped", "hybrid", "compiled")
DEFAULT_PATH = "hybrid"
DEFAULT_CHUNK = 4

#: The trainer's path per conv4 variant when none is given (measured by ``bench_maml.py
#: --variant``, ``benchmarks/README.md``): for Omniglot's small images ``hybrid``; for
#: miniImageNet's 84x84 images a support set is already large work, grouping gains little,
#: and ``loop`` is as fast at less memory.
PATH_BY_VARIANT = {"omniglot": DEFAULT_PATH, "miniimagenet": "loop"}


def default_path(variant: str) -> str:
    """The execution path a run of conv4 variant ``variant`` takes by default."""
    return PATH_BY_VARIANT.get(variant, DEFAULT_PATH)


def meta_gradient(
    model: nn.Module,
    batch: Any,
    inner: InnerLoop,
    *,
    path: str = DEFAULT_PATH,
    chunk: int = DEFAULT_CHUNK,
    loop_from: int = 32,
    reducer: Reducer = ALONE,
) -> dict[str, float]:
    """Add the meta-gradient of the mean query loss after adaptation to ``param.grad``.

    ``L = (1/T) sum_t CE(query_t; adapt(theta, support_t))``; ``d L / d theta`` is accumulated
    into each parameter's ``.grad`` (as ``loss.backward()`` would).

    Args:
        model: a staged model (:class:`meta.core.models.Conv4`; ``forward_tasks`` for the task paths).
        batch: an ``EpisodeBatch`` or a sequence of episodes, ``T`` tasks of equal shapes.
        inner: the training inner loop (second or first order, adapted layers).
        path: ``"loop"``, ``"grouped"`` or ``"hybrid"`` (see the module docstring).
        chunk: tasks computed together by ``"grouped"`` and ``"hybrid"``.
        loop_from: ``"hybrid"`` runs batches of at least this many examples per task task by
            task.
        reducer: the processes sharing the work (:mod:`meta.core.reduction`): each computes its
            share of the parts (one task, or one chunk of ``chunk`` tasks) and all of them add
            the same sum of every part's gradient, in part order (:data:`ALONE`: this process
            computes every part).

    Returns:
        ``loss`` and ``accuracy`` on the query sets after adaptation, ``support_loss_before``
        and ``support_accuracy_before`` at the meta-parameters (NaN when ``inner.steps == 0``),
        means over tasks.
    """
    check_choice("path", path, PATHS)
    chunk, loop_from = check_int("chunk", chunk, minimum=1), check_int("loop_from", loop_from, minimum=1)
    tasks = as_tasks(batch)
    run_part = {"loop": _loop_task, "grouped": _grouped_chunk, "hybrid": _hybrid_chunk, "compiled": _compiled_task}[
        path
    ]
    size = 1 if path in ("loop", "compiled") else chunk
    starts = range(0, len(tasks), size)

    def part(k: int) -> tuple[Tensor, ...]:
        return run_part(model, tasks.slice(starts[k], starts[k] + size), inner, 1.0 / len(tasks), loop_from)

    sizes = [min(size, len(tasks) - start) for start in starts]
    return sum_parts(model, sizes, part, _PART_METRICS, reducer)


# What each path's part function returns, per task of the part.
_PART_METRICS = ("loss", "accuracy", "support_loss_before", "support_accuracy_before")


def _part_metrics(losses: Tensor, accuracies: Tensor, adapted: Adapted) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return losses, accuracies, adapted.support_loss_before, adapted.support_accuracy_before


def _backward_query(logits: Tensor, labels: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    """Backpropagate ``scale * sum_t CE_t``; return the per-task losses and accuracies."""
    losses = task_losses(logits, labels)
    (losses.sum() * scale).backward()
    return losses.detach(), task_accuracies(logits, labels)


def _loop_task(model: nn.Module, part: TaskBatch, inner: InnerLoop, scale: float, loop_from: int):
    """``"loop"``: one task, adapted and backpropagated through ``functional_call``."""
    params = dict(model.named_parameters())
    layers = tuple(model.layers)
    adapted = inner_loop(module_forward(model), params, layers, part.support_x[0], part.support_y[0], inner)
    return _part_metrics(*_backward_query(adapted.query_forward(part.query_x[0]), part.query_y[0], scale), adapted)


def _compiled_task(model: nn.Module, part: TaskBatch, inner: InnerLoop, scale: float, loop_from: int):
    """``"compiled"``: one task's meta-gradient as one compiled program (:mod:`meta.core.compiled`),
    added to ``.grad``."""
    task = (part.support_x[0], part.support_y[0], part.query_x[0], part.query_y[0])
    params = list(model.parameters())
    grads, *metrics = compiled_task_program(model, inner, scale, task)([p.detach() for p in params], task)
    for p, g in zip(params, grads):
        if p.requires_grad:
            p.grad = g if p.grad is None else p.grad.add_(g)
    return tuple(metrics)


def _task_params(model: nn.Module, inner: InnerLoop, tasks: int) -> tuple[Params, set[str]]:
    """The meta-parameters for a task batch: the adapted layers' expanded to ``(tasks, *shape)``
    (so that each task gets its own inner gradient), the frozen ones shared."""
    params = dict(model.named_parameters())
    per_task = set(inner.adapted_params(params, tuple(model.layers)))
    return {k: v.expand(tasks, *v.shape) if k in per_task else v for k, v in params.items()}, per_task


def _grouped_chunk(model: nn.Module, part: TaskBatch, inner: InnerLoop, scale: float, loop_from: int):
    """``"grouped"``: the chunk's tasks side by side, support and query alike."""
    params, _ = _task_params(model, inner, len(part))
    adapted = inner_loop(task_batch_forward(model), params, tuple(model.layers), part.support_x, part.support_y, inner)
    return _part_metrics(*_backward_query(adapted.query_forward(part.query_x), part.query_y, scale), adapted)


def _hybrid_chunk(model: nn.Module, part: TaskBatch, inner: InnerLoop, scale: float, loop_from: int):
    """``"hybrid"``: the inner loop of the chunk's tasks side by side (support batches of at
    least ``loop_from`` examples task by task), then each task's query set alone, its graph
    freed before the next, and one backward through the inner loop.

    Chain rule in two stages: with ``phi_t`` the adapted parameters of task ``t``, the query
    backward of each task gives ``g_t = d L_t / d phi_t`` (and adds the frozen layers' direct
    gradients to ``.grad``); ``backward(phi, g)`` then carries ``g`` through the inner loop to
    the meta-parameters. Memory holds the chunk's inner-loop graph and one task's query graph.
    """
    layers, t = tuple(model.layers), len(part)
    params, per_task = _task_params(model, inner, t)
    forward = task_batch_forward(model, loop_from=loop_from)
    adapted = inner_loop(forward, params, layers, part.support_x, part.support_y, inner)
    phi = {k: adapted.params[k] for k in sorted(per_task)}
    leaves = {k: v.detach().requires_grad_() for k, v in phi.items()}
    single = module_forward(model)
    losses, accuracies = [], []
    for i in range(t):
        task_params = {**params, **{k: v[i] for k, v in leaves.items()}}
        hidden = part.query_x[i]
        if adapted.prefix is not None:
            hidden = single(task_params, hidden, None, adapted.prefix)
        logits = single(task_params, hidden, adapted.start, None)
        loss, accuracy = _backward_query(logits, part.query_y[i], scale)
        losses.append(loss)
        accuracies.append(accuracy)
    pairs = [(phi[k], leaves[k].grad) for k in phi if leaves[k].grad is not None and phi[k].requires_grad]
    if pairs:
        # d/dtheta sum_k <phi_k, g_k> = J^T g, bit for bit what backward(phi, g) gives. A scalar's
        # backward skips torch.autograd.backward's check of explicit output gradients, which
        # imports sympy (torch.fx's symbolic shapes, costly in memory and time) at its first
        # call. (A torch optimizer loads the same modules, so the trainer pays them once
        # either way; the benchmark's memory figures and optimizer-free callers do not.)
        sum((v * g).sum() for v, g in pairs).backward()
    return _part_metrics(torch.stack(losses), torch.stack(accuracies), adapted)
