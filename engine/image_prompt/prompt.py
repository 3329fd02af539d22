"""One image prompt of a request: a reference picture, the IP-Adapter and CLIP vision encoder
that read it, and how strongly it steers (diffusers' ``ip_adapter_image`` and
``set_ip_adapter_scale``; A1111's IP-Adapter unit weight)."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from engine.errors import BadRequest
from engine.images import PictureInput, picture_pixels

MAX_WEIGHT = 2.0
MAX_PICTURES = 8  # each adds tokens to every cross-attention
MAX_SIDE = 8192
READABLE_FORMATS = ("PNG", "JPEG", "WEBP")


@dataclass(frozen=True, eq=False)
class ImagePrompt:
    """``adapter`` and ``encoder`` are installed folders, found by the caller (the model
    store); ``picture`` is pixels, a PIL image or a PNG/JPEG/WEBP file, any size (it is
    resized and centre-cropped to the encoder's square as CLIPImageProcessor does)."""

    adapter: Path | str
    encoder: Path | str
    picture: PictureInput | Path | str
    weight: float = 1.0

    def __post_init__(self) -> None:
        weight = self.weight
        if isinstance(weight, bool) or not isinstance(weight, int | float) \
                or not math.isfinite(weight) or not 0.0 <= weight <= MAX_WEIGHT:
            raise BadRequest(f"An image prompt's weight must be a number between 0 and "
                             f"{MAX_WEIGHT:g} (got {weight!r}).")


@dataclass(frozen=True)
class RecordedImagePrompt:
    """What a picture records of an image prompt: names and numbers, never a path."""

    adapter: str  # the installed IP-Adapter's name
    hash: str  # its manifest hash, as a model's
    encoder: str  # the installed image encoder's name
    weight: float
    # The reference picture's key (engine.control.control.picture_key), so the app can keep
    # it and give it back; None in pictures made before it was recorded.
    picture: str | None = None


def reference_pixels(picture: PictureInput | Path | str) -> np.ndarray:
    """The reference picture as uint8 (H, W, 3); BadRequest in one sentence when it cannot
    be read (not a PNG, JPEG or WEBP file, damaged, or too large)."""
    if not isinstance(picture, Path | str):
        return picture_pixels(picture, MAX_SIDE, "reference picture")
    path = Path(picture)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path, formats=READABLE_FORMATS) as image:
                image.load()
                return picture_pixels(image.convert("RGB"), MAX_SIDE, "reference picture")
    except (OSError, ValueError, Image.DecompressionBombWarning,
            Image.DecompressionBombError):
        raise BadRequest(f"The reference picture '{path.name}' cannot be read: it is not a "
                         f"PNG, JPEG or WEBP picture, or it is damaged or too large.") from None
