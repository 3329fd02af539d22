"""The diffusion kind: Stable Diffusion models, the ones that make pictures.

Recognised as a diffusers folder or an ONNX folder (optimum, Amuse). A checkpoint file that no
kind recognises is read as a Stable Diffusion checkpoint (``fallback_formats``): its converter
is the one that can say in one sentence what does not fit. Installed folders carry
``easel.json`` (engine.description), written before kinds existed, so a description without a
``kind`` is this kind's.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from desktop.model_kinds.kind import InstalledModel, Progress, ShouldStop, folder_size
from engine.description import DESCRIPTION_FILE, ModelDescription
from engine.export.formats import DIFFUSERS_FOLDER, ONNX_FOLDER, PICKLE, SAFETENSORS

name = "diffusion"
noun = "a model that makes pictures"
fallback_formats = (SAFETENSORS, PICKLE)


def recognises(source: Path, format: str) -> bool:
    return format in (DIFFUSERS_FOLDER, ONNX_FOLDER)


def needs_exporter(source: Path, format: str) -> bool:
    # A complete ONNX folder is checked and used as it is; everything else is exported.
    return not _is_onnx_model(source)


def import_into(source: Path, building: Path, progress: Progress | None,
                should_stop: ShouldStop | None, *, family: str | None = None,
                prediction: str | None = None, distillation: str | None = "auto",
                **_other_kinds_options: Any) -> None:
    """An ONNX folder is checked and copied; a diffusers folder is exported to ONNX; a
    single-file .safetensors checkpoint, or a pickle read only as plain tensors, is converted
    to a diffusers folder first. ``family`` and ``prediction`` answer what a checkpoint file
    cannot tell; ``distillation`` ("turbo", "lcm", None) overrides the few-step detection."""
    if _is_onnx_model(source):
        from engine.export.onnx_folder import import_onnx_folder

        import_onnx_folder(source, building, progress, should_stop)
        return
    from engine.export.diffusers_folder import export_diffusers_folder
    from engine.export.formats import detect_format

    format = detect_format(source)
    if format not in (SAFETENSORS, PICKLE):
        export_diffusers_folder(source, building, progress, should_stop,
                                distillation=distillation)
        return
    # Beside the folder being built (same disk, and named so that the store clears it if
    # this import is killed), not in a small system temporary folder.
    converted = Path(tempfile.mkdtemp(prefix=f"{building.name}-convert-", dir=building.parent))
    try:
        _convert_checkpoint(source, format, converted / "model", family, prediction, progress,
                            should_stop)
        export_diffusers_folder(converted / "model", building, progress, should_stop,
                                distillation=distillation)
    finally:
        shutil.rmtree(converted, ignore_errors=True)


def is_installed_folder(folder: Path) -> bool:
    description = Path(folder) / DESCRIPTION_FILE
    if not description.is_file():
        return False
    try:
        data = json.loads(description.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return True  # damaged, but a model folder all the same: loading it says what is wrong
    return not isinstance(data, dict) or data.get("kind", name) == name


def describe(folder: Path) -> InstalledModel:
    description = ModelDescription.load(folder)
    use = ("makes pictures from a prompt" if description.variant == "text-to-image"
           else f"makes pictures ({description.variant})")
    return InstalledModel(folder.name, description.family, description.prediction_type,
                          folder_size(folder), folder, kind=name, use=use)


def use_with(model: str) -> str:
    return f'easel generate --model {model} "PROMPT"'


def _is_onnx_model(source: Path) -> bool:
    from engine.onnx_folder import is_onnx_model_folder

    return source.is_dir() and is_onnx_model_folder(source)


def _convert_checkpoint(source: Path, format: str, destination: Path, family: str | None,
                        prediction: str | None, progress: Progress | None,
                        should_stop: ShouldStop | None) -> None:
    destination.mkdir()
    if format == SAFETENSORS:
        from engine.export.single_file import convert_single_file

        convert_single_file(source, destination, family=family, prediction=prediction,
                            progress=progress, should_stop=should_stop)
    else:
        from engine.export.pickle_convert import convert_pickle

        # The plain-tensor copy of the pickle is as large as the checkpoint: keep it beside
        # the models (same disk).
        convert_pickle(source, destination, family=family, prediction=prediction,
                       progress=progress, should_stop=should_stop,
                       scratch=destination.parent)
