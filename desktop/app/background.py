"""The window's background tools in plain data: the worker's jobs and the checks before them.

Qt-free, like ``desktop.app.upscaling``: the view-model (desktop.app.viewmodels.background)
checks what it can on the GUI thread (``check_flat_background``, so a picture the flood fill
cannot cut is one sentence and nothing is queued), then queues one of these for the worker.
Cutting, recording and saving are desktop.background's, shared with ``easel
remove-background`` / ``easel replace-background``, so the window's results are the same files.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from desktop.app.editing import SourcePicture, inpaint_request
from desktop.app.generation import Context, Device, Outcome, Pipelines
from desktop.app.parameters import Form
from desktop.background import (
    REMOVE,
    background_mask,
    check_subject,
    cut_subject,
    cutout_parameters,
    save_cutout,
    save_replaced,
    transparent,
)
from desktop.library import Library
from desktop.library.images import has_transparency, open_image
from engine.background import FLOOD_FILL, Cutout
from engine.background.flood import background_colour
from engine.errors import BadRequest
from engine.runtime import RuntimeOptions

CUTTING_STAGE = "Cutting out the subject"
# The engine's note names no menu; in the window the Models menu is the way in.
FLOOD_FILL_NOTE = ("Cut out by its flat background colour (no segmenter is installed); for "
                   "photos, import a background removal model with Models › Import model….")
NO_FLAT_BACKGROUND = ("This picture has no flat background, so it needs a background removal "
                      "model: import a segmenter (such as rembg's isnet-general-use.onnx) with "
                      "Models › Import model….")


@dataclass(frozen=True, eq=False)
class SubjectMask:
    """A cut's alpha for the mask tool, and the source it was cut from (so a mask that
    arrives after the source changed is not laid over another picture)."""

    alpha: np.ndarray  # uint8 (H, W), 255 = subject
    source: SourcePicture
    notes: tuple[str, ...]


def check_flat_background(source: SourcePicture) -> str | None:
    """With no segmenter, the sentence to say when the flood fill cannot cut this picture;
    the border check is quick, so it runs before anything is queued."""
    try:
        background_colour(source.pixels)
    except BadRequest:
        return NO_FLAT_BACKGROUND
    return None


def remove_background(library: Library, segmenter: Path | None, runtime: RuntimeOptions,
                      source: SourcePicture, source_path: Path | None, device: Device,
                      context: Context) -> Outcome:
    """Cut the subject out and save the RGBA cut-out with the source's id, as ``easel
    remove-background`` does. ``device`` is the status line's (a cut is no news there)."""
    cutout = _cut(segmenter, runtime, source, source_path, context)
    pixels = transparent(source.pixels, cutout.alpha)
    height, width = pixels.shape[:2]
    parameters = cutout_parameters(source_path, width, height, cutout.method)
    entry = save_cutout(library, pixels, parameters, source.image_id,
                        {"segmenter": cutout.method, "refine": False, "result": "transparent"})
    return Outcome((entry,), (pixels,), _notes(cutout), device)


def replace_background(pipelines: Pipelines, library: Library, segmenter: Path | None,
                       runtime: RuntimeOptions, form: Form, source: SourcePicture,
                       checks: dict, context: Context) -> Outcome:
    """Cut the subject out, have the form's model paint everything else as ``form.prompt``
    says (inpainting the inverted mask from noise), and lay the subject back exactly."""
    cutout = _cut(segmenter, runtime, source, None, context)
    mask = np.asarray(background_mask(cutout))
    request = replace(inpaint_request(replace(form, strength=1.0), source, mask), feather=0)

    def on_progress(progress) -> None:  # noqa: ANN001 (engine.request.Progress)
        context.report(progress.step, progress.steps, progress.image, progress.images,
                       progress.preview, progress.stage)

    result = pipelines.run(form.model, request, on_progress, context.cancel)
    context.cancel.raise_if_cancelled()  # cancelled after the last step: nothing is saved
    saved = save_replaced(library, source.pixels, cutout, result.images, source.image_id,
                          refine=False, checks=checks)
    device = Device(result.device.summary, result.device.reason, result.device.note)
    return Outcome(tuple(entry for entry, _ in saved), tuple(pixels for _, pixels in saved),
                   _notes(cutout) + result.warnings, device)


def subject_mask(segmenter: Path | None, runtime: RuntimeOptions, source: SourcePicture,
                 cutout_path: Path | None, context: Context) -> SubjectMask:
    """The subject's alpha over ``source``: a cut-out's own (``cutout_path``, the library's
    RGBA picture of this source), else cut now."""
    if cutout_path is not None:
        alpha = _alpha_of(cutout_path)
        if alpha is not None and alpha.shape == source.pixels.shape[:2]:
            return SubjectMask(alpha, source, ())
    cutout = _cut(segmenter, runtime, source, None, context)
    return SubjectMask(cutout.alpha, source, _notes(cutout))


def _cut(segmenter: Path | None, runtime: RuntimeOptions, source: SourcePicture,
         source_path: Path | None, context: Context) -> Cutout:
    context.report(0, 1, stage=CUTTING_STAGE)
    # A cut-out cut again keeps what it had hidden hidden (its file has the alpha).
    source_alpha = _alpha_of(source_path) if source_path is not None else None
    cutout = cut_subject(source.pixels, segmenter, False, runtime, context.cancel,
                         source_alpha)
    context.cancel.raise_if_cancelled()  # a flood fill does not look at the token
    check_subject(cutout)
    context.report(1, 1, stage=CUTTING_STAGE)
    return cutout


def _alpha_of(path: Path) -> np.ndarray | None:
    with open_image(path) as image:
        if not has_transparency(image):
            return None
        alpha = np.asarray(image.convert("RGBA").getchannel("A"))
    return alpha if alpha.any() else None


def _notes(cutout: Cutout) -> tuple[str, ...]:
    if cutout.method == FLOOD_FILL:
        return (FLOOD_FILL_NOTE,)
    return cutout.notes


def is_cutout(operation: str) -> bool:
    """Whether a library picture is a remove-background cut-out (its alpha is the subject)."""
    return operation == REMOVE
