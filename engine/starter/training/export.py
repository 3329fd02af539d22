"""Write the starter model as an ordinary Easel model folder, and read its weights back.

The folder has the layout of every imported model (``tokenizer/``, ``scheduler/``,
``text_encoder/``, ``unet/``, ``vae_decoder/``, ``vae_encoder/`` with ``model.onnx`` each,
``easel.json``, ``manifest.json``), plus ``training.json``: the command, settings and training
time that made the weights.

The "VAE" is fixed arithmetic, no weights: the decoder pixel-shuffles the 12 x 16 x 16 latents
back to a 32 px image and enlarges it 8 times with nearest-neighbour (so a 256 px picture, and
the encoder, which averages 8 x 8 blocks and pixel-unshuffles, gives back exactly the latents
the decoder was given). The learned weights are stored as float16 initializers, each followed
by a Cast to float32 that ONNX Runtime folds away when it loads the graph: half the file size,
float32 arithmetic. Initializers keep their torch parameter names, which is how training
resumes from the shipped weights.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch import nn

from engine.description import ModelDescription
from engine.manifest import write_manifest
from engine.starter.training.network import StarterConfig, StarterModel
from engine.starter.vocabulary import write_tokenizer_folder

OPSET = 17
UPSCALE = 8  # 32 px scenes shown at 256 px
TRAINING_RECORD = "training.json"

SCHEDULER_CONFIG = {
    "_class_name": "FlowMatchEulerDiscreteScheduler",
    "num_train_timesteps": 1000,
    "shift": 1.0,
}


def description(latent_scaling: float, steps: int, guidance: float) -> ModelDescription:
    # The preview map: each colour is the mean of its four sub-pixel channels.
    factors = np.zeros((12, 3))
    for colour in range(3):
        factors[colour * 4 : colour * 4 + 4, colour] = 0.25 / latent_scaling
    return ModelDescription(
        family="starter", latent_channels=12, vae_scale_factor=2 * UPSCALE,
        latent_scaling_factor=latent_scaling, prediction_type="flow",
        default_width=32 * UPSCALE, default_height=32 * UPSCALE, default_steps=steps,
        default_guidance=guidance, default_scheduler="flow_euler", text_max_length=24,
        preview_rgb_factors=tuple(tuple(row) for row in factors.tolist()),
        # The UNet halves the latents twice and joins the skips without resizing them.
        size_multiple=2 * UPSCALE * 4,
        # Trained on 32 px scenes only: a larger canvas gets more scene (copies of the
        # subject), so larger pictures are drawn at 256 px and enlarged.
        largest_native_side=32 * UPSCALE,
    )


# --- the graphs ----------------------------------------------------------------------------------


class TextEncoderGraph(nn.Module):
    input_names = ("input_ids",)
    output_names = ("last_hidden_state", "pooler_output")
    dynamic_axes = {"input_ids": {0: "batch"}, "last_hidden_state": {0: "batch"},
                    "pooler_output": {0: "batch"}}

    def __init__(self, model: StarterModel) -> None:
        super().__init__()
        self.text_encoder = model.text_encoder

    def forward(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.text_encoder(input_ids)


class UNetGraph(nn.Module):
    input_names = ("sample", "timestep", "encoder_hidden_states")
    output_names = ("out_sample",)
    dynamic_axes = {"sample": {0: "batch", 2: "height", 3: "width"}, "timestep": {0: "batch"},
                    "encoder_hidden_states": {0: "batch"},
                    "out_sample": {0: "batch", 2: "height", 3: "width"}}

    def __init__(self, model: StarterModel) -> None:
        super().__init__()
        self.unet = model.unet

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor,
                encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        return self.unet(sample, timestep, encoder_hidden_states)


class PixelDecoder(nn.Module):
    input_names = ("latent_sample",)
    output_names = ("sample",)
    dynamic_axes = {"latent_sample": {0: "batch", 2: "height", 3: "width"},
                    "sample": {0: "batch", 2: "height", 3: "width"}}

    def __init__(self, latent_scaling: float) -> None:
        super().__init__()
        self.latent_scaling = latent_scaling

    def forward(self, latent_sample: torch.Tensor) -> torch.Tensor:
        # The engine divides by the scaling factor before decoding, as for any VAE.
        pixels = F.pixel_shuffle(latent_sample, 2)
        return F.interpolate(pixels, scale_factor=float(UPSCALE), mode="nearest")


class PixelEncoder(nn.Module):
    """Image in [-1, 1] -> mean and log-variance (a tiny constant one) of the latents."""

    input_names = ("sample",)
    output_names = ("latent_parameters",)
    dynamic_axes = {"sample": {0: "batch", 2: "height", 3: "width"},
                    "latent_parameters": {0: "batch", 2: "height", 3: "width"}}

    def forward(self, sample: torch.Tensor) -> torch.Tensor:
        mean = F.pixel_unshuffle(F.avg_pool2d(sample, UPSCALE), 2)
        return torch.cat([mean, torch.full_like(mean, -30.0)], dim=1)


def _export(graph: nn.Module, example: tuple[torch.Tensor, ...], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # torch's fused transformer-layer kernel has no ONNX form; the plain path exports.
    fast_path = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        _trace(graph, example, path)
    finally:
        torch.backends.mha.set_fastpath_enabled(fast_path)


def _trace(graph: nn.Module, example: tuple[torch.Tensor, ...], path: Path) -> None:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph.eval(), example, str(path), dynamo=False, opset_version=OPSET,
            input_names=list(graph.input_names), output_names=list(graph.output_names),
            dynamic_axes=graph.dynamic_axes,
            # No folding: folded weights get generated names, and resuming reads weights back
            # by their parameter names. ONNX Runtime folds the graph when it loads it.
            do_constant_folding=False,
        )


def store_half_precision(path: Path, names: set[str]) -> None:
    """Store the named float32 initializers as float16, each cast back to float32 on load."""
    model = onnx.load(str(path))
    graph = model.graph
    casts = []
    for initializer in graph.initializer:
        if initializer.name not in names or initializer.data_type != onnx.TensorProto.FLOAT:
            continue
        half = numpy_helper.to_array(initializer).astype(np.float16)
        original = initializer.name
        initializer.CopyFrom(numpy_helper.from_array(half, f"{original}::float16"))
        casts.append(onnx.helper.make_node("Cast", [f"{original}::float16"], [original],
                                           to=onnx.TensorProto.FLOAT, name=f"{original}::cast"))
    for node in reversed(casts):
        graph.node.insert(0, node)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def export_starter(model: StarterModel, config: StarterConfig, destination: Path,
                   record: dict, steps: int = 12, guidance: float = 2.0) -> None:
    """Write ``model`` as a complete model folder at ``destination``, replacing what is there
    only once the new folder is complete."""
    destination = Path(destination)
    latent_scaling = float(record["settings"]["latent_scaling"])
    building = destination.with_name(f".building-{destination.name}-{os.getpid()}")
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    model = model.float().to(memory_format=torch.contiguous_format).eval()
    names = {name for name, _ in model.named_parameters()}

    ids = torch.zeros(1, config.text_max_length, dtype=torch.int64)
    _export(TextEncoderGraph(model), (ids,), building / "text_encoder" / "model.onnx")
    hidden = torch.zeros(1, config.text_max_length, config.text_width)
    unet_example = (torch.randn(1, config.latent_channels, 16, 16), torch.tensor([500.0]), hidden)
    _export(UNetGraph(model), unet_example, building / "unet" / "model.onnx")
    for component, prefix in (("text_encoder", "text_encoder."), ("unet", "unet.")):
        store_half_precision(building / component / "model.onnx",
                             {n for n in names if n.startswith(prefix)})
    _export(PixelDecoder(latent_scaling), (torch.randn(1, config.latent_channels, 16, 16),),
            building / "vae_decoder" / "model.onnx")
    _export(PixelEncoder(), (torch.rand(1, 3, 256, 256) * 2 - 1,),
            building / "vae_encoder" / "model.onnx")

    write_tokenizer_folder(building / "tokenizer")
    (building / "scheduler").mkdir()
    _write_json(building / "scheduler" / "scheduler_config.json", SCHEDULER_CONFIG)
    _write_json(building / "model_index.json", {
        "_class_name": "OnnxStableDiffusionPipeline", "_diffusers_version": "0.30.0",
        "scheduler": ["diffusers", SCHEDULER_CONFIG["_class_name"]],
        "text_encoder": ["diffusers", "OnnxRuntimeModel"],
        "tokenizer": ["transformers", "PreTrainedTokenizerFast"],
        "unet": ["diffusers", "OnnxRuntimeModel"],
        "vae_decoder": ["diffusers", "OnnxRuntimeModel"],
        "vae_encoder": ["diffusers", "OnnxRuntimeModel"],
        "safety_checker": [None, None], "feature_extractor": [None, None],
        "requires_safety_checker": False,
    })
    description(latent_scaling, steps, guidance).save(building)
    _write_json(building / TRAINING_RECORD, {**record, "config": config.to_dict()})
    write_manifest(building)

    old = destination.with_name(f".replaced-{destination.name}-{os.getpid()}")
    if destination.exists():
        os.replace(destination, old)
    os.replace(building, destination)
    shutil.rmtree(old, ignore_errors=True)


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def read_shipped_weights(folder: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The weights stored in a starter model folder, as a float32 state dict, and its
    training record. Every parameter of the network must be found."""
    folder = Path(folder)
    record = json.loads((folder / TRAINING_RECORD).read_text(encoding="utf-8"))
    config = StarterConfig.from_dict(record["config"])
    expected = StarterModel(config).state_dict()
    found: dict[str, torch.Tensor] = {}
    for component in ("text_encoder", "unet"):
        graph = onnx.load(str(folder / component / "model.onnx"))
        for initializer in graph.graph.initializer:
            name = initializer.name.removesuffix("::float16")
            if name in expected:
                array = numpy_helper.to_array(initializer).astype(np.float32)
                found[name] = torch.from_numpy(array.copy())
    missing = sorted(set(expected) - set(found))
    if missing:
        raise ValueError(f"the shipped model lacks {len(missing)} weights, e.g. {missing[0]}")
    return found, record


def model_from_checkpoint(path: Path) -> tuple[StarterModel, StarterConfig, dict]:
    """The averaged weights of a training checkpoint or snapshot, and its training record."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    config = StarterConfig.from_dict(state["config"])
    model = StarterModel(config)
    model.load_state_dict({k: v.float() for k, v in state["ema"].items()})
    settings = state.get("settings") or {"latent_scaling": 1.0}
    record = {"steps": state["step"], "training_seconds": round(state["seconds"], 1),
              "settings": settings, "started_from": state.get("started_from", "scratch")}
    if state.get("history"):
        record["history"] = state["history"]
    return model, config, record


def main(argv: list[str] | None = None) -> int:
    import argparse

    from engine.starter.training.train import DEFAULT_WORK, SHIPPED, trainer_record_fields

    parser = argparse.ArgumentParser(
        description="Write a training checkpoint's averaged weights as a model folder.")
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_WORK / "checkpoint.pt",
                        help="a checkpoint.pt or a snapshots/ema-*.pt file")
    parser.add_argument("--to", type=Path, default=SHIPPED, help="the model folder to write")
    args = parser.parse_args(argv)
    model, config, record = model_from_checkpoint(args.checkpoint)
    export_starter(model, config, args.to, {**trainer_record_fields(record), **record})
    print(f"exported step {record['steps']} ({record['training_seconds'] / 3600:.2f} h) "
          f"to {args.to}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
