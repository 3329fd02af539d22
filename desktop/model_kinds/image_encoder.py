"""The image encoder kind: CLIP vision encoders, which IP-Adapters read reference pictures
with.

Recognised by content (engine.export.image_encoder): a transformers folder or weights file of
a ``CLIPVisionModelWithProjection`` (its ``config.json`` beside it), or an ONNX graph taking
``pixel_values`` and giving ``image_embeds``. Installed as ``model.onnx`` and ``easel.json``
(width, projection size, picture side: engine.image_prompt.description).
"""

from __future__ import annotations

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
from engine.export.image_encoder import is_encoder_folder, is_encoder_weights, onnx_encoder_graph
from engine.image_prompt.description import (
    DESCRIPTION_FILE,
    IMAGE_ENCODER_KIND,
    read_encoder_description,
)

name = IMAGE_ENCODER_KIND
noun = "an image encoder"
fallback_formats: tuple[str, ...] = ()


def recognises(source: Path, format: str) -> bool:
    source = Path(source)
    names = weight_names(source, format)
    if names is not None:
        return is_encoder_weights(source, names)
    return is_encoder_folder(source) or onnx_encoder_graph(source) is not None


def needs_exporter(source: Path, format: str) -> bool:
    return True  # exported with torch, or checked with onnx


def import_into(source: Path, building: Path, progress: Progress | None,
                should_stop: ShouldStop | None, **_other_kinds_options: Any) -> None:
    from engine.export.image_encoder import import_image_encoder

    if progress is not None:
        progress("Exporting the image encoder", 1, 1)
    import_image_encoder(Path(source), Path(building))


def is_installed_folder(folder: Path) -> bool:
    return kind_in_description(Path(folder) / DESCRIPTION_FILE) == name


def describe(folder: Path) -> InstalledModel:
    folder = Path(folder)
    description = read_encoder_description(folder)
    return InstalledModel(folder.name, description.summary, "", folder_size(folder), folder,
                          kind=name, use="reads reference pictures for IP-Adapters",
                          licence=description.licence)


def use_with(model: str) -> str:
    return f'easel generate --image-prompt "ADAPTER:PICTURE" --image-encoder {model} "PROMPT"'
