"""A tiny random-weight SD 1.x InstructPix2Pix model (8-channel UNet) for tests, from configs.

Everything but the UNet is the tiny SD 1.x model of tests/tiny_models.py; the UNet is the same
config with 8 input channels (noisy latents, the picture's latents), as timbrooks/
instruct-pix2pix ships. Cached on disk like tiny_models' folders, under its own names and
keys, so the other tiny models' caches are untouched.
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

PIX2PIX_UNET = {**CONFIGS["sd1"]["unet"], "in_channels": 8}


def build_pix2pix_pipeline():
    """The tiny SD 1.x pipeline's parts with an 8-channel UNet, as an InstructPix2Pix one."""
    import torch
    from diffusers import StableDiffusionInstructPix2PixPipeline, UNet2DConditionModel

    parts = build_pipeline("sd1").components
    torch.manual_seed(0)
    parts["unet"] = UNet2DConditionModel(**PIX2PIX_UNET)
    return StableDiffusionInstructPix2PixPipeline(**parts)


def save_diffusers_folder(destination: Path) -> None:
    build_pix2pix_pipeline().save_pretrained(destination, safe_serialization=True)
    _write_hub_tokenizer(destination / "tokenizer", CONFIGS["sd1"]["pad_token"])
    scheduler = {**CONFIGS["sd1"]["scheduler"], "_diffusers_version": "0.8.0"}
    _write_json(destination / "scheduler" / "scheduler_config.json", scheduler)


def pix2pix_diffusers_key() -> str:
    digest = hashlib.sha256(diffusers_key("sd1").encode())
    digest.update(json.dumps(PIX2PIX_UNET, sort_keys=True).encode())
    digest.update(Path(__file__).read_bytes())
    return digest.hexdigest()[:16]


def tiny_pix2pix_diffusers() -> Path:
    """The cached diffusers folder of the tiny SD 1.x InstructPix2Pix model."""
    return cached_folder("pix2pix-diffusers-sd1", pix2pix_diffusers_key(),
                         save_diffusers_folder)


def tiny_pix2pix_onnx() -> Path:
    """The cached folder our exporter made from ``tiny_pix2pix_diffusers()``."""
    source = tiny_pix2pix_diffusers()
    return cached_folder("pix2pix-onnx-sd1", onnx_key_for(pix2pix_diffusers_key()),
                         lambda folder: export_onnx_folder(source, folder))
