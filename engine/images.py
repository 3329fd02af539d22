"""Turning the VAE's output into pixels, and refusing outputs that are not pictures; checking
the pictures and masks that editing starts from, feathering masks and compositing."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from engine.errors import BadRequest, GenerationFailed

# Approximate linear map from SD 1.x / 2.x latents to RGB in [-1, 1], for live previews only:
# a matrix product per step instead of a VAE decode. Widely used community estimate.
SD_LATENT_RGB_FACTORS = np.array(
    [
        [0.298, 0.207, 0.208],
        [0.187, 0.286, 0.173],
        [-0.158, 0.189, 0.264],
        [-0.184, -0.271, -0.473],
    ],
    dtype=np.float32,
)


def vae_pixels(decoded: np.ndarray) -> np.ndarray:
    """VAE output (1, 3, H, W) in [-1, 1] → uint8 (H, W, 3), rounded as diffusers does, with
    no check (a live preview may be dark; ``to_pixels`` checks a final picture)."""
    image = np.clip(decoded[0] / 2 + 0.5, 0.0, 1.0)
    return (image.transpose(1, 2, 0) * 255).round().astype(np.uint8)


def to_pixels(decoded: np.ndarray) -> np.ndarray:
    """VAE output (1, 3, H, W) in [-1, 1] → uint8 (H, W, 3), rounded as diffusers does."""
    if not np.isfinite(decoded).all():
        raise GenerationFailed("The model produced an invalid image (not-a-number values); "
                               "nothing was saved. Try another scheduler, fewer steps or the "
                               "CPU provider.")
    pixels = vae_pixels(decoded)
    # A flat black frame is what a broken VAE or a NaN clamped to zero looks like.
    if pixels.max() <= 1:
        raise GenerationFailed("The model produced a black image; nothing was saved. "
                               "Try another seed or scheduler, or the CPU provider.")
    return pixels


def preview_pixels(latents: np.ndarray, factors: np.ndarray | None) -> np.ndarray:
    """A cheap RGB preview at latent resolution (uint8 HxWx3) from the current latents."""
    latent = latents[0].astype(np.float32)
    if factors is not None and factors.shape[0] == latent.shape[0]:
        rgb = np.einsum("chw,cr->hwr", latent, factors)
    else:  # No known map: show the first three channels, stretched to the visible range.
        rgb = latent[:3].transpose(1, 2, 0)
        rgb = (rgb - rgb.mean()) / (rgb.std() + 1e-6) * 0.5
    return (np.clip(rgb / 2 + 0.5, 0.0, 1.0) * 255).round().astype(np.uint8)


# --- Pictures and masks given to the engine (image to image, inpainting, outpainting) ------
#
# The engine gets pictures already decoded by its caller, so its own checks are about what it
# can work on: 8-bit RGB, at least one latent cell and at most ``max_side`` pixels a side. A
# PIL image's size is checked before it is decoded, so a huge file is refused unread.

PictureInput = np.ndarray | Image.Image
MIN_SIDE = 8
# diffusers' mask processor binarizes at 0.5 of 255: 128 and above means "repaint".
MASK_THRESHOLD = 128


def picture_pixels(picture: PictureInput, max_side: int, label: str = "picture") -> np.ndarray:
    """``picture`` as uint8 (H, W, 3), or BadRequest saying in one sentence why not."""
    if isinstance(picture, Image.Image):
        _check_sides(*picture.size, max_side, label)
        return np.asarray(picture.convert("RGB"))
    if not isinstance(picture, np.ndarray):
        raise BadRequest(f"The {label} must be pixels or a PIL image, "
                         f"not {type(picture).__name__}.")
    if picture.ndim != 3 or picture.shape[2] != 3 or picture.dtype != np.uint8:
        raise BadRequest(f"The {label} must be 8-bit RGB pixels (height × width × 3); got "
                         f"{picture.dtype} values of shape {picture.shape}.")
    _check_sides(picture.shape[1], picture.shape[0], max_side, label)
    return picture


def _check_sides(width: int, height: int, max_side: int, label: str) -> None:
    if max(width, height) > max_side:
        raise BadRequest(f"The {label} is {width}×{height} pixels; Easel edits pictures up to "
                         f"{max_side} pixels a side, so scale it down first.")
    if min(width, height) < MIN_SIDE:
        raise BadRequest(f"The {label} is {width}×{height} pixels; it needs at least "
                         f"{MIN_SIDE} pixels a side.")


def mask_pixels(mask: PictureInput, width: int, height: int,
                max_side: int) -> tuple[np.ndarray, str | None]:
    """The mask at the picture's size as float32 (H, W), 1 where to repaint and 0 where to
    keep, and a sentence for the user when it had to be stretched to that size.

    White (128 and above in grey) means repaint, as in diffusers and most painting tools; RGB
    masks are read by their brightness.
    """
    if isinstance(mask, Image.Image):
        _check_sides(*mask.size, max_side, "mask")
        grey = mask.convert("L")
    elif isinstance(mask, np.ndarray):
        grey = Image.fromarray(_mask_as_uint8(mask))
        if grey.mode != "L":
            grey = grey.convert("L")
        _check_sides(*grey.size, max_side, "mask")
    else:
        raise BadRequest(f"The mask must be pixels or a PIL image, not {type(mask).__name__}.")
    resized = None
    if grey.size != (width, height):
        resized = (f"The mask is {grey.width}×{grey.height} pixels and the picture "
                   f"{width}×{height}, so the mask was stretched to the picture's size.")
        grey = grey.resize((width, height), Image.Resampling.LANCZOS)
    return (np.asarray(grey) >= MASK_THRESHOLD).astype(np.float32), resized


def _mask_as_uint8(mask: np.ndarray) -> np.ndarray:
    if mask.dtype == np.bool_:
        mask = mask.astype(np.uint8) * 255
    if mask.ndim == 3 and mask.shape[2] == 1:
        mask = mask[:, :, 0]
    if mask.dtype != np.uint8 or not (mask.ndim == 2 or (mask.ndim == 3 and mask.shape[2] == 3)):
        raise BadRequest(f"The mask must be 8-bit grey or RGB pixels, or true/false values; "
                         f"got {mask.dtype} values of shape {mask.shape}.")
    return mask


def feathered(mask: np.ndarray, feather: int) -> np.ndarray:
    """How much of the new picture each pixel takes when composited: 0 outside the mask,
    rising to 1 about ``feather`` pixels inside its edge, so no seam shows and nothing
    outside the mask changes. Image borders do not count as mask edges."""
    if feather <= 0:
        return mask.astype(np.float32)
    grey = Image.fromarray((mask * 255).astype(np.uint8))
    # Half of a Gaussian-blurred edge lies inside the mask; 2b - 1 keeps that half only.
    blurred = np.asarray(grey.filter(ImageFilter.GaussianBlur(feather / 2)), dtype=np.float32)
    weight = np.clip(blurred * np.float32(2 / 255) - np.float32(1), 0, 1)
    return (weight * mask).astype(np.float32)


def composite(generated: np.ndarray, source: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """``generated`` over ``source`` by ``weight`` (H, W); where it is 0, exactly the source."""
    alpha = weight[..., np.newaxis]
    blended = source * (np.float32(1) - alpha) + generated * alpha
    return np.where(alpha > 0, np.rint(blended), source).astype(np.uint8)


def pad_to_multiple(array: np.ndarray, multiple: int) -> np.ndarray:
    """``array`` (H, W[, C]) grown at the bottom and right to multiples of ``multiple`` by
    repeating its edge, so any picture size works and cropping back is exact."""
    height, width = array.shape[:2]
    padding = [(0, -height % multiple), (0, -width % multiple)] + [(0, 0)] * (array.ndim - 2)
    return np.pad(array, padding, mode="edge")


def to_sample(pixels: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) → float32 (1, 3, H, W) in [-1, 1], as diffusers' image processor."""
    image = pixels.astype(np.float32) / np.float32(255)
    return (np.float32(2) * image - np.float32(1)).transpose(2, 0, 1)[np.newaxis]


def extend_canvas(pixels: np.ndarray, left: int, top: int, right: int,
                  bottom: int) -> tuple[np.ndarray, np.ndarray]:
    """The picture on a larger canvas and the mask of the new border (uint8, 255 = new).

    The border starts as the picture's edge colours, smoothed: a plausible start for an
    image-to-image strength below 1, where the model keeps some of what is there.
    """
    padding = ((top, bottom), (left, right))
    canvas = np.pad(pixels, (*padding, (0, 0)), mode="edge")
    radius = max(left, top, right, bottom) / 4
    smoothed = np.asarray(Image.fromarray(canvas).filter(ImageFilter.GaussianBlur(radius)))
    mask = np.pad(np.zeros(pixels.shape[:2], dtype=np.uint8), padding, constant_values=255)
    canvas = np.where(mask[..., np.newaxis] > 0, smoothed, canvas)
    return canvas, mask
