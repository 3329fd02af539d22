"""ControlNet sources: read one into a diffusers ``ControlNetModel``, or check an ONNX one.

Sources come as people share them:
- a diffusers folder (``config.json`` naming ``ControlNetModel``, its weights as
  ``diffusion_pytorch_model[.variant].safetensors``, sharded or not, or as a ``.bin`` pickle);
- a single ``.safetensors`` or ``.pth`` file, in diffusers' tensor names or in the original
  lllyasviel/A1111 ones (``control_model.input_hint_block.0.weight``, ``zero_convs``,
  ``middle_block_out``), translated by diffusers' own ``convert_controlnet_checkpoint``;
- an ONNX graph with OnnxStack's names (a lone ``.onnx`` file, or a folder with ``model.onnx``
  or Amuse's ``controlnet/model.onnx``), checked and copied as it is.

A pickle is only read as plain tensors, in a separate process (engine.export.pickle_convert),
and nothing that ships with a model is ever run. A single file carries weights only, so its
architecture is read from the tensors' shapes; what shapes cannot tell (attention heads, the
size-embedding width, group-norm groups) follows the family's UNet config in
``resources/configs``, as every released ControlNet does. The family is told by the content:
SDXL's size conditioning (``add_embedding``), else the text width (768: SD 1.x, 1024: SD 2.x),
else (tiny models) SD 2.x's linear attention projections. T2I-Adapters, Control-LoRAs,
ControlNet-LLLite and ControlNet Union files are recognised and refused in one sentence.

Nothing here imports torch at module level: the model kinds ask the name tests cheaply.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.control.description import (
    CONTROLNET_INPUTS,
    GRAPH_FILE,
    SDXL_INPUTS,
    ControlNetDescription,
    control_in_names,
    read_graph_signature,
)
from engine.errors import ExportUnavailable, ModelError
from engine.export.checkpoint_family import FAMILIES, FAMILY_NAMES
from engine.export.safetensors_check import check_safetensors_header
from engine.resource_files import resource_path

CONFIG_FILE = "config.json"
CONTROLNET_CLASS = "ControlNetModel"
WEIGHTS_STEM = "diffusion_pytorch_model"
ORIGINAL_PREFIX = "control_model."
DIFFUSERS_MARKER = "controlnet_cond_embedding.conv_in.weight"
ORIGINAL_MARKERS = ("input_hint_block.0.weight", "zero_convs.0.0.weight")
SIZE_EMBEDDING = "add_embedding.linear_1.weight"
TEXT_WIDTHS = {768: "sd1", 1024: "sd2", 2048: "sdxl"}
UNET_CONFIGS = {"sd1": "sd15", "sd2": "sd2", "sdxl": "sdxl"}
# UNet settings a ControlNet shares with the UNet it was copied from, which no shape tells.
SHARED_SETTINGS = ("act_fn", "flip_sin_to_cos", "freq_shift", "downsample_padding",
                   "mid_block_scale_factor", "norm_num_groups", "norm_eps", "upcast_attention",
                   "resnet_time_scale_shift", "only_cross_attention")
LICENCE_METADATA = ("modelspec.license", "license", "licence")
TITLE_METADATA = ("modelspec.title", "title", "name")
# Where Amuse/OnnxStack and our own installs keep a ControlNet graph inside a folder.
GRAPH_PLACES = (GRAPH_FILE, f"controlnet/{GRAPH_FILE}")

Progress = Callable[[str, int, int], None]


# --- telling ControlNets (and what only looks like one) by their tensor names --------------

def naming_of(names: Collection[str]) -> str | None:
    """"diffusers" or "original" for a ControlNet's tensor names, None for anything else."""
    if DIFFUSERS_MARKER in names:
        return "diffusers"
    plain = {name.removeprefix(ORIGINAL_PREFIX) for name in names}
    return "original" if all(marker in plain for marker in ORIGINAL_MARKERS) else None


def not_a_controlnet(names: Collection[str], shown: str) -> str | None:
    """The sentence refusing a control model that is not a ControlNet Easel runs, or None."""
    if "lora_controlnet" in names:
        return (f"'{shown}' is a Control-LoRA, not a ControlNet; Easel does not use "
                f"Control-LoRAs.")
    if any(name.startswith("lllite_") for name in names):
        return (f"'{shown}' is a ControlNet-LLLite (kohya's controllllite), not a ControlNet; "
                f"Easel does not use them.")
    if any(_T2I_ADAPTER.match(name) for name in names) or "style_embedding" in names:
        return (f"'{shown}' is a T2I-Adapter, not a ControlNet; Easel does not use "
                f"T2I-Adapters.")
    if "task_embedding" in names or "control_add_embedding.linear_1.weight" in names:
        return (f"'{shown}' is a ControlNet Union model (several controls in one), which "
                f"Easel does not run; import a ControlNet made for one control.")
    return None


# T2I-Adapter blocks, in the original, diffusers and light-adapter namings.
_T2I_ADAPTER = re.compile(r"(adapter\.)?body\.\d+\.((resnets|body)\.\d+\.)?block1\.weight")


def is_control_model(names: Collection[str]) -> bool:
    """True for a ControlNet's tensor names, or for a control model refused as not one."""
    return naming_of(names) is not None or not_a_controlnet(names, "") is not None


# --- reading a PyTorch source ---------------------------------------------------------------

@dataclass(frozen=True)
class ControlNetSource:
    """A ControlNet read from its source, with what the source tells about it."""

    model: Any  # diffusers.ControlNetModel, float32, in eval mode
    family: str
    control: str | None
    licence: str | None
    shown: str  # the source's file or folder name


def read_controlnet_source(source: Path, family: str | None = None,
                           scratch: Path | None = None) -> ControlNetSource:
    """Read the diffusers folder or single file ``source``; ``family`` is checked against
    what the tensors say. A pickle's plain-tensor copy lives under ``scratch`` meanwhile."""
    source = Path(source)
    shown = source.name
    with tempfile.TemporaryDirectory(prefix=".controlnet-", dir=scratch) as folder:
        if source.is_dir():
            config, tensors, texts = _read_folder(source, Path(folder))
        else:
            tensors, texts = _read_file(source, Path(folder))
            config = None
    refusal = not_a_controlnet(tensors, shown)
    if refusal is not None:
        raise ModelError(refusal)
    naming = naming_of(tensors)
    if naming is None:
        raise ModelError(f"'{shown}' is not a ControlNet: it has none of a ControlNet's "
                         f"tensors.")
    if naming == "original":
        tensors = from_original_names(tensors, shown)
    shapes = {name: tuple(value.shape) for name, value in tensors.items()}
    found = controlnet_family(shapes, shown)
    _check_asked_family(found, family, shown)
    control = control_in_names(shown, *texts["names"], *_snapshot_repo(source))
    if config is None:
        config = controlnet_config(shapes, found)
        # The original shuffle ControlNet pools its residuals (its yaml says so, its file not).
        config["global_pool_conditions"] = control == "shuffle"
    model = build_controlnet(config, tensors, shown)
    return ControlNetSource(model, found, control, texts["licence"], shown)


def _read_folder(folder: Path, scratch: Path) -> tuple[dict, dict, dict]:
    # Code is refused as in model folders; links are not (a Hugging Face cache snapshot is
    # links into blobs/), since only config.json and the weights are read, each checked.
    from engine.export.source import _refuse_code

    config = _read_config(folder)
    _refuse_code(folder)
    tensors = {}
    for weights in _weight_files(folder):
        tensors.update(_load_tensors(weights, scratch)[0])
    texts = {"names": [str(config.get("_name_or_path") or "")],
             "licence": _readme_licence(folder / "README.md")}
    return config, tensors, texts


def _read_config(folder: Path) -> dict:
    try:
        config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise ModelError(f"'{folder.name}' is not a ControlNet folder: it has no readable "
                         f"{CONFIG_FILE}.") from None
    found = config.get("_class_name") if isinstance(config, dict) else None
    if found != CONTROLNET_CLASS:
        raise ModelError(f"'{folder.name}' holds a {found or 'model of no named class'}, "
                         f"not a ControlNet.")
    if "auto_map" in config:
        raise ModelError(f"'{folder.name}' asks to run its own code; Easel never runs code "
                         f"that comes with a model.")
    return config


def _weight_files(folder: Path) -> list[Path]:
    """The folder's weights: plain safetensors, a variant ("fp16"), shards, or a pickle."""
    index = folder / f"{WEIGHTS_STEM}.safetensors.index.json"
    if index.is_file():
        return _shards(index, folder)
    for pattern in (f"{WEIGHTS_STEM}.safetensors", f"{WEIGHTS_STEM}.*.safetensors",
                    f"{WEIGHTS_STEM}.bin", f"{WEIGHTS_STEM}.*.bin"):
        found = sorted(folder.glob(pattern))
        if found:
            return found[:1]
    raise ModelError(f"'{folder.name}' is damaged: it has no ControlNet weights "
                     f"({WEIGHTS_STEM}.safetensors).")


def _shards(index: Path, folder: Path) -> list[Path]:
    damaged = ModelError(f"'{folder.name}' is damaged: its weights index cannot be read.")
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        names = sorted(set(weight_map.values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise damaged from None
    if not names or not all(isinstance(name, str) and Path(name).name == name
                            and (folder / name).is_file() for name in names):
        raise damaged
    return [folder / name for name in names]


def _read_file(source: Path, scratch: Path) -> tuple[dict, dict]:
    tensors, metadata = _load_tensors(source, scratch)
    texts = {"names": [metadata.get(key, "") for key in TITLE_METADATA],
             "licence": next((metadata[key] for key in LICENCE_METADATA if metadata.get(key)),
                             None)}
    return tensors, texts


def _load_tensors(path: Path, scratch: Path) -> tuple[dict, dict[str, str]]:
    """The file's tensors and header metadata; a pickle goes through the isolated reader."""
    from engine.export.formats import PICKLE, SAFETENSORS, detect_format

    format = detect_format(path)
    if format == PICKLE:
        from engine.export.pickle_convert import pickle_to_safetensors

        converted = scratch / f"{path.name}.safetensors"
        pickle_to_safetensors(path, converted)
        return _load_tensors(converted, scratch)[0], {}
    if format != SAFETENSORS:
        raise ModelError(f"'{path.name}' is not a ControlNet weights file.")
    header = check_safetensors_header(path)  # before a byte of weights is mapped
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path)), header.metadata
    except (SafetensorError, OSError) as error:
        raise ModelError(f"'{path.name}' is damaged: its weights cannot be read.") from error


def _readme_licence(readme: Path) -> str | None:
    """The ``license:`` of a Hugging Face model card's front matter, if there is one."""
    try:
        text = readme.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    front = text.split("---")[1] if text.startswith("---") and text.count("---") >= 2 else ""
    match = re.search(r"^licen[cs]e:\s*(\S.*?)\s*$", front, re.MULTILINE)
    return match.group(1).strip("'\"") if match else None


def _snapshot_repo(source: Path) -> list[str]:
    """A Hugging Face cache snapshot is named by its commit; its repository names it."""
    resolved = source.resolve()
    return [resolved.parent.parent.name] if resolved.parent.name == "snapshots" else []


def _check_asked_family(found: str, asked: str | None, shown: str) -> None:
    if asked is None:
        return
    if asked not in FAMILIES:
        raise ModelError(f"The model family must be one of {', '.join(FAMILIES)}, not "
                         f"{asked!r}.")
    if asked != found:
        raise ModelError(f"'{shown}' is a ControlNet for {FAMILY_NAMES[found]}, not for "
                         f"{FAMILY_NAMES[asked]}.")


# --- original names -> diffusers names ------------------------------------------------------

def from_original_names(tensors: Mapping, shown: str) -> dict:
    """The lllyasviel/A1111 tensors under diffusers' names, by diffusers' own converter.

    Old full checkpoints carry a whole Stable Diffusion model beside ``control_model.``; only
    the ControlNet is kept. Every ControlNet tensor must find a name."""
    from diffusers.loaders.single_file_utils import (
        DIFFUSERS_TO_LDM_MAPPING,
        convert_controlnet_checkpoint,
    )

    prefixed = any(name.startswith(ORIGINAL_PREFIX) for name in tensors)
    plain = {name.removeprefix(ORIGINAL_PREFIX): value for name, value in tensors.items()
             if name.startswith(ORIGINAL_PREFIX) or not prefixed}
    try:
        converted = convert_controlnet_checkpoint(plain, {"layers_per_block":
                                                          _original_layers(plain)})
    except (KeyError, IndexError, ValueError, TypeError, AttributeError):
        raise ModelError(f"'{shown}' is an incomplete ControlNet.") from None
    # diffusers' converter leaves out SDXL's size embedding; its own table names it.
    for new, old in DIFFUSERS_TO_LDM_MAPPING["controlnet"]["addition_embed_type"].items():
        if old in plain:
            converted[new] = plain[old]
    converted = {name: value for name, value in converted.items() if value is not None}
    unused = len(plain) - len(converted)
    if unused:
        tensors = "tensor" if unused == 1 else "tensors"
        raise ModelError(f"'{shown}' has {unused} {tensors} that no ControlNet has, so it is "
                         f"not one Easel knows.")
    return converted


def _original_layers(plain: Mapping) -> int:
    """Layers per block: the input blocks are conv_in, then each block's layers and (all but
    the last) a downsampler."""
    blocks = _numbers(plain, r"input_blocks\.(\d+)\.")
    downsamplers = sum(f"input_blocks.{i}.0.op.weight" in plain for i in range(blocks))
    return max(1, (blocks - 1 - downsamplers) // (downsamplers + 1))


def _numbers(names: Collection[str], pattern: str) -> int:
    """One more than the largest number ``pattern`` captures in ``names`` (0 when none)."""
    found = [int(match.group(1)) for name in names if (match := re.match(pattern, name))]
    return max(found) + 1 if found else 0


# --- the family and the architecture, from diffusers-named shapes ---------------------------

Shapes = Mapping[str, tuple[int, ...]]


def controlnet_family(shapes: Shapes, shown: str) -> str:
    """"sd1", "sd2" or "sdxl", told by the tensors (see the module notes)."""
    width = _text_width(shapes)
    if SIZE_EMBEDDING in shapes:
        if width in (768, 1024):
            raise ModelError(f"'{shown}' has SDXL's size conditioning but a "
                             f"{FAMILY_NAMES[TEXT_WIDTHS[width]]} text width, which fits no "
                             f"model Easel knows.")
        return "sdxl"
    if width == 2048:
        raise ModelError(f"'{shown}' has SDXL's text width but not its size conditioning, "
                         f"which fits no model Easel knows.")
    if width in TEXT_WIDTHS:
        return TEXT_WIDTHS[width]
    return "sd2" if _linear_projection(shapes) else "sd1"


def _text_width(shapes: Shapes) -> int | None:
    keys = sorted(key for key in shapes if key.endswith("attn2.to_k.weight"))
    return int(shapes[keys[0]][-1]) if keys and len(shapes[keys[0]]) == 2 else None


def _linear_projection(shapes: Shapes) -> bool:
    keys = sorted(key for key in shapes if key.endswith("proj_in.weight"))
    return bool(keys) and len(shapes[keys[0]]) == 2


def controlnet_config(shapes: Shapes, family: str) -> dict:
    """A ``ControlNetModel`` config for the diffusers-named tensors ``shapes``: sizes from
    the shapes, the rest from the family's UNet config."""
    unet = json.loads(resource_path("configs", UNET_CONFIGS[family], "unet", CONFIG_FILE)
                      .read_text(encoding="utf-8"))
    blocks = _numbers(shapes, r"down_blocks\.(\d+)\.")
    channels = [_size(shapes, f"down_blocks.{b}.resnets.0.conv1.weight", 0)
                for b in range(blocks)]
    attention = [_numbers(shapes, rf"down_blocks\.{b}\.attentions\.0\.transformer_blocks\.(\d+)\.")
                 for b in range(blocks)]
    embedding = [_size(shapes, DIFFUSERS_MARKER, 0)] + [
        _size(shapes, f"controlnet_cond_embedding.blocks.{2 * k + 1}.weight", 0)
        for k in range(_numbers(shapes, r"controlnet_cond_embedding\.blocks\.(\d+)\.") // 2)]
    config = {key: unet[key] for key in SHARED_SETTINGS if unet.get(key) is not None}
    config.update({
        "_class_name": CONTROLNET_CLASS,
        "in_channels": _size(shapes, "conv_in.weight", 1),
        "conditioning_channels": _size(shapes, DIFFUSERS_MARKER, 1),
        "conditioning_embedding_out_channels": embedding,
        "block_out_channels": channels,
        "down_block_types": ["CrossAttnDownBlock2D" if n else "DownBlock2D" for n in attention],
        "layers_per_block": _numbers(shapes, r"down_blocks\.0\.resnets\.(\d+)\."),
        "transformer_layers_per_block": [n or 1 for n in attention],
        "cross_attention_dim": _text_width(shapes) or unet["cross_attention_dim"],
        "attention_head_dim": _heads(unet, channels),
        "use_linear_projection": _linear_projection(shapes),
        "mid_block_type": ("UNetMidBlock2DCrossAttn"
                           if any(key.startswith("mid_block.attentions.") for key in shapes)
                           else "UNetMidBlock2D"),
    })
    if SIZE_EMBEDDING in shapes:
        config.update({"addition_embed_type": "text_time",
                       "addition_time_embed_dim": unet["addition_time_embed_dim"],
                       "projection_class_embeddings_input_dim": _size(shapes, SIZE_EMBEDDING,
                                                                      1)})
    return config


def _size(shapes: Shapes, key: str, axis: int) -> int:
    shape = shapes.get(key)
    if shape is None or len(shape) <= axis:
        raise ModelError(f"The ControlNet has no {key}, so it is incomplete.")
    return int(shape[axis])


def _heads(unet: dict, channels: list[int]) -> int | list[int]:
    """Attention heads per block, as the family has them: SD 1.x has 8 everywhere (diffusers
    calls that "attention_head_dim"); SD 2.x and SDXL have heads 64 wide."""
    heads = unet["attention_head_dim"]
    if isinstance(heads, int):
        return heads
    width = unet["block_out_channels"][0] // heads[0]
    return [max(1, size // width) for size in channels]


def build_controlnet(config: dict, tensors: Mapping, shown: str) -> Any:
    """The ControlNetModel of ``config`` holding ``tensors`` (float32); ModelError when a
    tensor is missing, left over or of another shape, checked before any weight is copied."""
    import torch
    from diffusers import ControlNetModel

    try:
        with torch.device("meta"):
            expected = ControlNetModel.from_config(config).state_dict()
    except (TypeError, ValueError, KeyError, ZeroDivisionError, RuntimeError) as error:
        raise ModelError(f"'{shown}' describes a ControlNet Easel cannot build.") from error
    _check_tensors(tensors, {key: tuple(value.shape) for key, value in expected.items()},
                   shown)
    model = ControlNetModel.from_config(config)
    model.load_state_dict({key: value.to(torch.float32) for key, value in tensors.items()},
                          strict=True)
    return model.eval()


def _check_tensors(tensors: Mapping, expected: dict[str, tuple[int, ...]], shown: str) -> None:
    refusal = f"'{shown}' does not fit the ControlNet architecture its tensors describe"
    missing = sorted(set(expected) - set(tensors))
    if missing:
        raise ModelError(f"{refusal}: it has no {missing[0]}.")
    unknown = sorted(set(tensors) - set(expected))
    if unknown:
        raise ModelError(f"{refusal}: it has an unknown tensor {unknown[0]}.")
    for key, shape in sorted(expected.items()):
        found = tuple(tensors[key].shape)
        if found != shape:
            raise ModelError(f"{refusal}: {key} has the shape {found} where {shape} is "
                             f"expected.")
        if not tensors[key].is_floating_point():
            raise ModelError(f"{refusal}: {key} is stored as whole numbers, not weights.")


# --- ONNX sources ---------------------------------------------------------------------------

def controlnet_graph(source: Path) -> Path | None:
    """The ONNX graph a ControlNet source keeps, by place: the file itself, or a folder's
    ``model.onnx`` or ``controlnet/model.onnx`` (None for a folder with neither, and for a
    whole Stable Diffusion folder, whose ``controlnet/`` is Amuse's UNet that takes
    residuals)."""
    source = Path(source)
    if source.is_file():
        return source
    if (source / "unet").is_dir() or (source / "model_index.json").is_file():
        return None
    return next((source / place for place in GRAPH_PLACES if (source / place).is_file()),
                None)


def import_onnx_controlnet(source: Path, destination: Path, family: str | None = None,
                           progress: Progress | None = None) -> ControlNetDescription:
    """Check the ONNX ControlNet ``source`` and copy its graph (and weights files) into
    ``destination``; returns its description (not yet saved)."""
    source, destination = Path(source), Path(destination)
    graph = controlnet_graph(source)
    if graph is None:
        raise ModelError(f"'{source.name}' holds no ControlNet graph.")
    if progress is not None:
        progress("Checking the ControlNet graph", 1, 2)
    external = _check_onnx_graph(graph, source)
    signature = read_graph_signature(graph)
    missing = signature.missing_names()
    if missing:
        raise ModelError(f"'{source.name}' has no {missing[0]}, so it is not a ControlNet "
                         f"graph Easel can run (it needs the inputs "
                         f"{', '.join(CONTROLNET_INPUTS)} and the residual outputs).")
    config = _graph_config(graph.parent)
    found = _graph_family(signature, config, family, source.name)
    if progress is not None:
        progress("Copying the ControlNet", 2, 2)
    shutil.copyfile(graph, destination / GRAPH_FILE)
    for name in external:  # plain file names beside the graph, checked above
        shutil.copyfile(graph.parent / name, destination / name)
    if config is not None:
        shutil.copyfile(graph.parent / CONFIG_FILE, destination / CONFIG_FILE)
    control = control_in_names(source.name, *(_snapshot_repo(source) if source.is_dir()
                                              else []))
    return ControlNetDescription(found, control, signature.residuals, source.name, None)


def _check_onnx_graph(graph: Path, source: Path) -> tuple[str, ...]:
    """Operators and external weights, as every imported graph; the weights files' names."""
    try:
        from engine.export.onnx_checks import check_source_graph
    except ImportError:
        from engine.export import UNAVAILABLE_SENTENCE

        raise ExportUnavailable(UNAVAILABLE_SENTENCE) from None
    folder = source if source.is_dir() else graph.parent
    _model, external = check_source_graph(graph, source, f"The ControlNet '{source.name}'",
                                          folder)
    return external


def _graph_config(folder: Path) -> dict | None:
    """The diffusers config beside the graph (our exports and some Amuse folders keep one)."""
    try:
        config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    is_controlnet = isinstance(config, dict) and config.get("_class_name") == CONTROLNET_CLASS
    return config if is_controlnet else None


def _graph_family(signature: Any, config: dict | None, asked: str | None, shown: str) -> str:
    """The family by the graph's inputs and text width, else by its config, else as asked."""
    by_width = TEXT_WIDTHS.get(signature.text_width)
    if signature.takes_sizes or by_width == "sdxl":
        if by_width not in (None, "sdxl") or not all(name in signature.inputs
                                                     for name in SDXL_INPUTS):
            raise ModelError(f"'{shown}' mixes SDXL's inputs with another family's, so it is "
                             f"not a ControlNet Easel can run.")
        found = "sdxl"
    elif by_width is not None:
        found = by_width
    elif config is not None:
        found = _config_family(config)
    elif asked is not None:
        found = asked
    else:
        raise ModelError(f"'{shown}' does not say which models it fits; say which with "
                         f"--family sd1, --family sd2 or --family sdxl.")
    _check_asked_family(found, asked, shown)
    return found


def _config_family(config: dict) -> str:
    if config.get("addition_embed_type") == "text_time":
        return "sdxl"
    width = config.get("cross_attention_dim")
    if width in TEXT_WIDTHS:
        return TEXT_WIDTHS[width]
    return "sd2" if config.get("use_linear_projection") else "sd1"


def exported_description(folder: Path, read: ControlNetSource) -> ControlNetDescription:
    """The description of the graph just exported into ``folder`` from ``read``, checked
    against the names the engine feeds and reads."""
    signature = read_graph_signature(folder / GRAPH_FILE)
    missing = signature.missing_names()
    if missing:
        raise ModelError(f"The exported graph of '{read.shown}' has no {missing[0]}; this is "
                         f"a bug in Easel's exporter.")
    return ControlNetDescription(read.family, read.control, signature.residuals, read.shown,
                                 read.licence)
