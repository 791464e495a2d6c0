"""The MAML/ANIL Omniglot split as cbfinn/maml's data_generator.py makes it, written out again
independently of :mod:`meta.data.omniglot`, for the tests that pin it."""

from __future__ import annotations

import random
from collections.abc import Iterable


def cbfinn_maml_split(characters: Iterable[str]) -> dict[str, list[str]]:
    """``random.seed(1)``, ``random.shuffle`` of the character folders (``alphabet/characterNN``,
    sorted first: ``os.listdir``'s order is the file system's), 1100 train (1200 - 100), 100 val,
    the rest test; the global random state is left as it was."""
    folders = sorted(characters, key=lambda name: tuple(name.split("/")))
    state = random.getstate()
    try:
        random.seed(1)
        random.shuffle(folders)
    finally:
        random.setstate(state)
    return {"train": folders[:1100], "val": folders[1100:1200], "test": folders[1200:]}
