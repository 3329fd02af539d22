"""Removing and replacing a picture's background, shared by the command line and the window.

Qt-free: ``easel remove-background`` / ``easel replace-background`` (desktop.cli.background)
and the window's background tools (desktop.app.background) cut, record and save through these
functions, so a cut-out made either way is the same file with the same metadata:

- the segmenter: the one named, else the only one installed, else None (the flood fill);
- the cut: the subject's alpha, inside what the source already showed (a cut-out cut again
  loses nothing it had hidden back);
- the results: an RGBA cut-out (operation "remove_background"), or the source's subject laid
  exactly over newly painted pictures (operation "replace_background"), each with the source's
  id for lineage and, under the operation's name, the segmenter and whether it was refined.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from desktop.image_files import read_parameters
from desktop.library import Library
from desktop.library.rows import ImageEntry
from desktop.model_store import ModelStore
from engine.background import Cutout, apply_alpha, cut_out
from engine.errors import BadRequest, ModelError
from engine.request import GeneratedImage, GenerationParameters
from engine.runtime import CancelToken, RuntimeOptions

SEGMENTER = "segmenter"
REMOVE, REPLACE = "remove_background", "replace_background"
# The parameters of a cut-out of a picture Easel did not make: no prompt, no steps.
UNSAMPLED_SCHEDULER = "euler"
NO_SUBJECT = "No subject was found in this picture; nothing was saved."
ALL_SUBJECT = "The whole picture was found to be the subject; there is no background to replace."


def chosen_segmenter(store: ModelStore, name: str | None, option: str) -> Path | None:
    """The named segmenter's folder, else the only one installed; None (the flood fill) when
    none is. ``option`` is how the user names one (a command's option), for the message."""
    installed = store.installed(SEGMENTER)
    names = ", ".join(model.name for model in installed) or "none"
    if name is not None:
        for model in installed:
            if model.name == name:
                return model.path
        raise ModelError(f"No segmenter named '{name}' is installed (installed: {names}); "
                         f"add one with: easel models import FILE.")
    if len(installed) > 1:
        raise ModelError(f"Several segmenters are installed ({names}); choose one with "
                         f"{option}.")
    return installed[0].path if installed else None


def cut_subject(rgb: np.ndarray, segmenter: Path | None, refine: bool,
                runtime: RuntimeOptions | None, cancel: CancelToken | None = None,
                source_alpha: np.ndarray | None = None) -> Cutout:
    """The subject's mask of ``rgb``, inside ``source_alpha`` when the source had one; its
    notes (the flood fill used, a licence) are for the caller to say."""
    cutout = cut_out(rgb, segmenter, refine, runtime, cancel)
    if source_alpha is not None:
        cutout = replace(cutout, alpha=np.minimum(cutout.alpha, source_alpha))
    return cutout


def check_subject(cutout: Cutout) -> None:
    """One sentence when nothing of the picture was found to be the subject."""
    if not cutout.alpha.any():
        raise BadRequest(NO_SUBJECT)


def background_mask(cutout: Cutout) -> Image.Image:
    """The part to repaint when replacing the background (white = repaint): everything but
    the subject; one sentence when the subject is the whole picture."""
    if (cutout.alpha == 255).all():
        raise BadRequest(ALL_SUBJECT)
    return Image.fromarray(255 - cutout.alpha, "L")


def transparent(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The RGBA cut-out, white under full transparency: what was removed is not kept in the
    file, and a reader that drops the alpha sees the subject on white."""
    rgba = apply_alpha(rgb, alpha)
    rgba[alpha == 0, :3] = 255
    return rgba


def over(subject: np.ndarray, ground: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``subject`` over ``ground`` by ``alpha`` (uint8 H×W): where it is 255, exactly the
    subject; where 0, exactly the ground."""
    weight = alpha[..., np.newaxis].astype(np.float32) / np.float32(255)
    blended = np.rint(subject * weight + ground * (np.float32(1) - weight)).astype(np.uint8)
    opaque = (alpha == 255)[..., np.newaxis]
    return np.where(opaque, subject, blended)


def cutout_parameters(source_path: Path | None, width: int, height: int,
                      method: str) -> GenerationParameters:
    """A cut-out's settings: the source's when Easel made it (its prompt and seed carry over,
    as an enlargement's do), else blank ones; the segmenter is its model, the size its own."""
    base = (read_parameters(source_path) if source_path is not None else None) or \
        GenerationParameters(
            prompt="", negative_prompt="", width=width, height=height, steps=0,
            guidance=0.0, scheduler=UNSAMPLED_SCHEDULER, seed=0, model_name="",
            model_hash="", model_family="")
    # The model that drew the source is one step back in its lineage; editing settings
    # belong to the source, not to this.
    return replace(base, width=width, height=height, model_name=method, model_hash="",
                   model_family="", operation=REMOVE, strength=None, feather=None,
                   extend=None, image_guidance=None, regions=None, region_weight=None,
                   scale=None, upscaler=None, base_size=None)


def save_cutout(library: Library, pixels: np.ndarray, parameters: GenerationParameters,
                source_id: str | None, settings: dict) -> ImageEntry:
    """A remove-background result into the library, linked to its source."""
    return library.add_generated(pixels, parameters, source_id=source_id, settings=settings)


def save_replaced(library: Library, source_rgb: np.ndarray, cutout: Cutout,
                  images: tuple[GeneratedImage, ...], source_id: str | None,
                  refine: bool, checks: dict | None = None) -> list[tuple[ImageEntry, np.ndarray]]:
    """Each newly painted picture with the source's subject laid back over it through its
    alpha (an opaque subject pixel is the source's, bit for bit), saved with the source's id;
    the entries with the pixels saved. ``checks``: the content filter's record of the prompt."""
    settings = {"segmenter": cutout.method, "refine": refine}
    saved = []
    for image in images:
        pixels = over(source_rgb, image.pixels, cutout.alpha)
        entry = library.add_generated(pixels, replace(image.parameters, operation=REPLACE),
                                      source_id=source_id, settings=settings, checks=checks)
        saved.append((entry, pixels))
    return saved
