"""One comparison across the ranks of ``torchrun``: which inputs each rank runs, and what the
ranks exchange. Nothing here imports ``torch.distributed`` until a function that needs it runs.

**Batches, not rows, are dealt out.** The inputs are cut into forward batches exactly as one
process would cut them (``batch_size`` rows each, the last one shorter), and batch ``i`` goes to
rank ``i mod world``. Every batch therefore holds the same inputs as in one process, so even a
model whose batch norm uses the batch's statistics computes the same activations; a rank only
needs at least one batch. The ranks' accumulators are then all-reduced in rank order
(:meth:`repsim.measures.MomentAccumulator.all_reduce`), so the result is the one-process result
up to rounding (1e-10), the same on every rank, whatever the timing.

:func:`torchrun_group` starts the process group from ``torchrun``'s environment (``RANK``,
``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``, ``LOCAL_RANK``): gloo on CPUs, NCCL with
one CUDA device per rank (``cuda:LOCAL_RANK``).

Imports: nothing of ``repsim`` (torch; ``torch.distributed`` inside the functions).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch

__all__ = ["first_reasons", "launched_ranks", "rank_and_world", "shard_rows", "torchrun_group"]


def launched_ranks() -> int:
    """How many ranks ``torchrun`` started (``WORLD_SIZE``; 1 outside ``torchrun``)."""
    value = os.environ.get("WORLD_SIZE", "1")
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"the environment variable WORLD_SIZE must be a positive integer; got {value!r}")
    return int(value)


def rank_and_world() -> tuple[int, int]:
    """``(rank, world size)`` of the initialised default process group."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise ValueError(
            "distributed=True needs an initialised torch.distributed process group: call"
            " torch.distributed.init_process_group first (the command line does, under torchrun)"
        )
    return dist.get_rank(), dist.get_world_size()


def shard_rows(n: int, batch_size: int, rank: int, world: int) -> torch.Tensor:
    """The rows of the batches of rank ``rank``: batch ``i`` (rows ``i*batch_size`` .. up to
    ``(i+1)*batch_size``) goes to rank ``i mod world``. ``ValueError`` when there are fewer
    batches than ranks.

    Examples:
        >>> shard_rows(10, 3, 0, 2).tolist(), shard_rows(10, 3, 1, 2).tolist()
        ([0, 1, 2, 6, 7, 8], [3, 4, 5, 9])
    """
    batches = -(-n // batch_size)
    if batches < world:
        raise ValueError(
            f"{n} inputs in forward batches of {batch_size} make {batches} batch(es) for {world} ranks; every rank"
            f" needs one: give a batch size of at most {-(-n // world)} (batch_size=, --batch-size) or start"
            " fewer ranks. (Models whose batch norm uses the batch's statistics get one batch of all inputs"
            " unless a batch size is given.)"
        )
    mine = [torch.arange(i * batch_size, min(n, (i + 1) * batch_size)) for i in range(rank, batches, world)]
    return torch.cat(mine)


def first_reasons(reasons: Sequence[str]) -> list[str]:
    """For each position, the first non-empty reason over the ranks, in rank order (a
    collective: every rank calls it with a list of the same length)."""
    import torch.distributed as dist

    gathered: list[list[str] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, list(reasons))
    return [next((r for r in column if r), "") for column in zip(*gathered)]  # type: ignore[misc]


@contextmanager
def torchrun_group(device: torch.device) -> Iterator[torch.device]:
    """The default process group of ``torchrun``'s ranks, destroyed on exit; yields this rank's
    device (``cuda`` becomes ``cuda:LOCAL_RANK``)."""
    import torch.distributed as dist

    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield device
    finally:
        dist.destroy_process_group()
