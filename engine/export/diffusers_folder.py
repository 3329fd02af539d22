"""Export a diffusers Stable Diffusion 1.x/2.x/XL folder to the ONNX model folder the engine runs.

The layout written is the one optimum and diffusers' ONNX pipelines read (see design.md):
model_index.json, scheduler/, tokenizer/, text_encoder/, unet/, vae_decoder/, vae_encoder/, each
graph as ``model.onnx`` beside the component's config, plus ``easel.json``; SDXL adds
tokenizer_2/ and text_encoder_2/. The checksum manifest is the model store's job.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

from engine.description import ModelDescription
from engine.errors import Cancelled, ModelError
from engine.export import require_export_dependencies
from engine.export.source import AUTO, SourceModel, check_diffusers_folder, describe

Progress = Callable[[str, int, int], None]
ShouldStop = Callable[[], bool]

ONNX_PIPELINE_CLASS = "OnnxStableDiffusionPipeline"  # what diffusers' own ONNX export writes
# diffusers has no ONNX SDXL pipeline; optimum's is this one.
ONNX_SDXL_PIPELINE_CLASS = "ORTStableDiffusionXLPipeline"


def export_diffusers_folder(source: Path, destination: Path, progress: Progress | None = None,
                            should_stop: ShouldStop | None = None, *,
                            external_data_threshold: int | None = None,
                            distillation: str | None = AUTO) -> ModelDescription:
    """Export the diffusers folder ``source`` into the empty folder ``destination``.

    ``progress(component, number, total)`` is called as each graph starts
    ("text encoder", 1, 4) ... ("VAE encoder", 4, 4) (5 graphs for SDXL); ``should_stop()``
    is asked before each and a True answer raises Cancelled. On any error ``destination``
    holds a partial export: the caller builds in a temporary folder and moves it into place
    only on success. ``external_data_threshold`` (bytes) overrides when weights go to
    ``model.onnx.data``. ``distillation`` says what kind of few-step model this is ("turbo",
    "lcm", or None for none) where the configs cannot tell; by default they are read.
    """
    require_export_dependencies()
    _quiet_loading_bars()
    model = check_diffusers_folder(Path(source))
    destination = Path(destination)
    _check_destination(destination)
    description = describe(model, distillation)

    from engine.export.tokenizer import export_tokenizer

    export_tokenizer(model.folder / "tokenizer", destination / "tokenizer",
                     description.text_max_length, model.text_encoder.get("vocab_size", 49408))
    if model.is_sdxl:
        export_tokenizer(model.folder / "tokenizer_2", destination / "tokenizer_2",
                         description.text_max_length,
                         model.text_encoder_2.get("vocab_size", 49408))
    _write_configs(model, destination)
    _export_graphs(model, destination, progress, should_stop, external_data_threshold)
    description.save(destination)
    return description


def _check_destination(destination: Path) -> None:
    if not destination.is_dir() or any(destination.iterdir()):
        raise ValueError(f"The export destination {destination} must be an empty folder.")


def _write_configs(model: SourceModel, destination: Path) -> None:
    second = ("text_encoder_2",) if model.is_sdxl else ()
    for component in ("scheduler", "text_encoder", *second, "unet", "vae_decoder",
                      "vae_encoder"):
        (destination / component).mkdir()
    source = model.folder
    shutil.copyfile(source / "scheduler" / "scheduler_config.json",
                    destination / "scheduler" / "scheduler_config.json")
    configs = (("text_encoder", "text_encoder"), *((name, name) for name in second),
               ("unet", "unet"), ("vae_decoder", "vae"), ("vae_encoder", "vae"))
    for exported, original in configs:
        shutil.copyfile(source / original / "config.json", destination / exported / "config.json")
    index = _onnx_model_index(model)
    (destination / "model_index.json").write_text(json.dumps(index, indent=2) + "\n",
                                                  encoding="utf-8")


def _onnx_model_index(model: SourceModel) -> dict:
    onnx_model = ["diffusers", "OnnxRuntimeModel"]
    if model.is_sdxl:
        return {
            "_class_name": ONNX_SDXL_PIPELINE_CLASS,
            "_diffusers_version": model.model_index.get("_diffusers_version", "0.0.0"),
            "force_zeros_for_empty_prompt": model.model_index.get(
                "force_zeros_for_empty_prompt", True),
            "scheduler": ["diffusers", model.scheduler["_class_name"]],
            "text_encoder": onnx_model,
            "text_encoder_2": onnx_model,
            "tokenizer": ["transformers", "CLIPTokenizer"],
            "tokenizer_2": ["transformers", "CLIPTokenizer"],
            "unet": onnx_model,
            "vae_decoder": onnx_model,
            "vae_encoder": onnx_model,
        }
    return {
        "_class_name": ONNX_PIPELINE_CLASS,
        "_diffusers_version": model.model_index.get("_diffusers_version", "0.0.0"),
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", model.scheduler["_class_name"]],
        "text_encoder": onnx_model,
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": onnx_model,
        "vae_decoder": onnx_model,
        "vae_encoder": onnx_model,
    }


def _export_graphs(model: SourceModel, destination: Path, progress: Progress | None,
                   should_stop: ShouldStop | None, external_data_threshold: int | None) -> None:
    from engine.export import graphs
    from engine.export.attention import rewrite_unet_attention
    from engine.export.weights_map import MAPPED_COMPONENTS, write_weights_map

    threshold = external_data_threshold or graphs.EXTERNAL_DATA_THRESHOLD
    # SDXL reads an inner hidden state of its text encoders, so they give them all.
    text_graph = graphs.HiddenStatesTextEncoderGraph if model.is_sdxl else graphs.TextEncoderGraph
    second = (("second text encoder", "text_encoder_2", "text_encoder_2", text_graph,
               graphs.text_encoder_example),) if model.is_sdxl else ()
    steps = (  # (name shown, folder written, component loaded, graph wrapper, example inputs)
        ("text encoder", "text_encoder", "text_encoder", text_graph,
         graphs.text_encoder_example),
        *second,
        ("UNet", "unet", "unet", graphs.UNetGraph, graphs.unet_example),
        ("VAE decoder", "vae_decoder", "vae", graphs.VaeDecoderGraph, graphs.vae_decoder_example),
        ("VAE encoder", "vae_encoder", "vae", graphs.VaeEncoderGraph, graphs.vae_encoder_example),
    )
    for number, (shown, folder, component, graph_class, example) in enumerate(steps, start=1):
        if should_stop is not None and should_stop():
            raise Cancelled("The model import was cancelled.")
        if progress is not None:
            progress(shown, number, len(steps))
        module = _load(model, component)
        graphs.export_graph(graph_class(module), example(module),
                            destination / folder / "model.onnx", threshold)
        if folder == "unet":  # attention as one operator (engine.export.attention)
            rewrite_unet_attention(destination / folder / "model.onnx")
        if folder in MAPPED_COMPONENTS:  # so a LoRA finds its weights (engine.lora)
            write_weights_map(module, destination / folder / "model.onnx")
        del module  # one component in memory at a time: a real UNet is 3.4 GB


def _load(model: SourceModel, component: str):
    """Load one component's weights (safetensors only, never pickle, never remote code)."""
    import torch
    from safetensors import SafetensorError

    if component in ("text_encoder", "text_encoder_2"):
        from transformers import CLIPTextModel, CLIPTextModelWithProjection

        model_class = CLIPTextModel if component == "text_encoder" else (
            CLIPTextModelWithProjection)
        dtype_argument = {"dtype": torch.float32}
    else:
        from diffusers import AutoencoderKL, UNet2DConditionModel

        model_class = UNet2DConditionModel if component == "unet" else AutoencoderKL
        dtype_argument = {"torch_dtype": torch.float32}
    try:
        module, info = model_class.from_pretrained(
            model.folder / component, use_safetensors=True, local_files_only=True,
            variant=model.weight_variants[component], output_loading_info=True,
            **dtype_argument,
        )
    except (OSError, ValueError, RuntimeError, KeyError, SafetensorError) as error:
        # The library's own message (paths, offsets) stays in the chained traceback for logs.
        raise ModelError(f"'{model.name}' is damaged: its {component} weights cannot be "
                         f"read.") from error
    # Both libraries would otherwise fill missing or misshapen tensors with random values.
    incomplete = sorted(info.get("missing_keys") or []) + sorted(
        str(entry[0]) if isinstance(entry, tuple) else str(entry)
        for entry in info.get("mismatched_keys") or [])
    if incomplete:
        raise ModelError(f"'{model.name}' is damaged: its {component} weights are incomplete "
                         f"({incomplete[0]} is missing or has the wrong shape).")
    return module.eval()


def _quiet_loading_bars() -> None:
    """transformers and diffusers draw their own progress bars on stderr while loading
    weights; the import reports its own progress, so theirs would only be noise."""
    import diffusers
    import transformers

    transformers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.disable_progress_bar()
