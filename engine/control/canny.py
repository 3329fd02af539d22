"""Canny edges in numpy, following OpenCV's ``cv2.Canny(image, low, high)`` step for step, so
a canny ControlNet sees the edges it was trained on (its training pictures came from OpenCV).

What OpenCV does, and so what this does:
- no blur first; a 3×3 Sobel with the border pixels repeated, on each colour channel; where a
  picture has several channels, each pixel keeps the channel with the largest gradient (the
  first on ties). A1111, diffusers' docs and controlnet_aux hand ``cv2.Canny`` the RGB picture
  itself, not a grey one, so this is what their canny pictures are;
- the gradient's size is L1, ``|gx| + |gy|`` (OpenCV's default ``L2gradient=False``);
- non-maximum suppression in 4 directions, with OpenCV's fixed-point tan(22.5°) test and its
  asymmetric ties (strictly above the left / upper neighbour, at least the right / lower one);
  outside the picture the gradient counts as 0;
- a pixel is a candidate above ``low`` and strong above ``high`` (both strict, as OpenCV), and
  candidates 8-connected to a strong pixel are edges.
"""

from __future__ import annotations

import numpy as np

from engine.errors import BadRequest

# The largest L1 gradient a 3×3 Sobel gives on 8-bit pixels: 4·255 on each axis.
MAX_THRESHOLD = 8 * 255

# OpenCV's fixed-point direction test: tan(22.5°) in 15 fractional bits, rounded.
_SHIFT = 15
_TAN_22 = 13573


def check_thresholds(low: object, high: object) -> tuple[int, int]:
    """The thresholds as ints, or BadRequest in one sentence."""
    for name, value in (("low", low), ("high", high)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise BadRequest(f"The canny {name} threshold must be a whole number (got {value!r}).")
        if not 0 <= value <= MAX_THRESHOLD:
            raise BadRequest(f"The canny {name} threshold must be between 0 and {MAX_THRESHOLD} "
                             f"(got {value}).")
    if low > high:
        raise BadRequest(f"The canny low threshold ({low}) must not be above the high one "
                         f"({high}).")
    return int(low), int(high)


def canny_mask(pixels: np.ndarray, low: int, high: int) -> np.ndarray:
    """Edges of uint8 pixels (H, W) or (H, W, C) as a bool (H, W) mask."""
    gx, gy, size = _gradients(pixels)
    candidates = (size > low) & _local_maxima(gx, gy, size)
    return _hysteresis(candidates, candidates & (size > high))


def _gradients(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sobel x, y and L1 size (H×W), each pixel from its strongest channel. int16 holds
    them all (at most 4·255 a side and 8·255 for the size) and halves the memory of int32."""
    image = pixels.astype(np.int16)
    if image.ndim == 2:
        image = image[..., np.newaxis]
    padded = np.pad(image, ((1, 1), (1, 1), (0, 0)), mode="edge")
    across = padded[:, 2:] - padded[:, :-2]  # horizontal difference, rows still padded
    down = padded[2:] - padded[:-2]  # vertical difference, columns still padded
    gx = across[:-2] + 2 * across[1:-1] + across[2:]
    gy = down[:, :-2] + 2 * down[:, 1:-1] + down[:, 2:]
    size = np.abs(gx) + np.abs(gy)
    if size.shape[2] == 1:
        return gx[..., 0], gy[..., 0], size[..., 0]
    best = np.argmax(size, axis=2)[..., np.newaxis]  # first channel on ties, as OpenCV
    return tuple(np.take_along_axis(a, best, axis=2)[..., 0] for a in (gx, gy, size))


def _local_maxima(gx: np.ndarray, gy: np.ndarray, size: np.ndarray) -> np.ndarray:
    """Where the gradient's size peaks across the edge (OpenCV's 4-direction test)."""
    m = np.pad(size, 1)  # the gradient outside the picture is 0
    here = m[1:-1, 1:-1]
    left, right = m[1:-1, :-2], m[1:-1, 2:]
    up, down = m[:-2, 1:-1], m[2:, 1:-1]
    # int32 holds the fixed-point products: at most 1020 · 2^17.
    x = np.abs(gx).astype(np.int32)
    y = np.abs(gy).astype(np.int32) << _SHIFT
    tan22 = x * _TAN_22
    tan67 = tan22 + (x << (_SHIFT + 1))
    horizontal = y < tan22
    vertical = y > tan67
    # Same signs: the gradient points down-right, so compare up-left and down-right.
    same_sign = (gx ^ gy) >= 0
    diagonal_a = np.where(same_sign, m[:-2, :-2], m[:-2, 2:])
    diagonal_b = np.where(same_sign, m[2:, 2:], m[2:, :-2])
    peak_h = (here > left) & (here >= right)
    peak_v = (here > up) & (here >= down)
    peak_d = (here > diagonal_a) & (here > diagonal_b)
    return np.where(horizontal, peak_h, np.where(vertical, peak_v, peak_d))


def _hysteresis(candidates: np.ndarray, strong: np.ndarray) -> np.ndarray:
    """The candidates 8-connected to a strong pixel, by labelling the candidates' connected
    parts (vectorised union-find) and keeping parts with a strong pixel."""
    height, width = candidates.shape
    flat = candidates.ravel()
    where = np.flatnonzero(flat)
    if where.size == 0:
        return np.zeros_like(candidates)
    # Number the candidates 0..n-1 and list each pair of neighbours once (4 forward steps).
    number = np.full(flat.size, -1, dtype=np.int64)
    number[where] = np.arange(where.size)
    grid = number.reshape(height, width)
    pairs = [_neighbour_pairs(grid[:, :-1], grid[:, 1:]),  # right
             _neighbour_pairs(grid[:-1], grid[1:]),  # down
             _neighbour_pairs(grid[:-1, :-1], grid[1:, 1:]),  # down-right
             _neighbour_pairs(grid[:-1, 1:], grid[1:, :-1])]  # down-left
    a = np.concatenate([p[0] for p in pairs])
    b = np.concatenate([p[1] for p in pairs])
    root = _connected_roots(where.size, a, b)
    keep = np.zeros(where.size, dtype=bool)
    keep[root[number[np.flatnonzero(strong.ravel())]]] = True
    edges = np.zeros(flat.size, dtype=bool)
    edges[where] = keep[root]
    return edges.reshape(height, width)


def _neighbour_pairs(first: np.ndarray, second: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    both = (first >= 0) & (second >= 0)
    return first[both], second[both]


def _connected_roots(count: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """For each of ``count`` nodes, the smallest node of its connected part, given edges a–b.

    Each round hooks the larger of two differing roots under the smaller (when several claim
    one root, one wins and the rest wait a round), then flattens every chain to its root, so
    a round never links across parts and the rounds end when every edge joins equal roots.
    """
    parent = np.arange(count)
    while True:
        root_a, root_b = parent[a], parent[b]
        differ = root_a != root_b
        if not differ.any():
            return parent
        a, b = a[differ], b[differ]  # an edge whose ends share a root stays that way
        root_a, root_b = root_a[differ], root_b[differ]
        parent[np.maximum(root_a, root_b)] = np.minimum(root_a, root_b)
        while True:
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand
