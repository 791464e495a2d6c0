"""A training step's gradient as an ordered sum of parts, computed by one process or shared by
the ranks of ``torchrun`` with the same bits.

**Parts.** A regime cuts its step into parts that depend only on the batch and the execution
path, never on how many processes run it: one task (paths ``loop`` and ``compiled``; multitask
and NIL training), a chunk of tasks (``grouped``, ``hybrid``), or the whole minibatch
(multiclass, whose batch norm needs every image of it in one pass). Part ``k`` computes its
gradient ``g_k`` alone (every ``.grad`` empty before it) and the step adds to ``.grad``::

    G = (((g_0 + g_1) + g_2) + ... + g_{K-1})        # in part order, elementwise

**Ranks.** With ``W`` ranks the parts are dealt out in contiguous blocks (:func:`share`: rank
``r`` gets parts ``r*q + min(r, m)`` onwards, ``q, m = divmod(K, W)``, so the first ``m`` ranks
hold one part more). Each rank computes its parts, every rank all-gathers every part's gradient
(:class:`Reducer`, rows in rank order, which is part order), and every rank sums them as above.
``G``, and so the Adam step, is therefore bit for bit that of one process, for any ``W`` and any
split, even (``K`` divisible by ``W``) or not. A rank with no part (``W > K``) only waits. The
per-task metrics (losses, accuracies) travel the same way, in float64 (exact for float32
values), so the metrics agree too. One process is ``W = 1`` with :data:`ALONE`, through the same
code: the sum order is the one thing that makes the results equal, so there is one.

A parameter that no part gives a gradient (NIL training's unused head) keeps ``.grad = None``,
so Adam leaves it alone, as after ``loss.backward()``.

Cost: the gathered rows hold ``K`` gradients, ``K * P`` numbers for ``P`` parameters (conv4 on
Omniglot: ``P`` = 112k, 0.45 MB a part in float32).

Imports: nothing of :mod:`meta` (torch only).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import torch
from torch import Tensor, nn

__all__ = ["ALONE", "Alone", "Reducer", "gather_in_order", "share", "sum_parts"]


class Reducer(Protocol):
    """What the parts need of a group of processes: this process's ``rank`` among ``world``, and
    an all-gather. :class:`meta.run.distributed.Ranks` is the ``torch.distributed`` one."""

    rank: int
    world: int

    def all_gather(self, local: Tensor, counts: Sequence[int]) -> Tensor:
        """Every rank's 1-D ``local`` (``counts[r]`` entries on rank ``r``) concatenated in rank
        order, on every rank, on ``local``'s device and in its dtype."""
        ...


class Alone:
    """One process: rank 0 of 1; the all-gather returns what it is given."""

    rank = 0
    world = 1

    def all_gather(self, local: Tensor, counts: Sequence[int]) -> Tensor:
        return local


#: The reducer of a single process.
ALONE = Alone()


def share(n: int, rank: int, world: int) -> range:
    """Items ``0 .. n-1`` dealt out to ``world`` ranks in contiguous blocks, the first
    ``n mod world`` ranks one more: rank ``rank``'s block.

    Examples:
        >>> [list(share(5, r, 2)) for r in range(2)]
        [[0, 1, 2], [3, 4]]
        >>> [len(share(2, r, 3)) for r in range(3)]
        [1, 1, 0]
    """
    size, extra = divmod(n, world)
    start = rank * size + min(rank, extra)
    return range(start, start + size + (rank < extra))


def gather_in_order(reducer: Reducer, local: Tensor, n: int, width: int = 1) -> Tensor:
    """Rows ``0 .. n-1`` of ``width`` numbers each, rank ``r`` holding ``share(n, r, world)``
    (``local``, flat): every row, in order, on every rank."""
    counts = [len(share(n, r, reducer.world)) * width for r in range(reducer.world)]
    return reducer.all_gather(local.reshape(-1), counts)


def sum_parts(
    model: nn.Module,
    sizes: Sequence[int],
    run_part: Callable[[int], Sequence[Tensor]],
    names: Sequence[str],
    reducer: Reducer = ALONE,
) -> dict[str, float]:
    """Add ``G`` (the module docstring) to the ``.grad`` of ``model``'s trainable parameters.

    Args:
        model: the model whose parameters ``run_part`` backpropagates into.
        sizes: tasks in each part, in order (``K = len(sizes)`` parts).
        run_part: ``run_part(k)`` backpropagates part ``k``'s loss into ``.grad`` and returns its
            per-task metrics, one tensor of ``sizes[k]`` values per name of ``names``.
        names: the metrics' names.
        reducer: the ranks sharing the parts (:data:`ALONE`: this process computes them all).

    Returns:
        ``{name: mean over every task}``, each metric's per-task values gathered in task order
        and averaged in float64.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params or not sizes:
        raise ValueError("sum_parts needs a model with trainable parameters and at least one part")
    device, width = params[0].device, sum(p.numel() for p in params)
    before = [p.grad for p in params]
    rows = [torch.zeros(0, dtype=params[0].dtype, device=device)]
    info = [torch.zeros(0, dtype=torch.float64, device=device)]
    for k in share(len(sizes), reducer.rank, reducer.world):
        for p in params:
            p.grad = None
        metrics = run_part(k)
        present = torch.tensor([p.grad is not None for p in params], dtype=torch.float64, device=device)
        rows.append(torch.cat([_flat_grad(p) for p in params]))
        info.append(torch.cat([present, *(m.detach().double().reshape(-1) for m in metrics)]))
    for p, grad in zip(params, before):
        p.grad = grad
    grads = gather_in_order(reducer, torch.cat(rows), len(sizes), width).view(len(sizes), width)
    per_rank = [share(len(sizes), r, reducer.world) for r in range(reducer.world)]
    info_counts = [sum(len(params) + len(names) * sizes[k] for k in block) for block in per_rank]
    present, values = _split_info(reducer.all_gather(torch.cat(info), info_counts), sizes, len(params), len(names))
    _add_in_order(params, grads, present)
    return {name: float(v.mean()) for name, v in zip(names, values)}


def _flat_grad(p: Tensor) -> Tensor:
    """``p.grad`` flattened in its logical order (zeros where there is none)."""
    return torch.zeros(p.numel(), dtype=p.dtype, device=p.device) if p.grad is None else p.grad.reshape(-1)


def _split_info(info: Tensor, sizes: Sequence[int], n_params: int, n_names: int) -> tuple[Tensor, list[Tensor]]:
    """The gathered ``[presence (n_params), metric_0 (size_k), ...]`` of every part: presence
    ``(K, n_params)`` bool, and each metric over every task."""
    present, per_metric, at = [], [[] for _ in range(n_names)], 0
    for size in sizes:
        present.append(info[at : at + n_params] > 0)
        at += n_params
        for values in per_metric:
            values.append(info[at : at + size])
            at += size
    return torch.stack(present), [torch.cat(v) for v in per_metric]


def _add_in_order(params: Sequence[Tensor], grads: Tensor, present: Tensor) -> None:
    """``.grad += ((g_0 + g_1) + ...)``, the rows of ``grads`` summed in order; a parameter that
    no part gave a gradient is left as it is."""
    total = grads[0].clone()
    for row in grads[1:]:
        total.add_(row)
    offset = 0
    for p, has in zip(params, present.any(dim=0).tolist()):
        piece = total[offset : offset + p.numel()].view(p.shape)
        offset += p.numel()
        if not has:
            continue
        if p.grad is None:
            p.grad = torch.empty_like(p).copy_(piece)
        else:
            p.grad.add_(piece)
