"""One entry point for every few-shot data set: ``load_split(dataset, split, ...)``.

- ``glyphs`` (protocol ``default``): generated on this machine from matplotlib's fonts
  (:mod:`meta.data.glyphs`); one image size.
- ``omniglot`` (protocols ``maml`` (default), ``lake``, ``lake-val``; :mod:`meta.data.omniglot`):
  the official zips or folders in ``root``, default ``$OMNIGLOT_DIR``; 28x28 by default.
- ``miniimagenet`` (protocol ``ravi``; :mod:`meta.data.miniimagenet`): CSV + images or the
  pickle form in ``root``, default ``$MINIIMAGENET_DIR``; 84x84 by default.
- ``synthetic`` (protocol ``default``; :mod:`meta.data.synthetic`): random patterns generated in
  memory, for tests and smoke runs only; 28x28 by default, any size from 7.

Imports: :mod:`meta.data` and :mod:`meta.validation` only.
"""

from __future__ import annotations

import os
from pathlib import Path

from meta.data.base import FewShotSplit, check_protocol, check_split
from meta.data.miniimagenet import load_miniimagenet
from meta.data.omniglot import load_omniglot
from meta.data.synthetic import synthetic_split
from meta.validation import check_choice, check_int

DATASETS = ("glyphs", "omniglot", "miniimagenet", "synthetic")
PROTOCOLS: dict[str, tuple[str, ...]] = {
    "glyphs": ("default",),
    "synthetic": ("default",),
    "omniglot": ("maml", "lake", "lake-val"),
    "miniimagenet": ("ravi",),
}
DEFAULT_IMAGE_SIZE = {"omniglot": 28, "miniimagenet": 84}
ROOT_ENV = {"omniglot": "OMNIGLOT_DIR", "miniimagenet": "MINIIMAGENET_DIR"}


def load_split(
    dataset: str,
    split: str,
    *,
    root: str | os.PathLike[str] | None = None,
    protocol: str | None = None,
    image_size: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> FewShotSplit:
    """One split (``"train"``, ``"val"`` or ``"test"``) of a data set, decoded (or loaded from
    the cache) into a :class:`FewShotSplit`.

    Args:
        dataset: one of :data:`DATASETS`.
        root: where the source files are; for Omniglot and miniImageNet it defaults to
            ``$OMNIGLOT_DIR`` / ``$MINIIMAGENET_DIR``.
        protocol: how classes are split (see :data:`PROTOCOLS`); ``None`` = the first listed.
        image_size: side of the square images; ``None`` = the data set's default. The glyphs
            set has one size and accepts only ``None`` or that size.
        cache_dir: decoded-image cache folder (see :mod:`meta.data.cache`).
        progress: show progress while decoding.
    """
    check_choice("data set", dataset, DATASETS)
    check_split(split)
    protocol = check_protocol(dataset, PROTOCOLS[dataset][0] if protocol is None else protocol, PROTOCOLS[dataset])
    image_size = None if image_size is None else check_int("image_size", image_size, minimum=1)
    if dataset == "glyphs":
        return _load_glyphs(split, root, image_size, cache_dir, progress)
    if dataset == "synthetic":
        return synthetic_split(split, image_size=28 if image_size is None else image_size)
    loader = load_omniglot if dataset == "omniglot" else load_miniimagenet
    return loader(
        split,
        root=_root(dataset, root),
        protocol=protocol,
        image_size=DEFAULT_IMAGE_SIZE[dataset] if image_size is None else image_size,
        cache_dir=cache_dir,
        progress=progress,
    )


def _root(dataset: str, root: str | os.PathLike[str] | None) -> Path:
    if root is not None:
        return Path(root)
    env = os.environ.get(ROOT_ENV[dataset])
    if not env:
        raise ValueError(f"no root given for {dataset}: pass root= or set ${ROOT_ENV[dataset]}")
    return Path(env)


def _load_glyphs(
    split: str,
    root: str | os.PathLike[str] | None,
    image_size: int | None,
    cache_dir: str | os.PathLike[str] | None,
    progress: bool,
) -> FewShotSplit:
    from meta.data.glyphs import load_glyphs

    loaded = load_glyphs(split, root=root, cache_dir=cache_dir, progress=progress)
    if image_size is not None and loaded.image_shape[1:] != (image_size, image_size):
        raise ValueError(
            f"glyphs images are {loaded.image_shape[1]}x{loaded.image_shape[2]};"
            f" image_size={image_size} is not available"
        )
    return loaded
