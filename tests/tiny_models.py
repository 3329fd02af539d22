"""Tiny random-weight Stable Diffusion models for tests, built from configs, never downloaded.

The configs follow diffusers' own fast tests (a 32/64-channel UNet, a 5-layer 32-wide CLIP
text encoder, a 2-block VAE) with the real CLIP vocabulary, so our tokenizer files work with
them. Folders are cached on disk under a hash of everything that shapes them, so a second test
run reuses them; a folder is built beside the cache and renamed into place, so a killed run
never leaves a half-built one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLIP_TOKENIZER = REPO / "resources" / "tokenizers" / "clip"
EXPORTER_SOURCE = REPO / "engine" / "export"
VARIANTS = ("sd1", "sd2")

# Text encoders as in SD 1.x (OpenAI CLIP, quick_gelu) and SD 2.x (OpenCLIP, gelu); the token
# ids of bos/eos/pad are the legacy values the real configs carry (pooling then takes argmax).
_TEXT_ENCODER = {
    "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1,
    "hidden_size": 32, "intermediate_size": 37, "layer_norm_eps": 1e-05,
    "num_attention_heads": 4, "num_hidden_layers": 5, "vocab_size": 49408,
    "max_position_embeddings": 77,
}
_UNET = {
    "block_out_channels": (32, 64), "layers_per_block": 2, "sample_size": 32,
    "in_channels": 4, "out_channels": 4, "cross_attention_dim": 32,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
}
_VAE = {
    "block_out_channels": (32, 64), "in_channels": 3, "out_channels": 3, "latent_channels": 4,
    "down_block_types": ("DownEncoderBlock2D", "DownEncoderBlock2D"),
    "up_block_types": ("UpDecoderBlock2D", "UpDecoderBlock2D"), "sample_size": 64,
}
# Scheduler configs as SD 1.5 and SD 2.1 ship them (SD 1.5's names no prediction_type at all).
_SD1_SCHEDULER = {
    "_class_name": "PNDMScheduler", "beta_start": 0.00085, "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "num_train_timesteps": 1000, "steps_offset": 1,
    "skip_prk_steps": True, "set_alpha_to_one": False, "clip_sample": False,
    "trained_betas": None,
}
_SD2_SCHEDULER = {
    "_class_name": "DDIMScheduler", "beta_start": 0.00085, "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "num_train_timesteps": 1000, "steps_offset": 1,
    "skip_prk_steps": True, "set_alpha_to_one": False, "clip_sample": False,
    "prediction_type": "v_prediction", "trained_betas": None,
}

CONFIGS: dict[str, dict] = {
    "sd1": {
        "text_encoder": {**_TEXT_ENCODER, "hidden_act": "quick_gelu"},
        "unet": _UNET,
        "vae": _VAE,
        "scheduler": _SD1_SCHEDULER,
        "pad_token": "<|endoftext|>",
    },
    "sd2": {
        "text_encoder": {**_TEXT_ENCODER, "hidden_act": "gelu", "projection_dim": 512},
        "unet": {**_UNET, "attention_head_dim": (2, 4), "use_linear_projection": True,
                 "upcast_attention": True},
        "vae": _VAE,
        "scheduler": _SD2_SCHEDULER,
        "pad_token": "!",
    },
}


# --- building ------------------------------------------------------------------------------

def build_pipeline(variant: str):
    """A tiny StableDiffusionPipeline with fixed seeds (the same weights on every machine)."""
    import torch
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
    from diffusers.schedulers import DDIMScheduler, PNDMScheduler
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    config = CONFIGS[variant]
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**config["unet"])
    torch.manual_seed(0)
    vae = AutoencoderKL(**config["vae"])
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(CLIPTextConfig(**config["text_encoder"]))
    scheduler_class = {"PNDMScheduler": PNDMScheduler, "DDIMScheduler": DDIMScheduler}
    scheduler_config = config["scheduler"]
    scheduler = scheduler_class[scheduler_config["_class_name"]].from_config(scheduler_config)
    tokenizer = CLIPTokenizer.from_pretrained(CLIP_TOKENIZER, pad_token=config["pad_token"])
    return StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


def save_diffusers_folder(variant: str, destination: Path) -> None:
    """Save the tiny pipeline laid out as the Hugging Face hub ships Stable Diffusion."""
    build_pipeline(variant).save_pretrained(destination, safe_serialization=True)
    _write_hub_tokenizer(destination / "tokenizer", CONFIGS[variant]["pad_token"])
    scheduler = {**CONFIGS[variant]["scheduler"], "_diffusers_version": "0.8.0"}
    _write_json(destination / "scheduler" / "scheduler_config.json", scheduler)


def _write_hub_tokenizer(folder: Path, pad_token: str) -> None:
    # Hub SD folders carry vocab/merges and the two configs but no tokenizer.json; replace what
    # transformers' save_pretrained wrote so the exporter is tested on the real layout.
    shutil.rmtree(folder)
    folder.mkdir()
    for name in ("vocab.json", "merges.txt"):
        shutil.copyfile(CLIP_TOKENIZER / name, folder / name)
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        data = json.loads((CLIP_TOKENIZER / name).read_text(encoding="utf-8"))
        _write_json(folder / name, {**data, "pad_token": pad_token})


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def export_onnx_folder(source: Path, destination: Path) -> None:
    from engine.export.diffusers_folder import export_diffusers_folder

    export_diffusers_folder(source, destination)


# --- the on-disk cache ---------------------------------------------------------------------

def cache_root() -> Path:
    return Path(os.environ.get("EASEL_TEST_CACHE") or REPO / ".easel-test-cache")


def _hash_files(digest: hashlib._Hash, folder: Path, pattern: str) -> None:
    for path in sorted(folder.rglob(pattern)):
        if "__pycache__" not in path.parts:
            digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
            digest.update(path.read_bytes())


def _library_versions() -> str:
    # Random initialisation and serialisation may change between releases.
    from importlib.metadata import version

    return " ".join(f"{name}={version(name)}" for name in ("torch", "diffusers", "transformers"))


def diffusers_key(variant: str) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps(CONFIGS[variant], sort_keys=True).encode())
    digest.update(Path(__file__).read_bytes())
    _hash_files(digest, CLIP_TOKENIZER, "*")
    digest.update(_library_versions().encode())
    return digest.hexdigest()[:16]


def onnx_key(variant: str) -> str:
    return onnx_key_for(diffusers_key(variant))


def onnx_key_for(diffusers_folder_key: str) -> str:
    """The cache key of the ONNX export of the diffusers folder with that key: it changes
    with the exporter's source and the onnx versions too."""
    digest = hashlib.sha256(diffusers_folder_key.encode())
    _hash_files(digest, EXPORTER_SOURCE, "*.py")
    from importlib.metadata import version

    digest.update(" ".join(version(name) for name in ("onnx", "onnxscript")).encode())
    return digest.hexdigest()[:16]


def cached_folder(name: str, key: str, build: Callable[[Path], None]) -> Path:
    """``root/name-key``, built by ``build(empty_folder)`` unless a finished one is there."""
    root = cache_root()
    final = root / f"{name}-{key}"
    if final.is_dir():
        return final
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_builds(root)
    building = Path(tempfile.mkdtemp(prefix=f".building-{name}-", dir=root))
    try:
        build(building)
        building.chmod(0o755)  # mkdtemp's 0700 would hide a shared CI cache from other users
        os.replace(building, final)
    except OSError:
        if not final.is_dir():  # not another worker finishing the same build first
            raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    _remove_other_versions(root, name, final)
    return final


def _remove_stale_builds(root: Path, older_than_s: float = 3600) -> None:
    # What a killed run left behind; a build still running elsewhere is younger than this.
    for path in root.glob(".building-*"):
        if time.time() - path.stat().st_mtime > older_than_s:
            shutil.rmtree(path, ignore_errors=True)


def _remove_other_versions(root: Path, name: str, keep: Path) -> None:
    for path in root.glob(f"{name}-*"):
        if path != keep and len(path.name) == len(keep.name):
            shutil.rmtree(path, ignore_errors=True)


def tiny_diffusers(variant: str) -> Path:
    """The cached diffusers folder of a tiny model (``variant`` is "sd1" or "sd2")."""
    return cached_folder(f"diffusers-{variant}", diffusers_key(variant),
                         lambda folder: save_diffusers_folder(variant, folder))


def tiny_onnx(variant: str) -> Path:
    """The cached folder our exporter made from ``tiny_diffusers(variant)``."""
    source = tiny_diffusers(variant)
    return cached_folder(f"onnx-{variant}", onnx_key(variant),
                         lambda folder: export_onnx_folder(source, folder))
