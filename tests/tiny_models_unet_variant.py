"""Tiny random-weight SD 1.x models whose UNet takes extra input channels, for tests.

Everything but the UNet is the tiny SD 1.x model of tests/tiny_models.py; the UNet is the same
config with more input channels: 9 for inpainting (noisy latents, mask, masked picture's
latents, as stable-diffusion-inpainting ships) and 8 for InstructPix2Pix (noisy latents, the
picture's latents, as timbrooks/instruct-pix2pix ships). Cached on disk like tiny_models'
folders, under names and keys of their own, so the other tiny models' caches are untouched.
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


def unet_config(in_channels: int) -> dict:
    return {**CONFIGS["sd1"]["unet"], "in_channels": in_channels}


def build_variant_pipeline(in_channels: int, pipeline_class: str):
    """The tiny SD 1.x pipeline's parts with a wider UNet, as diffusers' ``pipeline_class``."""
    import diffusers
    import torch

    parts = build_pipeline("sd1").components
    torch.manual_seed(0)
    parts["unet"] = diffusers.UNet2DConditionModel(**unet_config(in_channels))
    return getattr(diffusers, pipeline_class)(**parts)


def _variant_key(in_channels: int, pipeline_class: str) -> str:
    digest = hashlib.sha256(diffusers_key("sd1").encode())
    digest.update(json.dumps(unet_config(in_channels), sort_keys=True).encode())
    digest.update(pipeline_class.encode())
    digest.update(Path(__file__).read_bytes())
    return digest.hexdigest()[:16]


def variant_diffusers(name: str, in_channels: int, pipeline_class: str) -> Path:
    """The cached diffusers folder of the tiny model ``name``."""

    def save(destination: Path) -> None:
        pipeline = build_variant_pipeline(in_channels, pipeline_class)
        pipeline.save_pretrained(destination, safe_serialization=True)
        _write_hub_tokenizer(destination / "tokenizer", CONFIGS["sd1"]["pad_token"])
        scheduler = {**CONFIGS["sd1"]["scheduler"], "_diffusers_version": "0.8.0"}
        _write_json(destination / "scheduler" / "scheduler_config.json", scheduler)

    return cached_folder(f"{name}-diffusers-sd1", _variant_key(in_channels, pipeline_class),
                         save)


def variant_onnx(name: str, in_channels: int, pipeline_class: str) -> Path:
    """The cached folder our exporter made from ``variant_diffusers(...)``."""
    source = variant_diffusers(name, in_channels, pipeline_class)
    return cached_folder(f"{name}-onnx-sd1", onnx_key_for(_variant_key(in_channels,
                                                                       pipeline_class)),
                         lambda folder: export_onnx_folder(source, folder))
