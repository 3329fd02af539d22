"""Tiny random-weight SDXL, SD-Turbo-like and LCM models for tests, built from configs.

The SDXL configs follow diffusers' own SDXL fast tests (two 32-wide CLIP text encoders, the
second with a projection, a UNet with "text_time" size conditioning); the few-step models reuse
the SD 1.x / 2.x tiny UNets of tests/tiny_models.py with the scheduler configs their families
ship, and for LCM a guidance-embedding input. Folders are cached on disk like tiny_models'.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from tests.tiny_models import (
    _TEXT_ENCODER,
    CLIP_TOKENIZER,
    CONFIGS,
    _hash_files,
    _library_versions,
    _write_hub_tokenizer,
    _write_json,
    cached_folder,
    onnx_key_for,
)

# Scheduler configs as the families ship them.
SDXL_SCHEDULER = {
    "_class_name": "EulerDiscreteScheduler", "beta_start": 0.00085, "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "clip_sample": False, "interpolation_type": "linear",
    "num_train_timesteps": 1000, "prediction_type": "epsilon", "sample_max_value": 1.0,
    "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1,
    "timestep_spacing": "leading", "trained_betas": None, "use_karras_sigmas": False,
}
TURBO_SCHEDULER = {**SDXL_SCHEDULER, "_class_name": "EulerAncestralDiscreteScheduler",
                   "timestep_spacing": "trailing"}
LCM_SCHEDULER = {
    "_class_name": "LCMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
    "beta_start": 0.00085, "clip_sample": False, "clip_sample_range": 1.0,
    "dynamic_thresholding_ratio": 0.995, "num_train_timesteps": 1000,
    "original_inference_steps": 50, "prediction_type": "epsilon", "rescale_betas_zero_snr": False,
    "sample_max_value": 1.0, "set_alpha_to_one": True, "steps_offset": 1, "thresholding": False,
    "timestep_scaling": 10.0, "timestep_spacing": "leading", "trained_betas": None,
}

XL_CONFIGS: dict[str, dict] = {
    "sdxl": {
        # OpenAI CLIP ViT-L (quick_gelu) and OpenCLIP bigG (gelu, projected), both tiny.
        "text_encoder": {**_TEXT_ENCODER, "hidden_act": "quick_gelu"},
        "text_encoder_2": {**_TEXT_ENCODER, "hidden_act": "gelu", "projection_dim": 32},
        "unet": {
            "block_out_channels": (32, 64), "layers_per_block": 2, "sample_size": 32,
            "in_channels": 4, "out_channels": 4, "attention_head_dim": (2, 4),
            "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
            "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
            "use_linear_projection": True, "addition_embed_type": "text_time",
            "addition_time_embed_dim": 8, "transformer_layers_per_block": (1, 2),
            "projection_class_embeddings_input_dim": 6 * 8 + 32,
            "cross_attention_dim": 64, "norm_num_groups": 1,
        },
        "vae": {**CONFIGS["sd1"]["vae"], "scaling_factor": 0.13025, "force_upcast": True},
        "scheduler": SDXL_SCHEDULER,
        "pad_token": "<|endoftext|>",
        "pad_token_2": "!",
    },
    "sd-turbo": {**CONFIGS["sd2"], "scheduler": TURBO_SCHEDULER},
    "lcm": {
        **CONFIGS["sd1"],
        "unet": {**CONFIGS["sd1"]["unet"], "time_cond_proj_dim": 32},
        "scheduler": LCM_SCHEDULER,
    },
}
VARIANTS = tuple(XL_CONFIGS)


# --- building ------------------------------------------------------------------------------

def _seeded(build):
    import torch

    torch.manual_seed(0)
    return build()


def build_pipeline(variant: str):
    """The tiny diffusers pipeline of ``variant``, with fixed seeds."""
    import diffusers
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTextModelWithProjection,
        CLIPTokenizer,
    )

    config = XL_CONFIGS[variant]
    unet = _seeded(lambda: UNet2DConditionModel(**config["unet"]))
    vae = _seeded(lambda: AutoencoderKL(**config["vae"]))
    text_encoder = _seeded(lambda: CLIPTextModel(CLIPTextConfig(**config["text_encoder"])))
    scheduler_config = config["scheduler"]
    scheduler = getattr(diffusers, scheduler_config["_class_name"]).from_config(scheduler_config)
    tokenizer = CLIPTokenizer.from_pretrained(CLIP_TOKENIZER, pad_token=config["pad_token"])
    parts = {"vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer, "unet": unet,
             "scheduler": scheduler}
    if variant == "sdxl":
        text_encoder_2 = _seeded(lambda: CLIPTextModelWithProjection(
            CLIPTextConfig(**config["text_encoder_2"])))
        tokenizer_2 = CLIPTokenizer.from_pretrained(CLIP_TOKENIZER,
                                                    pad_token=config["pad_token_2"])
        return diffusers.StableDiffusionXLPipeline(
            **parts, text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2,
            force_zeros_for_empty_prompt=True, add_watermarker=False)
    extra = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
    if variant == "lcm":
        return diffusers.LatentConsistencyModelPipeline(**parts, **extra)
    return diffusers.StableDiffusionPipeline(**parts, **extra)


def save_diffusers_folder(variant: str, destination: Path) -> None:
    """Save the tiny pipeline laid out as the Hugging Face hub ships its family."""
    config = XL_CONFIGS[variant]
    build_pipeline(variant).save_pretrained(destination, safe_serialization=True)
    _write_hub_tokenizer(destination / "tokenizer", config["pad_token"])
    if "pad_token_2" in config:
        _write_hub_tokenizer(destination / "tokenizer_2", config["pad_token_2"])
    scheduler = {**config["scheduler"], "_diffusers_version": "0.24.0"}
    _write_json(destination / "scheduler" / "scheduler_config.json", scheduler)


def export_onnx_folder(source: Path, destination: Path) -> None:
    from engine.export.diffusers_folder import export_diffusers_folder

    export_diffusers_folder(source, destination)


# --- the on-disk cache ---------------------------------------------------------------------

def diffusers_key(variant: str) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps(XL_CONFIGS[variant], sort_keys=True).encode())
    digest.update(Path(__file__).read_bytes())
    digest.update((Path(__file__).parent / "tiny_models.py").read_bytes())
    _hash_files(digest, CLIP_TOKENIZER, "*")
    digest.update(_library_versions().encode())
    return digest.hexdigest()[:16]


def onnx_key(variant: str) -> str:
    return onnx_key_for(diffusers_key(variant))


def tiny_diffusers(variant: str) -> Path:
    """The cached diffusers folder of a tiny ``variant`` ("sdxl", "sd-turbo" or "lcm")."""
    return cached_folder(f"diffusers-{variant}", diffusers_key(variant),
                         lambda folder: save_diffusers_folder(variant, folder))


def tiny_onnx(variant: str) -> Path:
    """The cached folder our exporter made from ``tiny_diffusers(variant)``."""
    source = tiny_diffusers(variant)
    return cached_folder(f"onnx-{variant}", onnx_key(variant),
                         lambda folder: export_onnx_folder(source, folder))


def installed_copy(source: Path, destination: Path) -> Path:
    """A copy of an exported folder with its manifest, as the model store would install it."""
    import shutil

    from engine.manifest import write_manifest

    shutil.copytree(source, destination)
    write_manifest(destination)
    return destination
