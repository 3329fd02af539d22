"""The tiny SD 1.x InstructPix2Pix model (8-channel UNet) for tests; see
tiny_models_unet_variant."""

from __future__ import annotations

from pathlib import Path

from tests.tiny_models_unet_variant import variant_diffusers, variant_onnx

PIX2PIX = ("pix2pix", 8, "StableDiffusionInstructPix2PixPipeline")


def tiny_pix2pix_diffusers() -> Path:
    return variant_diffusers(*PIX2PIX)


def tiny_pix2pix_onnx() -> Path:
    return variant_onnx(*PIX2PIX)
