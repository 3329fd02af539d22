"""Editing a source picture, in plain data: opening the source, the four requests, lineage.

Qt-free: the studio opens sources on the worker's pool with ``open_source`` and turns the
prompt panel's form into an engine request with the ``*_request`` functions; tests check
them without a display. The engine checks every request again before it runs; the checks
here are the ones worth answering before a job is even queued.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from desktop.app.parameters import Form, batch_seed
from desktop.library import Library
from desktop.library.images import flattened, load_pixels, open_image, open_image_data
from desktop.library.metadata import read_info
from engine.request import (
    ImageToImageRequest,
    InpaintRequest,
    OutpaintRequest,
    TextToImageRequest,
)

FEATHER = 4  # the engine's default: enough to hide the seam at a mask's edge
NO_SOURCE = ("There is no source picture: drop one on the canvas or choose one in the "
             "gallery (Use as source) first.")
EMPTY_MASK = ("The mask is empty: turn on the mask tool and paint over the part of the "
              "picture to repaint first.")
NO_EDIT_PROMPT = ("Type what the edited picture should show in the prompt first "
                  "(Variations need no prompt).")
NO_SIDES = "Say how many pixels to add on at least one side of the picture."

# How the gallery names what a picture was made from, by the operation the engine records.
# Edit and Variations are both image to image (as in ``easel edit`` / ``easel variations``).
MADE_FROM = {"image_to_image": "variation of", "inpaint": "inpainted from",
             "outpaint": "extended from", "upscale": "upscale of",
             "instruct_pix2pix": "changed by instruction from"}


@dataclass(frozen=True, eq=False)
class SourcePicture:
    """The picture the editing actions start from."""

    pixels: np.ndarray  # uint8 (H, W, 3), exactly as the file decodes
    name: str  # for messages and the queue: the file's name, or "#1a2b3c"
    image_id: str | None  # the library picture it is (lineage); None for an outside file
    # What the picture was made with, when its file says (an Easel or other tool's PNG):
    # Variations of it use these unless the user types a new prompt.
    prompt: str = ""
    negative_prompt: str = ""

    @property
    def size(self) -> tuple[int, int]:
        height, width = self.pixels.shape[:2]
        return width, height


@dataclass(frozen=True)
class Sides:
    """Pixels to add on each side when outpainting."""

    left: int = 0
    top: int = 0
    right: int = 0
    bottom: int = 0

    def grown(self, width: int, height: int) -> tuple[int, int]:
        return width + self.left + self.right, height + self.top + self.bottom


def open_source(path: Path, library: Library, image_id: str | None = None) -> SourcePicture:
    """Decode a picture fully (on a pool thread: it may be large). ``image_id`` is the
    library picture it is; an outside PNG counts as one when it carries an Easel image id
    the library knows (a picture dragged out of the gallery and back, say)."""
    path = Path(path)
    with open_image(path) as image:
        return _decoded(image, path.name, library, image_id)


def source_from_data(data: bytes, name: str, library: Library) -> SourcePicture:
    """``open_source`` for a picture held in memory (image data dropped from a browser):
    the same formats, size limits and decoding as a file, so what becomes the source does
    not depend on how it arrived."""
    with open_image_data(data, name) as image:
        return _decoded(image, name, library, None)


def _decoded(image: Image.Image, name: str, library: Library,
             image_id: str | None) -> SourcePicture:
    picture = load_pixels(image, name)
    text = {key: value for key, value in getattr(picture, "text", {}).items()
            if isinstance(value, str)}
    # A cut-out's hidden pixels never show: its transparency is laid on white.
    pixels = np.asarray(flattened(picture), dtype=np.uint8).copy()
    info = read_info(text, (pixels.shape[1], pixels.shape[0]))
    if image_id is None:
        embedded = info.image_id
        image_id = embedded if embedded and library.has_image(embedded) else None
    return SourcePicture(pixels, f"#{image_id[:6]}" if image_id else name, image_id,
                         info.prompt, info.negative_prompt)


# The requests --------------------------------------------------------------------------------


def variations_request(form: Form, source: SourcePicture) -> ImageToImageRequest:
    """``form.count`` new pictures like the source, each with its own seed; the prompt, if
    any, steers them."""
    return ImageToImageRequest(source.pixels, form.prompt, **_shared(form),
                               strength=form.strength)


def edit_request(form: Form, source: SourcePicture) -> ImageToImageRequest:
    """The source redrawn to match the prompt (a prompt is needed: ``NO_EDIT_PROMPT``)."""
    return variations_request(form, source)


def inpaint_request(form: Form, source: SourcePicture, mask: np.ndarray) -> InpaintRequest:
    """Repaint the mask's white part; outside it the result is the source, exactly."""
    return InpaintRequest(source.pixels, mask, form.prompt, **_shared(form),
                          strength=form.strength, feather=FEATHER)


def outpaint_request(form: Form, source: SourcePicture, sides: Sides) -> OutpaintRequest:
    """The source on a larger canvas, the new border painted to fit (from pure noise: the
    border holds nothing worth keeping)."""
    return OutpaintRequest(source.pixels, sides.left, sides.top, sides.right, sides.bottom,
                           form.prompt, **_shared(form), strength=1.0, feather=FEATHER)


def _shared(form: Form) -> dict:
    return {"negative_prompt": form.negative_prompt, "steps": form.steps,
            "guidance": form.guidance, "scheduler": form.scheduler,
            "seed": batch_seed(form), "count": form.count, "generator": form.generator,
            "emphasis": form.emphasis}


def result_size(request: ImageToImageRequest | InpaintRequest | OutpaintRequest
                | TextToImageRequest) -> tuple[int, int]:
    """The size the pictures will have (for the live preview): the source's, or larger
    when outpainting; a new picture's own (variations that keep the meaning)."""
    if isinstance(request, TextToImageRequest):
        return request.width, request.height
    height, width = np.asarray(request.image).shape[:2]
    if isinstance(request, OutpaintRequest):
        return Sides(request.left, request.top, request.right, request.bottom).grown(
            width, height)
    return width, height


def made_from(operation: str, source_id: str | None) -> str | None:
    """"variation of #1a2b3c" for the gallery; None for a picture made from text."""
    words = MADE_FROM.get(operation)
    if words is None:
        return None
    return f"{words} #{source_id[:6]}" if source_id else f"{words} an outside picture"
