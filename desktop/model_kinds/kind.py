"""What every kind of installed model answers, and what the store lists for each model.

A kind is a small module (desktop.model_kinds.diffusion, .upscaler, ...) whose module-level
names satisfy ``ModelKind``; the store asks the registry's kinds in turn instead of branching
on each, so adding a kind adds a module and a registry entry, not a branch in the store.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from engine.errors import ModelError
from engine.export.formats import PICKLE, SAFETENSORS, pickled_strings
from engine.export.safetensors_check import check_safetensors

Progress = Callable[[str, int, int], None]
ShouldStop = Callable[[], bool]


@dataclass(frozen=True)
class InstalledModel:
    name: str
    family: str  # the family it fits ("sd1"), or for other kinds a short summary ("4x upscaler")
    prediction_type: str  # diffusion models only; "" for other kinds
    size_bytes: int
    path: Path
    built_in: bool = False
    kind: str = "diffusion"  # the name of its kind in the registry
    use: str = ""  # one line for lists: what the model is for
    licence: str | None = None  # None when the model's description does not say


class ModelKind(Protocol):
    """One kind of installed model: how it is recognised, imported, found and described."""

    name: str  # "diffusion", "upscaler": InstalledModel.kind and the word --kind takes
    noun: str  # the kind in a sentence: "an upscaler", "a model that makes pictures"
    # Source formats (engine.export.formats) this kind takes when no kind recognises a source;
    # its importer then says in one sentence what does not fit.
    fallback_formats: Collection[str]

    def recognises(self, source: Path, format: str) -> bool:
        """True when ``source`` (of detected ``format``) is this kind, told by its content."""
        ...

    def needs_exporter(self, source: Path, format: str) -> bool:
        """True when importing ``source`` needs the export extra (torch, onnx, ...)."""
        ...

    def import_into(self, source: Path, building: Path, progress: Progress | None,
                    should_stop: ShouldStop | None, **options: Any) -> None:
        """Build the model in the empty folder ``building`` (the store checksums and moves
        it); ``options`` are the import's answers, each kind reading those it knows."""
        ...

    def is_installed_folder(self, folder: Path) -> bool:
        """True when ``folder`` holds a model of this kind (a cheap look, not a check)."""
        ...

    def describe(self, folder: Path) -> InstalledModel:
        """The installed model in ``folder``; ModelError when its description is damaged."""
        ...

    def use_with(self, name: str) -> str:
        """The command that uses the installed model ``name``."""
        ...


def folder_size(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def kind_in_description(description: Path) -> str | None:
    """The "kind" an installed folder's description file names; None when there is none or
    it cannot be read (a stray folder, a damaged file: listing must not fail on it)."""
    if not description.is_file():
        return None
    try:
        data = json.loads(description.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data.get("kind") if isinstance(data, dict) else None


def weight_names(source: Path, format: str) -> set[str] | None:
    """What a weights file can be told by: a ``.safetensors`` file's tensor names (none when
    it is damaged: another kind's importer says what is wrong with it) or the strings in a
    pickle, its tensor names among them; None for other formats (folders, graphs)."""
    if format == SAFETENSORS:
        try:
            return set(check_safetensors(Path(source)))
        except ModelError:
            return set()
    if format == PICKLE:
        return pickled_strings(Path(source))
    return None


# --- Kinds imported as one ONNX graph (annotators, segmenters, face detectors) -----------------

def graph_in(source: Path, graph_file: str) -> Path | None:
    """The graph an ONNX source names: the file itself, or ``graph_file`` at the top of a
    folder; None when the folder holds none."""
    if source.is_file():
        return source
    graph = source / graph_file
    return graph if graph.is_file() else None


def check_graph(graph: Path, source: Path, what: str) -> tuple[str, ...]:
    """Operators and external weights, as every imported graph (``what`` names the model in
    the sentence saying what is wrong); the names of the weights files beside ``graph``."""
    # Imported here: onnx comes with the export extra, which listing models does not need.
    from engine.export.onnx_checks import check_source_graph

    _model, external = check_source_graph(graph, source, what, graph.parent)
    return external


def copy_graph(graph: Path, external: Collection[str], building: Path, installed_as: str,
               ) -> None:
    """Copy ``graph`` into ``building`` as ``installed_as``, with its weights files."""
    shutil.copyfile(graph, building / installed_as)
    for file in external:  # plain file names beside the graph, checked by check_graph
        shutil.copyfile(graph.parent / file, building / file)
