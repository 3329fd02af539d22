"""The ControlNet kind: networks that steer a model that makes pictures by a control picture
(edges, depth, a pose, ...).

Recognised by content (engine.export.controlnet_source): a diffusers folder whose config names
``ControlNetModel``; a ``.safetensors`` or ``.pth`` file with a ControlNet's tensors in
diffusers' or the original lllyasviel/A1111 names; an ONNX graph that takes
``controlnet_cond`` or gives ``mid_block_additional_residual`` (a lone file, or a folder with
``model.onnx`` or Amuse's ``controlnet/model.onnx``). Control models that are not ControlNets
(T2I-Adapter, Control-LoRA, ControlNet-LLLite, Union) are recognised too, so the refusal names
what they are. PyTorch sources are exported to ONNX (engine.export.controlnet), ONNX ones
checked and copied. The installed folder holds ``model.onnx`` (+ its weights file),
``config.json`` when known, and ``easel.json`` (engine.control.description).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from desktop.model_kinds.kind import (
    InstalledModel,
    Progress,
    ShouldStop,
    folder_size,
    kind_in_description,
    weight_names,
)
from engine.control.description import (
    DESCRIPTION_FILE,
    read_controlnet_description,
    read_graph_signature,
)
from engine.errors import Cancelled, ModelError
from engine.export.checkpoint_family import FAMILY_NAMES
from engine.export.controlnet_source import CONFIG_FILE, controlnet_graph, is_control_model
from engine.export.formats import ONNX_UPSCALER, detect_format

name = "controlnet"
noun = "a ControlNet"
fallback_formats: tuple[str, ...] = ()


def recognises(source: Path, format: str) -> bool:
    source = Path(source)
    names = weight_names(source, format)
    if names is not None:
        return is_control_model(names)
    return _is_diffusers_folder(source) or _is_onnx_controlnet(source)


def needs_exporter(source: Path, format: str) -> bool:
    # An ONNX graph is checked and copied (the onnx package, asked for when it is used).
    return not _is_onnx_controlnet(Path(source))


def import_into(source: Path, building: Path, progress: Progress | None,
                should_stop: ShouldStop | None, *, family: str | None = None,
                **_other_kinds_options: Any) -> None:
    """Export a PyTorch ControlNet to ONNX, or check and copy an ONNX one, into ``building``
    and describe it; ``family`` is checked against the source, or says it where an ONNX
    graph cannot."""
    source = Path(source)
    if _is_onnx_controlnet(source):
        from engine.export.controlnet_source import import_onnx_controlnet

        import_onnx_controlnet(source, building, family, progress).save(building)
        return
    from engine.export.controlnet import export_controlnet
    from engine.export.controlnet_source import exported_description, read_controlnet_source

    if progress is not None:
        progress("Reading the ControlNet", 1, 2)
    read = read_controlnet_source(source, family, scratch=building)
    if should_stop is not None and should_stop():
        raise Cancelled("The model import was cancelled.")
    if progress is not None:
        progress("Exporting the ControlNet to ONNX", 2, 2)
    export_controlnet(read.model, building)
    exported_description(building, read).save(building)


def is_installed_folder(folder: Path) -> bool:
    return kind_in_description(Path(folder) / DESCRIPTION_FILE) == name


def describe(folder: Path) -> InstalledModel:
    folder = Path(folder)
    description = read_controlnet_description(folder)
    control = f" ({description.control})" if description.control else ""
    use = (f"ControlNet{control} for {FAMILY_NAMES[description.family]}: steers a picture "
           f"by a control picture")
    return InstalledModel(folder.name, description.family, "", folder_size(folder), folder,
                          kind=name, use=use, licence=description.licence)


def use_with(model: str) -> str:
    return f'easel generate --control "TYPE={model}:PICTURE" "PROMPT"'


def _is_diffusers_folder(source: Path) -> bool:
    if not source.is_dir() or _is_onnx_controlnet(source):
        return False
    try:
        config = json.loads((source / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and config.get("_class_name") == "ControlNetModel"


def _is_onnx_controlnet(source: Path) -> bool:
    """A graph with a ControlNet's names, complete or not (the import says what it lacks);
    a folder that also keeps the diffusers config beside it (our own installs) included."""
    try:
        if source.is_file() and detect_format(source) != ONNX_UPSCALER:
            return False  # weights files are never read as protobuf
    except ModelError:
        return False
    graph = controlnet_graph(source)
    try:
        return graph is not None and read_graph_signature(graph).looks_like_controlnet()
    except ModelError:
        return False  # not an ONNX graph: another kind's, or nothing
