"""Cropping a face square, upright, and pasting the restored face back, with Pillow.

A face with five points (a detector's) is aligned to the FFHQ template as GFPGAN's helper
(facexlib) aligns it: the similarity transform (rotation, scale, shift) that best maps its
points onto the template's, found by least squares. A face given only by its box gets a
square crop around the box's centre, grown so the whole head fits as in the template. Both
are one 2×3 matrix from picture to face pixels; the crop samples the picture through its
inverse, and the paste-back samples the restored face through it, blended into the picture
by a feathered ellipse, so pixels away from the face stay exactly as they were.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# facexlib's FFHQ template for a 512 px face: eyes, nose tip, mouth corners (picture's left
# first), in pixels.
FFHQ_TEMPLATE_512 = np.array([[192.98138, 239.94708], [318.90277, 240.1936],
                              [256.63416, 314.01935], [201.26117, 371.41043],
                              [313.08905, 371.15118]])
BOX_GROWTH = 1.8  # a face's box (brows to chin) is a little over half the template's square
MASK_INSET = 0.06  # of the side: the ellipse stays inside the square...
MASK_SOFTNESS = 0.04  # ...and fades over this much of it


def alignment(landmarks: np.ndarray, side: int) -> np.ndarray:
    """The similarity (2×3, picture -> face pixels) that best maps the five ``landmarks``
    onto the FFHQ template at ``side`` pixels."""
    template = FFHQ_TEMPLATE_512 * side / 512
    points = np.asarray(landmarks, np.float64).reshape(5, 2)
    rows = []
    for (x, y) in points:
        rows += [[x, -y, 1, 0], [y, x, 0, 1]]
    (a, b, tx, ty), *_ = np.linalg.lstsq(np.array(rows), template.reshape(-1), rcond=None)
    return np.array([[a, -b, tx], [b, a, ty]])


def box_crop(box: tuple[float, float, float, float], side: int) -> np.ndarray:
    """The scale and shift (2×3, picture -> face pixels) of a square around the box
    (x0, y0, x1, y1), grown by BOX_GROWTH, to ``side`` pixels."""
    x0, y0, x1, y1 = box
    scale = side / (max(x1 - x0, y1 - y0) * BOX_GROWTH)
    centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
    shift = side / 2 - scale * centre
    return np.array([[scale, 0, shift[0]], [0, scale, shift[1]]])


def crop_face(rgb: np.ndarray, matrix: np.ndarray, side: int) -> np.ndarray:
    """The face square (uint8 side×side×3); outside the picture is black."""
    inverse = _inverse(matrix)
    image = Image.fromarray(rgb).transform((side, side), Image.Transform.AFFINE,
                                           _pillow_coefficients(inverse),
                                           Image.Resampling.BICUBIC)
    return np.asarray(image)


def paste_face(rgb: np.ndarray, face: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """``rgb`` with the restored ``face`` (uint8 side×side×3) put back where it was cropped,
    through a feathered ellipse; pixels the ellipse does not reach are unchanged."""
    height, width = rgb.shape[:2]
    side = face.shape[0]
    coefficients = _pillow_coefficients(matrix)
    back = Image.fromarray(face).transform((width, height), Image.Transform.AFFINE,
                                           coefficients, Image.Resampling.BICUBIC)
    mask = face_mask(side).transform((width, height), Image.Transform.AFFINE, coefficients,
                                     Image.Resampling.BILINEAR)
    weight = np.asarray(mask, np.float32)[..., np.newaxis] / 255
    blended = rgb * (1 - weight) + np.asarray(back, np.float32) * weight
    pasted = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return np.where(weight > 0, pasted, rgb)


def face_mask(side: int) -> Image.Image:
    """A white ellipse inset in the black square, its edge blurred."""
    mask = Image.new("L", (side, side), 0)
    inset = side * (MASK_INSET + MASK_SOFTNESS)
    ImageDraw.Draw(mask).ellipse((inset, inset, side - inset, side - inset), fill=255)
    return mask.filter(ImageFilter.GaussianBlur(side * MASK_SOFTNESS / 2))


def _inverse(matrix: np.ndarray) -> np.ndarray:
    full = np.vstack([matrix, [0, 0, 1]])
    return np.linalg.inv(full)[:2]


def _pillow_coefficients(matrix: np.ndarray) -> tuple[float, ...]:
    """Pillow's AFFINE data for sampling through ``matrix`` (output -> input pixels): Pillow
    puts pixel centres at +0.5, detectors and templates at whole numbers."""
    linear, shift = matrix[:, :2], matrix[:, 2]
    shift = shift + 0.5 - linear @ np.array([0.5, 0.5])
    return (linear[0, 0], linear[0, 1], shift[0], linear[1, 0], linear[1, 1], shift[1])
