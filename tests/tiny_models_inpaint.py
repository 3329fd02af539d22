"""The tiny SD 1.x inpainting model (9-channel UNet) for tests; see tiny_models_unet_variant."""

from __future__ import annotations

from pathlib import Path

from tests.tiny_models_unet_variant import variant_diffusers, variant_onnx

INPAINT = ("inpaint", 9, "StableDiffusionInpaintPipeline")


def tiny_inpaint_diffusers() -> Path:
    return variant_diffusers(*INPAINT)


def tiny_inpaint_onnx() -> Path:
    return variant_onnx(*INPAINT)
