"""Test episodes fixed by someone else, read from a file: ``meta evaluate RUN --episodes FILE``.

The file is a CSV with the header ``task,role,label,path`` and one row per image:

- ``task``: any text naming the task (the tasks keep the order of their first row);
- ``role``: ``support`` or ``query``;
- ``label``: the image's class within its task, any text; a task's labels are mapped to
  ``0 .. N-1`` in sorted order (numerically when every label of the task is an integer, else as
  text), and the mapping is kept (:attr:`EpisodeFile.label_maps`, and in the evaluation JSON);
- ``path``: the image file, relative to the CSV's folder (or absolute); PNG or JPEG of any size.

Images are decoded and resized as the run's data set decodes its own (:func:`decode_for`):
Omniglot's rule for ``omniglot`` (ink mask, NEAREST sampling), LANCZOS to RGB for
``miniimagenet``, and for the generated sets (``glyphs``, ``synthetic``) greyscale with dark ink
made high (``255 - v``) and a box filter (the average the glyphs are drawn with). Within a task,
rows are ordered class-major (label, then file order), as sampled tasks are.

Every task needs a support example of each class it queries, and at least one query; a missing
image, an unknown role, a task with no support set, a query label without support, or a bad
header raises :class:`EpisodeFileError` naming the row and the problem.

Imports: :mod:`meta.data` only.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from meta.data.cache import DatasetError
from meta.data.episodes import Episode
from meta.data.miniimagenet import decode_image as decode_rgb
from meta.data.miniimagenet import read_resized
from meta.data.omniglot import decode_image as decode_ink

__all__ = ["COLUMNS", "ROLES", "EpisodeFile", "EpisodeFileError", "decode_for", "read_episode_file"]

COLUMNS = ("task", "role", "label", "path")
ROLES = ("support", "query")


class EpisodeFileError(ValueError):
    """An episode file that cannot be read as episodes (the message names the row and why)."""


@dataclass(frozen=True)
class _Row:
    line: int
    task: str
    role: str
    label: str
    path: Path


@dataclass(frozen=True)
class EpisodeFile:
    """The tasks of an episode file, as :class:`meta.data.episodes.Episode` objects.

    Attributes:
        path: the CSV file.
        episodes: one per task, in file order (``index`` = the task's position).
        task_names: the ``task`` column's value of each episode.
        label_maps: per episode, ``{label in the file: label index}``.
        sha256: digest of the CSV and of every image file's bytes (equal digests = the same tasks).
    """

    path: Path
    episodes: tuple[Episode, ...]
    task_names: tuple[str, ...]
    label_maps: tuple[dict[str, int], ...]
    sha256: str

    def __len__(self) -> int:
        return len(self.episodes)

    def __getitem__(self, index: int) -> Episode:
        return self.episodes[index]

    def identity(self) -> dict[str, Any]:
        """The task set's identity for an evaluation's ``task_set``: the file, its digest, the
        task count and names, and each task's label mapping."""
        return {
            "file": str(self.path),
            "sha256": self.sha256,
            "count": len(self),
            "tasks": list(self.task_names),
            "labels": [dict(m) for m in self.label_maps],
        }

    def uniform(self, attribute: str) -> int | None:
        """``ways``, ``shots`` or ``queries`` when every task has the same value, else ``None``."""
        values = {getattr(e, attribute) for e in self.episodes}
        return values.pop() if len(values) == 1 else None


def decode_for(dataset: str) -> Callable[[Path, int], np.ndarray]:
    """The decoder of images for a run of ``dataset``: ``decoder(path, size) -> uint8 (C, S, S)``
    (see the module docstring)."""
    if dataset == "omniglot":
        return decode_ink
    if dataset == "miniimagenet":
        return decode_rgb
    return _decode_generated


def _decode_generated(path: Path, image_size: int) -> np.ndarray:
    """Greyscale, dark ink made high (``255 - v``), box-filtered to ``S x S``: uint8 ``(1, S, S)``."""
    return (255 - read_resized(path, "L", image_size, Image.Resampling.BOX))[None]


def read_episode_file(path: str | Path, *, dataset: str, image_size: int, channels: int) -> EpisodeFile:
    """Read the episodes of ``path`` (module docstring) for a run of ``dataset`` whose images are
    ``channels x image_size x image_size``."""
    path = Path(path)
    rows = _read_rows(path)
    decoder = decode_for(dataset)
    digest = hashlib.sha256(path.read_bytes())
    episodes, names, maps = [], [], []
    for index, (task, task_rows) in enumerate(_group_by_task(rows).items()):
        mapping = _label_map(task, task_rows)
        images = {row.line: _image(row, decoder, image_size, channels, digest) for row in task_rows}
        episodes.append(_episode(index, task_rows, mapping, images))
        names.append(task)
        maps.append(mapping)
    return EpisodeFile(path, tuple(episodes), tuple(names), tuple(maps), digest.hexdigest())


def _read_rows(path: Path) -> list[_Row]:
    """The CSV's rows, checked for the header, the roles and the images' existence."""
    if not path.is_file():
        raise EpisodeFileError(f"episode file {str(path)!r} does not exist")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if tuple(reader.fieldnames or ()) != COLUMNS:
            raise EpisodeFileError(
                f"{path}: the header must be {','.join(COLUMNS)}; got {','.join(reader.fieldnames or ()) or 'none'}"
            )
        rows = [_row(path, line, values) for line, values in enumerate(reader, start=2)]
    if not rows:
        raise EpisodeFileError(f"{path}: no rows after the header")
    return rows


def _row(path: Path, line: int, values: dict[str, str | None]) -> _Row:
    task, role, label, image = (str(values.get(c) or "").strip() for c in COLUMNS)
    where = f"{path}, line {line}"
    if role not in ROLES:
        raise EpisodeFileError(f"{where}: unknown role {role!r}; a role is support or query")
    if not task or not label or not image:
        raise EpisodeFileError(f"{where}: task, label and path must all be given")
    resolved = Path(image) if Path(image).is_absolute() else path.parent / image
    if not resolved.is_file():
        raise EpisodeFileError(f"{where}: image {image!r} not found (looked for {str(resolved)!r})")
    return _Row(line, task, role, label, resolved)


def _group_by_task(rows: Sequence[_Row]) -> dict[str, list[_Row]]:
    """Rows by task, tasks in the order of their first row; each task checked for a support set,
    a query set and support examples of every queried label."""
    tasks: dict[str, list[_Row]] = {}
    for row in rows:
        tasks.setdefault(row.task, []).append(row)
    for task, task_rows in tasks.items():
        support = {r.label for r in task_rows if r.role == "support"}
        queried = {r.label for r in task_rows if r.role == "query"}
        if not support:
            raise EpisodeFileError(f"task {task!r} has no support examples")
        if not queried:
            raise EpisodeFileError(f"task {task!r} has no query examples")
        if queried - support:
            raise EpisodeFileError(
                f"task {task!r} queries labels {sorted(queried - support)} that have no support example"
            )
    return tasks


def _label_map(task: str, rows: Sequence[_Row]) -> dict[str, int]:
    """``{label: index}``: sorted numerically when every label is an integer, else as text."""
    labels = sorted({r.label for r in rows if r.role == "support"})
    if all(_is_integer(label) for label in labels):
        labels = sorted(labels, key=int)
    return {label: i for i, label in enumerate(labels)}


def _is_integer(text: str) -> bool:
    return text.lstrip("+-").isdigit()


def _image(row: _Row, decoder: Callable[[Path, int], np.ndarray], size: int, channels: int, digest: Any) -> np.ndarray:
    try:
        image = decoder(row.path, size)
    except DatasetError as error:
        raise EpisodeFileError(f"line {row.line}: {error}") from error
    if image.shape[0] != channels:
        raise EpisodeFileError(
            f"line {row.line}: {row.path} decodes to {image.shape[0]} channels, the run has {channels}"
        )
    digest.update(row.path.read_bytes())
    return image


def _episode(index: int, rows: Sequence[_Row], mapping: dict[str, int], images: dict[int, np.ndarray]) -> Episode:
    """One task's rows as an :class:`Episode`, class-major (label, then file order)."""

    def part(role: str) -> tuple[torch.Tensor, torch.Tensor]:
        chosen = sorted((r for r in rows if r.role == role), key=lambda r: (mapping[r.label], r.line))
        x = np.stack([images[r.line] for r in chosen]).astype(np.float32) / np.float32(255.0)
        return torch.from_numpy(x), torch.tensor([mapping[r.label] for r in chosen], dtype=torch.int64)

    (support_x, support_y), (query_x, query_y) = part("support"), part("query")
    classes = torch.arange(len(mapping), dtype=torch.int64)
    return Episode(support_x, support_y, query_x, query_y, classes, index)
