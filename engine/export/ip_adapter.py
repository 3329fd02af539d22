"""IP-Adapter files -> an installed IP-Adapter folder (engine.image_prompt.description).

Sources: h94/IP-Adapter's files and their likes, one file each: ``.safetensors`` with flat
``image_proj.…`` / ``ip_adapter.{n}.to_k_ip.weight`` names, or the original ``.bin`` pickle
holding the same tensors in two nested dicts (read only as plain tensors, in a separate
process, as engine.export.pickle_convert reads every pickle). Told by content: both groups of
names. "base" adapters project CLIP's ``image_embeds`` to 4 tokens (diffusers'
``ImageProjection``); "plus" ones resample the encoder's penultimate hidden states with a
Resampler (``image_proj.latents``) to 16 (``IPAdapterPlusImageProjection``). The family is the
cross-attention width of the keys: 768 SD 1.x, 1024 SD 2.x, 2048 SDXL.

The install holds the projection as ``image_projection.onnx`` (exported here with diffusers'
own converter and modules, so it is diffusers' projection), the key/value weights as
``ip_adapter.safetensors`` (the engine adds them to the model's UNet graph when it is used,
engine.image_prompt.unet_edit) and ``easel.json``.

This module imports torch only inside its functions: the model kinds ask ``recognises``-level
questions (``adapter_names``) from the generation path.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from types import SimpleNamespace

from engine.description import FAMILY_NAMES
from engine.errors import ModelError
from engine.image_prompt.description import (
    CROSS_ATTENTION_FAMILIES,
    PROJECTION_FILE,
    WEIGHTS_FILE,
    AdapterDescription,
)

_IP_WEIGHT = re.compile(r"ip_adapter\.(\d+)\.to_([kv])_ip\.weight")
_PICKLE_IP_WEIGHT = re.compile(r"(?:ip_adapter\.)?\d+\.to_k_ip\.weight")
LICENCE_METADATA = ("modelspec.license", "license", "licence")

# What pickle_convert.LOAD_PICKLE loaded, flattened: the original training code saves two dicts
# ({"image_proj": {...}, "ip_adapter": {...}}), read here as one table.
_FLATTEN_SCRIPT = r"""
if not isinstance(loaded, dict):
    sys.exit(5)
tensors = {}
for part in ("image_proj", "ip_adapter"):
    inner = loaded.get(part)
    if isinstance(inner, dict):
        tensors.update({part + "." + name: value for name, value in inner.items()
                        if isinstance(name, str) and isinstance(value, torch.Tensor)})
tensors.update({name: value for name, value in loaded.items()
                if isinstance(name, str) and isinstance(value, torch.Tensor)})
if not tensors:
    sys.exit(5)
runpy.run_path(writer)["save_safetensors"](tensors, target, {"format": "pt"})
"""


def is_adapter_names(names: set[str]) -> bool:
    """True for an IP-Adapter's tensor names (safetensors) or pickled strings: both the
    image projection's and the attention layers' (``…to_k_ip.weight``)."""
    has_layers = any(_PICKLE_IP_WEIGHT.fullmatch(name) for name in names)
    has_projection = any(name.startswith("image_proj.") for name in names) or (
        "image_proj" in names)
    return has_layers and has_projection


def read_adapter_tensors(source: Path, scratch: Path | None = None) -> dict:
    """The adapter's tensors (torch) in flat original names; a pickle is first rewritten as
    plain tensors by a separate, isolated process."""
    from safetensors.torch import load_file

    from engine.export.formats import PICKLE, SAFETENSORS, detect_format
    from engine.export.pickle_convert import LOAD_PICKLE, pickle_to_safetensors
    from engine.export.safetensors_check import check_safetensors

    source = Path(source)
    format = detect_format(source)
    if format == SAFETENSORS:
        check_safetensors(source)
        return load_file(str(source))
    if format != PICKLE:
        raise ModelError(f"'{source.name}' is not an IP-Adapter file.")
    with tempfile.TemporaryDirectory(prefix="easel-ip-", dir=scratch) as folder:
        converted = Path(folder) / "adapter.safetensors"
        pickle_to_safetensors(source, converted, script=LOAD_PICKLE + _FLATTEN_SCRIPT,
                              what="an IP-Adapter")
        return load_file(str(converted))


def describe_adapter(tensors: dict, name: str, family: str | None = None,
                     source: str = "", licence: str | None = None) -> AdapterDescription:
    """What the tensors are: family from the key width (``family`` says it for a width no
    family has, and must agree with it otherwise), variant, tokens and the encoder width."""
    layers = _layer_weights(tensors, name)
    cross = int(next(iter(layers.values()))[0].shape[1])
    told = CROSS_ATTENTION_FAMILIES.get(cross)
    if told is not None and family is not None and family != told:
        raise ModelError(f"'{name}' is an IP-Adapter for {FAMILY_NAMES[told]} models, not "
                         f"{FAMILY_NAMES.get(family, family)}.")
    if told is None and family is None:
        raise ModelError(f"'{name}' has attention layers {cross} wide, which no family Easel "
                         f"knows has; say which models it is for with --family.")
    if "image_proj.latents" in tensors:
        variant, tokens = "plus", int(tensors["image_proj.latents"].shape[1])
        width = int(_tensor(tensors, "image_proj.proj_in.weight", name).shape[1])
    elif "image_proj.proj.weight" in tensors and "image_proj.norm.weight" in tensors:
        weight = tensors["image_proj.proj.weight"]
        variant, tokens, width = "base", int(weight.shape[0]) // cross, int(weight.shape[1])
    else:
        raise ModelError(f"'{name}' is an IP-Adapter of a kind Easel does not run yet (only "
                         f"the base and plus adapters are; FaceID and full-face ones are "
                         f"not).")
    return AdapterDescription(told or family, variant, tokens, cross, width, len(layers),
                              source, licence)


def _layer_weights(tensors: dict, name: str) -> dict[int, tuple]:
    found: dict[int, dict] = {}
    for key, value in tensors.items():
        match = _IP_WEIGHT.fullmatch(key)
        if match is not None:
            found.setdefault(int(match.group(1)), {})[match.group(2)] = value
    if not found or any(set(pair) != {"k", "v"} or pair["k"].ndim != 2
                        or pair["k"].shape != pair["v"].shape for pair in found.values()):
        raise ModelError(f"'{name}' is not an IP-Adapter Easel can read: its attention "
                         f"layers are missing or damaged.")
    return {number: (pair["k"], pair["v"]) for number, pair in sorted(found.items())}


def _tensor(tensors: dict, key: str, name: str):
    if key not in tensors:
        raise ModelError(f"'{name}' is damaged: it has no '{key}'.")
    return tensors[key]


# --- the installed folder ------------------------------------------------------------------

class ProjectionGraph:
    """diffusers' image projection with the engine's names: ``image_embeds`` (B, E) or
    ``image_hidden_states`` (B, T, W) -> ``ip_tokens`` (B, tokens, cross_attention_dim)."""

    def __new__(cls, projection, variant: str):
        import torch

        class Graph(torch.nn.Module):
            output_names = ("ip_tokens",)

            def __init__(self) -> None:
                super().__init__()
                self.projection = projection
                self.input_names = ("image_embeds",) if variant == "base" else (
                    "image_hidden_states",)
                axes = {0: "batch"} if variant == "base" else {0: "batch", 1: "sequence"}
                self.dynamic_axes = {self.input_names[0]: axes, "ip_tokens": {0: "batch"}}

            def forward(self, image: torch.Tensor) -> torch.Tensor:
                return self.projection(image)

        return Graph()


def diffusers_projection(tensors: dict):
    """The adapter's image projection as diffusers builds it in ``load_ip_adapter``."""
    from diffusers import UNet2DConditionModel

    state = {key[len("image_proj."):]: value.float() for key, value in tensors.items()
             if key.startswith("image_proj.")}
    convert = UNet2DConditionModel._convert_ip_adapter_image_proj_to_diffusers
    # It reads nothing of the UNet when not loading onto a meta device.
    return convert(SimpleNamespace(), state, low_cpu_mem_usage=False).float().eval()


def write_adapter(tensors: dict, description: AdapterDescription, folder: Path) -> None:
    """``folder``: the projection graph, the attention weights and ``easel.json``."""
    import torch
    from safetensors.torch import save_file

    from engine.export.graphs import _noise, export_graph

    folder = Path(folder)
    projection = diffusers_projection(tensors)
    if description.variant == "base":
        example = (_noise(2, description.encoder_width),)
    else:
        example = (_noise(2, 257, description.encoder_width),)
    export_graph(ProjectionGraph(projection, description.variant), example,
                 folder / PROJECTION_FILE)
    weights = {}
    for key, value in tensors.items():
        if _IP_WEIGHT.fullmatch(key):
            kept = value if value.dtype in (torch.float32, torch.float16) else value.float()
            weights[key[len("ip_adapter."):]] = kept.contiguous()
    save_file(weights, str(folder / WEIGHTS_FILE))
    description.save(folder)


def import_ip_adapter(source: Path, building: Path, family: str | None = None) -> None:
    """Import the adapter file ``source`` into the empty folder ``building``."""
    from engine.export.controlnet_source import _readme_licence

    source = Path(source)
    tensors = read_adapter_tensors(source, scratch=building)
    licence = _file_licence(source) or next(
        (found for folder in (source.parent, source.parent.parent)
         if (found := _readme_licence(folder / "README.md"))), None)
    description = describe_adapter(tensors, source.name, family, source.name, licence)
    write_adapter(tensors, description, building)


def _file_licence(source: Path) -> str | None:
    from engine.export.formats import SAFETENSORS, detect_format
    from engine.export.safetensors_check import check_safetensors_header

    if detect_format(source) != SAFETENSORS:
        return None
    metadata = check_safetensors_header(source).metadata or {}
    return next((metadata[key] for key in LICENCE_METADATA if metadata.get(key)), None)
