"""miniImageNet (Vinyals et al., 2016) in the split of Ravi & Larochelle (2017): 64 train,
16 val and 20 test classes of 600 images each, read from either common form.

``root`` holds one of:

- **CSV + images** (Ravi & Larochelle's ``train.csv``/``val.csv``/``test.csv``, a header line
  ``filename,label`` then one row per image) and an ``images/`` folder of JPEGs named by the
  ``filename`` column, either flat (``images/<filename>``) or one folder per class
  (``images/<label>/<filename>``). Each image is converted to RGB and, unless it already has the
  asked size, resized to ``image_size x image_size`` with Pillow's LANCZOS filter (as cbfinn/maml's
  ``proc_images.py`` makes its 84x84 images). Decoded splits are cached (see
  :mod:`meta.data.cache`), keyed by the CSV's and every image file's size and mtime.
- **pickle cache** ``mini-imagenet-cache-<split>.pkl`` (the "mini-imagenet-tools" form that
  learn2learn and many others read): a dict with ``"image_data"``, uint8 ``(N, 84, 84, 3)``, and
  ``"class_dict"``, ``{label: [indices into image_data]}``. It is read with
  :func:`safe_load_pickle`, which refuses everything but numpy arrays, dtypes and plain
  containers, so a malicious pickle cannot run code. It holds decoded arrays already, so it is
  not cached again.

If both forms are present the CSV form is used. Classes are in sorted label (synset) order in
both forms, images in CSV row order or ``class_dict`` order, so the same data in either form
gives the same :class:`FewShotSplit`. Every class must have the same number of images.

Per-channel normalisation constants (:data:`MINIIMAGENET_MEAN`, :data:`MINIIMAGENET_STD`, for
images in [0, 1]) are the ones commonly used for miniImageNet (Lee et al. 2019, MetaOptNet;
Tian et al. 2020): ``[120.39586422, 115.59361427, 104.54012653] / 255`` and
``[70.68188272, 68.27635443, 72.54505529] / 255``. MAML and ANIL use no normalisation.

Imports: :mod:`meta.data`, :mod:`meta.validation` and :mod:`repsim.progress`.
"""

from __future__ import annotations

import _codecs
import builtins
import csv
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from meta.data.base import FewShotSplit, check_protocol, check_split
from meta.data.cache import DatasetError, cached_array, entry_path, file_identity, files_identity
from meta.validation import check_int
from repsim.progress import progress_bar

try:
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # numpy < 2
    from numpy.core import multiarray as _multiarray
    from numpy.core import numeric as _numeric

PROTOCOLS = ("ravi",)
DEFAULT_IMAGE_SIZE = 84
DECODER_VERSION = 1
MINIIMAGENET_MEAN = (120.39586422 / 255, 115.59361427 / 255, 104.54012653 / 255)
MINIIMAGENET_STD = (70.68188272 / 255, 68.27635443 / 255, 72.54505529 / 255)


#: The only globals a miniImageNet pickle may name: numpy array, dtype and scalar
#: reconstruction (under numpy 1 and numpy 2 module names) and inert builtins.
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _codecs.encode,
    **{
        (module, name): getattr(_multiarray, name)
        for module in ("numpy.core.multiarray", "numpy._core.multiarray")
        for name in ("_reconstruct", "scalar")
    },
    **{(module, "_frombuffer"): _numeric._frombuffer for module in ("numpy.core.numeric", "numpy._core.numeric")},
    **{
        (module, name): getattr(builtins, name)
        for module in ("builtins", "__builtin__")
        for name in ("set", "frozenset", "bytearray", "complex")
    },
}


class _SafeUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :data:`_ALLOWED_GLOBALS`; anything else is refused."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise DatasetError(
                f"refusing to unpickle {module}.{name}: only numpy arrays and plain containers"
                " are allowed in a data set pickle"
            ) from None


def safe_load_pickle(path: str | os.PathLike[str]) -> Any:
    """Unpickle ``path`` allowing only numpy arrays/dtypes/scalars and builtin containers.

    Pickles written by Python 2 are read with ``encoding="latin1"`` (numpy's advice for array
    data). Raises :class:`DatasetError` for a refused global or a damaged file.
    """
    try:
        with open(path, "rb") as stream:
            return _SafeUnpickler(stream, encoding="latin1").load()
    except DatasetError as error:
        raise DatasetError(f"{path}: {error}") from error
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as error:
        raise DatasetError(f"{path}: not a readable pickle ({type(error).__name__}: {error})") from error


def read_split_csv(path: Path) -> dict[str, list[str]]:
    """``{label: [filenames in row order]}`` from a ``filename,label`` CSV, labels sorted."""
    with open(path, newline="") as stream:
        rows = list(csv.reader(stream))
    if not rows or [cell.strip() for cell in rows[0]] != ["filename", "label"]:
        raise DatasetError(f"{path}: expected a header line 'filename,label'")
    classes: dict[str, list[str]] = {}
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != 2 or not row[0] or not row[1]:
            raise DatasetError(f"{path}: line {number} is not 'filename,label': {row!r}")
        classes.setdefault(row[1], []).append(row[0])
    if not classes:
        raise DatasetError(f"{path}: no images listed")
    return dict(sorted(classes.items()))


def _check_balanced(counts: dict[str, int], source: str) -> int:
    """The common number of images per class; :class:`DatasetError` if classes differ."""
    sizes = sorted(set(counts.values()))
    if len(sizes) != 1:
        smallest = min(counts, key=counts.__getitem__)
        raise DatasetError(
            f"{source}: classes have different numbers of images ({sizes[0]} to {sizes[-1]};"
            f" e.g. {smallest} has {counts[smallest]}); every class needs the same number"
        )
    return sizes[0]


def image_paths(images_dir: Path, classes: dict[str, list[str]]) -> dict[str, list[str]]:
    """Paths relative to ``images_dir`` of every listed image: ``<filename>`` if it exists
    there, else ``<label>/<filename>``; :class:`DatasetError` names the first missing one."""
    located: dict[str, list[str]] = {}
    for label, files in classes.items():
        located[label] = []
        for name in files:
            for candidate in (name, f"{label}/{name}"):
                if (images_dir / candidate).is_file():
                    located[label].append(candidate)
                    break
            else:
                raise DatasetError(f"{images_dir}: image {name} of class {label} not found")
    return located


def read_resized(path: Path, mode: str, image_size: int, resample: Image.Resampling) -> np.ndarray:
    """One image file converted to ``mode`` (``"L"`` or ``"RGB"``) and resized to ``S x S`` with
    ``resample`` unless already that size: uint8 ``(S, S)`` or ``(S, S, 3)`` (``DatasetError``
    naming a file that is not a readable image)."""
    try:
        with Image.open(path) as image:
            converted = image.convert(mode)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise DatasetError(f"{path}: not a readable image ({error})") from error
    if converted.size != (image_size, image_size):
        converted = converted.resize((image_size, image_size), resample=resample)
    return np.asarray(converted)


def decode_image(path: Path, image_size: int) -> np.ndarray:
    """One image file -> uint8 ``(3, S, S)`` RGB; resized with LANCZOS unless already ``S x S``."""
    return read_resized(path, "RGB", image_size, Image.Resampling.LANCZOS).transpose(2, 0, 1)


def _decode_csv_split(
    images_dir: Path, located: dict[str, list[str]], image_size: int, progress: bool, desc: str
) -> np.ndarray:
    """Decode every listed image into uint8 ``(n_classes, n_per_class, 3, S, S)``."""
    n_per_class = len(next(iter(located.values())))
    images = np.empty((len(located), n_per_class, 3, image_size, image_size), np.uint8)
    flat = [(c, i, rel) for c, files in enumerate(located.values()) for i, rel in enumerate(files)]
    for c, i, rel in progress_bar(flat, desc=desc, unit="image", enabled=progress):
        images[c, i] = decode_image(images_dir / rel, image_size)
    return images


def load_csv_split(
    root: Path, split: str, *, image_size: int, cache_dir: str | os.PathLike[str] | None, progress: bool
) -> tuple[np.ndarray, list[str], dict[str, Any]]:
    """Images ``(n_classes, n_per_class, 3, S, S)`` uint8, labels and info from ``<split>.csv``."""
    csv_path, images_dir = root / f"{split}.csv", root / "images"
    if not images_dir.is_dir():
        raise DatasetError(f"{root}: {csv_path.name} found but no images/ folder")
    located = image_paths(images_dir, read_split_csv(csv_path))
    _check_balanced({label: len(files) for label, files in located.items()}, str(csv_path))
    relative = [rel for files in located.values() for rel in files]
    where = {"dataset": "miniimagenet", "source": str(csv_path.resolve()), "image_size": image_size}
    key = {
        **where,
        "decoder": DECODER_VERSION,
        "csv": file_identity(csv_path),
        "images": files_identity(images_dir, relative),
    }

    def build() -> tuple[np.ndarray, dict[str, Any]]:
        desc = f"decoding miniImageNet {split}"
        return _decode_csv_split(images_dir, located, image_size, progress, desc), {"labels": list(located)}

    images, metadata = cached_array(entry_path(f"miniimagenet-{split}-{image_size}px", where, cache_dir), key, build)
    info = {"source": str(csv_path), "format": "csv", "resize": f"Pillow LANCZOS to {image_size}x{image_size}"}
    return images, metadata["labels"], info


def load_pickle_split(path: Path, *, image_size: int) -> tuple[np.ndarray, list[str], dict[str, Any]]:
    """Images ``(n_classes, n_per_class, 3, H, W)`` uint8, labels and info from a
    ``mini-imagenet-cache-<split>.pkl`` (read with :func:`safe_load_pickle`)."""
    data = safe_load_pickle(path)
    if not isinstance(data, dict) or not {"image_data", "class_dict"} <= set(data):
        raise DatasetError(f"{path}: expected a dict with keys 'image_data' and 'class_dict'")
    pixels, class_dict = np.asarray(data["image_data"]), data["class_dict"]
    if pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[-1] != 3:
        raise DatasetError(f"{path}: image_data must be uint8 (N, H, W, 3), got {pixels.dtype} {pixels.shape}")
    if pixels.shape[1:3] != (image_size, image_size):
        raise DatasetError(
            f"{path}: holds {pixels.shape[1]}x{pixels.shape[2]} images; image_size={image_size}"
            " is not available from the pickle form"
        )
    if not isinstance(class_dict, dict) or not class_dict:
        raise DatasetError(f"{path}: class_dict must be a non-empty dict {{label: [indices]}}")
    labels = sorted(class_dict, key=str)
    indices = [np.asarray(class_dict[label]).reshape(-1) for label in labels]
    _check_balanced({str(label): len(idx) for label, idx in zip(labels, indices)}, str(path))
    table = np.stack(indices)
    if not np.issubdtype(table.dtype, np.integer) or table.min() < 0 or table.max() >= len(pixels):
        raise DatasetError(f"{path}: class_dict indices must be integers in [0, {len(pixels)})")
    images = pixels[table].transpose(0, 1, 4, 2, 3)
    return np.ascontiguousarray(images), [str(label) for label in labels], {"source": str(path), "format": "pickle"}


def load_miniimagenet(
    split: str,
    *,
    root: str | os.PathLike[str],
    protocol: str = "ravi",
    image_size: int = DEFAULT_IMAGE_SIZE,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> FewShotSplit:
    """One split of miniImageNet (see the module docstring for the accepted forms).

    Returns:
        A :class:`FewShotSplit` named ``miniimagenet/ravi/<split>``: images
        ``(n_classes, n_per_class, 3, S, S)`` uint8 RGB, class names the labels (synsets),
        groups the split name.
    """
    check_protocol("miniImageNet", protocol, PROTOCOLS)
    check_split(split)
    image_size = check_int("image_size", image_size, minimum=1)
    root = Path(root)
    csv_path, pickle_path = root / f"{split}.csv", root / f"mini-imagenet-cache-{split}.pkl"
    if csv_path.is_file():
        images, labels, info = load_csv_split(
            root, split, image_size=image_size, cache_dir=cache_dir, progress=progress
        )
    elif pickle_path.is_file():
        images, labels, info = load_pickle_split(pickle_path, image_size=image_size)
    else:
        raise DatasetError(f"miniImageNet {split} split not found: neither {csv_path} nor {pickle_path} exists")
    return FewShotSplit(
        name=f"miniimagenet/{protocol}/{split}",
        images=images,
        class_names=tuple(labels),
        groups=(split,) * len(labels),
        info={"dataset": "miniimagenet", "protocol": protocol, "split": split, "image_size": image_size, **info},
    )
