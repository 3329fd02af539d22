"""Opening image files from outside: PNG, JPEG and WEBP only, told by content, with limits.

Pillow's decompression-bomb limit is kept and its warning treated as an error, and a side
longer than ``MAX_SIDE`` is refused, so a hostile file cannot exhaust memory.

Library pictures are RGB, except cut-outs (background removed: RGBA) and masks (grey).
``load_pixels`` keeps the mode, alpha included; where RGB is expected, ``flattened`` lays a
picture with transparency over white (what a cut-out is on a page), and ``on_checkerboard``
shows its transparency as the usual grey checkerboard (thumbnails).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

from PIL import Image, ImageDraw, UnidentifiedImageError

from desktop.library.errors import BadImage

ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP")
MAX_SIDE = 16384
WHITE = (255, 255, 255)
CHECKER_SQUARE = 8  # pixels a side, in the picture shown (a thumbnail)
CHECKER_GREYS = (204, 255)  # light grey and white, as most painting programs draw it


def open_image(path: Path, formats: tuple[str, ...] = ACCEPTED_FORMATS) -> Image.Image:
    """Open (lazily, headers only) an image the library accepts, or raise ``BadImage``."""
    path = Path(path)
    if not path.is_file():
        raise BadImage(f"'{path}' does not exist or is not a file.")
    return _checked_open(path, path.name, formats)


def open_image_data(data: bytes, name: str,
                    formats: tuple[str, ...] = ACCEPTED_FORMATS) -> Image.Image:
    """``open_image`` for a picture held in memory (dropped from a browser, say), with the
    same formats and limits; ``name`` stands for it in messages."""
    return _checked_open(io.BytesIO(data), name, formats)


def _checked_open(source: Path | io.BytesIO, name: str,
                  formats: tuple[str, ...]) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(source)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as error:
        raise BadImage(f"'{name}' is too large to open safely.") from error
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise BadImage(f"'{name}' is not an image Easel can read.") from error
    if image.format not in formats:
        image.close()
        names = ", ".join(formats[:-1]) + f" or {formats[-1]}" if len(formats) > 1 else formats[0]
        raise BadImage(f"'{name}' is a {image.format} file; Easel takes {names} here.")
    if max(image.size) > MAX_SIDE:
        image.close()
        raise BadImage(f"'{name}' is {image.width}x{image.height}; Easel takes images "
                       f"up to {MAX_SIDE} pixels a side.")
    return image


def load_pixels(image: Image.Image, name: str) -> Image.Image:
    """Decode fully, keeping the mode; a truncated or damaged file is a ``BadImage``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.load()
            return image
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as error:
        raise BadImage(f"'{name}' is too large to open safely.") from error
    except (OSError, SyntaxError, ValueError) as error:
        raise BadImage(f"'{name}' is damaged or incomplete and cannot be read.") from error


def has_transparency(image: Image.Image) -> bool:
    """Whether the picture has an alpha channel or a transparent palette colour."""
    return image.has_transparency_data


def flattened(image: Image.Image, background: tuple[int, int, int] = WHITE) -> Image.Image:
    """The picture as RGB: one with transparency laid over ``background`` (so a cut-out's
    hidden pixels never show), any other simply converted."""
    if not has_transparency(image):
        return image.convert("RGB")
    ground = Image.new("RGBA", image.size, (*background, 255))
    return Image.alpha_composite(ground, image.convert("RGBA")).convert("RGB")


def on_checkerboard(image: Image.Image) -> Image.Image:
    """The picture as RGB, its transparent part showing a checkerboard."""
    if not has_transparency(image):
        return image.convert("RGB")
    board = Image.new("RGBA", image.size, (*(CHECKER_GREYS[1],) * 3, 255))
    draw = ImageDraw.Draw(board)
    grey = (*(CHECKER_GREYS[0],) * 3, 255)
    for top in range(0, image.height, CHECKER_SQUARE):
        for left in range(0, image.width, CHECKER_SQUARE):
            if (top // CHECKER_SQUARE + left // CHECKER_SQUARE) % 2:
                draw.rectangle((left, top, left + CHECKER_SQUARE - 1,
                                top + CHECKER_SQUARE - 1), fill=grey)
    return Image.alpha_composite(board, image.convert("RGBA")).convert("RGB")
