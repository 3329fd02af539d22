"""CLIP vision encoders (what IP-Adapters read pictures with) -> an installed image encoder
(engine.image_prompt.description).

Sources: a transformers folder of ``CLIPVisionModelWithProjection`` (h94/IP-Adapter's
``models/image_encoder/`` and ``sdxl_models/image_encoder/``: ``config.json`` and
``model.safetensors`` or a ``pytorch_model.bin`` pickle, read only as plain tensors in a
separate process), or an ONNX graph of one with Easel's names (a lone ``.onnx`` file or a
folder with ``model.onnx``), checked and copied.

The graph: ``pixel_values`` (B, 3, S, S, CLIP-normalised) -> ``image_embeds`` (B, projection)
and ``penultimate_hidden_states`` (B, tokens, width): what diffusers' ``encode_image`` takes
for "base" adapters (``image_embeds``) and "plus" ones (``hidden_states[-2]``).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from engine.errors import ModelError
from engine.image_prompt.description import CLIP_MEAN, CLIP_STD, ENCODER_FILE, EncoderDescription

CONFIG_FILE = "config.json"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
INPUT = "pixel_values"
OUTPUTS = ("image_embeds", "penultimate_hidden_states")
# transformers 5 names the patch embedding without "vision_model." in some exports.
ENCODER_NAMES = {"vision_model.embeddings.patch_embedding.weight",
                 "embeddings.patch_embedding.weight"}


def is_encoder_folder(source: Path) -> bool:
    """A transformers folder whose config is a CLIP vision model with a projection."""
    source = Path(source)
    if not source.is_dir() or not any((source / name).is_file() for name in WEIGHT_FILES):
        return False
    try:
        config = json.loads((source / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and (
        "CLIPVisionModelWithProjection" in (config.get("architectures") or []))


def is_encoder_names(names: set[str]) -> bool:
    """A CLIP vision model's tensor names (or a pickle's strings), with its projection."""
    return bool(ENCODER_NAMES & names) and "visual_projection.weight" in names


def is_encoder_weights(source: Path, names: set[str]) -> bool:
    """One weights file of an encoder folder: its names, and the config beside it."""
    return is_encoder_names(names) and is_encoder_folder(Path(source).parent)


def onnx_encoder_graph(source: Path) -> Path | None:
    """The graph of an ONNX image encoder at ``source`` (file or folder), or None."""
    from engine.control.description import read_graph_signature

    source = Path(source)
    graph = source / ENCODER_FILE if source.is_dir() else source
    if not graph.is_file():
        return None
    try:
        signature = read_graph_signature(graph)
    except ModelError:
        return None
    return graph if INPUT in signature.inputs and OUTPUTS[0] in signature.outputs else None


class EncoderGraph:
    """The encoder with the names above (a torch module, made when torch is at hand)."""

    def __new__(cls, encoder):
        import torch

        class Graph(torch.nn.Module):
            input_names = (INPUT,)
            output_names = OUTPUTS
            dynamic_axes = {INPUT: {0: "batch"}, OUTPUTS[0]: {0: "batch"},
                            OUTPUTS[1]: {0: "batch"}}

            def __init__(self) -> None:
                super().__init__()
                self.encoder = encoder

            def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                output = self.encoder(pixel_values, output_hidden_states=True, return_dict=True)
                return output.image_embeds, output.hidden_states[-2]

        return Graph()


def describe_encoder(config, source: str, licence: str | None = None,
                     mean=CLIP_MEAN, std=CLIP_STD) -> EncoderDescription:
    side = int(config.image_size)
    tokens = (side // int(config.patch_size)) ** 2 + 1  # the patches and the class token
    return EncoderDescription(int(config.hidden_size), int(config.projection_dim), side,
                              tokens, tuple(mean), tuple(std), source, licence)


def export_encoder(encoder, folder: Path, description: EncoderDescription) -> None:
    """Write ``folder/model.onnx`` and ``easel.json`` for a ``CLIPVisionModelWithProjection``."""
    from engine.export.graphs import _noise, export_graph

    folder = Path(folder)
    side = description.image_size
    export_graph(EncoderGraph(encoder.float().eval()), (_noise(2, 3, side, side),),
                 folder / ENCODER_FILE)
    description.save(folder)


def import_image_encoder(source: Path, building: Path) -> None:
    """Import the encoder at ``source``: a transformers folder, one weights file of one
    (its ``config.json`` beside it), or an ONNX graph."""
    source = Path(source)
    graph = onnx_encoder_graph(source)
    if graph is not None:
        _copy_onnx(graph, building, source.name)
        return
    folder = source if source.is_dir() else source.parent
    if not is_encoder_folder(folder):
        raise ModelError(f"'{source.name}' is not a CLIP vision encoder Easel can import.")
    weights = source if source.is_file() else next(
        folder / name for name in WEIGHT_FILES if (folder / name).is_file())
    from transformers import CLIPVisionModelWithProjection

    from engine.export.controlnet_source import _readme_licence

    with tempfile.TemporaryDirectory(prefix="easel-encoder-", dir=building) as scratch:
        readable = _plain_tensors_folder(folder, weights, Path(scratch))
        encoder = CLIPVisionModelWithProjection.from_pretrained(readable, use_safetensors=True)
    licence = _readme_licence(folder / "README.md") or _readme_licence(
        folder.parent.parent / "README.md")
    shown = folder.name if source.is_dir() else f"{folder.name}/{source.name}"
    export_encoder(encoder, building, describe_encoder(encoder.config, shown, licence))


def _plain_tensors_folder(folder: Path, weights: Path, scratch: Path) -> Path:
    """A folder transformers reads without unpickling: the config and the weights as checked
    safetensors (a pickle rewritten as plain tensors by a separate process)."""
    from engine.export.formats import SAFETENSORS, detect_format

    shutil.copyfile(folder / CONFIG_FILE, scratch / CONFIG_FILE)
    if detect_format(weights) == SAFETENSORS:
        from engine.export.safetensors_check import check_safetensors

        check_safetensors(weights)
        (scratch / WEIGHT_FILES[0]).symlink_to(weights.resolve())
    else:
        from engine.export.pickle_convert import pickle_to_safetensors

        pickle_to_safetensors(weights, scratch / WEIGHT_FILES[0])
    return scratch


def _copy_onnx(graph: Path, building: Path, name: str) -> None:
    """Check an ONNX encoder's names and sizes, then copy it with its description."""
    import onnx

    from engine.control.description import read_graph_signature
    from engine.export.onnx_checks import _check_domains, _check_external_data

    signature = read_graph_signature(graph)
    embeds, hidden = signature.outputs.get(OUTPUTS[0], ()), signature.outputs.get(OUTPUTS[1], ())
    pixels = signature.inputs.get(INPUT, ())
    sizes = [embeds[-1:], hidden[-2:], pixels[-1:]]
    if len(hidden) != 3 or not all(size and isinstance(size[-1], int) for size in sizes) \
            or not isinstance(hidden[1], int):
        raise ModelError(f"'{name}' is an image encoder graph without "
                         f"'{OUTPUTS[1]}' of fixed size, so Easel cannot tell which "
                         f"IP-Adapters it fits.")
    label = f"The image encoder '{name}'"
    model = onnx.load(str(graph), load_external_data=False)
    _check_domains(model, label)  # no custom operators; weights only inside its folder
    for location in _check_external_data(model, graph.parent, graph.parent, label):
        shutil.copyfile(graph.parent / location, Path(building) / location)
    shutil.copyfile(graph, Path(building) / ENCODER_FILE)
    EncoderDescription(hidden[2], embeds[-1], pixels[-1], hidden[1], CLIP_MEAN, CLIP_STD,
                       name).save(building)
