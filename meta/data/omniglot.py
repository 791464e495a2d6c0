"""Omniglot (Lake, Salakhutdinov & Tenenbaum, 2015) from the official archives, in two protocols.

Source: ``images_background.zip`` and ``images_evaluation.zip`` (or the same folders unpacked)
in one ``root`` folder, laid out as ``images_<part>/<alphabet>/<character>/<drawing>.png``: 30
background alphabets with 964 characters, 20 evaluation alphabets with 659 characters, 20
drawings of each, 105x105 PNGs of mode ``'1'`` with ink black (0). Every count is checked
against :data:`OFFICIAL_ALPHABETS`; a missing, truncated or corrupt archive, a missing alphabet
or character, a wrong drawing count or an undecodable PNG raises :class:`DatasetError` naming it.

Images are stored ink-high (ink 255, background 0), one channel. Resizing is Pillow's NEAREST
resampling, which is what ``Image.resize`` does to mode ``'1'`` images whatever filter is asked
for (so cbfinn/maml's ``resize_images.py``, which asks for LANCZOS, gets NEAREST): output pixel
``(i, j)`` of an ``S x S`` image is source pixel ``(r(i), r(j))`` with
``r(i) = floor((i + 0.5) * 105 / S)``. For ``S = 28`` this reproduces all 32,460 of the 28x28
images of cbfinn/maml's ``omniglot_resized`` exactly (see ``SOURCE.md`` of the shared copy).

Protocols (``protocol=``):

``"maml"`` (default): the split of cbfinn/maml ``data_generator.py``, used by MAML (Finn et al.,
2017) and ANIL (Raghu et al., 2020). All 1,623 characters of both archives are listed
alphabet by alphabet, shuffled by ``random.seed(1); random.shuffle(...)``, and cut into
1,100 train, 100 val and 423 test characters (``num_train = 1200 - num_val``,
``num_val = 100``). Each character gives four classes, rotated by 0, 90, 180 and 270 degrees
counter-clockwise (``np.rot90``; ``tf.image.rot90`` in the original), so train/val/test have
4,400/400/1,692 classes of 20 images at 28x28. Differences from the original:

- The original lists folders with ``os.listdir``, whose order depends on the file system, so its
  exact characters per split cannot be reproduced. Here alphabets are sorted by name and
  characters within each alphabet by name (Python code-point order), then shuffled with
  ``random.Random(1).shuffle``, which is the same generator ``random.seed(1)`` sets up.
- The original does not make the rotated copies new classes of a fixed list: it draws a random
  rotation for each class of each task (train and test alike). Here, as in Santoro et al. (2016)
  and Vinyals et al. (2016), each (character, rotation) is a class of its own, so one task may
  hold two rotations of the same character; in the original it cannot.

``"lake"``: the background/evaluation split of Lake et al. (2015): train = the 964 characters of
the 30 background alphabets, test = the 659 characters of the 20 evaluation alphabets, no
rotations, and no validation split (asking for ``"val"`` raises; use ``"lake-val"``).

``"lake-val"``: as ``"lake"``, but the five background alphabets of :data:`LAKE_VAL_ALPHABETS`
(every sixth in sorted order, starting from the sixth; 158 characters) are held out as the
validation split and train keeps the other 25 (806 characters).

Imports: :mod:`meta.data`, :mod:`meta.validation` and :mod:`repsim.progress`.
"""

from __future__ import annotations

import io
import os
import random
import zipfile
import zlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from meta.data.base import FewShotSplit, check_protocol, check_split
from meta.data.cache import DatasetError, cached_array, entry_path, file_identity, files_identity
from meta.validation import check_choice, check_int
from repsim.progress import progress_bar

PARTS = ("background", "evaluation")
PROTOCOLS = ("maml", "lake", "lake-val")
NATIVE_SIZE = 105
DEFAULT_IMAGE_SIZE = 28
DRAWINGS_PER_CHARACTER = 20
DECODER_VERSION = 1

MAML_SHUFFLE_SEED = 1
MAML_TRAIN_CHARACTERS = 1100
MAML_VAL_CHARACTERS = 100
ROTATIONS = (0, 90, 180, 270)

#: Number of characters of each alphabet in the official archives.
OFFICIAL_ALPHABETS: dict[str, dict[str, int]] = {
    "background": {
        "Alphabet_of_the_Magi": 20,
        "Anglo-Saxon_Futhorc": 29,
        "Arcadian": 26,
        "Armenian": 41,
        "Asomtavruli_(Georgian)": 40,
        "Balinese": 24,
        "Bengali": 46,
        "Blackfoot_(Canadian_Aboriginal_Syllabics)": 14,
        "Braille": 26,
        "Burmese_(Myanmar)": 34,
        "Cyrillic": 33,
        "Early_Aramaic": 22,
        "Futurama": 26,
        "Grantha": 43,
        "Greek": 24,
        "Gujarati": 48,
        "Hebrew": 22,
        "Inuktitut_(Canadian_Aboriginal_Syllabics)": 16,
        "Japanese_(hiragana)": 52,
        "Japanese_(katakana)": 47,
        "Korean": 40,
        "Latin": 26,
        "Malay_(Jawi_-_Arabic)": 40,
        "Mkhedruli_(Georgian)": 41,
        "N_Ko": 33,
        "Ojibwe_(Canadian_Aboriginal_Syllabics)": 14,
        "Sanskrit": 42,
        "Syriac_(Estrangelo)": 23,
        "Tagalog": 17,
        "Tifinagh": 55,
    },
    "evaluation": {
        "Angelic": 20,
        "Atemayar_Qelisayer": 26,
        "Atlantean": 26,
        "Aurek-Besh": 26,
        "Avesta": 26,
        "Ge_ez": 26,
        "Glagolitic": 45,
        "Gurmukhi": 45,
        "Kannada": 41,
        "Keble": 26,
        "Malayalam": 47,
        "Manipuri": 40,
        "Mongolian": 30,
        "Old_Church_Slavonic_(Cyrillic)": 45,
        "Oriya": 46,
        "Sylheti": 28,
        "Syriac_(Serto)": 23,
        "Tengwar": 25,
        "Tibetan": 42,
        "ULOG": 26,
    },
}

#: Background alphabets held out for validation by the ``"lake-val"`` protocol.
LAKE_VAL_ALPHABETS = (
    "Balinese",
    "Early_Aramaic",
    "Inuktitut_(Canadian_Aboriginal_Syllabics)",
    "Mkhedruli_(Georgian)",
    "Tifinagh",
)


@dataclass(frozen=True)
class OmniglotPart:
    """One decoded archive.

    Attributes:
        part: ``"background"`` or ``"evaluation"``.
        images: uint8 ``(n_characters, 20, 1, S, S)``, ink 255; characters in sorted
            (alphabet, character) order, drawings in sorted file-name order.
        characters: ``"<alphabet>/<character>"`` for each row of ``images``.
        source: the archive or folder read.
    """

    part: str
    images: np.ndarray
    characters: tuple[str, ...]
    source: str

    @property
    def alphabets(self) -> tuple[str, ...]:
        """The alphabet of each character."""
        return tuple(name.split("/")[0] for name in self.characters)


class _ArchiveReader:
    """Members ``images_<part>/<alphabet>/<character>/<drawing>.png`` of a zip or a folder."""

    def __init__(self, root: Path, part: str) -> None:
        self.folder_name = f"images_{part}"
        zip_path, folder = root / f"{self.folder_name}.zip", root / self.folder_name
        if zip_path.is_file():
            self.path, self.is_zip = zip_path, True
        elif folder.is_dir():
            self.path, self.is_zip = folder, False
        else:
            raise DatasetError(f"Omniglot {part} set not found: neither {zip_path} nor the folder {folder} exists")

    def __enter__(self) -> _ArchiveReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if "_zip" in self.__dict__:
            self.__dict__.pop("_zip").close()

    @cached_property
    def _zip(self) -> zipfile.ZipFile:
        try:
            return zipfile.ZipFile(self.path)
        except (zipfile.BadZipFile, OSError, EOFError) as error:
            raise DatasetError(f"{self.path} is not a readable zip archive (truncated or corrupt?): {error}") from error

    @cached_property
    def png_members(self) -> list[str]:
        """Every ``.png`` below ``images_<part>/``, as ``"<alphabet>/<character>/<drawing>.png"``."""
        if self.is_zip:
            prefix = self.folder_name + "/"
            names = [n[len(prefix) :] for n in self._zip.namelist() if n.startswith(prefix)]
        else:
            names = [
                Path(dirpath, name).relative_to(self.path).as_posix()
                for dirpath, _, files in os.walk(self.path)
                for name in files
            ]
        return sorted(n for n in names if n.lower().endswith(".png"))

    def read(self, member: str) -> bytes:
        """The bytes of one member; :class:`DatasetError` if the archive cannot give them."""
        try:
            if self.is_zip:
                return self._zip.read(f"{self.folder_name}/{member}")
            return (self.path / member).read_bytes()
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as error:
            raise DatasetError(f"{self.path}: cannot read {member} ({error})") from error

    def identity(self) -> dict[str, Any]:
        """What the cache key records of this source (see :mod:`meta.data.cache`): a zip's size
        and modification time, or those of every PNG of a folder."""
        if self.is_zip:
            return file_identity(self.path)
        return files_identity(self.path, self.png_members)


def group_drawings(members: list[str], source: str, part: str) -> dict[str, list[str]]:
    """Group ``"<alphabet>/<character>/<drawing>.png"`` members by character and check the layout
    and every count against :data:`OFFICIAL_ALPHABETS` and :data:`DRAWINGS_PER_CHARACTER`.

    Returns:
        ``{"<alphabet>/<character>": [members, in sorted order]}`` in sorted character order.
    """
    drawings: dict[str, list[str]] = {}
    for member in members:
        parts = member.split("/")
        if len(parts) != 3:
            raise DatasetError(
                f"{source}: unexpected PNG images_{part}/{member}; expected"
                f" images_{part}/<alphabet>/<character>/<drawing>.png"
            )
        drawings.setdefault(f"{parts[0]}/{parts[1]}", []).append(member)
    _check_alphabets(drawings, source, part)
    for character, files in drawings.items():
        if len(files) != DRAWINGS_PER_CHARACTER:
            raise DatasetError(
                f"{source}: character {character} has {len(files)} drawings, expected {DRAWINGS_PER_CHARACTER}"
            )
    return dict(sorted(drawings.items(), key=lambda item: tuple(item[0].split("/"))))


def _check_alphabets(drawings: dict[str, list[str]], source: str, part: str) -> None:
    expected = OFFICIAL_ALPHABETS[part]
    found: dict[str, int] = {}
    for character in drawings:
        alphabet = character.split("/")[0]
        found[alphabet] = found.get(alphabet, 0) + 1
    missing = sorted(set(expected) - set(found))
    unknown = sorted(set(found) - set(expected))
    if missing or unknown:
        raise DatasetError(
            f"{source}: expected the {len(expected)} official {part} alphabets, found"
            f" {len(found)}; missing {missing or 'none'}, unexpected {unknown or 'none'}"
        )
    for alphabet, count in found.items():
        if count != expected[alphabet]:
            raise DatasetError(f"{source}: alphabet {alphabet} has {count} characters, expected {expected[alphabet]}")


def nearest_indices(size: int, native: int = NATIVE_SIZE) -> np.ndarray:
    """Source rows (or columns) that Pillow's NEAREST resize from ``native`` to ``size`` samples:
    ``floor((i + 0.5) * native / size)`` for ``i = 0..size-1``, computed exactly in integers as
    ``((2i + 1) * native) // (2 * size)``. Shape ``(size,)``, int64."""
    return ((2 * np.arange(size, dtype=np.int64) + 1) * native) // (2 * size)


def _ink(image: Image.Image) -> np.ndarray:
    """Ink mask ``(H, W)`` bool of a loaded image: mode ``'1'`` (the official files) as it is,
    any other mode greyscale with ink a value below 128."""
    pixels = np.asarray(image) if image.mode == "1" else np.asarray(image.convert("L")) >= 128
    return ~pixels


def decode_drawing(data: bytes, where: str, rows: np.ndarray) -> np.ndarray:
    """One 105x105 PNG -> ink mask ``(len(rows), len(rows))`` bool (ink True), resized by
    sampling ``rows`` and the same columns (see :func:`nearest_indices` and :func:`_ink`)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            if image.size != (NATIVE_SIZE, NATIVE_SIZE):
                raise DatasetError(f"{where}: image is {image.size[0]}x{image.size[1]}, expected 105x105")
            ink = _ink(image)
    except DatasetError:
        raise
    except (OSError, ValueError, SyntaxError, zlib.error, Image.DecompressionBombError) as error:
        raise DatasetError(f"{where}: not a readable PNG ({error})") from error
    return ink[np.ix_(rows, rows)]


def decode_image(path: Path, image_size: int) -> np.ndarray:
    """Any image file, as the archives' drawings are decoded -> uint8 ``(1, S, S)``, ink 255:
    the ink mask of :func:`_ink`, sampled NEAREST as Pillow does, rows
    ``floor((i + 0.5) H / S)`` and columns ``floor((j + 0.5) W / S)`` (:func:`nearest_indices`)."""
    try:
        with Image.open(path) as image:
            image.load()
            ink = _ink(image)
    except (OSError, ValueError, SyntaxError, zlib.error, Image.DecompressionBombError) as error:
        raise DatasetError(f"{path}: not a readable image ({error})") from error
    rows, columns = nearest_indices(image_size, ink.shape[0]), nearest_indices(image_size, ink.shape[1])
    return (ink[np.ix_(rows, columns)].astype(np.uint8) * 255)[None]


def _decode_part(reader: _ArchiveReader, drawings: dict[str, list[str]], image_size: int, progress: bool) -> np.ndarray:
    """Decode every drawing into uint8 ``(n_characters, 20, 1, S, S)``, ink 255."""
    rows = nearest_indices(image_size)
    images = np.zeros((len(drawings), DRAWINGS_PER_CHARACTER, 1, image_size, image_size), np.uint8)
    flat = [(c, d, member) for c, files in enumerate(drawings.values()) for d, member in enumerate(files)]
    for c, d, member in progress_bar(flat, desc=f"decoding {reader.path.name}", unit="png", enabled=progress):
        ink = decode_drawing(reader.read(member), f"{reader.path}: {member}", rows)
        images[c, d, 0][ink] = 255
    return images


def load_part(
    root: str | os.PathLike[str],
    part: str,
    *,
    image_size: int = DEFAULT_IMAGE_SIZE,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> OmniglotPart:
    """Read, check and decode one official archive (cached; see :mod:`meta.data.cache`).

    Args:
        root: folder holding ``images_<part>.zip`` or the unpacked ``images_<part>/``.
        part: ``"background"`` or ``"evaluation"``.
        image_size: side ``S`` of the square output images (105 = no resizing).
    """
    check_choice("Omniglot part", part, PARTS)
    image_size = check_int("image_size", image_size, minimum=1)
    with _ArchiveReader(Path(root), part) as reader:
        where = {"dataset": "omniglot", "source": str(reader.path.resolve()), "image_size": image_size}
        key = {**where, "decoder": DECODER_VERSION, "identity": reader.identity()}

        def build() -> tuple[np.ndarray, dict[str, Any]]:
            drawings = group_drawings(reader.png_members, str(reader.path), part)
            return _decode_part(reader, drawings, image_size, progress), {"characters": list(drawings)}

        path = entry_path(f"omniglot-{part}-{image_size}px", where, cache_dir)
        images, metadata = cached_array(path, key, build)
    return OmniglotPart(part, images, tuple(metadata["characters"]), str(reader.path))


def maml_character_split(characters: list[str]) -> dict[str, list[str]]:
    """cbfinn/maml's character split, with sorted instead of ``os.listdir`` order.

    Args:
        characters: ``"<alphabet>/<character>"`` names of all 1,623 characters (any order).

    Returns:
        ``{"train": 1100 names, "val": 100, "test": the rest}`` in shuffled order.
    """
    order = sorted(characters, key=lambda name: tuple(name.split("/")))
    random.Random(MAML_SHUFFLE_SEED).shuffle(order)
    n_train, n_val = MAML_TRAIN_CHARACTERS, MAML_VAL_CHARACTERS
    return {
        "train": order[:n_train],
        "val": order[n_train : n_train + n_val],
        "test": order[n_train + n_val :],
    }


def rotated_classes(images: np.ndarray) -> np.ndarray:
    """Every character at each of :data:`ROTATIONS` as its own class.

    Args:
        images: ``(n, D, C, H, W)`` with ``H == W``.

    Returns:
        ``(4n, D, C, H, W)``: class ``4c + k`` is character ``c`` turned ``90k`` degrees
        counter-clockwise (``np.rot90(image, k)``).
    """
    stacked = np.stack([np.rot90(images, k, axes=(-2, -1)) for k in range(len(ROTATIONS))], axis=1)
    return stacked.reshape(-1, *images.shape[1:])


def load_omniglot(
    split: str,
    *,
    root: str | os.PathLike[str],
    protocol: str = "maml",
    image_size: int = DEFAULT_IMAGE_SIZE,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> FewShotSplit:
    """One split of Omniglot under ``protocol`` (see the module docstring for both protocols).

    Returns:
        A :class:`FewShotSplit` named ``omniglot/<protocol>/<split>`` with images
        ``(n_classes, 20, 1, S, S)`` uint8 ink 255; class names ``"<alphabet>/<character>"``
        (``"/rotNNN"`` appended under ``"maml"``); groups the alphabets.
    """
    check_protocol("Omniglot", protocol, PROTOCOLS)
    check_split(split)
    if protocol == "lake" and split == "val":
        raise ValueError("the 'lake' protocol has no validation split; use protocol='lake-val'")
    parts = _parts_needed(protocol, split)
    loaded = [load_part(root, p, image_size=image_size, cache_dir=cache_dir, progress=progress) for p in parts]
    characters = [c for part in loaded for c in part.characters]
    images = np.concatenate([part.images for part in loaded]) if len(loaded) > 1 else loaded[0].images
    chosen = _chosen_characters(protocol, split, characters)
    index = {name: i for i, name in enumerate(characters)}
    selected = images[[index[name] for name in chosen]]
    info: dict[str, Any] = {
        "dataset": "omniglot",
        "protocol": protocol,
        "split": split,
        "sources": [part.source for part in loaded],
        "image_size": image_size,
        "resize": f"Pillow NEAREST from 105x105: rows/cols floor((i+0.5)*105/{image_size})",
        "n_characters": len(chosen),
    }
    names = chosen
    if protocol == "maml":
        selected = rotated_classes(selected)
        names = [f"{name}/rot{angle:03d}" for name in chosen for angle in ROTATIONS]
        info["rotations"] = list(ROTATIONS)
        info["order"] = "sorted alphabets and characters, then random.Random(1).shuffle"
    return FewShotSplit(
        name=f"omniglot/{protocol}/{split}",
        images=np.ascontiguousarray(selected),
        class_names=tuple(names),
        groups=tuple(name.split("/")[0] for name in names),
        info=info,
    )


def _parts_needed(protocol: str, split: str) -> tuple[str, ...]:
    if protocol == "maml":
        return PARTS
    return ("evaluation",) if split == "test" else ("background",)


def _chosen_characters(protocol: str, split: str, characters: list[str]) -> list[str]:
    if protocol == "maml":
        return maml_character_split(characters)[split]
    if protocol == "lake" or split == "test":
        return characters
    held_out = split == "val"
    return [c for c in characters if (c.split("/")[0] in LAKE_VAL_ALPHABETS) == held_out]
