"""The segmenter kind: background removal networks (rembg's U²-Net and IS-Net families,
BiRefNet, BRIA RMBG-1.4 and 2.0) that cut a picture's subject out as a mask.

Recognised by content as an annotator is (a lone ``.onnx`` file, or a folder with
``model.onnx`` at its top): one picture in, one-channel masks out, at a segmenter's fixed size
(seven maps at 320×320 for U²-Net, 1024×1024 for the others) or under a segmenter's file name
(engine.background.description.looks_like_segmenter). The family, which fixes the pre- and
post-processing, comes from the file name, then the graph; the import command has no option
for it, so a graph whose name does not say is refused with one sentence saying what to rename
it. Checked like every imported graph (operators, external weights, no code beside it),
copied as it is, and described in ``easel.json`` (family, input size, normalisation, sigmoid,
licence).
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
from engine.background.description import (
    DESCRIPTION_FILE,
    GRAPH_FILE,
    describe_graph,
    looks_like_segmenter,
    read_segmenter_description,
)
from engine.background.families import FAMILIES
from engine.control.description import read_graph_signature
from engine.errors import ModelError
from engine.export.formats import ONNX_UPSCALER

name = "segmenter"
noun = "a background removal model (a segmenter)"
fallback_formats: tuple[str, ...] = ()


def recognises(source: Path, format: str) -> bool:
    source = Path(source)
    graph = graph_in(source, GRAPH_FILE) if format == ONNX_UPSCALER else None
    if graph is None:
        return False
    try:
        return looks_like_segmenter(read_graph_signature(graph), _names(source, graph))
    except ModelError:
        return False  # not an ONNX graph: another kind's, or nothing


def needs_exporter(source: Path, format: str) -> bool:
    return True  # onnx checks the graph's operators and weights files, as an annotator's


def import_into(source: Path, building: Path, progress: Progress | None,
                should_stop: ShouldStop | None, *, family: str | None = None,
                **_other_kinds_options: Any) -> None:
    """Check the segmenter graph ``source`` and copy it into ``building``; ``family`` (a
    segmenter family: "isnet-general-use", "birefnet-general", "bria-rmbg-1.4", ...) says
    which it is when neither the graph nor its file name can (the store's option; the import
    command's --family takes diffusion families only, so there the file name says)."""
    source = Path(source)
    graph = graph_in(source, GRAPH_FILE)
    if graph is None:
        raise ModelError(f"'{source.name}' holds no {GRAPH_FILE}.")
    chosen = family if family in FAMILIES else None
    if family is not None and chosen is None:
        raise ModelError(f"'{family}' is not a segmenter family; the families are "
                         f"{', '.join(FAMILIES)}.")
    if progress is not None:
        progress("Checking the segmenter graph", 1, 2)
    description = describe_graph(graph, _names(source, graph), chosen)
    external = check_graph(graph, source, f"The segmenter '{source.name}'")
    if progress is not None:
        progress(f"Copying the {description.settings.label} segmenter", 2, 2)
    copy_graph(graph, external, building, GRAPH_FILE)
    description.save(building)


def is_installed_folder(folder: Path) -> bool:
    return kind_in_description(Path(folder) / DESCRIPTION_FILE) == name


def describe(folder: Path) -> InstalledModel:
    folder = Path(folder)
    description = read_segmenter_description(folder)
    return InstalledModel(folder.name, f"{description.settings.label} segmenter", "",
                          folder_size(folder), folder, kind=name,
                          use="cuts a picture's subject off its background",
                          licence=description.licence)


def use_with(model: str) -> str:
    return f"easel cutout --model {model} PICTURE"


def _names(source: Path, graph: Path) -> tuple[str, ...]:
    return (source.name,) if source.is_file() else (source.name, graph.name)


