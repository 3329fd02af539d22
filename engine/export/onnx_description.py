"""The description (easel.json) of an ONNX folder made by another tool, read from its graphs.

Component configs (``*/config.json``) are used when the folder has them (optimum copies them);
Amuse folders often do not, so every value also has a source in the graphs or a Stable
Diffusion 1.x/2.x default.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine.description import ModelDescription
from engine.errors import ModelError
from engine.export.onnx_checks import CheckedGraph
from engine.export.source import (
    DEFAULT_GUIDANCE,
    DEFAULT_LATENT_SCALING,
    DEFAULT_SCHEDULER,
    DEFAULT_STEPS,
    PREDICTION_TYPES,
)
from engine.images import SD_LATENT_RGB_FACTORS
from engine.onnx_folder import read_json

DEFAULT_LATENT_CHANNELS = 4  # every SD 1.x/2.x VAE
SD2_HIDDEN_SIZE = 1024  # OpenCLIP ViT-H/14; OpenAI CLIP ViT-L/14 (SD 1.x) has 768
DEFAULT_VAE_SCALE = 8
CLIP_VOCABULARY_SIZE = 49408


@dataclass(frozen=True)
class ComponentConfigs:
    """The folder's JSON configs, empty where absent."""

    text_encoder: dict
    unet: dict
    vae_decoder: dict
    scheduler: dict


def describe_onnx_folder(name: str, graphs: dict[str, CheckedGraph],
                         configs: ComponentConfigs) -> ModelDescription:
    latent_channels = _latent_channels(name, graphs)
    variant = _variant(name, graphs, latent_channels)
    _check_graphs_fit(name, graphs, latent_channels)
    family = model_family(graphs, configs)
    prediction = prediction_type(name, configs)
    vae_scale = _vae_scale_factor(graphs["vae_decoder"], configs.vae_decoder)
    height, width = _default_size(graphs["unet"], configs.unet, family, prediction, vae_scale)
    return ModelDescription(
        family=family,
        latent_channels=latent_channels,
        vae_scale_factor=vae_scale,
        latent_scaling_factor=float(configs.vae_decoder.get("scaling_factor")
                                    or DEFAULT_LATENT_SCALING),
        latent_shift_factor=float(configs.vae_decoder.get("shift_factor") or 0.0),
        prediction_type=prediction,
        default_width=width,
        default_height=height,
        default_steps=DEFAULT_STEPS,
        default_guidance=DEFAULT_GUIDANCE,
        default_scheduler=DEFAULT_SCHEDULER,
        text_max_length=text_max_length(graphs["text_encoder"], configs.text_encoder),
        preview_rgb_factors=_preview_factors(latent_channels),
        variant=variant,
    )


def _latent_channels(name: str, graphs: dict[str, CheckedGraph]) -> int:
    """The latent space's channels: what the UNet gives back (its input may hold more: an
    inpainting UNet also reads the masked picture and the mask), else what the decoder reads."""
    unet, decoder = graphs["unet"], graphs["vae_decoder"]
    if unet.dim("sample", 1) is None:
        raise ModelError(f"'{name}' has a UNet whose channel count is not fixed, so Easel "
                         f"cannot tell its latent space.")
    return (unet.dim("out_sample", 1) or decoder.dim("latent_sample", 1)
            or DEFAULT_LATENT_CHANNELS)


def _variant(name: str, graphs: dict[str, CheckedGraph], latent: int) -> str:
    """What the UNet's input channels say it is, as for diffusers folders (export.source):
    n for text to image, 2n + 1 for inpainting, 2n for InstructPix2Pix."""
    channels = graphs["unet"].dim("sample", 1)
    variant = {latent: "text-to-image", 2 * latent + 1: "inpainting",
               2 * latent: "instruct-pix2pix"}.get(channels)
    if variant is None:
        raise ModelError(f"'{name}' has a UNet with {channels} input channels for {latent} "
                         f"latent channels, which fits no model Easel knows.")
    if variant != "text-to-image" and "vae_encoder" not in graphs:
        kind = "an inpainting" if variant == "inpainting" else "an InstructPix2Pix"
        raise ModelError(f"'{name}' is {kind} model without a VAE encoder, which Easel needs "
                         f"to read the picture it changes.")
    return variant


def _check_graphs_fit(name: str, graphs: dict[str, CheckedGraph], channels: int) -> None:
    """Sizes that must agree between graphs, where the graphs fix them."""
    unet, decoder = graphs["unet"], graphs["vae_decoder"]
    if unet.dim("out_sample", 1) not in (None, channels) or \
            decoder.dim("latent_sample", 1) not in (None, channels):
        raise ModelError(f"'{name}' has a UNet with {channels} channels that does not fit its "
                         f"VAE decoder.")
    encoder = graphs.get("vae_encoder")
    if encoder is not None:
        output = "latent_parameters" if "latent_parameters" in encoder.outputs \
            else "latent_sample"
        wanted = 2 * channels if output == "latent_parameters" else channels  # mean + logvar
        if encoder.dim(output, 1) not in (None, wanted):
            raise ModelError(f"'{name}' has a VAE encoder whose {output} has "
                             f"{encoder.dim(output, 1)} channels where {wanted} fit its UNet.")
    hidden = graphs["text_encoder"].dim("last_hidden_state", 2)
    if hidden is not None and unet.dim("encoder_hidden_states", 2) not in (None, hidden):
        raise ModelError(f"'{name}' has a text encoder that does not fit its UNet.")


def model_family(graphs: dict[str, CheckedGraph], configs: ComponentConfigs) -> str:
    """"sd2" (OpenCLIP text encoder) or "sd1" (OpenAI CLIP).

    The config's activation decides when present (as for diffusers folders: exact GELU is
    OpenCLIP's); then the width (1024 against 768); then the graph itself, since exact GELU
    is exported with an Erf node and quick_gelu as x * sigmoid(1.702 x).
    """
    activation = configs.text_encoder.get("hidden_act")
    if activation in ("gelu", "quick_gelu"):
        return "sd2" if activation == "gelu" else "sd1"
    text_encoder = graphs["text_encoder"]
    hidden = text_encoder.dim("last_hidden_state", 2) or graphs["unet"].dim(
        "encoder_hidden_states", 2)
    if hidden in (768, SD2_HIDDEN_SIZE):
        return "sd2" if hidden == SD2_HIDDEN_SIZE else "sd1"
    return "sd2" if "Erf" in text_encoder.op_types or "Gelu" in text_encoder.op_types else "sd1"


def prediction_type(name: str, configs: ComponentConfigs) -> str:
    # SD 1.x scheduler configs predate the key; diffusers' default is epsilon.
    prediction = configs.scheduler.get("prediction_type") or "epsilon"
    if prediction not in PREDICTION_TYPES:
        raise ModelError(f"'{name}' predicts '{prediction}', which Easel does not support for "
                         f"Stable Diffusion 1.x/2.x.")
    return prediction


def text_max_length(text_encoder: CheckedGraph, config: dict) -> int:
    if isinstance(config.get("max_position_embeddings"), int):
        return config["max_position_embeddings"]
    return text_encoder.dim("input_ids", 1) or 77


def vocabulary_size(config: dict) -> int:
    size = config.get("vocab_size")
    return size if isinstance(size, int) else CLIP_VOCABULARY_SIZE


def _vae_scale_factor(decoder: CheckedGraph, config: dict) -> int:
    blocks = config.get("block_out_channels")
    if isinstance(blocks, list) and blocks:
        return 2 ** (len(blocks) - 1)
    # Without a config: each upsampler of the decoder is exported as one Resize node.
    upsamplers = decoder.op_counts.get("Resize", 0)
    return 2 ** upsamplers if 1 <= upsamplers <= 4 else DEFAULT_VAE_SCALE


def _default_size(unet: CheckedGraph, config: dict, family: str, prediction: str,
                  vae_scale: int) -> tuple[int, int]:
    size = config.get("sample_size")
    if isinstance(size, int):
        return size * vae_scale, size * vae_scale
    if isinstance(size, list) and len(size) == 2:
        return int(size[0]) * vae_scale, int(size[1]) * vae_scale
    height, width = unet.dim("sample", 2), unet.dim("sample", 3)
    if height and width:  # a graph exported for one size only
        return height * vae_scale, width * vae_scale
    side = 768 if family == "sd2" and prediction == "v_prediction" else 512
    return side, side


def _preview_factors(latent_channels: int) -> tuple[tuple[float, ...], ...] | None:
    """SD 1.x / 2.x share one 4-channel latent space, so one preview matrix fits both."""
    if latent_channels != SD_LATENT_RGB_FACTORS.shape[0]:
        return None
    return tuple(tuple(float(value) for value in row) for row in SD_LATENT_RGB_FACTORS)


def read_configs(folder: Path) -> ComponentConfigs:
    """The component configs of ``folder`` (each absent one is empty)."""
    def optional(relative: str) -> dict:
        return read_json(folder, relative) if (folder / relative).exists() else {}

    return ComponentConfigs(
        text_encoder=optional("text_encoder/config.json"),
        unet=optional("unet/config.json"),
        vae_decoder=optional("vae_decoder/config.json"),
        scheduler=optional("scheduler/scheduler_config.json"),
    )
