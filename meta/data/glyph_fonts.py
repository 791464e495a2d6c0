"""The fonts side of the glyphs set (:mod:`meta.data.glyphs`): the alphabet table, the faces and
the rendering of single glyphs.

- :data:`ALPHABETS`: each :class:`Alphabet` is a list of Unicode blocks with the split it goes to.
- :func:`open_faces`: the 16 Unicode faces of :data:`UNICODE_FACES` and the 6 Computer Modern
  faces of :data:`LATIN_ONLY_FACES` (ASCII letters and digits only), read with FreeType through
  ``matplotlib.ft2font.FT2Font`` from matplotlib's ``mpl-data/fonts/ttf``;
  :func:`font_fingerprint` identifies them for the cache key.
- :func:`render_glyph`: one face's glyph on a ``64 x 64`` canvas, its larger side
  :data:`GLYPH_BOX` pixels, centred; :func:`candidates` and :func:`render_character`: the code
  points of an alphabet that at least two faces draw, and their renderings as a
  :class:`Character`.

Imports: :mod:`meta.data.base` only.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.ft2font import FT2Font, LoadFlags

from meta.data.base import SPLITS

FONT_DIR = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
UNICODE_FACES = (
    "DejaVuSans", "DejaVuSans-Bold", "DejaVuSans-Oblique", "DejaVuSans-BoldOblique",
    "DejaVuSansMono", "DejaVuSansMono-Bold", "DejaVuSansMono-Oblique", "DejaVuSansMono-BoldOblique",
    "DejaVuSerif", "DejaVuSerif-Bold", "DejaVuSerif-Italic", "DejaVuSerif-BoldItalic",
    "STIXGeneral", "STIXGeneralBol", "STIXGeneralItalic", "STIXGeneralBolIta",
)  # fmt: skip
LATIN_ONLY_FACES = ("cmr10", "cmb10", "cmti10", "cmss10", "cmtt10", "cmmi10")


@dataclass(frozen=True)
class Alphabet:
    """One "alphabet" of the glyphs set: Unicode blocks (inclusive code point ranges) and a split."""

    name: str
    split: str
    ranges: tuple[tuple[int, int], ...]

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"alphabet {self.name!r}: unknown split {self.split!r}; expected one of {SPLITS}")
        if not self.ranges or any(first > last or first < 0 for first, last in self.ranges):
            raise ValueError(f"alphabet {self.name!r}: ranges must be non-empty (first, last) pairs, first <= last")

    def code_points(self) -> Iterator[int]:
        """The code points of the ranges, in the order listed."""
        for first, last in self.ranges:
            yield from range(first, last + 1)


ALPHABETS: tuple[Alphabet, ...] = (
    Alphabet("Latin", "train", ((0x41, 0x5A), (0x61, 0x7A), (0x30, 0x39), (0xC0, 0xFF))),
    Alphabet("Greek", "train", ((0x370, 0x3FF),)),
    Alphabet("Cyrillic", "train", ((0x400, 0x52F), (0xA640, 0xA69F))),
    Alphabet("Armenian", "train", ((0x530, 0x58F), (0xFB13, 0xFB17))),
    Alphabet("Hebrew", "train", ((0x5D0, 0x5FF), (0xFB1D, 0xFB4F))),
    Alphabet("Arabic", "train", ((0x600, 0x6FF),)),
    Alphabet("Arabic Presentation Forms", "train", ((0xFB50, 0xFDFF), (0xFE70, 0xFEFF))),
    Alphabet("NKo", "test", ((0x7C0, 0x7FF),)),
    Alphabet("Lao", "test", ((0xE80, 0xEFF),)),
    Alphabet("Georgian", "test", ((0x10A0, 0x10FF), (0x2D00, 0x2D2F))),
    Alphabet("Canadian Syllabics", "train", ((0x1400, 0x167F),)),
    Alphabet("Ogham", "val", ((0x1680, 0x169F),)),
    Alphabet("Tifinagh", "test", ((0x2D30, 0x2D7F),)),
    Alphabet("Lisu", "val", ((0xA4D0, 0xA4FF),)),
    Alphabet("Old Italic", "test", ((0x10300, 0x1032F),)),
    Alphabet("Latin Extended", "train", ((0x100, 0x24F), (0x2C60, 0x2C7F), (0xA720, 0xA7FF), (0xFB00, 0xFB06))),
    Alphabet("Latin Extended Additional", "train", ((0x1E00, 0x1EFF),)),
    Alphabet("Greek Extended", "train", ((0x1F00, 0x1FFF),)),
    Alphabet("IPA and Phonetic", "train", ((0x250, 0x2FF), (0x1D00, 0x1DBF))),
    Alphabet("Mathematical Script and Double-Struck", "train", ((0x1D49C, 0x1D59F),)),
    Alphabet(
        "Punctuation",
        "train",
        ((0x21, 0x2F), (0x3A, 0x40), (0x5B, 0x60), (0x7B, 0x7E), (0xA1, 0xBF), (0x2000, 0x206F), (0x2E00, 0x2E7F)),
    ),
    Alphabet("Currency", "val", ((0x20A0, 0x20CF),)),
    Alphabet("Letterlike Symbols", "train", ((0x2100, 0x218F),)),
    Alphabet("Arrows", "train", ((0x2190, 0x21FF), (0x27F0, 0x27FF), (0x2900, 0x297F), (0x2B00, 0x2BFF))),
    Alphabet("Mathematical Operators", "train", ((0x2200, 0x22FF),)),
    Alphabet("Supplemental Mathematical Operators", "train", ((0x2A00, 0x2AFF), (0x27C0, 0x27EF), (0x2980, 0x29FF))),
    Alphabet("Miscellaneous Technical", "val", ((0x2300, 0x23FF),)),
    Alphabet("Enclosed Alphanumerics", "train", ((0x2460, 0x24FF), (0x2776, 0x2793))),
    Alphabet("Box Drawing", "test", ((0x2500, 0x257F),)),
    Alphabet("Block Elements", "val", ((0x2580, 0x259F),)),
    Alphabet("Geometric Shapes", "train", ((0x25A0, 0x25FF),)),
    Alphabet("Miscellaneous Symbols", "train", ((0x2600, 0x26FF),)),
    Alphabet("Dingbats", "test", ((0x2700, 0x2775), (0x2794, 0x27BF))),
    Alphabet("Braille", "train", ((0x2800, 0x28FF),)),
    Alphabet("Yijing and Tai Xuan Jing", "val", ((0x4DC0, 0x4DFF), (0x1D300, 0x1D35F))),
    Alphabet("Domino Tiles", "val", ((0x1F030, 0x1F09F),)),
    Alphabet("Emoticons", "test", ((0x1F600, 0x1F64F),)),
)  # fmt: skip


CANVAS = 64  # side of the canvas holding one normalised rendering
GLYPH_BOX = 52  # larger side of the ink box on the canvas
_PAD = 8  # room around the canvas in the scratch bitmap a glyph is drawn into
_REFERENCE_PT = 64.0
_LOAD_FLAGS = LoadFlags.NO_HINTING


@dataclass
class Face:
    """One font file, opened once, with its Unicode character map."""

    name: str
    font: FT2Font
    charmap: dict[int, int]
    latin_only: bool
    missing_outline: np.ndarray

    def maps(self, code_point: int) -> bool:
        """Whether the face maps the code point to a real glyph (not ``.notdef``)."""
        if self.latin_only and not (chr(code_point).isascii() and chr(code_point).isalnum()):
            return False
        return self.charmap.get(code_point, 0) != 0


@dataclass
class Character:
    """A rendered character: its alphabet, code point and the canvases of the faces that draw it."""

    alphabet: Alphabet
    code_point: int
    canvases: np.ndarray  # (n_faces, 64, 64) uint8
    extents: np.ndarray  # (n_faces, 2) ink half-width and half-height in units of GLYPH_BOX / 2
    faces: tuple[str, ...]

    @property
    def class_name(self) -> str:
        return f"{self.alphabet.name}/U+{self.code_point:04X}"


@lru_cache(maxsize=1)
def open_faces() -> tuple[Face, ...]:
    """All faces used, in a fixed order: :data:`UNICODE_FACES` then :data:`LATIN_ONLY_FACES`."""
    faces = []
    for name in UNICODE_FACES + LATIN_ONLY_FACES:
        font = FT2Font(str(FONT_DIR / f"{name}.ttf"))
        font.set_size(_REFERENCE_PT, 72)
        font.load_glyph(0, flags=_LOAD_FLAGS)
        missing = np.asarray(font.get_path()[0])
        charmap = {code: index for code, index in font.get_charmap().items() if index}
        faces.append(Face(name, font, charmap, name in LATIN_ONLY_FACES, missing))
    return tuple(faces)


def font_fingerprint() -> str:
    """SHA-256 (hex) of the used font files' names and bytes and of the FreeType version."""
    digest = hashlib.sha256(matplotlib.ft2font.__freetype_version__.encode())
    for name in UNICODE_FACES + LATIN_ONLY_FACES:
        digest.update(name.encode())
        digest.update((FONT_DIR / f"{name}.ttf").read_bytes())
    return digest.hexdigest()


def render_glyph(face: Face, code_point: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The glyph on a ``(64, 64)`` uint8 canvas, its ink box's larger side ``GLYPH_BOX`` px and
    centred, with its ink half-extents ``(x, y)`` in units of ``GLYPH_BOX / 2``; ``None`` if
    the glyph is the missing-glyph box or leaves no ink.

    The glyph is loaded at a reference size to measure its box, then loaded again at the size
    that makes the box's larger side ``GLYPH_BOX`` px and drawn into a scratch bitmap."""
    font = face.font
    font.set_size(_REFERENCE_PT, 72)
    glyph = font.load_char(code_point, flags=_LOAD_FLAGS)
    x_min, y_min, x_max, y_max = glyph.bbox  # 26.6 fixed point
    extent = max(x_max - x_min, y_max - y_min) / 64
    outline = np.asarray(font.get_path()[0])
    if extent <= 0 or (outline.shape == face.missing_outline.shape and np.array_equal(outline, face.missing_outline)):
        return None
    font.set_size(_REFERENCE_PT * GLYPH_BOX / extent, 72)
    glyph = font.load_char(code_point, flags=_LOAD_FLAGS)
    scratch = np.zeros((CANVAS + 2 * _PAD, CANVAS + 2 * _PAD), np.uint8)
    font.draw_glyph_to_bitmap(scratch, _PAD - glyph.bbox[0] // 64, _PAD, glyph, antialiased=True)
    rows, cols = np.flatnonzero(scratch.any(axis=1)), np.flatnonzero(scratch.any(axis=0))
    if rows.size == 0:
        return None
    ink = scratch[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1][:CANVAS, :CANVAS]
    height, width = ink.shape
    canvas = np.zeros((CANVAS, CANVAS), np.uint8)
    top, left = (CANVAS - height) // 2, (CANVAS - width) // 2
    canvas[top : top + height, left : left + width] = ink
    return canvas, np.array([width, height], np.float64) / GLYPH_BOX


def candidates(alphabet: Alphabet, faces: Sequence[Face]) -> Iterator[tuple[int, list[Face]]]:
    """Code points of the alphabet that are letters, numbers, punctuation or symbols mapped by
    at least two faces, with those faces."""
    for code_point in alphabet.code_points():
        if unicodedata.category(chr(code_point))[0] not in "LNPS":
            continue
        having = [face for face in faces if face.maps(code_point)]
        if len(having) >= 2:
            yield code_point, having


def render_character(alphabet: Alphabet, code_point: int, faces: Sequence[Face]) -> Character | None:
    """All faces' renderings of a code point; ``None`` if fewer than two leave real ink."""
    rendered = [(face.name, render_glyph(face, code_point)) for face in faces]
    rendered = [(name, result) for name, result in rendered if result is not None]
    if len(rendered) < 2:
        return None
    canvases = np.stack([result[0] for _, result in rendered])
    extents = np.stack([result[1] for _, result in rendered])
    return Character(alphabet, code_point, canvases, extents, tuple(name for name, _ in rendered))
