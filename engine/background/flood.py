"""Cutting a subject off a flat background without a model: the background colour from the
picture's border, a 4-connected flood fill from every border pixel through the pixels near
that colour, and the edge softened by one pixel.

The fill propagates along runs of matching pixels row by row (down, then up, repeated until
nothing changes), so each pass is a numpy operation per row, not per pixel: an 8192-pixel
picture takes a few passes of 8192 row operations and two boolean planes of its size.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from engine.errors import BadRequest

# A background pixel differs from the background colour by at most this in every channel:
# room for JPEG noise and the starter model's soft shading, far below a subject's contrast.
TOLERANCE = 24
# The share of border pixels that must be the background colour to call the background flat.
FLAT_BORDER = 0.9


def border_pixels(rgb: np.ndarray) -> np.ndarray:
    """Every border pixel once-or-twice (corners twice), as (N, 3) int16."""
    return np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]]).astype(np.int16)


def background_colour(rgb: np.ndarray) -> np.ndarray:
    """The background colour (the border's per-channel median), or BadRequest in one
    sentence when the border is not nearly one colour."""
    border = border_pixels(rgb)
    colour = np.median(border, axis=0).astype(np.int16)
    near = (np.abs(border - colour) <= TOLERANCE).all(axis=1)
    if near.mean() < FLAT_BORDER:
        raise BadRequest("This picture has no flat background; import a background removal "
                         "model (a segmenter, such as rembg's isnet-general-use.onnx) to cut "
                         "it out.")
    return colour


def _fill_row(matching: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """The pixels of ``matching`` (one row) in a run of matching pixels holding a seed."""
    starts = matching & ~np.concatenate(([False], matching[:-1]))
    runs = np.cumsum(starts) * matching  # 0 outside runs, 1.. for each run
    seeded = np.zeros(int(runs[-1]) + 2 if runs.size else 1, dtype=bool)
    seeded[runs[seeds & matching]] = True
    seeded[0] = False
    return seeded[runs]


def _sweep(matching: np.ndarray, reached: np.ndarray, rows: range, step: int) -> bool:
    changed = False
    for y in rows:
        seeds = reached[y] | reached[y - step] if 0 <= y - step < len(reached) else reached[y]
        row = _fill_row(matching[y], seeds & matching[y])
        if (row != reached[y]).any():
            reached[y] = row
            changed = True
    return changed


def background_reached(rgb: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """bool (H, W): the pixels near ``colour`` connected (4-neighbours) to the border."""
    matching = np.ones(rgb.shape[:2], dtype=bool)
    for channel in range(3):  # one channel at a time: no int16 copy of the whole picture
        matching &= np.abs(rgb[..., channel].astype(np.int16) - colour[channel]) <= TOLERANCE
    reached = np.zeros_like(matching)
    for edge in (np.s_[0, :], np.s_[-1, :], np.s_[:, 0], np.s_[:, -1]):
        reached[edge] = matching[edge]
    height = len(matching)
    while _sweep(matching, reached, range(height), 1) | \
            _sweep(matching, reached, range(height - 1, -1, -1), -1):
        pass
    return reached


def flood_fill_alpha(rgb: np.ndarray) -> np.ndarray:
    """uint8 (H, W): 255 on the subject, 0 on the flat background reached from the border,
    the edge softened over one pixel (a 3×3 box blur)."""
    reached = background_reached(rgb, background_colour(rgb))
    if reached.all():
        raise BadRequest("This picture is one flat colour; there is no subject to cut out.")
    alpha = Image.fromarray(np.where(reached, 0, 255).astype(np.uint8), mode="L")
    return np.asarray(alpha.filter(ImageFilter.BoxBlur(1)))
