"""Converts a single-file Stable Diffusion checkpoint (.safetensors, original "ldm" layout) into
a diffusers folder, offline.

Single-file checkpoints carry weights only. The architecture comes from the family's configs
in ``resources/configs`` and the tokenizer from ``resources/tokenizers/clip``; what a file can
change within a family (UNet input channels for inpainting, the prediction type) is derived
here. The tensor names are translated by diffusers' own single-file helpers, run first on
shape-only "meta" tensors built from the header: a checkpoint that does not fit the
architecture is refused before a single weight is read, and nothing is written until then.
Components are then converted one at a time, so memory holds one component, not the file.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

from engine.errors import Cancelled, ModelError
from engine.export import require_export_dependencies
from engine.export.checkpoint_family import (
    FAMILY_NAMES,
    UNET_PREFIX,
    CheckpointKind,
    check_family,
    choose_prediction,
    detect_checkpoint,
)
from engine.export.safetensors_check import TensorInfo, check_safetensors_header
from engine.export.safetensors_write import save_safetensors
from engine.resource_files import resource_path

CONFIGS_ROOT = resource_path("configs")
CLIP_TOKENIZER = resource_path("tokenizers", "clip")
CONFIG_FOLDERS = {"sd1": "sd15", "sd2": "sd2", "sdxl": "sdxl"}
# The pad token each tokenizer uses: OpenAI CLIP pads with <|endoftext|>, OpenCLIP with "!".
TOKENIZERS = {
    "sd1": {"tokenizer": "<|endoftext|>"},
    "sd2": {"tokenizer": "!"},
    "sdxl": {"tokenizer": "<|endoftext|>", "tokenizer_2": "!"},
}
TEXT_ENCODERS = {"sd1": ("text_encoder",), "sd2": ("text_encoder",),
                 "sdxl": ("text_encoder", "text_encoder_2")}
# SD 2.x: 512-pixel models predict epsilon, 768-pixel ones v (latent size = pixels / 8).
SD2_SAMPLE_SIZES = {"epsilon": 64, "v_prediction": 96}
INPAINT_PIPELINES = {"StableDiffusionPipeline": "StableDiffusionInpaintPipeline",
                     "StableDiffusionXLPipeline": "StableDiffusionXLInpaintPipeline"}
WEIGHT_FILES = {"unet": "diffusion_pytorch_model.safetensors",
                "vae": "diffusion_pytorch_model.safetensors",
                "text_encoder": "model.safetensors", "text_encoder_2": "model.safetensors"}
OPEN_CLIP_PREFIXES = {("sd2", "text_encoder"): "cond_stage_model.model.",
                      ("sdxl", "text_encoder_2"): "conditioner.embedders.1.model."}
# Safetensors dtypes that hold weights (the exporter casts them all to float32).
FLOAT_DTYPES = {"F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64",
                "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}

ShouldStop = Callable[[], bool]
Progress = Callable[[str, int, int], None]
COMPONENT_NAMES = {"unet": "UNet", "vae": "VAE", "text_encoder": "text encoder",
                   "text_encoder_2": "second text encoder"}


@dataclass(frozen=True)
class ConvertedModel:
    """What was written: the diffusers folder and what the checkpoint turned out to be."""

    folder: Path
    family: str  # "sd1", "sd2" or "sdxl"
    inpainting: bool
    prediction: str  # "epsilon" or "v_prediction"


def convert_single_file(checkpoint: Path, destination: Path, *, family: str | None = None,
                        prediction: str | None = None, configs_root: Path = CONFIGS_ROOT,
                        progress: Progress | None = None,
                        should_stop: ShouldStop | None = None) -> ConvertedModel:
    """Convert the .safetensors checkpoint into a diffusers folder in the empty ``destination``.

    ``family`` ("sd1", "sd2", "sdxl") is checked against the file when given; ``prediction``
    ("epsilon", "v_prediction") is needed for SD 2.x, whose files cannot tell.
    ``progress(component, number, total)`` is called as each component starts ("UNet", 1, 3);
    ``should_stop()`` is asked before each and a True answer raises Cancelled. A refused
    checkpoint leaves ``destination`` empty; on a later error (cancelled, unreadable data) it
    holds a partial folder, so callers build in a temporary folder and move it on success.
    """
    require_export_dependencies()
    checkpoint, destination = Path(checkpoint), Path(destination)
    name = checkpoint.name
    header = check_safetensors_header(checkpoint)
    table = header.tensors
    kind = detect_checkpoint({key: info.shape for key, info in table.items()}, name,
                             header.metadata)
    check_family(kind, family, name)
    prediction = choose_prediction(kind, prediction, name)
    configs = family_configs(configs_root, kind, prediction)
    check_architecture(table, kind, configs, name)
    _check_destination(destination)
    _write_folder(checkpoint, destination, kind, configs, progress, should_stop)
    return ConvertedModel(folder=destination, family=kind.family, inpainting=kind.inpainting,
                          prediction=prediction)


# --- configs -------------------------------------------------------------------------------

def family_configs(configs_root: Path, kind: CheckpointKind, prediction: str) -> dict[str, dict]:
    """The family's configs with what this checkpoint decides filled in.

    Inpainting variants differ from their family only by the UNet's input channels and the
    pipeline class, so they are derived here rather than kept as copies."""
    folder = Path(configs_root) / CONFIG_FOLDERS[kind.family]
    files = {"model_index": "model_index.json", "unet": "unet/config.json",
             "vae": "vae/config.json", "scheduler": "scheduler/scheduler_config.json"}
    files.update({encoder: f"{encoder}/config.json" for encoder in TEXT_ENCODERS[kind.family]})
    configs = {part: json.loads((folder / file).read_text(encoding="utf-8"))
               for part, file in files.items()}
    configs["unet"]["in_channels"] = kind.in_channels
    configs["scheduler"]["prediction_type"] = prediction
    if kind.family == "sd2":
        configs["unet"]["sample_size"] = SD2_SAMPLE_SIZES[prediction]
    index = configs["model_index"]
    if kind.inpainting:
        index["_class_name"] = INPAINT_PIPELINES[index["_class_name"]]
    for unused in ("safety_checker", "feature_extractor", "image_encoder"):
        if unused in index:  # never shipped with a checkpoint, and Easel never loads them
            index[unused] = [None, None]
    if "safety_checker" in index:
        index["requires_safety_checker"] = False
    return configs


# --- checking the tensors against the architecture ----------------------------------------

class _Tensors(Mapping):
    """The checkpoint as a read-only mapping that loads a tensor only when it is asked for.

    diffusers' helpers index whole checkpoints; this keeps them from reading anything but the
    component being converted."""

    def __init__(self, names: list[str], load: Callable[[str], object]) -> None:
        self._names = names
        self._known = set(names)
        self._load = load

    def __getitem__(self, key: str):
        if key not in self._known:
            raise KeyError(key)
        return self._load(key)

    def __contains__(self, key: object) -> bool:
        return key in self._known

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def _meta_tensors(table: Mapping[str, TensorInfo]) -> _Tensors:
    """Shape-only tensors: the conversion runs on them without reading or allocating weights."""
    import torch

    def load(key: str):
        info = table[key]
        dtype = getattr(torch, FLOAT_DTYPES.get(info.dtype, "int64"))
        return torch.empty(info.shape, dtype=dtype, device="meta")

    return _Tensors(list(table), load)


def check_architecture(table: Mapping[str, TensorInfo], kind: CheckpointKind,
                       configs: dict[str, dict], name: str) -> None:
    """Refuse a checkpoint whose tensors do not fill the family's architecture exactly."""
    tensors = _meta_tensors(table)
    refusal = f"'{name}' does not fit the {FAMILY_NAMES[kind.family]} architecture"
    for component in ("unet", "vae", *TEXT_ENCODERS[kind.family]):
        try:
            converted = convert_component(component, tensors, kind, configs)
        except (KeyError, IndexError, AttributeError, TypeError, ValueError, RuntimeError):
            # diffusers' helpers index the tensors they expect without asking first.
            raise ModelError(f"{refusal}: its {component} is incomplete.") from None
        _check_fits(converted, _expected_shapes(component, configs[component]), component,
                    refusal)
        if component == "unet":
            _check_no_unet_tensor_left(table, converted, refusal)


def _check_no_unet_tensor_left(table: Mapping[str, TensorInfo], converted: dict,
                               refusal: str) -> None:
    """diffusers' UNet helper renames each tensor it knows and skips the rest silently; a
    skipped one means a part of the model (an image embedding, say) would be lost."""
    unused = sum(key.startswith(UNET_PREFIX) for key in table) - len(converted)
    if unused:
        tensors = "tensor" if unused == 1 else "tensors"
        raise ModelError(f"{refusal}: its unet has {unused} {tensors} the architecture does "
                         f"not use.")


def _expected_shapes(component: str, config: dict) -> dict[str, tuple[int, ...]]:
    import torch

    with torch.device("meta"):
        model = _model_class(component).from_config(config) if component in ("unet", "vae") \
            else _text_model(component, config)
    shapes = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    if component.startswith("text_encoder"):
        # transformers 5 names CLIPTextModel's tensors without the "text_model." that hub
        # folders (and older readers) use; the folder is written in the hub's names.
        shapes = {_hub_text_key(key): shape for key, shape in shapes.items()}
    return shapes


def _hub_text_key(key: str) -> str:
    return key if key.startswith(("text_model.", "text_projection.")) else "text_model." + key


def _model_class(component: str):
    from diffusers import AutoencoderKL, UNet2DConditionModel

    return UNet2DConditionModel if component == "unet" else AutoencoderKL


def _text_model(component: str, config: dict):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    model_class = CLIPTextModelWithProjection if component == "text_encoder_2" else CLIPTextModel
    return model_class(CLIPTextConfig.from_dict(config))


def _check_fits(converted: dict, expected: dict[str, tuple[int, ...]], component: str,
                refusal: str) -> None:
    missing = sorted(key for key in expected if converted.get(key) is None)
    if missing:
        raise ModelError(f"{refusal}: its {component} has no {missing[0]}.")
    unexpected = sorted(set(converted) - set(expected))
    if unexpected:
        raise ModelError(f"{refusal}: its {component} has an unknown tensor {unexpected[0]}.")
    for key, shape in sorted(expected.items()):
        found = tuple(converted[key].shape)
        if found != shape:
            raise ModelError(f"{refusal}: its {component} has {key} of shape {found} where "
                             f"{shape} is expected.")
        if not converted[key].is_floating_point():
            raise ModelError(f"{refusal}: its {component} has {key} stored as whole numbers, "
                             f"not weights.")


# --- translating names ---------------------------------------------------------------------

def convert_component(component: str, tensors: Mapping, kind: CheckpointKind,
                      configs: dict[str, dict]) -> dict:
    """One component's tensors under diffusers/transformers names (hub layout)."""
    from diffusers.loaders import single_file_utils as ldm

    config = configs[component]
    if component == "unet":
        return ldm.convert_ldm_unet_checkpoint(tensors, config)
    if component == "vae":
        return ldm.convert_ldm_vae_checkpoint(tensors, config)
    prefix = OPEN_CLIP_PREFIXES.get((kind.family, component))
    if prefix is None:  # OpenAI CLIP, stored as a transformers model already
        converted = ldm.convert_ldm_clip_checkpoint(tensors)
    else:
        # The helper asks the model for its width only when the file has no projection.
        width = SimpleNamespace(config=SimpleNamespace(hidden_size=config["hidden_size"]))
        converted = ldm.convert_open_clip_checkpoint(width, tensors, prefix=prefix)
    return _drop_unused_text_tensors(converted, component, config)


def _drop_unused_text_tensors(converted: dict, component: str, config: dict) -> dict:
    """Tensors a checkpoint carries that the diffusers text encoder does not use.

    ``position_ids`` is an index buffer older transformers saved. SD 2.x conditions on the
    penultimate layer of OpenCLIP, so its last layer and projection are never run."""
    layers = config["num_hidden_layers"]

    def used(key: str) -> bool:
        if key.endswith("position_ids"):
            return False
        if component == "text_encoder" and key == "text_projection.weight":
            return False
        parts = key.split(".")
        is_layer = parts[:3] == ["text_model", "encoder", "layers"]
        return not (is_layer and int(parts[3]) >= layers)

    return {key: value for key, value in converted.items() if used(key)}


# --- writing -------------------------------------------------------------------------------

def _check_destination(destination: Path) -> None:
    if not destination.is_dir() or any(destination.iterdir()):
        raise ValueError(f"The conversion destination {destination} must be an empty folder.")


def _write_folder(checkpoint: Path, destination: Path, kind: CheckpointKind,
                  configs: dict[str, dict], progress: Progress | None,
                  should_stop: ShouldStop | None) -> None:
    from safetensors import SafetensorError, safe_open

    components = ("unet", "vae", *TEXT_ENCODERS[kind.family])
    for number, component in enumerate(components, start=1):
        if should_stop is not None and should_stop():
            raise Cancelled("The model import was cancelled.")
        if progress is not None:
            progress(COMPONENT_NAMES[component], number, len(components))
        try:
            with safe_open(str(checkpoint), framework="pt") as file:
                tensors = _Tensors(list(file.keys()), file.get_tensor)
                converted = convert_component(component, tensors, kind, configs)
                _write_component(destination / component, component, converted,
                                 configs[component])
        except SafetensorError as error:
            raise ModelError(f"'{checkpoint.name}' is damaged: its {component} weights cannot "
                             f"be read.") from error
        del converted  # one component in memory at a time: an SDXL UNet is 5 GB in float16
    _write_json(destination / "scheduler" / "scheduler_config.json", configs["scheduler"])
    for folder, pad_token in TOKENIZERS[kind.family].items():
        write_tokenizer(destination / folder, pad_token)
    _write_json(destination / "model_index.json", configs["model_index"])


def _write_component(folder: Path, component: str, converted: dict, config: dict) -> None:
    folder.mkdir()
    # Weights keep the checkpoint's dtype (float16 stays float16); the exporter casts them.
    save_safetensors(converted, folder / WEIGHT_FILES[component], metadata={"format": "pt"})
    _write_json(folder / "config.json", config)


def write_tokenizer(folder: Path, pad_token: str) -> None:
    """The CLIP tokenizer files as hub folders carry them, padding with ``pad_token``."""
    folder.mkdir()
    for file in ("vocab.json", "merges.txt"):
        shutil.copyfile(CLIP_TOKENIZER / file, folder / file)
    for file in ("tokenizer_config.json", "special_tokens_map.json"):
        data = json.loads((CLIP_TOKENIZER / file).read_text(encoding="utf-8"))
        _write_json(folder / file, {**data, "pad_token": pad_token})


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")

