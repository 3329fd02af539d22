"""Control pictures: what a ControlNet reads, made from a user's picture with no model.

A ControlNet reads white-on-black guidance: edges, scribbled lines, a depth map. Black is
"nothing here", so wherever a picture is transparent it counts as black. The built-in types
(canny, scribble, the picture as it is, tile) are made here; depth, pose, line art and soft
edges by an installed annotator model (``engine.control.annotators``; without one they are
refused with the kind of model to import).

``prepare_control_picture`` then turns any control picture into the tensor a ControlNet graph
reads, resized exactly as diffusers' ControlNet pipelines resize a PIL picture.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from engine.control.annotators import annotate, check_annotator_for
from engine.control.canny import canny_mask, check_thresholds
from engine.control.control import MAX_WEIGHT
from engine.errors import BadRequest
from engine.images import PictureInput, picture_pixels

# The pipelines' ceiling (engine.pipelines.diffusion.MAX_SIDE, checked equal by the tests);
# not imported, so the pipelines can import this module without a cycle.
MAX_SIDE = 8192
# As for masks: 128 and above of 255 is "on".
LINE_THRESHOLD = 128
LABEL = "control picture"


# --- The control types ---------------------------------------------------------------------

@dataclass(frozen=True)
class ControlType:
    """``words`` are what a user may write; the first is the type's name, the same as an
    installed ControlNet's ``control`` (``engine.control.description.CONTROLS``). ``annotator`` is
    the kind of annotator model that makes the picture, None when Easel makes it itself."""

    words: tuple[str, ...]
    annotator: str | None
    description: str

    @property
    def name(self) -> str:
        return self.words[0]


CONTROL_TYPES: tuple[ControlType, ...] = (
    ControlType(("canny",), None, "Edges found in the picture, white on black."),
    ControlType(("scribble",), None, "A drawing's lines, made white on black."),
    ControlType(("picture", "as-is"), None,
                "The picture as it is: an edge, depth or pose picture made elsewhere."),
    ControlType(("tile",), None, "The picture itself, to keep its layout while adding detail."),
    ControlType(("depth",), "depth", "How far each part of the picture is (needs a depth "
                "annotator)."),
    ControlType(("openpose", "pose"), "pose", "People's poses as stick figures (needs a pose "
                "annotator)."),
    ControlType(("lineart",), "line art", "Clean line art of the picture (needs a line art "
                "annotator)."),
    ControlType(("softedge", "hed"), "soft edge", "Soft, thick outlines of the picture (needs a "
                "soft edge annotator)."),
)


def control_type_named(word: str) -> ControlType:
    """The control type a user's word names (any case), or BadRequest listing the words."""
    wanted = word.strip().lower()
    for control_type in CONTROL_TYPES:
        if wanted in control_type.words:
            return control_type
    known = ", ".join(w for t in CONTROL_TYPES for w in t.words)
    raise BadRequest(f"'{word}' is not a control type; Easel knows {known}.")


def make_control_picture(control_type: str, picture: PictureInput,
                         annotator: Path | None = None, **options: int) -> np.ndarray:
    """The control picture of type ``control_type`` made from ``picture``, uint8 (H, W, 3) at
    the picture's size. Options: ``low`` and ``high`` for canny; the other types take none.
    ``annotator`` is the installed annotator's folder that makes a depth, pose, line art or
    soft edge picture (``engine.control.annotators``); the built-in types take none."""
    chosen = control_type_named(control_type)
    if annotator is not None:
        return _annotated(chosen, picture, Path(annotator), options)
    if chosen.annotator is not None:
        raise BadRequest(f"The {chosen.name} control's picture is made by a {chosen.annotator} "
                         f"annotator model: import a {chosen.annotator} annotator model first, "
                         f"or give a ready-made {chosen.name} picture with the 'picture' type.")
    allowed = {"low", "high"} if chosen.name == "canny" else set()
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise BadRequest(f"The {chosen.name} control takes no option '{unknown[0]}'.")
    if chosen.name == "canny":
        return canny_edges(picture, **options)
    if chosen.name == "scribble":
        return scribble_picture(picture)
    return control_rgb(picture)


def _annotated(chosen: ControlType, picture: PictureInput, annotator: Path,
               options: dict[str, int]) -> np.ndarray:
    if chosen.annotator is None:
        raise BadRequest(f"The {chosen.name} control's picture is made by Easel itself, not "
                         f"by an annotator model.")
    if options:
        raise BadRequest(f"The {chosen.name} control takes no option '{sorted(options)[0]}'.")
    check_annotator_for(annotator, chosen.name)
    return annotate(annotator, control_rgb(picture))


# --- Built-in control pictures -------------------------------------------------------------

def canny_edges(picture: PictureInput, low: int = 100, high: int = 200) -> np.ndarray:
    """White edges on black, uint8 (H, W, 3): what ``cv2.Canny(rgb, low, high)`` stacked to 3
    channels gives (A1111's and diffusers' canny preprocessor); see ``engine.control.canny``.
    The gradient sizes reach 2040, so thresholds go from 0 to 2040, ``low`` ≤ ``high``."""
    low, high = check_thresholds(low, high)
    return _white_on_black(canny_mask(control_rgb(picture), low, high))


def scribble_picture(strokes_or_picture: PictureInput) -> np.ndarray:
    """A scribble as scribble ControlNets read it: white lines on black, uint8 (H, W, 3),
    every pixel 0 or 255.

    The rule: where the picture has transparent pixels (alpha below 128 somewhere), the lines
    are its opaque pixels (alpha 128 and above), whatever their colour. Otherwise the lines
    are read by brightness (Pillow's grey): a bright picture (mean grey above 127.5) is dark
    lines on light paper, so its lines are the dark pixels (grey below 128); a dark picture
    already has light lines (grey 128 and above).
    """
    alpha = _alpha(strokes_or_picture)
    if alpha is not None and alpha.min() < LINE_THRESHOLD:
        return _white_on_black(alpha >= LINE_THRESHOLD)
    grey = np.asarray(Image.fromarray(control_rgb(strokes_or_picture)).convert("L"))
    if grey.mean() > 127.5:
        return _white_on_black(grey < LINE_THRESHOLD)
    return _white_on_black(grey >= LINE_THRESHOLD)


def _white_on_black(lines: np.ndarray) -> np.ndarray:
    return np.repeat((lines.astype(np.uint8) * 255)[..., np.newaxis], 3, axis=2)


# --- Reading pictures ----------------------------------------------------------------------

def control_rgb(picture: PictureInput) -> np.ndarray:
    """``picture`` as uint8 (H, W, 3), transparency composited onto black (black is "nothing"
    to a ControlNet). Takes PIL images of any mode and uint8 arrays (H, W), (H, W, 1),
    (H, W, 3) or (H, W, 4); BadRequest in one sentence for anything else or a bad size."""
    alpha = _alpha(picture)
    if isinstance(picture, np.ndarray) and picture.dtype == np.uint8:
        if picture.ndim == 2:
            picture = picture[..., np.newaxis]
        if picture.ndim == 3 and picture.shape[2] in (1, 4):
            picture = np.ascontiguousarray(np.repeat(picture[..., :1], 3, axis=2)
                                           if picture.shape[2] == 1 else picture[..., :3])
    rgb = picture_pixels(picture, MAX_SIDE, LABEL)
    if alpha is None:
        return rgb
    # Integer rounding of colour × alpha / 255.
    weighted = rgb.astype(np.uint32) * alpha[..., np.newaxis] + 127
    return (weighted // 255).astype(np.uint8)


def _alpha(picture: PictureInput) -> np.ndarray | None:
    """The picture's alpha (uint8 H×W) when it has one, else None; sizes are checked later."""
    if isinstance(picture, Image.Image):
        if picture.has_transparency_data:
            picture_pixels(picture, MAX_SIDE, LABEL)  # refuse a huge one before decoding it
            return np.asarray(picture.convert("RGBA").getchannel("A"))
        return None
    if (isinstance(picture, np.ndarray) and picture.dtype == np.uint8 and picture.ndim == 3
            and picture.shape[2] == 4):
        return picture[..., 3]
    return None


def prepare_control_picture(picture: PictureInput, width: int,
                            height: int) -> tuple[np.ndarray, str | None]:
    """What a ControlNet graph reads: float32 (1, 3, height, width) in [0, 1], and a sentence
    for the user when the picture had to be resized (None when it was the right size).

    The resize is diffusers' ``VaeImageProcessor(do_convert_rgb=True, do_normalize=False)
    .preprocess(pil_image, height=height, width=width)`` as its ControlNet pipelines use it:
    Pillow's Lanczos to exactly ``width`` × ``height``, aspect ratio not kept, then / 255.
    One difference: transparency is composited onto black first, where diffusers resizes
    with the alpha and then drops it.
    """
    for name, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise BadRequest(f"The control picture's {name} must be a positive whole number "
                             f"(got {value!r}).")
    rgb = control_rgb(picture)
    note = None
    if rgb.shape[:2] != (height, width):
        note = (f"The control picture was {rgb.shape[1]}×{rgb.shape[0]}; it was resized to "
                f"{width}×{height}.")
        rgb = np.asarray(Image.fromarray(rgb).resize((width, height), Image.Resampling.LANCZOS))
    tensor = rgb.astype(np.float32) / np.float32(255)
    return np.ascontiguousarray(tensor.transpose(2, 0, 1)[np.newaxis]), note


# --- The command line's --control ----------------------------------------------------------

@dataclass(frozen=True)
class ControlOption:
    """One ``--control``: the control type's name (``canny``, ``pose`` ...), the picture's
    path as written, how strongly (0..2) and over which share of the steps (0..1) it steers,
    and the installed ControlNet it names, or None for the caller to pick one that fits."""

    control_type: str
    picture: Path
    weight: float = 1.0
    start: float = 0.0
    end: float = 1.0
    controlnet: str | None = None


SYNTAX = "TYPE[=CONTROLNET]:PICTURE[:WEIGHT[:START:END]]"
# A Windows drive ("C:\" or "C:/") is the only ':' a picture's path may hold.
_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")


def parse_control_option(text: str) -> ControlOption:
    """``--control TYPE[=CONTROLNET]:PICTURE[:WEIGHT[:START:END]]`` as a ControlOption, or
    BadRequest in one sentence. ``canny:edges.png``, ``pose=my-openpose:C:\\me.png:0.8``,
    ``depth:d.png:1:0:0.6``."""
    head, separator, rest = text.partition(":")
    if not separator or not rest:
        raise BadRequest(f"'{text}' gives no picture; write {SYNTAX}.")
    type_word, has_name, controlnet = head.partition("=")
    control_type = control_type_named(type_word).name
    if has_name and not controlnet.strip():
        raise BadRequest(f"'{text}' names no ControlNet after '='; write {SYNTAX}.")
    fields = rest.split(":")
    if _DRIVE.match(rest):
        fields = [fields[0] + ":" + fields[1], *fields[2:]]
    picture, numbers = fields[0], fields[1:]
    if not picture.strip():
        raise BadRequest(f"'{text}' gives no picture; write {SYNTAX}.")
    if len(numbers) not in (0, 1, 3):
        raise BadRequest(f"'{text}' has {len(numbers)} numbers after the picture; give a "
                         f"weight, or a weight, a start and an end ({SYNTAX}).")
    labels = ("weight", "start", "end")[:len(numbers)]
    values = [_number(n, label, text) for n, label in zip(numbers, labels, strict=True)]
    weight, start, end = values + [1.0, 0.0, 1.0][len(values):]
    _check_range(weight, start, end, text)
    return ControlOption(control_type, Path(picture), weight, start, end,
                         controlnet.strip() or None)


def _number(field: str, label: str, text: str) -> float:
    try:
        value = float(field)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise BadRequest(f"The control {label} in '{text}' is not a number ('{field}').")
    return value


def _check_range(weight: float, start: float, end: float, text: str) -> None:
    if not 0.0 <= weight <= MAX_WEIGHT:
        raise BadRequest(f"The control weight in '{text}' must be between 0 and {MAX_WEIGHT:g} "
                         f"(got {weight:g}).")
    for label, value in (("start", start), ("end", end)):
        if not 0.0 <= value <= 1.0:
            raise BadRequest(f"The control {label} in '{text}' must be between 0 and 1, a share "
                             f"of the steps (got {value:g}).")
    if start >= end:
        raise BadRequest(f"The control start in '{text}' must be before its end "
                         f"(got {start:g} and {end:g}).")
