"""The face restorer kind: networks that restore faces (GFPGAN v1.3/v1.4, RestoreFormer,
CodeFormer).

Recognised as a ``.pth`` or ``.safetensors`` checkpoint whose tensor names are one of those
networks'; imported by
engine.export.face_restorer (spandrel, exported to ONNX) and described by
engine.faces.description (``easel.json`` marked ``"kind": "face_restorer"``).
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
from engine.export.face_restorer import architecture_of
from engine.faces.description import DESCRIPTION_FILE, FACE_RESTORER, FaceRestorerDescription

name = FACE_RESTORER
noun = "a face restorer"
fallback_formats: tuple[str, ...] = ()


def recognises(source: Path, format: str) -> bool:
    names = weight_names(Path(source), format)
    return bool(names) and architecture_of(names) is not None


def needs_exporter(source: Path, format: str) -> bool:
    return True  # spandrel, torch and onnx export the network


def import_into(source: Path, building: Path, progress: Progress | None,
                should_stop: ShouldStop | None, **_other_kinds_options: Any) -> None:
    from engine.export.face_restorer import import_face_restorer

    import_face_restorer(source, building, progress, should_stop)


def is_installed_folder(folder: Path) -> bool:
    return kind_in_description(Path(folder) / DESCRIPTION_FILE) == name


def describe(folder: Path) -> InstalledModel:
    description = FaceRestorerDescription.load(folder)
    return InstalledModel(folder.name, description.summary, "", folder_size(folder), folder,
                          kind=name, use="restores faces in pictures",
                          licence=description.licence)


def use_with(model: str) -> str:
    return f"easel restore-faces PICTURE --model {model}"
