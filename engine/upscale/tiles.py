"""Running an upscaler over a picture in overlapping tiles, so memory stays bounded.

The picture is cut into square tiles that overlap their neighbours; each tile is upscaled
alone, and where tiles overlap their outputs are blended with weights that fall off towards
each tile's inner edges (where the network saw the least context), so no seam shows.

The work goes one row of tiles at a time. Output rows that no later tile touches are finished
(normalised, rounded to uint8) as soon as their row is done; only the overlap with the next row
stays in float32. Working memory is therefore about one row of tiles at the output's width,
whatever the picture's height, plus one tile inside the network.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from engine.errors import GenerationFailed

# One tile in: float32 (1, 3, h, w) RGB in [0, 1]; out: float32 (1, 3, h * scale, w * scale).
TileRunner = Callable[[np.ndarray], np.ndarray]
# Tiles done, tiles in all.
TileProgress = Callable[[int, int], None]
_LEAST_WEIGHT = 1e-4
_FINISH_ROWS = 128  # a multiple of every scale and reduction factor


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Where tiles of ``tile`` pixels start along a side of ``length`` pixels, each overlapping
    the previous by at least ``overlap``; the last one ends exactly at the edge."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def upscale_in_tiles(pixels: np.ndarray, run_tile: TileRunner, scale: int, *, tile: int,
                     overlap: int, reduce: int = 1, progress: TileProgress | None = None
                     ) -> np.ndarray:
    """``pixels`` (uint8 H x W x 3) upscaled by ``scale`` tile by tile, then, when ``reduce``
    is more than 1, shrunk by that whole factor (averaging reduce x reduce blocks: a 4x network
    used for a 2x result); uint8 (H * scale / reduce, W * scale / reduce, 3).

    ``tile`` and ``overlap`` are in input pixels; the caller has made both sides of ``pixels``
    fit the network (multiples of its size multiple) and ``tile`` a multiple of it too.
    """
    height, width = pixels.shape[:2]
    tile_height, tile_width = min(tile, height), min(tile, width)
    rows = tile_starts(height, tile_height, overlap)
    columns = tile_starts(width, tile_width, overlap)
    out_width = width * scale
    result = np.empty((height * scale // reduce, out_width // reduce, 3), np.uint8)
    column_weights = [_edge_weights(x, tile_width, width, overlap, scale) for x in columns]
    pending: tuple[np.ndarray, np.ndarray] | None = None  # overlap carried to the next row
    done, total = 0, len(rows) * len(columns)
    for index, y in enumerate(rows):
        band = np.zeros((tile_height * scale, out_width, 3), np.float32)
        weight = np.zeros((tile_height * scale, out_width), np.float32)
        if pending is not None:  # the previous row's overlap starts exactly at this row's top
            carried_band, carried_weight = pending
            band[:len(carried_band)] += carried_band
            weight[:len(carried_weight)] += carried_weight
        row_weights = _edge_weights(y, tile_height, height, overlap, scale)
        for x, x_weights in zip(columns, column_weights, strict=True):
            tile_pixels = pixels[y:y + tile_height, x:x + tile_width]
            upscaled = _run_checked(run_tile, tile_pixels, scale)
            tile_weight = row_weights[:, np.newaxis] * x_weights[np.newaxis, :]
            span = slice(x * scale, (x + tile_width) * scale)
            band[:, span] += upscaled * tile_weight[..., np.newaxis]
            weight[:, span] += tile_weight
            done += 1
            if progress is not None:
                progress(done, total)
        # Rows above the next tile row's top are final; the rest waits for that row.
        final = (rows[index + 1] - y) * scale if index + 1 < len(rows) else len(band)
        top = y * scale
        _finish(band[:final], weight[:final], result, top, reduce)
        pending = (band[final:].copy(), weight[final:].copy()) if final < len(band) else None
    return result


def _run_checked(run_tile: TileRunner, tile_pixels: np.ndarray, scale: int) -> np.ndarray:
    sample = (tile_pixels.astype(np.float32) / np.float32(255)).transpose(2, 0, 1)[np.newaxis]
    upscaled = run_tile(np.ascontiguousarray(sample))
    expected = (1, 3, tile_pixels.shape[0] * scale, tile_pixels.shape[1] * scale)
    if upscaled.shape != expected:
        raise GenerationFailed(f"The upscaler returned a picture of shape {upscaled.shape} "
                               f"for a tile of shape {(1, 3, *tile_pixels.shape[:2])}; it is "
                               f"not the {scale}x upscaler its description says.")
    return upscaled[0].transpose(1, 2, 0)


def _edge_weights(start: int, size: int, length: int, overlap: int, scale: int) -> np.ndarray:
    """Blending weights along one side of a tile's output, across the overlap on each side
    that has a neighbour: almost 0 over the outer quarter (the pixels that saw the least
    context, which the neighbour has well inside it), a linear ramp over the middle half, 1
    beyond. Two aligned ramps add up to 1; never 0, so every pixel keeps a weight."""
    weights = np.ones(size * scale, np.float32)
    ramp_length = min(overlap, size) * scale
    if ramp_length == 0:
        return weights
    position = np.arange(ramp_length, dtype=np.float32) + np.float32(0.5)
    ramp = np.clip((position - ramp_length / 4) / (ramp_length / 2), _LEAST_WEIGHT, 1.0)
    if start > 0:
        weights[:ramp_length] = np.minimum(weights[:ramp_length], ramp)
    if start + size < length:
        weights[-ramp_length:] = np.minimum(weights[-ramp_length:], ramp[::-1])
    return weights.astype(np.float32)


def _finish(band: np.ndarray, weight: np.ndarray, result: np.ndarray, top: int,
            reduce: int) -> None:
    """Normalise finished rows, shrink them by ``reduce`` and store them as uint8, a few rows
    at a time so the float temporaries stay small next to the band itself."""
    for start in range(0, len(band), _FINISH_ROWS):
        rows = slice(start, start + _FINISH_ROWS)
        blended = band[rows] / weight[rows][..., np.newaxis]
        if reduce > 1:
            # Row counts here are multiples of the network's scale, and so of ``reduce``.
            height, width = blended.shape[0] // reduce, blended.shape[1] // reduce
            blended = blended.reshape(height, reduce, width, reduce, 3).mean(axis=(1, 3))
        pixels = np.rint(np.clip(blended, 0.0, 1.0) * np.float32(255)).astype(np.uint8)
        first = (top + start) // reduce
        result[first:first + len(pixels)] = pixels
