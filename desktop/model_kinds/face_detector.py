"""The face detector kind: YuNet (OpenCV zoo's ``face_detection_yunet_2023mar.onnx``), which
finds the faces ``easel restore-faces`` restores.

Recognised as an ONNX graph (a lone ``.onnx`` file, or a folder with ``model.onnx`` at its
top) with YuNet's twelve outputs by name (engine.faces.detect.is_yunet); checked like every
imported graph (operators, external weights, no code beside it), copied as it is, and
described in ``easel.json`` marked ``"kind": "face_detector"``. RetinaFace exports are not
recognised yet.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from desktop.model_kinds.kind import (
    InstalledModel,
    Progress,
    ShouldStop,
    check_graph,
    copy_graph,
    folder_size,
    graph_in,
    kind_in_description,
)
from engine.control.description import read_graph_signature
from engine.errors import ModelError
from engine.export.formats import ONNX_UPSCALER
from engine.faces.description import (
    DESCRIPTION_FILE,
    FACE_DETECTOR,
    GRAPH_FILE,
    FaceDetectorDescription,
)
from engine.faces.detect import describe_yunet, is_yunet

name = FACE_DETECTOR
noun = "a face detector"
fallback_formats: tuple[str, ...] = ()


def recognises(source: Path, format: str) -> bool:
    graph = graph_in(Path(source), GRAPH_FILE) if format == ONNX_UPSCALER else None
    if graph is None:
        return False
    try:
        return is_yunet(read_graph_signature(graph))
    except ModelError:
        return False  # not an ONNX graph: another kind's, or nothing


def needs_exporter(source: Path, format: str) -> bool:
    return True  # onnx checks the graph's operators and weights files


def import_into(source: Path, building: Path, progress: Progress | None,
                should_stop: ShouldStop | None, **_other_kinds_options: Any) -> None:
    source = Path(source)
    graph = graph_in(source, GRAPH_FILE)
    if graph is None:
        raise ModelError(f"'{source.name}' holds no {GRAPH_FILE}.")
    signature = read_graph_signature(graph)
    if not is_yunet(signature):
        raise ModelError(f"'{source.name}' is not a YuNet face detector (its outputs are not "
                         f"cls, obj, bbox and kps at strides 8, 16 and 32).")
    if progress is not None:
        progress("Checking the face detector graph", 1, 2)
    external = check_graph(graph, source, f"The face detector '{source.name}'")
    if progress is not None:
        progress("Copying the YuNet face detector", 2, 2)
    copy_graph(graph, external, building, GRAPH_FILE)
    describe_yunet(signature).save(building)


def is_installed_folder(folder: Path) -> bool:
    return kind_in_description(Path(folder) / DESCRIPTION_FILE) == name


def describe(folder: Path) -> InstalledModel:
    description = FaceDetectorDescription.load(folder)
    return InstalledModel(folder.name, description.summary, "", folder_size(folder), folder,
                          kind=name, use="finds faces for easel restore-faces",
                          licence=description.licence)


def use_with(model: str) -> str:
    return f"easel restore-faces PICTURE --detector {model}"
