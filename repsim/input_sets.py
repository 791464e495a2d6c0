"""The inputs of a comparison (``--inputs``): a file, a folder of images, or a named input set.

- **A file**: an ``.npz`` with an array ``x`` (the model's positional input), or without ``x``
  the arrays as keyword inputs (``input_ids``, ``attention_mask``, ...: ``model(**inputs)``),
  read without pickle; or a tensor file (``torch.save`` of a tensor or of ``{"x": tensor}``,
  safetensors with ``x``), read without running code. Used as they are.
- **A folder of images** (PNG or JPEG, found recursively, in sorted path order): converted to
  greyscale (1 channel) or RGB (3), resized with Pillow's LANCZOS filter to ``H x W`` where they
  differ, and scaled to ``[0, 1]`` (``pixel / 255``, float32 ``(N, C, H, W)``), as ``meta``'s
  data sets feed the model. ``(C, H, W)`` is the model's input shape (``--image-size``, or the
  run's ``config.json``); without one, the images must share one size, and have one channel
  only if every image is greyscale.
- **An input set** ``NAME:SPLIT`` (``glyphs:test``, ``omniglot:test``): a function that an
  installed package declares in the entry-point group :data:`INPUT_SET_ENTRY_POINTS`
  (``meta`` declares ``glyphs``, ``omniglot``, ``miniimagenet`` and ``synthetic``), called as
  ``fn(split, image_size=..., root=..., progress=...)``; it returns every image of the split,
  ``(M, C, H, W)``, uint8 (scaled by 1/255 as above) or float.

**The drawn set.** Folders and input sets give ``n`` images (``--n-inputs``; default
:data:`DEFAULT_SET_SIZE` for an input set, every image of a folder) drawn without replacement
with ``numpy.random.default_rng(seed)`` (``--seed``, default 0) from the ``M`` available, kept
in their original order: ``sorted(default_rng(seed).choice(M, n, replace=False))``. The same
command gives the same inputs on every machine. A file with ``--n-inputs`` is drawn the same way.

Make an ``.npz`` from your own data (``x``: float32 ``(N, C, H, W)``, as the model takes it; here
greyscale 28x28 images, ink or foreground bright as in ``meta``'s sets)::

    import glob, numpy as np; from PIL import Image
    images = [Image.open(p).convert("L").resize((28, 28)) for p in sorted(glob.glob("my_images/*.png"))]
    np.savez("my_inputs.npz", x=np.stack([np.asarray(im, np.float32) / 255 for im in images])[:, None])

Imports: :mod:`repsim.tensor_files` only; an input set's module is imported by
:mod:`importlib.metadata` from the entry points installed packages declare, never by a name read
from a file.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import numpy as np
import torch

from repsim.tensor_files import DamagedFileError, read_tensor_file

#: The entry-point group of input sets (``name = package.module:function``).
INPUT_SET_ENTRY_POINTS = "repsim.input_sets"
#: Images drawn from an input set when ``n`` is not given.
DEFAULT_SET_SIZE = 500
#: Image files a folder may hold.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")

_SET_NAME = re.compile(r"^([A-Za-z_][\w.-]*):([\w.-]+)$")

Inputs = torch.Tensor | dict[str, torch.Tensor]


@dataclass(frozen=True)
class InputRequest:
    """How to read and draw the inputs (the command line's options).

    Attributes:
        n: how many to draw (``--n-inputs``); ``None``: :data:`DEFAULT_SET_SIZE` of an input set,
            all of a folder or a file.
        seed: seed of the draw (``--seed``).
        image_shape: ``(C, H, W)`` the model takes (``C`` may be ``None``: from the images), or
            ``None``: unknown (a folder's images must then share one size).
        root: where an input set's files are (``--data-root``).
        progress: let an input set show progress while it decodes.
    """

    n: int | None = None
    seed: int = 0
    image_shape: tuple[int | None, int, int] | None = None
    root: str | Path | None = None
    progress: bool = True

    def drawn(self, available: int, default: int | None = None) -> np.ndarray:
        """The indices drawn from ``available`` items (:func:`draw`; ``default`` when ``n`` is ``None``)."""
        return draw(available, default if self.n is None else self.n, self.seed)

    def record(self, available: int, index: np.ndarray) -> dict[str, Any]:
        """What ``settings.json`` says of the draw."""
        return {"available": available, "n": len(index), "seed": self.seed}


@dataclass(frozen=True)
class LoadedInputs:
    """Inputs and what they are (recorded in ``settings.json``).

    Attributes:
        inputs: a tensor ``(N, ...)`` or keyword inputs ``{name: (N, ...)}``.
        source: ``{"kind": "file" | "folder" | "set", ...}``: the path or set, how many there
            were, how many were drawn, the seed, the image shape.
    """

    inputs: Inputs
    source: dict[str, Any]


def draw(available: int, n: int | None, seed: int) -> np.ndarray:
    """Indices of ``n`` of ``available`` items, drawn without replacement with
    ``numpy.random.default_rng(seed)`` and sorted (all of them when ``n`` is ``None`` or at
    least ``available``).

    Examples:
        >>> draw(10, 3, seed=0).tolist(), draw(3, None, seed=0).tolist()
        ([5, 6, 9], [0, 1, 2])
    """
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"the number of inputs must be a positive integer; got {n!r}")
    if n is None or n >= available:
        return np.arange(available)
    return np.sort(np.random.default_rng(seed).choice(available, size=n, replace=False))


def input_sets() -> dict[str, Any]:
    """The installed input sets: ``{name: entry point}`` of :data:`INPUT_SET_ENTRY_POINTS`."""
    return {entry.name: entry for entry in entry_points(group=INPUT_SET_ENTRY_POINTS)}


def load_inputs(path: str | Path) -> Inputs:
    """The inputs in a file (see the module docstring): a CPU tensor ``(N, ...)``, or keyword
    inputs from an ``.npz`` without ``x``."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"inputs file {str(path)!r} does not exist or is not a file")
    if path.suffix == ".npz":
        return _npz_inputs(path)
    obj = read_tensor_file(path)
    if isinstance(obj, Mapping) and isinstance(obj.get("x"), torch.Tensor):
        obj = obj["x"]
    if not isinstance(obj, torch.Tensor):
        raise ValueError(f"{str(path)!r} holds a {type(obj).__name__}, not a tensor of inputs")
    if obj.ndim == 0 or obj.shape[0] == 0:
        raise ValueError(f"{str(path)!r}: inputs must be (N, ...) with N >= 1; got {tuple(obj.shape)}")
    return obj


def _npz_inputs(path: Path) -> Inputs:
    """The array ``x`` of an ``.npz`` file, or all its arrays as keyword inputs when it has no
    ``x``; read without pickle (``DamagedFileError`` for a file that is not a readable ``.npz``)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if "x" in data.files:
                return torch.from_numpy(np.array(data["x"]))
            arrays = {name: torch.from_numpy(np.array(data[name])) for name in data.files}
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as err:
        raise DamagedFileError(f"{str(path)!r} is not a readable .npz file: {err}") from None
    if not arrays:
        raise ValueError(f"{str(path)!r} holds no array: save the inputs as x (np.savez(path, x=x))")
    return arrays


def _rows(inputs: Inputs, index: np.ndarray) -> Inputs:
    rows = torch.from_numpy(index)
    return {k: v[rows] for k, v in inputs.items()} if isinstance(inputs, dict) else inputs[rows]


def _count(inputs: Inputs) -> int:
    return len(next(iter(inputs.values()))) if isinstance(inputs, dict) else len(inputs)


def _as_float_images(images: Any) -> torch.Tensor:
    """uint8 images scaled to ``[0, 1]`` float32; floating images as they are."""
    x = torch.as_tensor(np.asarray(images))
    return x.to(torch.float32) / 255 if x.dtype == torch.uint8 else x


def read_image_folder(folder: str | Path, request: InputRequest = InputRequest()) -> LoadedInputs:
    """The images of ``folder`` (see the module docstring), drawn and shaped as ``request`` says."""
    from PIL import Image

    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ValueError(f"{str(folder)!r} holds no PNG or JPEG image ({', '.join(IMAGE_SUFFIXES)})")
    index = request.drawn(len(files))
    chosen = [files[i] for i in index]
    opened = []
    for path in chosen:
        try:
            with Image.open(path) as image:
                image.load()
                opened.append(image)
        except OSError as err:
            raise DamagedFileError(f"{str(path)!r} is not a readable image: {err}") from None
    shape = _common_shape(opened, chosen) if request.image_shape is None else request.image_shape
    if shape[0] is None:
        shape = (_channels(opened), *shape[1:])
    mode = {1: "L", 3: "RGB"}.get(shape[0])
    if mode is None:
        raise ValueError(f"images can be read with 1 (greyscale) or 3 (RGB) channels; the model takes {shape[0]}")
    size = (shape[2], shape[1])
    pixels = [np.asarray(_resized(im.convert(mode), size), dtype=np.uint8) for im in opened]
    images = np.stack(pixels).reshape(len(pixels), *size[::-1], shape[0]).transpose(0, 3, 1, 2)
    source = {"kind": "folder", "path": str(folder), **request.record(len(files), index), "image_shape": list(shape)}
    return LoadedInputs(_as_float_images(images), {**source, "scaling": "pixel / 255"})


def _resized(image: Any, size: tuple[int, int]) -> Any:
    from PIL import Image

    return image if image.size == size else image.resize(size, Image.Resampling.LANCZOS)


def _common_shape(images: list[Any], paths: list[Path]) -> tuple[int, int, int]:
    """``(C, H, W)`` shared by every image: one channel if every image is greyscale, else 3."""
    sizes = {im.size for im in images}
    if len(sizes) > 1:
        examples = [f"{p.name} {im.size[0]}x{im.size[1]}" for p, im in zip(paths, images)][:4]
        raise ValueError(
            f"the images have {len(sizes)} different sizes ({', '.join(examples)}, ...) and no model input size is"
            " known: give one with --image-size (or pass --a RUN_DIR, whose config.json records it)"
        )
    width, height = sizes.pop()
    return _channels(images), height, width


def _channels(images: list[Any]) -> int:
    """1 if every image is greyscale, else 3 (RGB)."""
    return 1 if all(im.mode in ("1", "L", "I", "I;16", "F") for im in images) else 3


def _input_set(name: str) -> Callable[..., Any]:
    """The function of the installed input set ``name`` (ValueError listing the installed ones)."""
    found = input_sets()
    if name not in found:
        raise ValueError(
            f"no input set {name!r} is installed; installed: {sorted(found) or 'none'} (packages declare them in"
            f" the entry-point group {INPUT_SET_ENTRY_POINTS!r}; after installing one, run pip install -e . again)"
        )
    return found[name].load()


def load_set(name: str, split: str, request: InputRequest = InputRequest()) -> LoadedInputs:
    """Images of the split ``split`` of the installed input set ``name``, drawn as ``request``
    says (default :data:`DEFAULT_SET_SIZE` of them; see the module docstring)."""
    fn = _input_set(name)
    root = None if request.root is None else str(request.root)
    size = None if request.image_shape is None else request.image_shape[1]
    images = fn(split, image_size=size, root=root, progress=request.progress)
    index = request.drawn(len(images), DEFAULT_SET_SIZE)
    x = _as_float_images(np.asarray(images)[index])
    source = {"kind": "set", "set": f"{name}:{split}", "root": root, **request.record(len(images), index)}
    return LoadedInputs(x, {**source, "image_shape": list(x.shape[1:])})


def load_comparison_inputs(spec: str | Path, request: InputRequest = InputRequest()) -> LoadedInputs:
    """The inputs ``spec`` names (``--inputs``): a file, a folder of images or ``NAME:SPLIT`` of an
    input set, read and drawn as ``request`` says (see the module docstring)."""
    path = Path(spec)
    if path.is_file():
        loaded = load_inputs(path)
        index = request.drawn(_count(loaded))
        source = {"kind": "file", "path": str(path), **request.record(_count(loaded), index)}
        return LoadedInputs(loaded if request.n is None else _rows(loaded, index), source)
    if path.is_dir():
        return read_image_folder(path, request)
    match = _SET_NAME.match(str(spec))
    if match is None or match.group(1) not in input_sets():
        raise ValueError(
            f"inputs {str(spec)!r} does not exist: pass an .npz or tensor file, a folder of PNG/JPEG images, or"
            f" NAME:SPLIT of an installed input set (installed: {sorted(input_sets()) or 'none'}), e.g. glyphs:test"
        )
    return load_set(match.group(1), match.group(2), request)
