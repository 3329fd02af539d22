"""The upscaler kind: super-resolution networks that enlarge pictures.

Recognised as a checkpoint whose tensor names are a super-resolution network's, and taken as
an ONNX graph (a lone ``.onnx`` file or Amuse's folder with one graph at its top) that no other
kind recognises; imported by
engine.export.upscaler, described by engine.upscale.description (``easel.json`` marked
``"kind": "upscaler"``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from desktop.model_kinds import face_restorer
from desktop.model_kinds.kind import InstalledModel, Progress, ShouldStop, folder_size
from engine.export.formats import ONNX_UPSCALER, looks_like_upscaler
from engine.upscale.description import UpscalerDescription, is_upscaler_folder

name = "upscaler"
noun = "an upscaler"
# A lone ONNX graph is read as an upscaler only when no other kind (a ControlNet, an
# annotator, an image encoder) knows it by its names: the upscaler import then checks it.
fallback_formats: tuple[str, ...] = (ONNX_UPSCALER,)


def recognises(source: Path, format: str) -> bool:
    # GFPGAN and RestoreFormer files carry "params_ema" as Real-ESRGAN's do: theirs are
    # face restorers (desktop.model_kinds.face_restorer), told by their other names.
    return looks_like_upscaler(source, format) and not face_restorer.recognises(source, format)


def needs_exporter(source: Path, format: str) -> bool:
    return True  # onnx checks the graph even when nothing is converted


def import_into(source: Path, building: Path, progress: Progress | None,
                should_stop: ShouldStop | None, **_other_kinds_options: Any) -> None:
    from engine.export.upscaler import import_upscaler

    import_upscaler(source, building, progress, should_stop)


def is_installed_folder(folder: Path) -> bool:
    return is_upscaler_folder(folder)


def describe(folder: Path) -> InstalledModel:
    description = UpscalerDescription.load(folder)
    return InstalledModel(folder.name, description.summary, "", folder_size(folder), folder,
                          kind=name, use=f"enlarges pictures {description.scale}x")


def use_with(model: str) -> str:
    return f"easel upscale --model {model}"
