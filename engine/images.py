"""Turning the VAE's output into pixels, and refusing outputs that are not pictures."""

from __future__ import annotations

import numpy as np

from engine.errors import GenerationFailed

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


def to_pixels(decoded: np.ndarray) -> np.ndarray:
    """VAE output (1, 3, H, W) in [-1, 1] → uint8 (H, W, 3), rounded as diffusers does."""
    if not np.isfinite(decoded).all():
        raise GenerationFailed("The model produced an invalid image (not-a-number values); "
                               "nothing was saved. Try another scheduler, fewer steps or the "
                               "CPU provider.")
    image = np.clip(decoded[0] / 2 + 0.5, 0.0, 1.0)
    pixels = (image.transpose(1, 2, 0) * 255).round().astype(np.uint8)
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
