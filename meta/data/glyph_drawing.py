"""The drawing side of the glyphs set (:mod:`meta.data.glyphs`): from a character's canvases
(:mod:`meta.data.glyph_fonts`) to its ``28 x 28`` images.

- :func:`mean_templates`: a character's undistorted template, the mean over its faces of the
  rendering with the larger side ``DISTORTION.glyph_px`` pixels, centred.
- :func:`draw_characters`: the :data:`N_DRAWINGS` drawings of each character, each a random
  affine map (:class:`Distortion`) resampled bilinearly at ``56 x 56``, a stroke variation
  (3x3 erosion, none or dilation), averaged down to ``28 x 28`` and scaled so that its darkest
  ink is 255; every random draw of character ``c`` comes from
  ``SeedSequence(seed, spawn_key=(c,))``.

Imports: :mod:`meta.data.glyph_fonts` and :mod:`repsim.progress`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from meta.data.glyph_fonts import CANVAS, GLYPH_BOX, Character
from repsim.progress import progress_bar

IMAGE_SIZE = 28
N_DRAWINGS = 20


@dataclass(frozen=True)
class Distortion:
    """Limits of the random affine map and stroke variation of one drawing (pixels of 28x28).

    The linear part is ``R(rotation) @ [[1, shear], [0, 1]] @ diag(aspect, 1/aspect) * size``:
    rotation uniform in ``+-rotation_deg``, shear uniform in ``+-shear``, ``log(aspect)`` uniform
    in ``+-log_aspect``, and the glyph's larger side ``glyph_px * U(scale)``; the map is shrunk
    if the glyph's box would come closer than ``margin_px`` to the frame, and the shift is
    uniform within the room left, at most ``shift_px`` each way.
    """

    glyph_px: float = 22.0
    scale: tuple[float, float] = (0.8, 1.0)
    rotation_deg: float = 12.0
    shear: float = 0.2
    log_aspect: float = 0.15
    shift_px: float = 3.0
    margin_px: float = 2.0
    stroke_probabilities: tuple[float, float, float] = (0.25, 0.5, 0.25)  # erode, none, dilate


DISTORTION = Distortion()

_SUPERSAMPLE = 2  # drawings are warped at 56x56, then averaged down to 28x28
_MIN_ERODED_INK = 0.5
_BATCH = 1024  # drawings warped per torch call


def _warp(canvases: np.ndarray, linear: np.ndarray, shift: np.ndarray) -> torch.Tensor:
    """Bilinear resampling of canvases under forward affine maps, at ``56 x 56``.

    Coordinates: ``u`` on the canvas with the glyph's larger side spanning ``[-1, 1]``, ``o`` on
    the output frame spanning ``[-1, 1]`` (pixel edges, ``align_corners=False``); the forward map
    is ``o = linear @ u + shift``, so each output pixel samples ``u = linear^-1 (o - shift)``.
    The sampling grid is built elementwise (no batched matmul), so a drawing's bytes do not
    depend on the batch it is warped in.

    Args:
        canvases: ``(n, 64, 64)`` uint8.
        linear: ``(n, 2, 2)`` float64; shift: ``(n, 2)`` float64, both in ``(x, y)`` order.

    Returns:
        ``(n, 1, 56, 56)`` float32 in ``[0, 1]``.
    """
    size = IMAGE_SIZE * _SUPERSAMPLE
    inverse = np.linalg.inv(linear) * (GLYPH_BOX / CANVAS)  # u -> canvas grid coordinates
    offset = -np.einsum("nij,nj->ni", inverse, shift)
    o = (2 * np.arange(size) + 1) / size - 1
    ox, oy = o[None, None, :], o[None, :, None]
    gx = inverse[:, 0, 0, None, None] * ox + inverse[:, 0, 1, None, None] * oy + offset[:, 0, None, None]
    gy = inverse[:, 1, 0, None, None] * ox + inverse[:, 1, 1, None, None] * oy + offset[:, 1, None, None]
    grid = torch.from_numpy(np.stack([gx, gy], axis=-1).astype(np.float32))
    images = torch.from_numpy(canvases).unsqueeze(1).float().div_(255)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _undistorted(canvases: np.ndarray) -> np.ndarray:
    """Undistorted ``(n, 28, 28)`` float64 renderings (larger side ``DISTORTION.glyph_px``,
    centred), warped :data:`_BATCH` at a time."""
    out = np.empty((len(canvases), IMAGE_SIZE, IMAGE_SIZE))
    for start in range(0, len(canvases), _BATCH):
        batch = canvases[start : start + _BATCH]
        linear = np.broadcast_to(np.eye(2) * DISTORTION.glyph_px / IMAGE_SIZE, (len(batch), 2, 2))
        warped = _warp(batch, linear, np.zeros((len(batch), 2)))
        out[start : start + len(batch)] = F.avg_pool2d(warped, _SUPERSAMPLE)[:, 0].double().numpy()
    return out


def mean_templates(characters: Sequence[Character]) -> np.ndarray:
    """``(n, 28, 28)`` float64: each character's template, the mean over its faces of the
    undistorted rendering."""
    rendered = _undistorted(np.concatenate([c.canvases for c in characters]))
    bounds = np.cumsum([0] + [len(c.canvases) for c in characters])
    return np.stack([rendered[start:stop].mean(axis=0) for start, stop in zip(bounds[:-1], bounds[1:])])


def _drawing_parameters(character: Character, seed: int) -> tuple[np.ndarray, ...]:
    """Random choices for the :data:`N_DRAWINGS` drawings of one character, all drawn from
    ``SeedSequence(seed, spawn_key=(code_point,))``.

    Returns:
        ``(face (20,) int, linear (20, 2, 2), shift (20, 2), stroke (20,) int)``: the canvas
        index, the forward affine map of :func:`_warp` and the stroke variation (0 erode,
        1 none, 2 dilate).
    """
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(character.code_point,)))
    n, d = N_DRAWINGS, DISTORTION
    n_faces = len(character.canvases)
    face = rng.permutation(np.resize(rng.permutation(n_faces), n))
    angle = np.deg2rad(rng.uniform(-d.rotation_deg, d.rotation_deg, n))
    shear = rng.uniform(-d.shear, d.shear, n)
    aspect = np.exp(rng.uniform(-d.log_aspect, d.log_aspect, n))
    size = rng.uniform(*d.scale, n) * d.glyph_px / IMAGE_SIZE
    unit_shift = rng.uniform(-1.0, 1.0, (n, 2))
    stroke = rng.choice(3, n, p=d.stroke_probabilities)
    cos, sin = np.cos(angle), np.sin(angle)
    rotation = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)
    shearing = np.zeros((n, 2, 2))
    shearing[:, 0, 0] = shearing[:, 1, 1] = 1.0
    shearing[:, 0, 1] = shear
    scaling = np.zeros((n, 2, 2))
    scaling[:, 0, 0], scaling[:, 1, 1] = aspect * size, size / aspect
    linear = rotation @ shearing @ scaling
    linear, shift = _fit_in_frame(linear, character.extents[face], unit_shift)
    return face, linear, shift, stroke


def _fit_in_frame(linear: np.ndarray, extents: np.ndarray, unit_shift: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Shrink each map whose image of the ink box would cross the margin, and scale the unit
    shifts ``(n, 2)`` in ``[-1, 1]`` to the room left (at most ``DISTORTION.shift_px``).

    The ink box is ``[-ex, ex] x [-ey, ey]`` (``extents`` ``(n, 2)``); its image under
    ``linear`` reaches ``|L00| ex + |L01| ey`` horizontally and ``|L10| ex + |L11| ey``
    vertically (frame half-width 1)."""
    margin = 2 * DISTORTION.margin_px / IMAGE_SIZE
    reach = np.einsum("nij,nj->ni", np.abs(linear), extents)
    shrink = np.minimum(1.0, (1.0 - margin) / reach.max(axis=1))
    linear = linear * shrink[:, None, None]
    room = np.minimum(1.0 - margin - reach * shrink[:, None], 2 * DISTORTION.shift_px / IMAGE_SIZE)
    return linear, unit_shift * np.maximum(room, 0.0)


def _filter3(x: torch.Tensor, pick: Any) -> torch.Tensor:
    """3x3 grey erosion (``pick=torch.minimum``) or dilation (``torch.maximum``) of
    ``(n, 1, H, W)`` images, separably, with zeros outside the frame."""
    p = F.pad(x, (1, 1, 1, 1))
    rows = pick(pick(p[..., :-2], p[..., 1:-1]), p[..., 2:])
    return pick(pick(rows[..., :-2, :], rows[..., 1:-1, :]), rows[..., 2:, :])


def _draw(canvases: np.ndarray, linear: np.ndarray, shift: np.ndarray, stroke: np.ndarray) -> np.ndarray:
    """Warp, vary the stroke, average down to 28x28 and scale the ink to peak at 255.

    Args:
        canvases: ``(n, 64, 64)`` uint8; linear ``(n, 2, 2)``, shift ``(n, 2)`` as in
            :func:`_warp`; stroke ``(n,)`` in {0 erode, 1 none, 2 dilate} (3x3 at 56x56).

    Returns:
        ``(n, 28, 28)`` uint8, ink 255 at its darkest.
    """
    x = _warp(canvases, linear, shift)
    eroded, dilated = _filter3(x, torch.minimum), _filter3(x, torch.maximum)
    ink = x.sum(dim=(1, 2, 3))
    keep_erosion = eroded.sum(dim=(1, 2, 3)) >= _MIN_ERODED_INK * ink
    stroke = torch.from_numpy(stroke)
    use_eroded = ((stroke == 0) & keep_erosion)[:, None, None, None]
    x = torch.where(use_eroded, eroded, torch.where((stroke == 2)[:, None, None, None], dilated, x))
    x = F.avg_pool2d(x, _SUPERSAMPLE)[:, 0]
    peak = x.amax(dim=(1, 2), keepdim=True).clamp_min(1e-6)
    return (x / peak * 255.0).round_().clamp_(0, 255).to(torch.uint8).numpy()


def draw_characters(characters: Sequence[Character], seed: int, progress: bool) -> np.ndarray:
    """``(n_characters, N_DRAWINGS, 1, 28, 28)`` uint8 drawings, warped in batches of about
    :data:`_BATCH` drawings."""
    images = np.empty((len(characters), N_DRAWINGS, 1, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    per_batch = max(1, _BATCH // N_DRAWINGS)
    with progress_bar(total=len(characters), desc="glyphs: drawing", enabled=progress) as bar:
        for start in range(0, len(characters), per_batch):
            batch = characters[start : start + per_batch]
            chosen = [_drawing_parameters(character, seed) for character in batch]
            canvases = np.concatenate([c.canvases[face] for c, (face, *_) in zip(batch, chosen)])
            linear, shift, stroke = (np.concatenate([p[k] for p in chosen]) for k in (1, 2, 3))
            drawn = _draw(canvases, linear, shift, stroke)
            images[start : start + len(batch), :, 0] = drawn.reshape(len(batch), N_DRAWINGS, IMAGE_SIZE, IMAGE_SIZE)
            bar.update(len(batch))
    return images
