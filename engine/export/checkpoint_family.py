"""Tells which Stable Diffusion family a single-file checkpoint is, from its tensor names and
shapes alone (the header), before any weight is read. Pure Python (no torch).

Single-file checkpoints keep the original CompVis/Stability ("ldm") layout. The text encoder
names the family: SD 1.x carries OpenAI CLIP as a transformers model
(``cond_stage_model.transformer.text_model.*``), SD 2.x OpenCLIP ViT-H in its own layout
(``cond_stage_model.model.*``), and SDXL both, as ``conditioner.embedders.0`` (CLIP ViT-L) and
``conditioner.embedders.1`` (OpenCLIP ViT-bigG). Widths are not used to decide, so pruned or
tiny models are named the same way as full-size ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from engine.errors import ModelError

FAMILIES = ("sd1", "sd2", "sdxl")
FAMILY_NAMES = {"sd1": "Stable Diffusion 1.x", "sd2": "Stable Diffusion 2.x", "sdxl": "SDXL"}
PREDICTION_TYPES = ("epsilon", "v_prediction")
TEXT_TO_IMAGE_CHANNELS = 4
INPAINTING_CHANNELS = 9  # 4 latent + 1 mask + 4 masked-image latent channels

UNET_PREFIX = "model.diffusion_model."
UNET_CONV_IN = UNET_PREFIX + "input_blocks.0.0.weight"
UNET_CONV_OUT = UNET_PREFIX + "out.2.weight"
VAE_PREFIX = "first_stage_model."
SD1_TOKENS = "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"
SD2_TOKENS = "cond_stage_model.model.token_embedding.weight"
SDXL_CLIP_TOKENS = ("conditioner.embedders.0.transformer.text_model.embeddings."
                    "token_embedding.weight")
SDXL_OPENCLIP_TOKENS = "conditioner.embedders.1.model.token_embedding.weight"
SDXL_REFINER_TOKENS = "conditioner.embedders.0.model.token_embedding.weight"
SDXL_TIME_EMBEDDING = UNET_PREFIX + "label_emb.0.0.weight"
# Playground v2.5 has SDXL's architecture but EDM noise and its own latent statistics.
PLAYGROUND_MARKER = "edm_mean"
# Some v-prediction fine-tunes (NoobAI-XL V-Pred, for one) mark themselves with this key.
V_PREDICTION_MARKER = "v_pred"
# Stability's ModelSpec metadata, which training tools (kohya's sd-scripts, for one) write.
PREDICTION_METADATA = "modelspec.prediction_type"
PREDICTION_NAMES = {"epsilon": "epsilon", "eps": "epsilon", "v": "v_prediction",
                    "v_prediction": "v_prediction", "v-prediction": "v_prediction"}

Shapes = Mapping[str, Sequence[int]]


@dataclass(frozen=True)
class CheckpointKind:
    """What a checkpoint's header says about it."""

    family: str  # "sd1", "sd2" or "sdxl"
    in_channels: int  # 4 for text-to-image, 9 for inpainting
    prediction: str | None  # what the file itself says; None when it cannot tell

    @property
    def inpainting(self) -> bool:
        return self.in_channels == INPAINTING_CHANNELS

    @property
    def family_name(self) -> str:
        return FAMILY_NAMES[self.family]


def detect_checkpoint(shapes: Shapes, name: str,
                      metadata: Mapping[str, str] | None = None) -> CheckpointKind:
    """Return the family, UNet input channels and stated prediction of the checkpoint whose
    tensor names and shapes are ``shapes`` (and header ``metadata``), or raise ModelError
    naming what is missing."""
    conv_in = shapes.get(UNET_CONV_IN)
    if conv_in is None or len(conv_in) != 4:
        raise ModelError(f"'{name}' has no Stable Diffusion UNet, so it is not a model Easel can "
                         f"import (LoRA, VAE and embedding files are add-ons, not models).")
    family = _family(shapes, name)
    if not any(key.startswith(VAE_PREFIX) for key in shapes):
        raise ModelError(f"'{name}' has no VAE, so it is not a complete {FAMILY_NAMES[family]} "
                         f"checkpoint.")
    in_channels = int(conv_in[1])
    _check_channels(in_channels, shapes, name)
    _check_text_fits_unet(family, shapes, name)
    return CheckpointKind(family=family, in_channels=in_channels,
                          prediction=_stated_prediction(shapes, metadata or {}))


def _stated_prediction(shapes: Shapes, metadata: Mapping[str, str]) -> str | None:
    if V_PREDICTION_MARKER in shapes:
        return "v_prediction"
    stated = metadata.get(PREDICTION_METADATA, "").strip().lower()
    return PREDICTION_NAMES.get(stated)  # None for anything unknown: then the user is asked


def _family(shapes: Shapes, name: str) -> str:
    if SDXL_REFINER_TOKENS in shapes:
        raise ModelError(f"'{name}' is an SDXL refiner, which only finishes other models' "
                         f"pictures; import an SDXL base model instead.")
    if PLAYGROUND_MARKER in shapes:
        raise ModelError(f"'{name}' is a Playground v2.5 model, whose noise schedule Easel "
                         f"does not support.")
    if SDXL_CLIP_TOKENS in shapes and SDXL_OPENCLIP_TOKENS in shapes:
        if SDXL_TIME_EMBEDDING not in shapes:
            raise ModelError(f"'{name}' has SDXL's text encoders but a UNet without SDXL's "
                             f"size and crop conditioning.")
        return "sdxl"
    family = "sd2" if SD2_TOKENS in shapes else "sd1" if SD1_TOKENS in shapes else None
    if family is not None and SDXL_TIME_EMBEDDING in shapes:
        raise ModelError(f"'{name}' has a UNet conditioned on more than text (an unCLIP or "
                         f"image-variation model), which Easel does not import.")
    if family is not None:
        return family
    raise ModelError(f"'{name}' has no text encoder Easel recognises, so it is not a Stable "
                     f"Diffusion 1.x, 2.x or SDXL checkpoint.")


def _check_channels(in_channels: int, shapes: Shapes, name: str) -> None:
    if _size(shapes, UNET_CONV_OUT, 0) != TEXT_TO_IMAGE_CHANNELS:
        raise ModelError(f"'{name}' has a UNet that does not make 4-channel latents, so it is "
                         f"not a Stable Diffusion model Easel knows.")
    if in_channels not in (TEXT_TO_IMAGE_CHANNELS, INPAINTING_CHANNELS):
        raise ModelError(f"'{name}' has a UNet with {in_channels} input channels; Easel imports "
                         f"text-to-image (4) and inpainting (9) models.")


def _size(shapes: Shapes, key: str, axis: int) -> int | None:
    """One dimension of a tensor, or None where the tensor or the dimension is missing (a
    damaged or hostile file may give any shape)."""
    shape = shapes.get(key)
    if shape is None or not -len(shape) <= axis < len(shape):
        return None
    return int(shape[axis])


def _context_width(family: str, shapes: Shapes) -> int | None:
    """The width of what the text encoders hand the UNet's cross-attention."""
    if family == "sdxl":  # SDXL concatenates both encoders' hidden states
        widths = (_size(shapes, SDXL_CLIP_TOKENS, 1), _size(shapes, SDXL_OPENCLIP_TOKENS, 1))
        return None if None in widths else sum(widths)
    return _size(shapes, SD2_TOKENS if family == "sd2" else SD1_TOKENS, 1)


def _check_text_fits_unet(family: str, shapes: Shapes, name: str) -> None:
    cross_attention = sorted(key for key in shapes
                             if key.startswith(UNET_PREFIX) and key.endswith("attn2.to_k.weight"))
    if not cross_attention:
        raise ModelError(f"'{name}' has a UNet without cross-attention, so it cannot follow a "
                         f"prompt.")
    width = _context_width(family, shapes)
    if width is None or _size(shapes, cross_attention[0], -1) != width:
        raise ModelError(f"'{name}' has a text encoder that does not fit its UNet.")


def choose_prediction(kind: CheckpointKind, asked: str | None, name: str) -> str:
    """The prediction type to convert with: the user's, the file's, or the family's only one.

    SD 2.x came as 512-pixel epsilon models (2.0-base, 2.1-base) and 768-pixel v-prediction
    models (2.0, 2.1) with identical tensors, so only the user can say which a file is. The
    only SD 2.x inpainting model (2.0-inpainting) predicts epsilon.
    """
    if asked is not None:
        if asked not in PREDICTION_TYPES:
            raise ModelError(f"The prediction type must be epsilon or v_prediction, not "
                             f"{asked!r}.")
        return asked
    if kind.prediction is not None:
        return kind.prediction
    if kind.family == "sd2" and not kind.inpainting:
        raise ModelError(f"'{name}' is a Stable Diffusion 2.x checkpoint, which can be a "
                         f"512-pixel epsilon or a 768-pixel v-prediction model with the same "
                         f"tensors: pass --prediction epsilon or --prediction v_prediction.")
    return "epsilon"


def check_family(kind: CheckpointKind, asked: str | None, name: str) -> None:
    """Refuse a family the user named that the file contradicts."""
    if asked is None:
        return
    if asked not in FAMILIES:
        raise ModelError(f"The model family must be one of {', '.join(FAMILIES)}, not "
                         f"{asked!r}.")
    if asked != kind.family:
        raise ModelError(f"'{name}' is a {kind.family_name} checkpoint, not "
                         f"{FAMILY_NAMES[asked]}.")
