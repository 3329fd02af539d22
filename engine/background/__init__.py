"""Background removal (issue 19): a picture's subject cut out as an alpha mask.

``cut_out`` runs an installed segmenter (rembg's U²-Net and IS-Net, BiRefNet, BRIA RMBG:
engine.background.families) when one is given, and otherwise cuts a subject off a flat
background by its colour (engine.background.flood); ``refine`` sharpens the mask along the
picture's edges (engine.background.refine). ``apply_alpha`` makes the RGBA picture.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from engine.background.flood import flood_fill_alpha
from engine.background.refine import refine_alpha
from engine.background.segment import segment
from engine.errors import BadRequest
from engine.images import PictureInput, picture_pixels
from engine.runtime import CancelToken, RuntimeOptions

__all__ = ["FLOOD_FILL", "MAX_SIDE", "Cutout", "apply_alpha", "cut_out"]

MAX_SIDE = 8192  # as every picture Easel edits
FLOOD_FILL = "flood fill"


@dataclass(frozen=True)
class Cutout:
    alpha: np.ndarray  # uint8 (H, W), 255 = subject
    method: str  # the segmenter's name (its installed folder's), or "flood fill"
    notes: tuple[str, ...]  # sentences for the user (a non-commercial licence, the fill used)


def cut_out(picture: PictureInput, segmenter: Path | None, refine: bool = False,
            runtime: RuntimeOptions | None = None, cancel: CancelToken | None = None) -> Cutout:
    """The subject of ``picture`` (uint8 H×W×3 or H×W×4, or a PIL image) as an alpha mask,
    by the segmenter installed in the folder ``segmenter``, or by colour when it is None;
    BadRequest in one sentence when the picture cannot be cut out."""
    rgb = _rgb(picture)
    if segmenter is None:
        alpha = flood_fill_alpha(rgb)
        mask_side = max(rgb.shape[:2])
        method = FLOOD_FILL
        notes = ["This picture was cut out by its flat background colour (no segmenter was "
                 "used); import a background removal model for photos."]
    else:
        alpha, family = segment(Path(segmenter), rgb, runtime, cancel)
        mask_side = family.side
        method = Path(segmenter).name
        notes = []
        if family.non_commercial:
            notes.append(f"The segmenter '{method}' ({family.label}) is under the "
                         f"{family.licence} licence, which allows non-commercial use only.")
    if refine:
        alpha = refine_alpha(rgb, alpha, mask_side)
    return Cutout(alpha, method, tuple(notes))


def apply_alpha(picture: PictureInput, alpha: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 4): the picture's RGB with ``alpha`` (uint8 H×W) as its transparency."""
    rgb = _rgb(picture, check_transparent=False)
    if alpha.dtype != np.uint8 or alpha.shape != rgb.shape[:2]:
        raise BadRequest(f"The cut-out mask must be 8-bit grey of the picture's size "
                         f"{rgb.shape[1]}×{rgb.shape[0]}; got {alpha.dtype} values of shape "
                         f"{alpha.shape}.")
    return np.concatenate([rgb, alpha[..., np.newaxis]], axis=2)


def _rgb(picture: PictureInput, check_transparent: bool = True) -> np.ndarray:
    """The picture's RGB, refused as engine.images refuses pictures (size, type), and in one
    sentence when it is already fully transparent."""
    transparency = None
    if isinstance(picture, Image.Image) and picture.mode in ("RGBA", "LA", "PA"):
        picture_pixels(picture, MAX_SIDE)  # the size, before decoding
        transparency = np.asarray(picture.getchannel("A"))
        picture = picture.convert("RGB")
    elif isinstance(picture, np.ndarray) and picture.ndim == 3 and picture.shape[2] == 4 \
            and picture.dtype == np.uint8:
        transparency = picture[..., 3]
        picture = picture[..., :3]
    if check_transparent and transparency is not None and not transparency.any():
        raise BadRequest("This picture is already fully transparent; there is nothing to cut "
                         "out.")
    return np.ascontiguousarray(picture_pixels(picture, MAX_SIDE))
