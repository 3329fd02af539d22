"""Pictures larger than a model draws: drawn at its largest native size and enlarged.

A model that draws at a fixed scale (the starter: 32 px scenes shown at 256 px) given a
larger canvas draws more of its scene, not a larger one: "a rocket on the left" at 512 x 512
came out as six rockets. A model whose description names a ``largest_native_side`` therefore
draws a larger picture once at the largest size of the same shape it draws well (sides
rounded to its pixel multiple) and enlarges it: with whole-number factors by repeating pixels,
which gives exactly what the model's own decoder would at that scale (the starter's enlarges
8x by nearest neighbour), and otherwise by Lanczos resampling. The picture's parameters say
so: ``base_size`` is the size drawn, ``scale`` and ``upscaler`` how it was enlarged.

Inpainting and outpainting do the same with the picture and its mask (``shrink`` and
``shrink_mask``), then lay the enlarged result over the full-size picture through the
full-size mask, so every pixel outside the mask is still exactly the picture's own.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from PIL import Image

from engine.description import ModelDescription
from engine.request import GenerationParameters
from engine.upscale import LANCZOS_NAME

NEAREST_NAME = "nearest"


def drawing_size(description: ModelDescription, width: int, height: int) -> tuple[int, int]:
    """The size the model draws a ``width`` x ``height`` picture at."""
    largest = description.largest_native_side
    if largest is None or max(width, height) <= largest:
        return width, height
    multiple = description.pixel_multiple
    shrink = largest / max(width, height)
    # A side at most ``largest`` stays so when rounded: ``largest`` is a multiple itself.
    return (max(multiple, round(width * shrink / multiple) * multiple),
            max(multiple, round(height * shrink / multiple) * multiple))


def drawn_size(parameters: GenerationParameters) -> tuple[int, int]:
    """The size the picture of ``parameters`` is drawn at (after ``record_drawing``)."""
    return parameters.base_size or (parameters.width, parameters.height)


def record_drawing(parameters: GenerationParameters,
                   description: ModelDescription) -> GenerationParameters:
    """``parameters`` with the size drawn and the enlargement recorded, when there is one."""
    drawn = drawing_size(description, parameters.width, parameters.height)
    if drawn == (parameters.width, parameters.height):
        return parameters
    return replace(parameters, base_size=drawn, scale=parameters.width / drawn[0],
                   upscaler=_method(drawn, parameters.width, parameters.height))


def drawing_notes(parameters: GenerationParameters, model_name: str,
                  description: ModelDescription, drawn: str = "the picture") -> list[str]:
    """What the user hears when ``drawn`` (what the model drew: the picture, or the part it
    repainted) was drawn smaller and enlarged; nothing otherwise."""
    if parameters.base_size is None:
        return []
    drawn_width, drawn_height = parameters.base_size
    return [f"'{model_name}' draws at most {description.largest_native_side} pixels a side, "
            f"so {drawn} was drawn at {drawn_width} × {drawn_height} and enlarged to "
            f"{parameters.width} × {parameters.height}."]


def enlarge(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    """uint8 (h, w, 3) pixels at ``width`` x ``height`` (unchanged when already that size)."""
    drawn = (pixels.shape[1], pixels.shape[0])
    if drawn == (width, height):
        return pixels
    if _method(drawn, width, height) == NEAREST_NAME:
        across, down = width // drawn[0], height // drawn[1]
        return np.ascontiguousarray(np.repeat(np.repeat(pixels, down, axis=0), across, axis=1))
    resized = Image.fromarray(pixels).resize((width, height), Image.Resampling.LANCZOS)
    return np.asarray(resized)


def shrink(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    """uint8 (H, W, 3) pixels at the smaller ``width`` x ``height``, as ``enlarge`` undoes:
    by averaging whole blocks (exact for a picture enlarged by repeating pixels), otherwise
    by Lanczos resampling. Image to image redraws a large picture at the model's size."""
    size = (pixels.shape[1], pixels.shape[0])
    if size == (width, height):
        return pixels
    whole = _method((width, height), *size) == NEAREST_NAME
    method = Image.Resampling.BOX if whole else Image.Resampling.LANCZOS
    return np.asarray(Image.fromarray(pixels).resize((width, height), method))


def shrink_mask(mask: np.ndarray, width: int, height: int) -> np.ndarray:
    """A float32 (H, W) mask, 1 repaint and 0 keep, at the smaller ``width`` x ``height``:
    a pixel is repainted when any part of the pixels it stands for is, so the enlarged
    repainting covers all of the mask (the compositing keeps to the mask itself)."""
    if (mask.shape[1], mask.shape[0]) == (width, height):
        return mask
    covered = Image.fromarray(mask.astype(np.float32)).resize(
        (width, height), Image.Resampling.BOX)
    return (np.asarray(covered) > 0).astype(np.float32)


def _method(drawn: tuple[int, int], width: int, height: int) -> str:
    whole = width % drawn[0] == 0 and height % drawn[1] == 0
    return NEAREST_NAME if whole else LANCZOS_NAME
