"""A tiny random-weight SD 1.x inpainting model (9-channel UNet) for tests, built from configs.

Everything but the UNet is the tiny SD 1.x model of tests/tiny_models.py; the UNet is the same
config with 9 input channels (noisy latents, mask, masked picture's latents), as
stable-diffusion-inpainting ships. Cached on disk like tiny_models' folders, under its own
names and keys, so the other tiny models' caches are untouched.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from tests.tiny_models import (
    CONFIGS,
    _write_hub_tokenizer,
    _write_json,
    build_pipeline,
    cached_folder,
    diffusers_key,
    export_onnx_folder,
    onnx_key_for,
)

INPAINT_UNET = {**CONFIGS["sd1"]["unet"], "in_channels": 9}


def build_inpaint_pipeline():
    """The tiny SD 1.x pipeline's parts with a 9-channel UNet, as an inpainting pipeline."""
    import torch
    from diffusers import StableDiffusionInpaintPipeline, UNet2DConditionModel

    parts = build_pipeline("sd1").components
    torch.manual_seed(0)
    parts["unet"] = UNet2DConditionModel(**INPAINT_UNET)
    return StableDiffusionInpaintPipeline(**parts)


def save_diffusers_folder(destination: Path) -> None:
    build_inpaint_pipeline().save_pretrained(destination, safe_serialization=True)
    _write_hub_tokenizer(destination / "tokenizer", CONFIGS["sd1"]["pad_token"])
    scheduler = {**CONFIGS["sd1"]["scheduler"], "_diffusers_version": "0.8.0"}
    _write_json(destination / "scheduler" / "scheduler_config.json", scheduler)


def inpaint_diffusers_key() -> str:
    digest = hashlib.sha256(diffusers_key("sd1").encode())
    digest.update(json.dumps(INPAINT_UNET, sort_keys=True).encode())
    digest.update(Path(__file__).read_bytes())
    return digest.hexdigest()[:16]


def tiny_inpaint_diffusers() -> Path:
    """The cached diffusers folder of the tiny SD 1.x inpainting model."""
    return cached_folder("inpaint-diffusers-sd1", inpaint_diffusers_key(), save_diffusers_folder)


def tiny_inpaint_onnx() -> Path:
    """The cached folder our exporter made from ``tiny_inpaint_diffusers()``."""
    source = tiny_inpaint_diffusers()
    return cached_folder("inpaint-onnx-sd1", onnx_key_for(inpaint_diffusers_key()),
                         lambda folder: export_onnx_folder(source, folder))
