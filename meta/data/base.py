"""The in-memory form every few-shot data set takes (:class:`FewShotSplit`: one split of classes as
a uint8 array), the names of the splits (:data:`SPLITS`) and the checks of a split's and a
protocol's name.

Imports: :mod:`meta.validation` only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from meta.validation import check_choice

#: The splits every data set has (Omniglot's Lake protocol has no "val": it says so).
SPLITS: tuple[str, ...] = ("train", "val", "test")


def check_split(split: str) -> str:
    """``split`` if it is one of :data:`SPLITS`, else ``ValueError`` naming the choices."""
    return check_choice("split", split, SPLITS)


def check_protocol(dataset: str, protocol: str, protocols: tuple[str, ...]) -> str:
    """``protocol`` if it is one of ``protocols``, else ``ValueError`` naming the data set."""
    return check_choice(f"{dataset} protocol", protocol, protocols)


@dataclass(frozen=True)
class FewShotSplit:
    """One split (train, val or test) of a few-shot data set, decoded once into memory.

    Attributes:
        name: data set and split, e.g. ``"omniglot/maml/train"``.
        images: uint8 array ``(n_classes, n_per_class, C, H, W)``; ink/foreground is high
            (255) for the greyscale sets, RGB channels for miniImageNet.
        class_names: ``n_classes`` unique strings naming each class (e.g.
            ``"Latin/character01/rot090"``).
        groups: ``n_classes`` strings naming each class's group (Omniglot alphabet, glyph script,
            miniImageNet synset's split); used for splitting and reporting only.
        info: how the split was made (source files, resizing, protocol), JSON-serialisable.
    """

    name: str
    images: np.ndarray
    class_names: tuple[str, ...]
    groups: tuple[str, ...]
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.ndim != 5:
            raise ValueError(
                f"{self.name}: images must be uint8 (n_classes, n_per_class, C, H, W); got"
                f" {self.images.dtype} {self.images.shape}"
            )
        n = self.images.shape[0]
        if len(self.class_names) != n or len(self.groups) != n:
            raise ValueError(
                f"{self.name}: {n} classes of images but {len(self.class_names)} class names and"
                f" {len(self.groups)} groups"
            )
        if len(set(self.class_names)) != n:
            raise ValueError(f"{self.name}: class names are not unique")

    @property
    def n_classes(self) -> int:
        return self.images.shape[0]

    @property
    def n_per_class(self) -> int:
        return self.images.shape[1]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        return tuple(self.images.shape[2:])
