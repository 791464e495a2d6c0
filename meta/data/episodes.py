"""N-way K-shot episodes with Q queries per class, each a pure function of (seed, task index).

Task ``i`` of a sampler with seed ``s`` is drawn from its own generator,
``numpy.random.Generator(PCG64(SeedSequence(s, spawn_key=(i,))))`` (the same stream as
``SeedSequence(s).spawn(i + 1)[i]``), so it does not depend on the tasks drawn before it, on the
meta-batch size or on the machine; the state needed to resume a sampler is just the index of the
next task (:meth:`EpisodeSampler.state_dict`). With that generator:

1. ``u = rng.random(n_classes)``; the task's classes are the ``N`` indices with the smallest
   ``u``, in increasing order of ``u``; class ``classes[j]`` gets label ``j``. This is a uniform
   draw of ``N`` distinct classes in a uniformly random order, i.e. a random label assignment.
2. ``v = rng.random((N, n_per_class))``; for class ``j`` the examples are the ``K + Q``
   indices with the smallest ``v[j]`` in increasing order of ``v[j]``: the first ``K`` are its
   support set, the other ``Q`` its query set (disjoint by construction).

Only ``rng.random`` (53-bit doubles from PCG64) and sorting are used, not ``Generator.choice`` or
``permutation``, whose algorithms numpy does not promise to keep.

Tensors are laid out class-major: support row ``j * K + k`` is shot ``k`` of label ``j``, query
row ``j * Q + q`` is query ``q`` of label ``j``. Images are ``uint8 / 255`` as float32 in
``[0, 1]``, optionally normalised per channel, ``(x - mean[c]) / std[c]``.

Imports: :mod:`meta.data.base` and :mod:`meta.validation` only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch

from meta.data.base import FewShotSplit
from meta.validation import check_int

FIXED_TASKS_DEFAULT = 600


@dataclass(frozen=True)
class TaskIndices:
    """Which images make up a run of tasks (small integer arrays; cheap to store and compare).

    Attributes:
        tasks: ``(T,)`` int64 task indices.
        classes: ``(T, N)`` int64 class indices into the split; column ``j`` has label ``j``.
        examples: ``(T, N, K + Q)`` int64 example indices within each class; ``[..., :K]``
            support, ``[..., K:]`` query.
    """

    tasks: np.ndarray
    classes: np.ndarray
    examples: np.ndarray


@dataclass(frozen=True)
class Episode:
    """One N-way K-shot task (CPU tensors unless moved with :meth:`to`).

    Attributes:
        support_x: float32 ``(N*K, C, H, W)``.
        support_y: int64 ``(N*K,)``, labels ``0..N-1``, class-major.
        query_x: float32 ``(N*Q, C, H, W)``.
        query_y: int64 ``(N*Q,)``.
        classes: int64 ``(N,)``: the split's class index of each label.
        index: the task's index in its sampler's stream.
    """

    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor
    classes: torch.Tensor
    index: int

    @property
    def ways(self) -> int:
        return self.classes.shape[0]

    @property
    def shots(self) -> int:
        return self.support_y.shape[0] // self.ways

    @property
    def queries(self) -> int:
        return self.query_y.shape[0] // self.ways

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Episode:
        """The same episode with every tensor on ``device``."""
        return Episode(*(_move(getattr(self, f.name), device, non_blocking) for f in fields(self)))


@dataclass(frozen=True)
class EpisodeBatch:
    """A meta-batch of ``T`` tasks of equal shape, stacked.

    Attributes:
        support_x: float32 ``(T, N*K, C, H, W)``; ``support_y`` int64 ``(T, N*K)``.
        query_x: float32 ``(T, N*Q, C, H, W)``; ``query_y`` int64 ``(T, N*Q)``.
        classes: int64 ``(T, N)``; ``indices``: int64 ``(T,)`` task indices.
    """

    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor
    classes: torch.Tensor
    indices: torch.Tensor

    def __len__(self) -> int:
        return self.indices.shape[0]

    def __getitem__(self, t: int) -> Episode:
        """Task ``t`` of the batch (views, no copy)."""
        return Episode(
            self.support_x[t],
            self.support_y[t],
            self.query_x[t],
            self.query_y[t],
            self.classes[t],
            int(self.indices[t]),
        )

    def __iter__(self) -> Iterator[Episode]:
        return (self[t] for t in range(len(self)))

    def to(self, device: torch.device | str, non_blocking: bool = False) -> EpisodeBatch:
        """The same batch with every tensor on ``device``."""
        return EpisodeBatch(*(_move(getattr(self, f.name), device, non_blocking) for f in fields(self)))


def _move(value: Any, device: torch.device | str, non_blocking: bool) -> Any:
    return value.to(device, non_blocking=non_blocking) if isinstance(value, torch.Tensor) else value


def task_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of task ``index``: ``Generator(PCG64(SeedSequence(seed, spawn_key=(index,))))``."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(index,))))


def _smallest(u: np.ndarray, count: int) -> np.ndarray:
    """Indices of the ``count`` smallest entries along the last axis, in increasing order of ``u``."""
    if count < u.shape[-1]:
        part = np.argpartition(u, count - 1, axis=-1)[..., :count]
    else:
        part = np.broadcast_to(np.arange(u.shape[-1]), u.shape)
    order = np.argsort(np.take_along_axis(u, part, axis=-1), axis=-1, kind="stable")
    return np.take_along_axis(part, order, axis=-1)


def draw_task(
    seed: int, index: int, n_classes: int, n_per_class: int, ways: int, examples: int
) -> tuple[np.ndarray, np.ndarray]:
    """Classes ``(ways,)`` and example indices ``(ways, examples)`` of task ``index`` (see the
    module docstring for the exact procedure)."""
    rng = task_rng(seed, index)
    classes = _smallest(rng.random(n_classes), ways)
    chosen = _smallest(rng.random((ways, n_per_class)), examples)
    return classes, chosen


class EpisodeSampler:
    """N-way K-shot Q-query tasks from one :class:`FewShotSplit`, task ``i`` a pure function of
    ``(seed, i)`` (see the module docstring). :meth:`sample` serves consecutive tasks and
    advances :attr:`next_index`; that index is the sampler's whole state (:meth:`state_dict`).

    Args:
        split: the classes to draw from.
        ways, shots, queries: ``N``, ``K``, ``Q`` (all >= 1; ``N <= n_classes``,
            ``K + Q <= n_per_class``).
        seed: any non-negative int.
        normalize: ``None`` (images in [0, 1]), or ``(mean, std)`` with one value per channel.
        start: index of the first task :meth:`sample` serves.
    """

    def __init__(
        self,
        split: FewShotSplit,
        ways: int,
        shots: int,
        queries: int,
        *,
        seed: int = 0,
        normalize: tuple[Sequence[float], Sequence[float]] | None = None,
        start: int = 0,
    ) -> None:
        self.ways, self.shots, self.queries = (
            check_int(name, value, minimum=1)
            for name, value in (("ways", ways), ("shots", shots), ("queries", queries))
        )
        if self.ways > split.n_classes:
            raise ValueError(f"ways={self.ways} is more than the {split.n_classes} classes of {split.name}")
        if self.shots + self.queries > split.n_per_class:
            raise ValueError(
                f"shots + queries = {self.shots + self.queries} is more than the {split.n_per_class}"
                f" examples per class of {split.name}"
            )
        self.split, self.seed = split, check_int("seed", seed, minimum=0)
        self._normalize = _normalization(normalize, split.image_shape[0])
        self.next_index = check_int("start", start, minimum=0)

    def indices(self, start: int, count: int) -> TaskIndices:
        """Which classes and examples tasks ``start .. start+count-1`` use."""
        start, count = check_int("start", start, minimum=0), check_int("count", count, minimum=1)
        drawn = [
            draw_task(self.seed, i, self.split.n_classes, self.split.n_per_class, self.ways, self.shots + self.queries)
            for i in range(start, start + count)
        ]
        return TaskIndices(
            tasks=np.arange(start, start + count, dtype=np.int64),
            classes=np.stack([c for c, _ in drawn]).astype(np.int64),
            examples=np.stack([e for _, e in drawn]).astype(np.int64),
        )

    def gather(self, indices: TaskIndices) -> EpisodeBatch:
        """The tensors of the tasks in ``indices``: for the support and the query set, one
        fancy-indexing gather of the uint8 images ``(T, N, K or Q, C, H, W)`` and one conversion
        to float32 with numpy (why not torch's: see ``benchmarks/README.md``)."""
        t, n, k, q = len(indices.tasks), self.ways, self.shots, self.queries
        rows = indices.classes[:, :, None]
        support = self._to_float(self.split.images[rows, indices.examples[:, :, :k]])
        query = self._to_float(self.split.images[rows, indices.examples[:, :, k:]])
        labels = torch.arange(n, dtype=torch.int64)
        return EpisodeBatch(
            support_x=support.reshape(t, n * k, *self.split.image_shape),
            support_y=labels.repeat_interleave(k).expand(t, -1).contiguous(),
            query_x=query.reshape(t, n * q, *self.split.image_shape),
            query_y=labels.repeat_interleave(q).expand(t, -1).contiguous(),
            classes=torch.from_numpy(indices.classes),
            indices=torch.from_numpy(indices.tasks),
        )

    def _to_float(self, images: np.ndarray) -> torch.Tensor:
        """uint8 ``(..., C, H, W)`` -> float32 ``x / 255``, then ``(x - mean) / std`` if asked."""
        out = np.divide(images, np.float32(255.0), dtype=np.float32)
        if self._normalize is not None:
            mean, std = self._normalize
            out -= mean
            out /= std
        return torch.from_numpy(out)

    def batch(self, start: int, count: int) -> EpisodeBatch:
        """Tasks ``start .. start+count-1`` as one :class:`EpisodeBatch` (does not move
        :attr:`next_index`)."""
        return self.gather(self.indices(start, count))

    def episode(self, index: int) -> Episode:
        """Task ``index`` alone (identical to that task inside any batch)."""
        return self.batch(index, 1)[0]

    def sample(self, meta_batch_size: int) -> EpisodeBatch:
        """The next ``meta_batch_size`` tasks; advances :attr:`next_index` by that many."""
        batch = self.batch(self.next_index, meta_batch_size)
        self.next_index += len(batch)
        return batch

    def state_dict(self) -> dict[str, int]:
        """``{"next_index", "seed"}``: everything needed to resume the stream."""
        return {"next_index": self.next_index, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume from :meth:`state_dict`; the seed must match this sampler's."""
        if int(state["seed"]) != self.seed:
            raise ValueError(f"state is for seed {state['seed']}, this sampler has seed {self.seed}")
        self.next_index = check_int("next_index", state["next_index"], minimum=0)


def _normalization(
    normalize: tuple[Sequence[float], Sequence[float]] | None, channels: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """``(mean, std)`` as float32 ``(C, 1, 1)`` arrays, checked; ``None`` for no normalisation."""
    if normalize is None:
        return None
    mean, std = (np.asarray(v, dtype=np.float32).reshape(-1) for v in normalize)
    if mean.size != channels or std.size != channels:
        raise ValueError(f"normalize needs {channels} means and stds, got {mean.size} and {std.size}")
    if not (np.all(std > 0) and np.all(np.isfinite(mean)) and np.all(np.isfinite(std))):
        raise ValueError("normalize: std must be positive and finite, mean finite")
    return mean.reshape(channels, 1, 1), std.reshape(channels, 1, 1)


def fixed_task_seed(split_name: str) -> int:
    """The documented seed of a split's fixed evaluation tasks: the first 8 bytes (little-endian)
    of SHA-256 of ``"fixed-tasks:" + split_name``, e.g. ``split_name = "omniglot/maml/test"``."""
    return int.from_bytes(hashlib.sha256(f"fixed-tasks:{split_name}".encode()).digest()[:8], "little")


class FixedTasks(Sequence[Episode]):
    """The same ``n_tasks`` evaluation tasks for every algorithm: tasks ``0 .. n_tasks-1`` of an
    :class:`EpisodeSampler` with a fixed seed. Tensors are made on access, so 600 large tasks
    cost no memory until used."""

    def __init__(self, sampler: EpisodeSampler, n_tasks: int) -> None:
        self.sampler, self.n_tasks = sampler, check_int("n_tasks", n_tasks, minimum=1)

    def __len__(self) -> int:
        return self.n_tasks

    def __getitem__(self, index: int) -> Episode:  # type: ignore[override]
        if not -self.n_tasks <= index < self.n_tasks:
            raise IndexError(f"task {index} out of range for {self.n_tasks} fixed tasks")
        return self.sampler.episode(index % self.n_tasks)

    def batches(self, size: int) -> Iterator[EpisodeBatch]:
        """All tasks in order, ``size`` at a time (the last batch may be smaller)."""
        size = check_int("size", size, minimum=1)
        for start in range(0, self.n_tasks, size):
            yield self.sampler.batch(start, min(size, self.n_tasks - start))

    def indices(self) -> TaskIndices:
        """Classes and examples of every task (what makes two task sets the same)."""
        return self.sampler.indices(0, self.n_tasks)


def fixed_tasks(
    split: FewShotSplit,
    ways: int,
    shots: int,
    queries: int,
    n_tasks: int = FIXED_TASKS_DEFAULT,
    seed: int | None = None,
    *,
    normalize: tuple[Sequence[float], Sequence[float]] | None = None,
) -> FixedTasks:
    """The fixed evaluation tasks of ``split``; ``seed`` defaults to
    :func:`fixed_task_seed` of ``split.name``, so every algorithm gets the same tasks."""
    seed = fixed_task_seed(split.name) if seed is None else seed
    return FixedTasks(EpisodeSampler(split, ways, shots, queries, seed=seed, normalize=normalize), n_tasks)
