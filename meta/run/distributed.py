"""The ranks of ``torchrun``: one training, evaluation or snapshot shared by several processes
(``torchrun --nproc-per-node W -m meta train|evaluate|snapshot ...``; ``--nnodes`` across
machines).

What the ranks share, and how the result stays that of one process:

- **training**: each meta-batch's parts (tasks or chunks of tasks) are dealt out in contiguous
  blocks; every rank all-gathers every part's gradient and sums them in part order, so every rank
  takes the same Adam step, bit for bit the one of one process, for any number of ranks and any
  split (:mod:`meta.core.reduction`). The fixed validation tasks are shared the same way.
- **evaluation and snapshots**: the fixed test tasks are dealt out in contiguous blocks and the
  per-task results gathered in task order.
- **files**: rank 0 alone reads and writes the run folder (it alone holds the folder's lock,
  :class:`meta.run.lock.FolderLock`); it reads the checkpoint and sends it to the other ranks, so
  every rank resumes from the same one. Snapshot task folders are written by the rank that
  computed them: there the snapshot folder must be on a file system every rank reaches.

Backends: gloo on CPUs, NCCL with one CUDA device per rank (``cuda:LOCAL_RANK``), chosen from the
device (:func:`repsim.distributed.torchrun_group`). A rank that dies ends the job (torchrun's
default); rerunning the command (or ``--max-restarts``) resumes from the last checkpoint.

:class:`Ranks` counts the seconds spent in collectives (waiting for the slowest rank included):
the training metrics' ``comm_seconds``. Nothing here imports ``torch.distributed`` until a
function that needs it runs; one process uses :data:`ONE`.

Imports: :mod:`meta.core.reduction` and :mod:`repsim.distributed`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import torch
from torch import Tensor

from meta.core.reduction import Alone
from repsim.distributed import launched_ranks, torchrun_group

__all__ = ["ONE", "Ranks", "Single", "first_rank", "one_process", "ranks_for", "torchrun_ranks"]

T = TypeVar("T")


class Single(Alone):
    """One process (rank 0 of 1): the collectives of :class:`Ranks` that return what they are
    given, and no communication time."""

    def gather_objects(self, items: Sequence[Any]) -> list[Any]:
        return list(items)

    def from_first(self, compute: Callable[[], T]) -> T:
        return compute()

    def check_same(self, value: Mapping[str, Any], what: str) -> None:
        """Nothing to compare in one process."""

    def barrier(self) -> None:
        """Nothing to wait for in one process."""

    def take_seconds(self) -> float:
        return 0.0


#: One process.
ONE = Single()


class Ranks(Single):
    """The ranks of the initialised default ``torch.distributed`` process group (every rank
    calls each method, in the same order)."""

    def __init__(self) -> None:
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise ValueError(
                "distributed=True needs an initialised torch.distributed process group: start the command"
                " under torchrun (the command line then starts the group)"
            )
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        nccl = dist.get_backend() == "nccl"
        self.device = torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")
        self.seconds = 0.0

    @contextmanager
    def _timed(self) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.seconds += time.perf_counter() - started

    def all_gather(self, local: Tensor, counts: Sequence[int]) -> Tensor:
        """Every rank's 1-D ``local`` (``counts[r]`` values on rank ``r``), concatenated in rank
        order: padded to the longest, gathered, trimmed (uneven counts are exact)."""
        import torch.distributed as dist

        if local.numel() != counts[self.rank]:
            raise ValueError(f"rank {self.rank} holds {local.numel()} values, expected {counts[self.rank]}")
        longest = max(counts)
        with self._timed():
            padded = torch.zeros(longest, dtype=local.dtype, device=self.device)
            padded[: local.numel()] = local.to(self.device)
            pieces = [torch.empty_like(padded) for _ in range(self.world)]
            dist.all_gather(pieces, padded)
            out = torch.cat([piece[:count] for piece, count in zip(pieces, counts)]).to(local.device)
        return out

    def gather_objects(self, items: Sequence[Any]) -> list[Any]:
        """Every rank's ``items`` (picklable), concatenated in rank order, on every rank."""
        import torch.distributed as dist

        gathered: list[Any] = [None] * self.world
        with self._timed():
            dist.all_gather_object(gathered, list(items))
        return [item for block in gathered for item in block]

    def from_first(self, compute: Callable[[], T]) -> T:
        """``compute()`` run on rank 0 and sent to every rank; its error (a picklable exception)
        is raised on every rank."""
        import torch.distributed as dist

        box: list[Any] = [None]
        if self.rank == 0:
            try:
                box[0] = (compute(), None)
            except Exception as error:  # sent to every rank, then raised everywhere
                box[0] = (None, error)
        with self._timed():
            dist.broadcast_object_list(box, src=0)
        value, error = box[0]
        if error is not None:
            raise error
        return value

    def check_same(self, value: Mapping[str, Any], what: str) -> None:
        """``ValueError`` on every rank unless every rank holds the same ``value``, naming the
        keys that differ from rank 0's."""
        values = self.gather_objects([dict(value)])
        for rank, other in enumerate(values):
            differences = sorted(k for k in set(values[0]) | set(other) if values[0].get(k) != other.get(k))
            if differences:
                shown = "; ".join(f"{k}: {values[0].get(k)!r} vs {other.get(k)!r}" for k in differences[:6])
                raise ValueError(
                    f"rank {rank} was started with other {what} than rank 0 ({shown}): start every rank with the"
                    " same command, and keep the run folder on a file system every machine reaches (a rerun"
                    " reads its settings from config.json)"
                )

    def barrier(self) -> None:
        import torch.distributed as dist

        with self._timed():
            dist.barrier()

    def take_seconds(self) -> float:
        """Seconds spent in collectives since the last call."""
        seconds, self.seconds = self.seconds, 0.0
        return seconds


def ranks_for(distributed: bool) -> Single:
    """:class:`Ranks` of the initialised default group with ``distributed``, else :data:`ONE`."""
    return Ranks() if distributed else ONE


def first_rank() -> bool:
    """Whether this process is rank 0 (``RANK`` of torchrun; true outside torchrun): the one that
    prints."""
    return launched_ranks() == 1 or os.environ.get("RANK", "0") == "0"


@contextmanager
def torchrun_ranks(device: str | torch.device) -> Iterator[bool]:
    """Under ``torchrun`` with more than one rank: the default process group for ``device``
    (gloo on CPUs; NCCL with ``cuda:LOCAL_RANK``), destroyed on exit; yields ``True``. Otherwise
    starts nothing and yields ``False``."""
    if launched_ranks() == 1:
        yield False
        return
    with torchrun_group(torch.device(device)):
        yield True


def one_process(what: str) -> None:
    """``ValueError`` under ``torchrun`` with more than one rank: ``what`` runs in one process."""
    if launched_ranks() > 1:
        raise ValueError(f"{what} runs in one process: start it without torchrun (or with --nproc-per-node 1)")
