"""``meta``'s data sets as input sets of ``python -m repsim compare --inputs NAME:SPLIT``.

``repsim`` never imports ``meta``: it finds these functions through the entry-point group
``repsim.input_sets`` (setup.cfg: ``glyphs = meta.data.input_sets:glyphs``, ...), which
:mod:`repsim.input_sets` reads with :mod:`importlib.metadata`. Each returns every image of one
split, uint8 ``(M, C, H, W)`` in class order (ink high for the greyscale sets), exactly as
:func:`meta.data.load_split` decodes it; ``repsim`` then draws the seeded subset and scales it
by 1/255, as training does.

- ``glyphs``: the built-in set, generated on this machine (cached); one image size;
- ``omniglot``: the official zips or folders in ``root`` (default ``$OMNIGLOT_DIR``), MAML's split;
- ``miniimagenet``: Ravi & Larochelle's split in ``root`` (default ``$MINIIMAGENET_DIR``);
- ``synthetic``: the tiny generated set of the tests.

Imports: :mod:`meta.data` only.
"""

from __future__ import annotations

import numpy as np

from meta.data.registry import load_split


def _images(dataset: str, split: str, image_size: int | None, root: str | None, progress: bool) -> np.ndarray:
    """Every image of ``split`` of ``dataset``, ``(M, C, H, W)`` uint8 (a view, not a copy)."""
    loaded = load_split(dataset, split, root=root, image_size=image_size, progress=progress)
    return loaded.images.reshape(-1, *loaded.image_shape)


def glyphs(split: str, *, image_size: int | None = None, root: str | None = None, progress: bool = True) -> np.ndarray:
    """The built-in glyphs set (:mod:`meta.data.glyphs`); ``root`` is its cache folder."""
    return _images("glyphs", split, image_size, root, progress)


def omniglot(
    split: str, *, image_size: int | None = None, root: str | None = None, progress: bool = True
) -> np.ndarray:
    """Omniglot, MAML's split (:mod:`meta.data.omniglot`); 28x28 unless ``image_size``."""
    return _images("omniglot", split, image_size, root, progress)


def miniimagenet(
    split: str, *, image_size: int | None = None, root: str | None = None, progress: bool = True
) -> np.ndarray:
    """miniImageNet, Ravi & Larochelle's split (:mod:`meta.data.miniimagenet`); 84x84 unless ``image_size``."""
    return _images("miniimagenet", split, image_size, root, progress)


def synthetic(
    split: str, *, image_size: int | None = None, root: str | None = None, progress: bool = True
) -> np.ndarray:
    """The tiny generated set of the tests (:mod:`meta.data.synthetic`); ``root`` is unused."""
    return _images("synthetic", split, image_size, root, progress)
