"""The safety checker kind: networks that judge whether a picture is unsafe, so the window can
blur the pictures they flag (never delete them).

Recognised by content: diffusers' Stable Diffusion safety checker (a transformers folder whose
``config.json`` names ``StableDiffusionSafetyChecker``, or one weights file of it by its
concept embeddings), exported to ONNX by engine.export.safety_checker; or an ONNX image
classifier (a lone ``.onnx`` file, or a folder with ``model.onnx`` and a Hugging Face export's
config files) with one picture in and only per-picture scores out. That signature is no other
kind's: upscalers, segmenters and annotators give pictures or maps (four dimensions), face
detectors boxes (three), and an image encoder's ``image_embeds`` is left to that kind.
Installed as ``model.onnx`` and ``easel.json`` (engine.safety.description).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from desktop.model_kinds.kind import (
    InstalledModel,
    Progress,
    ShouldStop,
    check_graph,
    copy_graph,
    folder_size,
    graph_in,
    kind_in_description,
    weight_names,
)
from engine.control.description import read_graph_signature
from engine.errors import ModelError
from engine.export.formats import ONNX_UPSCALER, detect_format
from engine.export.safety_checker import is_checker_folder, is_checker_names
from engine.safety.description import (
    DESCRIPTION_FILE,
    GRAPH_FILE,
    SAFETY_CHECKER_KIND,
    looks_like_classifier,
    read_safety_description,
)

if TYPE_CHECKING:
    from desktop.model_store import ModelStore

name = SAFETY_CHECKER_KIND
noun = "a safety checker"
fallback_formats: tuple[str, ...] = ()
# An image encoder's output (desktop.model_kinds.image_encoder), which takes pictures to
# per-picture vectors too.
_ENCODER_OUTPUT = "image_embeds"


def recognises(source: Path, format: str) -> bool:
    source = Path(source)
    names = weight_names(source, format)
    if names is not None:
        return is_checker_names(names)
    if format == ONNX_UPSCALER:
        return _classifier_graph(source) is not None
    return is_checker_folder(source)


def needs_exporter(source: Path, format: str) -> bool:
    return True  # exported with torch, or checked with onnx


def import_into(source: Path, building: Path, progress: Progress | None,
                should_stop: ShouldStop | None, **_other_kinds_options: Any) -> None:
    """Export the diffusers safety checker ``source`` to ONNX, or check and copy the ONNX
    classifier ``source``, into ``building`` and describe it."""
    source = Path(source)
    if _is_onnx(source):
        _import_classifier(source, building, progress)
        return
    from engine.export.safety_checker import import_safety_checker

    if progress is not None:
        progress("Exporting the safety checker to ONNX", 1, 1)
    import_safety_checker(source, building)


def is_installed_folder(folder: Path) -> bool:
    return kind_in_description(Path(folder) / DESCRIPTION_FILE) == name


def describe(folder: Path) -> InstalledModel:
    folder = Path(folder)
    description = read_safety_description(folder)
    return InstalledModel(folder.name, description.summary, "", folder_size(folder), folder,
                          kind=name, use="flags pictures it judges unsafe (they are blurred, "
                          "never deleted)", licence=description.licence)


def use_with(model: str) -> str:
    return (f"the window, easel generate or easel edit, as usual: {model} checks every "
            f"picture they make, and the ones it flags are kept, marked in their metadata and "
            f"blurred in the window's gallery until clicked")


def find_safety_checker(store: ModelStore, model: str | None = None) -> Path | None:
    """The folder of the installed safety checker ``model``, else of the first installed one
    by name; None when none is installed (the check is optional)."""
    installed = store.installed(name)
    if model is None:
        return installed[0].path if installed else None
    found = next((checker.path for checker in installed if checker.name == model), None)
    if found is None:
        names = ", ".join(checker.name for checker in installed) or "none"
        raise ModelError(f"No safety checker named '{model}' is installed (installed: "
                         f"{names}); add one with: easel models import FOLDER.")
    return found


def _is_onnx(source: Path) -> bool:
    try:
        return detect_format(source) == ONNX_UPSCALER
    except ModelError:
        return False  # the importer says what is wrong with it


def _classifier_graph(source: Path) -> Path | None:
    graph = graph_in(source, GRAPH_FILE)
    if graph is None:
        return None
    try:
        signature = read_graph_signature(graph)
    except ModelError:
        return None  # not an ONNX graph: another kind's, or nothing
    if _ENCODER_OUTPUT in signature.outputs:
        return None
    return graph if looks_like_classifier(signature) else None


def _import_classifier(source: Path, building: Path, progress: Progress | None) -> None:
    from engine.export.safety_checker import describe_classifier

    graph = graph_in(source, GRAPH_FILE)
    if graph is None:
        raise ModelError(f"'{source.name}' holds no {GRAPH_FILE}.")
    if progress is not None:
        progress("Checking the safety classifier graph", 1, 2)
    description = describe_classifier(graph, source)
    external = check_graph(graph, source, f"The safety checker '{source.name}'")
    if progress is not None:
        progress("Copying the safety classifier", 2, 2)
    copy_graph(graph, external, building, GRAPH_FILE)
    description.save(building)
