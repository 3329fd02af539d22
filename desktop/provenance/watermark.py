"""An optional invisible mark in Easel's pictures, readable by the `invisible-watermark` package.

The Stable Diffusion reference scripts mark their pictures with that package's 'dwtDct' method
(``imwatermark.WatermarkEncoder(...).encode(bgr, "dwtDct")``). This module writes and reads
the same mark with numpy alone, so the app needs neither OpenCV nor PyWavelets (nor torch):

* colour: the picture's U (blue-difference) channel, computed exactly as OpenCV's 8-bit
  ``COLOR_BGR2YUV`` computes it (fixed point, 14 fractional bits); the package only marks U
  (its scales are ``[0, 36, 36]`` but it loops over the first two channels, and Y's is 0);
* one level of the Haar wavelet: the approximation band, (a + b + c + d) / 2 of each 2x2
  group of pixels, evaluated in the order PyWavelets evaluates it so both read the same floats;
* 4x4 blocks of that band, row by row, each carrying one bit of the message in turn (the
  message repeats over the picture): the block's largest value, leaving out its first one, is
  moved to k * 36 + 9 for a 0 or k * 36 + 27 for a 1.
  Despite its name the package's 'dwtDct' takes no DCT of these blocks (its EmbedMaxDct works
  on the wavelet band itself); a DCT here would not be read back by it.
* reading: every block votes for its bit (the value modulo 36 above 18 reads 1) and each bit
  is the average of its votes, half or more reading 1.

Where this writer differs from the package it stays readable by it and changes less: it
moves a value to the nearest level with the wanted bit (the package always rounds down
first); it keeps the marked value the block's largest by lowering any rival within a small
margin (the package lets the reader pick up a different value); and it changes only the
blue and green of the marked pixels, keeping their brightness (the package round-trips the
whole picture through 8-bit YUV and swaps the horizontal and vertical detail of U, which
costs every pixel a little). A block whose blue has no room to move (pure white, deep blue)
is left unmarked rather than scarred; the other repeats of its bit outvote it, and a picture
made only of such blocks carries no mark at all.

Marking needs what the package needs to read (256 x 256 pixels) and one block per bit;
reading needs only the block per bit, so a cropped copy can still be checked.
"""

from __future__ import annotations

import numpy as np

from engine.errors import EaselError

MESSAGE: bytes = b"Easel"

SCALE = 36.0  # the package's quantisation step for U; a bit is the half of the step a value is in
MIN_PIXELS = 256 * 256  # the package refuses to mark or read anything smaller
BLOCK = 4  # side of a block of the wavelet band: 8x8 pixels
_MARGIN = 3.0  # how far every rival stays below a marked value, against 8-bit rounding

# OpenCV's fixed-point BGR -> YUV coefficients (value * 2**14), which it uses for 8-bit pictures.
_SHIFT = 14
_Y_FROM_B, _Y_FROM_G, _Y_FROM_R = 1868, 9617, 4899
_U_FROM_B_MINUS_Y = 8061
# A change of U that keeps Y and V: blue moves by 1/0.492 of it, green back by the part of Y that
# blue's move would add (red stays, so V stays too).
_BLUE_PER_U = (1 << _SHIFT) / _U_FROM_B_MINUS_Y
_GREEN_PER_U = -_BLUE_PER_U * _Y_FROM_B / _Y_FROM_G
_UNREACHABLE = 1e6  # the cost of each band unit a value's pixels cannot move
_MOST_COST = 2 * SCALE**2  # a block needing more (squared band units) is left unmarked
_HAAR = 0.7071067811865476  # PyWavelets' Haar filter tap, so our band equals its band bit for bit


class WatermarkError(EaselError, ValueError):
    """A picture or message the mark cannot be written to or read from."""


def add_watermark(pixels: np.ndarray, message: bytes = MESSAGE) -> np.ndarray:
    """Return a copy of ``pixels`` (uint8 RGB or RGBA; alpha kept as is) carrying ``message``."""
    _check_pixels(pixels)
    bits = _message_bits(message)
    height, width = pixels.shape[:2]
    if height * width < MIN_PIXELS or _block_count(pixels) < bits.size:
        raise WatermarkError(
            f"A {width}x{height} picture is too small for the invisible watermark: it needs "
            f"at least {MIN_PIXELS:,} pixels and one 8x8 block for each of the message's "
            f"{bits.size} bits."
        )
    band = _haar_band(_opencv_u(pixels[..., :3]))
    rows, cols = 2 * band.shape[0], 2 * band.shape[1]
    room_up, room_down = _room(pixels[:rows, :cols, :3])
    blocks = _blocks(band)
    wanted = bits[np.arange(blocks.shape[0]) % bits.size]
    changes = _block_changes(blocks, wanted, _blocks(room_up), _blocks(room_down))
    band_change = _unblock(changes, band.shape)
    # The inverse Haar step gives each of the 2x2 pixels half the change of their band value.
    u_change = np.repeat(np.repeat(band_change / 2.0, 2, axis=0), 2, axis=1)
    marked = pixels.copy()
    _shift_u(marked[:rows, :cols, :3], u_change)
    return marked


def read_watermark(pixels: np.ndarray, length: int) -> bytes:
    """Return the ``length`` bytes the mark in ``pixels`` (uint8 RGB or RGBA) spells out."""
    _check_pixels(pixels)
    if not isinstance(length, int) or length < 1:
        raise WatermarkError(f"A watermark is read as one byte or more, not {length!r}.")
    bit_count = 8 * length
    if _block_count(pixels) < bit_count:
        height, width = pixels.shape[:2]
        raise WatermarkError(
            f"A {width}x{height} picture is too small to hold a {length}-byte watermark."
        )
    blocks = _blocks(_haar_band(_opencv_u(pixels[..., :3])))
    votes = _read_bits(blocks).astype(np.float64)
    slots = np.arange(blocks.shape[0]) % bit_count
    share = np.bincount(slots, weights=votes, minlength=bit_count) / np.bincount(
        slots, minlength=bit_count
    )
    # The package's own threshold: a bit is 1 when its average vote, times 255, exceeds 127.
    return np.packbits(share * 255 > 127).tobytes()


def find_watermark(pixels: np.ndarray, message: bytes = MESSAGE) -> bool:
    """Whether ``pixels`` (uint8 RGB or RGBA) carry ``message``; too small a picture does not."""
    _check_pixels(pixels)
    bits = _message_bits(message)
    if _block_count(pixels) < bits.size:
        return False
    return read_watermark(pixels, len(message)) == message


def _check_pixels(pixels: np.ndarray) -> None:
    if (
        not isinstance(pixels, np.ndarray)
        or pixels.dtype != np.uint8
        or pixels.ndim != 3
        or pixels.shape[2] not in (3, 4)
    ):
        described = (
            f"{pixels.dtype} array of shape {pixels.shape}"
            if isinstance(pixels, np.ndarray)
            else type(pixels).__name__
        )
        raise WatermarkError(
            f"The invisible watermark works on 8-bit RGB or RGBA pixels, not a {described}."
        )


def _message_bits(message: bytes) -> np.ndarray:
    if not isinstance(message, bytes) or not message:
        raise WatermarkError(f"A watermark message is one byte or more, not {message!r}.")
    return np.unpackbits(np.frombuffer(message, dtype=np.uint8))


def _block_count(pixels: np.ndarray) -> int:
    # A block is 4x4 values of the half-size wavelet band, so 8x8 pixels; edges left over are
    # neither marked nor read.
    height, width = pixels.shape[:2]
    return (height // (2 * BLOCK)) * (width // (2 * BLOCK))


def _opencv_u(rgb: np.ndarray) -> np.ndarray:
    """The U channel OpenCV's 8-bit BGR -> YUV gives, as int32 (same rounding, bit for bit)."""
    red, green, blue = (rgb[..., channel].astype(np.int32) for channel in range(3))
    half = 1 << (_SHIFT - 1)
    y = (blue * _Y_FROM_B + green * _Y_FROM_G + red * _Y_FROM_R + half) >> _SHIFT
    u = ((blue - y) * _U_FROM_B_MINUS_Y + (128 << _SHIFT) + half) >> _SHIFT
    return np.clip(u, 0, 255)


def _haar_band(channel: np.ndarray) -> np.ndarray:
    """The approximation band of a one-level Haar wavelet over whole 8x8 blocks of ``channel``."""
    rows = channel.shape[0] // (2 * BLOCK) * (2 * BLOCK)
    cols = channel.shape[1] // (2 * BLOCK) * (2 * BLOCK)
    values = channel[:rows, :cols].astype(np.float64)
    # Pairs of rows first, then pairs of columns, each tap multiplied before adding: PyWavelets'
    # order, so a value on a reading boundary falls on the same side for both of us.
    paired_rows = values[0::2] * _HAAR + values[1::2] * _HAAR
    return paired_rows[:, 0::2] * _HAAR + paired_rows[:, 1::2] * _HAAR


def _blocks(band: np.ndarray) -> np.ndarray:
    """The band's 4x4 blocks, row by row, each flattened to 16 values: (blocks, 16)."""
    block_rows, block_cols = band.shape[0] // BLOCK, band.shape[1] // BLOCK
    tiled = band.reshape(block_rows, BLOCK, block_cols, BLOCK).swapaxes(1, 2)
    return tiled.reshape(block_rows * block_cols, BLOCK * BLOCK)


def _unblock(blocks: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    block_rows, block_cols = shape[0] // BLOCK, shape[1] // BLOCK
    tiled = blocks.reshape(block_rows, block_cols, BLOCK, BLOCK).swapaxes(1, 2)
    return tiled.reshape(shape)


def _carrier(blocks: np.ndarray) -> np.ndarray:
    """Each block's carrier: where its largest magnitude is, the first value left out (the
    first of equals wins, as numpy's argmax in the package)."""
    return np.argmax(np.abs(blocks[:, 1:]), axis=1) + 1


def _read_bits(blocks: np.ndarray) -> np.ndarray:
    carried = np.abs(blocks[np.arange(blocks.shape[0]), _carrier(blocks)])
    return carried % SCALE > SCALE / 2


def _block_changes(
    blocks: np.ndarray, wanted: np.ndarray, room_up: np.ndarray, room_down: np.ndarray
) -> np.ndarray:
    """How much each band value moves so each block reads its wanted bit: (blocks, 16).

    The carrier goes to the level below or above it with the wanted bit, whichever costs less
    (the sum of squared changes): a level below may need rivals (values within the margin of
    it) lowered too, so the reader still finds the carrier. A move the pixels cannot make
    (their blue would clip) counts as very dear, and a block whose cheapest choice is too dear
    is left as it is: the other repeats of its bit outvote it, and a scar in a flat white or
    deep blue patch would be seen. Band values are never negative (U is 0..255), so the
    magnitudes the reader compares are the values themselves.
    """
    index = np.arange(blocks.shape[0])
    carrier = _carrier(blocks)
    value = blocks[index, carrier]
    offset = SCALE / 4 + wanted * (SCALE / 2)  # 9 for a 0, 27 for a 1: middles of the halves
    below = np.floor((value - offset) / SCALE) * SCALE + offset
    rivals = blocks.copy()
    rivals[:, 0] = -np.inf  # the first value is never read, so it is no rival
    rivals[index, carrier] = -np.inf
    best_change = np.zeros_like(blocks)
    best_cost = np.full(blocks.shape[0], _MOST_COST)
    for level in (below, below + SCALE):
        ceiling = (level - _MARGIN)[:, None]
        change = np.where(rivals > ceiling, ceiling - blocks, 0.0)
        change[index, carrier] = level - value
        shortfall = np.maximum(change - room_up, 0.0) + np.maximum(-change - room_down, 0.0)
        cost = np.sum(change**2 + _UNREACHABLE * shortfall, axis=1)
        cost[level < 0] = np.inf  # it would read as its magnitude: the wrong bit
        cheaper = cost <= best_cost
        best_change[cheaper] = change[cheaper]
        best_cost = np.minimum(cost, best_cost)
    return best_change


def _room(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """How far each band value can move up and down before its pixels' blue clips.

    Green moves five times less than blue, and when it clips U still moves nine tenths of
    the way, so blue alone says what is out of reach.
    """
    blue = rgb[..., 2].astype(np.float64)
    up, down = (255 - blue) / _BLUE_PER_U, blue / _BLUE_PER_U
    # A band value moves each of its 2x2 pixels by half as much, so the tightest pixel rules.
    return tuple(
        2
        * np.minimum.reduce(
            [room[0::2, 0::2], room[0::2, 1::2], room[1::2, 0::2], room[1::2, 1::2]]
        )
        for room in (up, down)
    )


def _shift_u(rgb: np.ndarray, u_change: np.ndarray) -> None:
    """Move U by ``u_change`` in place, through blue and green, keeping brightness (Y) and V."""
    moved = np.nonzero(u_change)
    step = u_change[moved]
    for channel, per_u in ((2, _BLUE_PER_U), (1, _GREEN_PER_U)):
        values = rgb[..., channel]
        shifted = np.rint(values[moved] + per_u * step)
        values[moved] = np.clip(shifted, 0, 255).astype(np.uint8)
