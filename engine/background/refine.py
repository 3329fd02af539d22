"""Sharpening a mask along the picture's edges: the guided filter (He, Sun and Tang, "Guided
Image Filtering", ECCV 2010 / TPAMI 2013) with the picture's luminance as the guide.

In each (2r+1)² window the output is a linear function of the guide, ``q = a·I + b``, fitted
to the mask by least squares with ``a`` held back by ``eps``: where the picture has an edge
(variance ≫ eps) the mask follows it, so a strand of hair the network's 320 or 1024 pixels
blurred away comes back where the picture shows it; where the picture is flat the mask is
only smoothed. Box means are cumulative sums (O(1) per pixel whatever the radius).

Large pictures use the fast guided filter (He and Sun, 2015): ``a`` and ``b`` fitted at a
working size of at most ``WORK_SIDE`` a side, then enlarged and applied to the full-size
guide in strips, so memory stays a few float planes of the working size plus one strip.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

# A network's mask edge is soft over a few of its own pixels (about 5), enlarged by the
# picture's side over the network's; the window must span that soft band to find the
# picture's edge inside it, so r is 5 × (picture side / network side), at least 4 and at most
# 32 pixels (beyond that the linear fit is loose on curved edges). Measured on the hair test
# (tests/test_background.py, 512 px from 320): r = 4 gives back 46 of 255 levels of hair
# contrast, r = 8 gives 125.
RADIUS_PER_NETWORK_PIXEL = 5
MIN_RADIUS, MAX_RADIUS = 4, 32
# eps against the guide's variance in [0, 1] luminance: 1e-3 is a contrast of about 0.03
# (8 levels of 255): softer texture counts as flat, a hair against a wall as an edge.
EPSILON = 1e-3
WORK_SIDE = 2048
_STRIP = 512


def radius_for(picture_side: int, mask_side: int) -> int:
    """The window radius for a mask made at ``mask_side`` and enlarged to ``picture_side``."""
    blur = picture_side / max(mask_side, 1)
    return int(min(MAX_RADIUS, max(MIN_RADIUS, math.ceil(RADIUS_PER_NETWORK_PIXEL * blur))))


def box_mean(plane: np.ndarray, radius: int) -> np.ndarray:
    """The mean over the (2r+1)² window around each pixel, the window clipped at the border
    (each pixel divided by its own window's pixel count), by cumulative sums."""
    return _box_sum(plane, radius) / _box_sum(np.ones(plane.shape, np.float64), radius)


def _box_sum(plane: np.ndarray, radius: int) -> np.ndarray:
    total = np.asarray(plane, dtype=np.float64)
    for axis in (0, 1):
        length = total.shape[axis]
        padded = np.cumsum(total, axis=axis)
        padded = np.concatenate([np.zeros_like(np.take(padded, [0], axis=axis)), padded],
                                axis=axis)
        high = np.minimum(np.arange(length) + radius + 1, length)
        low = np.maximum(np.arange(length) - radius, 0)
        total = np.take(padded, high, axis=axis) - np.take(padded, low, axis=axis)
    return total


def luminance(rgb: np.ndarray) -> np.ndarray:
    """float32 luminance in [0, 1] (ITU-R 601, PIL's "L")."""
    return np.asarray(Image.fromarray(rgb).convert("L"), dtype=np.float32) / np.float32(255)


def guided_filter(guide: np.ndarray, mask: np.ndarray, radius: int,
                  eps: float = EPSILON) -> tuple[np.ndarray, np.ndarray]:
    """The guided filter's per-pixel (a, b), averaged over windows, for float planes."""
    mean_i, mean_p = box_mean(guide, radius), box_mean(mask, radius)
    covariance = box_mean(guide * mask, radius) - mean_i * mean_p
    variance = box_mean(guide * guide, radius) - mean_i * mean_i
    a = covariance / (variance + eps)
    b = mean_p - a * mean_i
    return box_mean(a, radius).astype(np.float32), box_mean(b, radius).astype(np.float32)


def refine_alpha(rgb: np.ndarray, alpha: np.ndarray, mask_side: int) -> np.ndarray:
    """``alpha`` (uint8 H×W) sharpened along the edges of ``rgb`` (uint8 H×W×3); the mask
    was made at ``mask_side`` pixels a side (the network's input, or the picture's)."""
    height, width = alpha.shape
    scale = min(1.0, WORK_SIDE / max(height, width))
    work = (max(1, round(width * scale)), max(1, round(height * scale)))
    radius = radius_for(max(work), min(mask_side, max(work)))
    small_rgb = rgb if scale == 1.0 else np.asarray(
        Image.fromarray(rgb).resize(work, Image.Resampling.BILINEAR))
    small_alpha = alpha if scale == 1.0 else np.asarray(
        Image.fromarray(alpha).resize(work, Image.Resampling.BILINEAR))
    a, b = guided_filter(luminance(small_rgb), small_alpha.astype(np.float32) / 255, radius)
    planes = (Image.fromarray(a, mode="F"), Image.fromarray(b, mode="F"))
    refined = np.empty((height, width), np.uint8)
    for top in range(0, height, _STRIP):  # the full-size guide, a and b one strip at a time
        bottom = min(top + _STRIP, height)
        a_rows, b_rows = (_strip(plane, top, bottom, (width, height)) for plane in planes)
        guide = luminance(rgb[top:bottom])
        refined[top:bottom] = np.rint(np.clip(a_rows * guide + b_rows, 0.0, 1.0) * 255)
    return refined


def _strip(plane: Image.Image, top: int, bottom: int, size: tuple[int, int]) -> np.ndarray:
    """Rows ``top:bottom`` of ``plane`` enlarged (bilinear) to ``size``, alone."""
    if plane.size == size:
        return np.asarray(plane)[top:bottom]
    ratio = plane.height / size[1]
    box = (0.0, top * ratio, float(plane.width), bottom * ratio)
    return np.asarray(plane.resize((size[0], bottom - top), Image.Resampling.BILINEAR, box=box))
