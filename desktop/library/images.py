"""Opening image files from outside: PNG, JPEG and WEBP only, told by content, with limits.

Pillow's decompression-bomb limit is kept and its warning treated as an error, and a side
longer than ``MAX_SIDE`` is refused, so a hostile file cannot exhaust memory.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from desktop.library.errors import BadImage

ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP")
MAX_SIDE = 16384


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
