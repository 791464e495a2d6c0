"""The built-in data set ``glyphs``: Omniglot-shaped few-shot classes drawn from matplotlib's fonts.

Nothing is downloaded: every image is rendered on this machine from the TrueType fonts that
matplotlib ships (``mpl-data/fonts/ttf``), with FreeType through ``matplotlib.ft2font.FT2Font``
(matplotlib >= 3.10: ``LoadFlags`` and drawing glyphs into numpy buffers). With matplotlib
3.11's fonts the set has 1844 characters in 37 alphabets (train 1295, val 178, test 371
characters), 20 drawings each (how long it takes to make: see ``benchmarks/README.md``).

How the set is made (generator version :data:`GENERATOR_VERSION`):

1. **Faces.** The 16 DejaVu Sans/Sans Mono/Serif and STIX General faces (regular, bold, italic
   or oblique, bold italic) cover all of Unicode that they map; the 6 Computer Modern faces
   (cmr, cmb, cmti, cmss, cmtt, cmmi; :data:`LATIN_ONLY_FACES`) are used for ASCII letters and
   digits only, since the rest of their character map is a TeX encoding, not Unicode. Display,
   size-variant, non-Unicode and LastResort faces are not used.
2. **Candidates.** Each :class:`Alphabet` is a list of Unicode blocks (a script or a family of
   symbols). A code point is a candidate if it is a letter, number, punctuation mark or symbol
   (general category L*, N*, P*, S*) and at least two faces draw it: the face maps it to a
   glyph that is not ``.notdef``, whose outline is not the face's missing-glyph box, and that
   leaves ink.
3. **Normalised renderings.** A glyph is rendered once per face so that the larger side of its
   box is about :data:`~meta.data.glyph_fonts.GLYPH_BOX` pixels, centred on a ``64 x 64`` canvas. Its *template* is the
   mean over its faces of the canvas shrunk to ``28 x 28`` with the larger side
   ``DISTORTION.glyph_px`` pixels: size and position are normalised away.
4. **Near-duplicates.** :func:`glyph_distance` compares two images by their
   :func:`glyph_features`: the image and its Sobel edge magnitude, each divided by its maximum,
   blurred (Gaussian, sigma 1 pixel) and scaled to unit norm, concatenated with weight
   ``1/sqrt(2)`` each, so the distance lies in ``[0, sqrt(2)]``; edges keep a filled square
   apart from a filled disc. Alphabets are screened in the order of :data:`ALPHABETS`, and the
   code points of each in the order of its ranges; a candidate is kept if its template is at
   least :data:`DUPLICATE_THRESHOLD` from every template kept so far (so Latin ``O`` is kept,
   Cyrillic ``О`` and Greek ``Ο`` are dropped, and so is ``l``, too close to ``I``; ``|`` stays,
   since most faces draw ``l`` with serifs or a tail), until the alphabet holds
   :data:`MAX_CHARS_PER_ALPHABET` characters (Omniglot's alphabets hold 14 to 55). The choice
   depends on the fonts only, never on the seed.
5. **Drawings.** Each character gets :data:`N_DRAWINGS` drawings. The faces that have the glyph
   are dealt out evenly (a random permutation of the faces repeated, then shuffled), so every
   character is drawn in at least two faces. Each drawing then gets a random affine map
   (:class:`Distortion`: rotation, shear, aspect and size jitter, then a shift limited to the
   room left inside the frame, with the glyph shrunk if it would not fit), is resampled
   bilinearly at ``56 x 56``, gets a stroke variation (3x3 erosion, none, or 3x3 dilation with
   probabilities 1/4, 1/2, 1/4; an erosion that would remove more than half of the ink is
   skipped), is averaged down to ``28 x 28`` and scaled so that its darkest ink is 255.
6. **Splits.** Whole alphabets go to train, val or test as fixed in :data:`ALPHABETS` (about
   70/10/20 of the characters, like Omniglot's MAML protocol; the measured proportions are in
   ``info["split_fractions"]``).

Determinism: every random draw of character ``c`` comes from
``numpy.random.SeedSequence(seed, spawn_key=(c,))``, so the bytes depend only on the seed, the
generator version, the font files and the FreeType/torch builds, and a character's drawings do
not depend on which other characters are generated. The result is cached as one ``.npz``
(:mod:`meta.data.cache`, written atomically; a corrupt or stale entry is rebuilt) whose key holds
the seed, :data:`GENERATOR_VERSION` and a SHA-256 of the font files and the FreeType version.

Modules: :mod:`meta.data.glyph_fonts` holds the alphabet table, the faces and the rendering of
single glyphs (steps 1-3), :mod:`meta.data.glyph_drawing` the templates and the drawings
(steps 3 and 5); this module the near-duplicate measure, the choice of characters, the splits,
the cache and the public names of all three.

Imports: :mod:`meta.data`, :mod:`meta.validation` and :mod:`repsim.progress`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from typing import Any

import matplotlib
import numpy as np
import torch
from scipy import ndimage

from meta.data.base import SPLITS, FewShotSplit, check_split
from meta.data.cache import cached_array, entry_path
from meta.data.glyph_drawing import DISTORTION, IMAGE_SIZE, N_DRAWINGS, Distortion, draw_characters, mean_templates
from meta.data.glyph_fonts import (
    ALPHABETS,
    LATIN_ONLY_FACES,
    UNICODE_FACES,
    Alphabet,
    Character,
    Face,
    candidates,
    font_fingerprint,
    open_faces,
    render_character,
)
from meta.validation import check_int
from repsim.progress import progress_bar

__all__ = [
    "ALPHABETS",
    "DISTORTION",
    "DUPLICATE_THRESHOLD",
    "GENERATOR_VERSION",
    "IMAGE_SIZE",
    "LATIN_ONLY_FACES",
    "MAX_CHARS_PER_ALPHABET",
    "N_DRAWINGS",
    "SPLITS",
    "UNICODE_FACES",
    "Alphabet",
    "Distortion",
    "character_templates",
    "font_fingerprint",
    "generate_glyphs",
    "glyph_distance",
    "glyph_features",
    "load_glyphs",
]


GENERATOR_VERSION = 1  # part of the cache key: bump it whenever the generated bytes change
DUPLICATE_THRESHOLD = 0.25
MAX_CHARS_PER_ALPHABET = 60
_FEATURE_BLUR = 1.0
_CHUNK = 32  # candidates rendered per warp call while choosing characters
_CLASS_NAME = re.compile(r"^(?P<alphabet>.+)/U\+(?P<code>[0-9A-F]{4,6})$")


def glyph_features(images: np.ndarray) -> np.ndarray:
    """Unit-norm features of images for :func:`glyph_distance`.

    For an image ``x`` (any non-negative float, ink high), with ``g = gaussian(sigma=1 px)`` and
    ``e(x) = |sobel(x)|`` the edge magnitude:
    ``f(x) = [n(g(x / max x)), n(g(e(x / max x)))] / sqrt(2)``, ``n(v) = v / ||v||``.

    Args:
        images: ``(..., H, W)``; each image must have some ink.

    Returns:
        ``(..., 2 * H * W)`` float64 with unit norm.
    """
    x = np.asarray(images, np.float64)
    if x.ndim < 2 or not np.all(np.isfinite(x)) or np.any(x < 0):
        raise ValueError(f"images must be finite, non-negative (..., H, W) arrays; got shape {x.shape}")
    peak = x.max(axis=(-2, -1), keepdims=True)
    if np.any(peak <= 0):
        raise ValueError("an image has no ink (all zero); its glyph distance is undefined")
    x = x / peak
    edges = np.hypot(_sobel(x, axis=-1), _sobel(x, axis=-2))
    sigma = [0.0] * (x.ndim - 2) + [_FEATURE_BLUR, _FEATURE_BLUR]
    parts = []
    for part in (x, edges):
        blurred = ndimage.gaussian_filter(part, sigma=sigma, mode="constant").reshape(*x.shape[:-2], -1)
        parts.append(blurred / np.linalg.norm(blurred, axis=-1, keepdims=True))
    return np.concatenate(parts, axis=-1) / np.sqrt(2.0)


def _sobel(x: np.ndarray, axis: int) -> np.ndarray:
    """Sobel derivative of ``(..., H, W)`` images along image ``axis`` (-1 or -2), smoothed along
    the other image axis only (``ndimage.sobel`` would also smooth across the leading axes)."""
    other = -3 - axis  # -1 <-> -2
    derivative = ndimage.correlate1d(x, [-1.0, 0.0, 1.0], axis=axis, mode="constant")
    return ndimage.correlate1d(derivative, [1.0, 2.0, 1.0], axis=other, mode="constant")


def glyph_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance between images (broadcast over leading axes): ``||f(a) - f(b)||`` with
    ``f`` = :func:`glyph_features`; 0 for equal images up to brightness, at most ``sqrt(2)``.
    Two characters are near-duplicates when their templates are closer than
    :data:`DUPLICATE_THRESHOLD`."""
    return np.linalg.norm(glyph_features(a) - glyph_features(b), axis=-1)


def _select_characters(last: int, progress: bool) -> list[Character]:
    """Screen ``ALPHABETS[: last + 1]`` in order and keep, for each, up to
    :data:`MAX_CHARS_PER_ALPHABET` characters whose template is at least
    :data:`DUPLICATE_THRESHOLD` from every template kept before (greedy, deterministic)."""
    faces = open_faces()
    kept: list[Character] = []
    kept_features = np.empty(((last + 1) * MAX_CHARS_PER_ALPHABET, 2 * IMAGE_SIZE * IMAGE_SIZE))
    for alphabet in progress_bar(ALPHABETS[: last + 1], desc="glyphs: choosing characters", enabled=progress):
        _screen_alphabet(alphabet, faces, kept, kept_features)
    return kept


def _screen_alphabet(
    alphabet: Alphabet, faces: Sequence[Face], kept: list[Character], kept_features: np.ndarray
) -> None:
    """Append the alphabet's kept characters to ``kept`` and their features to the rows of
    ``kept_features`` after the first ``len(kept)``.

    Candidates are rendered in chunks of :data:`_CHUNK` (one warp call per chunk); the distance
    of unit-norm features is ``sqrt(2 - 2 f.g)``, so it is screened with one matrix product
    against all kept features."""
    most_similar = 1.0 - DUPLICATE_THRESHOLD**2 / 2  # f.g above this means distance below threshold
    count = 0
    for chunk in _chunks(candidates(alphabet, faces), _CHUNK):
        characters = [c for c in (render_character(alphabet, cp, having) for cp, having in chunk) if c]
        if not characters:
            continue
        features = glyph_features(mean_templates(characters))
        similarity = _similarity(features, kept_features[: len(kept)])
        for i, character in enumerate(characters):
            if similarity.shape[1] and similarity[i].max() > most_similar:
                continue
            kept_features[len(kept)] = features[i]
            kept.append(character)
            similarity = np.concatenate([similarity, features @ features[i][:, None]], axis=1)
            count += 1
            if count == MAX_CHARS_PER_ALPHABET:
                return


def _similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b.T`` in float64 through torch, so that it runs on torch's (settable) threads."""
    return torch.from_numpy(a).mm(torch.from_numpy(b).T).numpy()


def _chunks(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    """Consecutive lists of ``size`` items (the last may be shorter)."""
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _alphabet_index(names: Sequence[str] | None) -> tuple[set[str], int]:
    """The requested alphabet names (all if ``None``) and the index of the last one in
    :data:`ALPHABETS` (everything up to it must be screened for duplicates)."""
    known = [alphabet.name for alphabet in ALPHABETS]
    if names is None:
        return set(known), len(known) - 1
    if isinstance(names, str):
        raise ValueError(f"alphabets must be a sequence of alphabet names, not the string {names!r}")
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise ValueError(f"unknown alphabet(s) {unknown or list(names)}; expected names from {known}")
    return set(names), max(known.index(name) for name in names)


def _info(characters: Sequence[Character], seed: int) -> dict[str, Any]:
    """What made the set (JSON-serialisable), common to the three splits."""
    total = len(characters)
    per_split = {split: [c for c in characters if c.alphabet.split == split] for split in SPLITS}
    info = {
        "dataset": "glyphs",
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "matplotlib_version": matplotlib.__version__,
        "freetype_version": matplotlib.ft2font.__freetype_version__,
        "font_fingerprint": font_fingerprint(),
        "fonts": list(UNICODE_FACES + LATIN_ONLY_FACES),
        "latin_only_fonts": list(LATIN_ONLY_FACES),
        "image_size": IMAGE_SIZE,
        "n_drawings": N_DRAWINGS,
        "duplicate_threshold": DUPLICATE_THRESHOLD,
        "max_chars_per_alphabet": MAX_CHARS_PER_ALPHABET,
        "distortion": asdict(DISTORTION),
        "alphabet_sizes": {
            a.name: sum(c.alphabet is a for c in characters)
            for a in ALPHABETS
            if any(c.alphabet is a for c in characters)
        },
        "split_alphabets": {split: sorted({c.alphabet.name for c in chars}) for split, chars in per_split.items()},
        "split_fractions": {split: len(chars) / total if total else 0.0 for split, chars in per_split.items()},
        "mean_faces_per_class": float(np.mean([len(c.faces) for c in characters])) if total else 0.0,
    }
    return json.loads(json.dumps(info))  # tuples become lists, as after a cache round trip


def generate_glyphs(
    seed: int = 0, progress: bool = True, *, alphabets: Sequence[str] | None = None
) -> dict[str, FewShotSplit]:
    """Generate the glyphs set (no cache; :func:`load_glyphs` caches it).

    Args:
        seed: non-negative; all random draws of character ``c`` come from
            ``SeedSequence(seed, spawn_key=(c,))``.
        progress: show progress (a bar on a terminal, a line per stage otherwise).
        alphabets: draw only these alphabets (names from :data:`ALPHABETS`); their characters
            and drawings are exactly those of the full set (the alphabets screened before them
            are still screened for duplicates, but not drawn).

    Returns:
        ``{"train", "val", "test"}`` -> :class:`FewShotSplit` named ``glyphs/<split>`` with
        images ``(n_classes, 20, 1, 28, 28)`` uint8 (ink 255 on 0), class names like
        ``"Greek/U+03B1"`` and groups the alphabet names. A split may be empty when
        ``alphabets`` leaves none of its alphabets.
    """
    seed = check_int("seed", seed, minimum=0)
    wanted, last = _alphabet_index(alphabets)
    characters = [c for c in _select_characters(last, progress) if c.alphabet.name in wanted]
    images = draw_characters(characters, seed, progress)
    names = [c.class_name for c in characters]
    groups = [c.alphabet.name for c in characters]
    split_of = [c.alphabet.split for c in characters]
    info = _info(characters, seed)
    return {split: _glyph_split(split, images, names, groups, split_of, info) for split in SPLITS}


def _glyph_split(
    split: str,
    images: np.ndarray,
    names: Sequence[str],
    groups: Sequence[str],
    split_of: Sequence[str],
    info: dict[str, Any],
) -> FewShotSplit:
    """The classes of ``split`` (those whose ``split_of`` entry is ``split``) of the whole set
    ``images``, ``names``, ``groups`` as a :class:`FewShotSplit` named ``glyphs/<split>``."""
    rows = [i for i, name in enumerate(split_of) if name == split]
    return FewShotSplit(
        name=f"glyphs/{split}",
        images=images[rows],
        class_names=tuple(names[i] for i in rows),
        groups=tuple(groups[i] for i in rows),
        info={**info, "split": split},
    )


def load_glyphs(
    split: str,
    *,
    root: str | os.PathLike[str] | None = None,
    seed: int = 0,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> FewShotSplit:
    """One split of the glyphs set, generated once and then read from the cache.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``.
        root: cache folder used when ``cache_dir`` is ``None`` (the CLI's ``--data-root``).
        seed: non-negative generator seed.
        cache_dir: cache folder; if both are ``None``: ``$FEATURE_REUSE_CACHE``, else
            ``~/.cache/feature-reuse``.
        progress: show progress while generating.

    Returns:
        The split as :func:`generate_glyphs` makes it.
    """
    check_split(split)
    seed = check_int("seed", seed, minimum=0)
    folder = cache_dir if cache_dir is not None else root
    path = entry_path(f"glyphs-seed{seed}", {"dataset": "glyphs", "seed": seed}, folder)
    images, metadata = cached_array(path, _cache_key(seed), lambda: _cache_entry(generate_glyphs(seed, progress)))
    return _glyph_split(
        split, images, metadata["class_names"], metadata["groups"], metadata["splits"], metadata["info"]
    )


def _cache_key(seed: int) -> dict[str, Any]:
    """Everything the cached set depends on (see :mod:`meta.data.cache`)."""
    return {
        "dataset": "glyphs",
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "font_fingerprint": font_fingerprint(),
        "matplotlib_version": matplotlib.__version__,
    }


def _cache_entry(splits: dict[str, FewShotSplit]) -> tuple[np.ndarray, dict[str, Any]]:
    """The three splits as one cache entry: their images concatenated in :data:`SPLITS` order,
    and per class its name, group and split, with the info they share."""
    ordered = [splits[name] for name in SPLITS]
    metadata = {
        "class_names": [name for s in ordered for name in s.class_names],
        "groups": [group for s in ordered for group in s.groups],
        "splits": [s.info["split"] for s in ordered for _ in s.class_names],
        "info": {k: v for k, v in ordered[0].info.items() if k != "split"},
    }
    return np.concatenate([s.images for s in ordered]), metadata


def character_templates(class_names: Sequence[str]) -> np.ndarray:
    """The undistorted template of each named character: the mean over the faces that draw it
    of its size- and position-normalised ``28 x 28`` rendering (float64 in ``[0, 1]``), as used
    to remove near-duplicates.

    Args:
        class_names: names like ``"Greek/U+03B1"`` (the alphabet part is not checked against
            :data:`ALPHABETS`, so any code point drawn by two faces can be compared).

    Returns:
        ``(n, 28, 28)`` float64.
    """
    characters = [_named_character(name, open_faces()) for name in class_names]
    if not characters:
        return np.empty((0, IMAGE_SIZE, IMAGE_SIZE))
    return mean_templates(characters)


def _named_character(name: str, faces: Sequence[Face]) -> Character:
    """The character of a class name ``"Alphabet/U+XXXX"``, rendered by every face that draws it."""
    match = _CLASS_NAME.match(name)
    if match is None:
        raise ValueError(f"class name {name!r} is not of the form 'Alphabet/U+XXXX'")
    code_point = int(match["code"], 16)
    character = render_character(ALPHABETS[0], code_point, [f for f in faces if f.maps(code_point)])
    if character is None:
        raise ValueError(f"{name}: fewer than two faces draw U+{code_point:04X}")
    return character
