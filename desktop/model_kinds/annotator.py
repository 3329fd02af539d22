"""The annotator kind: ONNX networks that make control pictures (depth maps, line art, soft
edges) from a user's picture, for the ControlNets that read them.

Recognised by content as an upscaler is (a lone ``.onnx`` file, or a folder with
``model.onnx`` at its top) but told apart from one by the graph's outputs
(engine.control.annotators.looks_like_annotator): an annotator gives one-channel maps, an
upscaler a bigger three-channel picture. The network (Depth Anything, MiDaS, informative
drawings' line art, HED, PiDiNet), and so the control it makes, comes from the graph's
outputs and the file's name. A pose annotator is DWPose's two graphs in one folder (any
names, no ``model.onnx``: told apart by their outputs), installed as ``detector.onnx`` and
``pose.onnx`` (engine.control.pose); one of them alone is refused, as it cannot make a pose
picture. Checked like every imported graph (operators, external weights, no code beside it),
copied as it is, and described in ``easel.json`` (engine.control.annotators).
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
)
from engine.background.description import looks_like_segmenter
from engine.control.annotators import (
    ANNOTATOR_CONTROLS,
    DESCRIPTION_FILE,
    GRAPH_FILE,
    POSE,
    describe_graph,
    looks_like_annotator,
    read_annotator_description,
)
from engine.control.description import read_graph_signature
from engine.control.pictures import control_type_named
from engine.control.pose import describe_pose_graphs, is_detector, is_estimator
from engine.errors import BadRequest, ModelError
from engine.export.formats import ONNX_GRAPHS, ONNX_UPSCALER

if TYPE_CHECKING:
    from desktop.model_store import ModelStore

name = "annotator"
noun = "an annotator"
fallback_formats: tuple[str, ...] = ()


def recognises(source: Path, format: str) -> bool:
    if format == ONNX_GRAPHS:
        return _holds_dwpose(Path(source))
    graph = graph_in(Path(source), GRAPH_FILE) if format == ONNX_UPSCALER else None
    if graph is None:
        return False
    try:
        signature = read_graph_signature(graph)
    except ModelError:
        return False  # not an ONNX graph: another kind's, or nothing
    # A segmenter also turns one picture into one-channel maps: its size, output count or
    # name says it is one (engine.background), and then it is that kind's.
    names = (Path(source).name, graph.name)
    return looks_like_annotator(signature) and not looks_like_segmenter(signature, names)


def needs_exporter(source: Path, format: str) -> bool:
    return True  # onnx checks the graph's operators and weights files, as an upscaler's


def import_into(source: Path, building: Path, progress: Progress | None,
                should_stop: ShouldStop | None, *, control: str | None = None,
                **_other_kinds_options: Any) -> None:
    """Check the annotator graph ``source`` and copy it into ``building``; ``control``
    ("depth", "lineart", "softedge") says what it makes when neither the graph nor its file
    name can (the import command has no option for it yet)."""
    source = Path(source)
    if source.is_dir() and not (source / GRAPH_FILE).is_file():
        _import_pose(source, building, progress)
        return
    graph = graph_in(source, GRAPH_FILE)
    if graph is None:
        raise ModelError(f"'{source.name}' holds no {GRAPH_FILE}.")
    names = (source.name,) if source.is_file() else (source.name, graph.name)
    if progress is not None:
        progress("Checking the annotator graph", 1, 2)
    description = describe_graph(graph, names, control)
    external = _check_graph(graph, source)
    if progress is not None:
        progress(f"Copying the {description.network} annotator", 2, 2)
    copy_graph(graph, external, building, GRAPH_FILE)
    description.save(building)


def is_installed_folder(folder: Path) -> bool:
    return kind_in_description(Path(folder) / DESCRIPTION_FILE) == name


def describe(folder: Path) -> InstalledModel:
    folder = Path(folder)
    description = read_annotator_description(folder)
    makes = description.makes if description.control == POSE else description.settings.makes
    use = f"makes {makes} for {description.control} ControlNets"
    return InstalledModel(folder.name, f"{description.control} annotator", "",
                          folder_size(folder), folder, kind=name, use=use,
                          licence=description.licence)


def use_with(model: str) -> str:
    return 'easel generate --control "TYPE:PICTURE" "PROMPT" (TYPE: the control it makes)'


def find_annotator(store: ModelStore, control_type: str) -> Path | None:
    """The installed annotator that makes ``control_type`` pictures (None for the types Easel
    makes itself); one sentence naming the model to import when there is none."""
    control = control_type_named(control_type)
    if control.annotator is None:
        return None
    if control.name not in ANNOTATOR_CONTROLS:
        raise BadRequest(f"Easel cannot make {control.name} pictures yet (a pose annotator "
                         f"model is not supported); give a ready-made {control.name} picture "
                         f"with the 'picture' type.")
    fitting = [model.path for model in store.installed(name) if _makes(model.path, control.name)]
    if not fitting and control.name == POSE:
        raise BadRequest("Making a pose control picture needs a pose annotator model: import "
                         "the folder holding DWPose's yolox_l.onnx and dw-ll_ucoco_384.onnx "
                         "(easel models import FOLDER --kind annotator), or give a "
                         "ready-made pose picture with the 'picture' type.")
    if not fitting:
        raise BadRequest(f"Making a {control.name} control picture needs a {control.annotator} "
                         f"annotator model: import one (easel models import FILE --kind "
                         f"annotator), or give a ready-made {control.name} picture with the "
                         f"'picture' type.")
    return fitting[0]  # several: the first by name, as the store lists them


def _makes(folder: Path, control: str) -> bool:
    try:
        return read_annotator_description(folder).control == control
    except ModelError:
        return False  # a damaged one is not used; `easel models check` says why


def _check_graph(graph: Path, source: Path) -> tuple[str, ...]:
    return check_graph(graph, source, f"The annotator '{source.name}'")


# --- DWPose: two graphs in one folder ------------------------------------------------------------

def _holds_dwpose(folder: Path) -> bool:
    """Whether one of the folder's graphs is DWPose's detector or estimator."""
    for graph in _top_graphs(folder):
        try:
            signature = read_graph_signature(graph)
        except ModelError:
            continue  # not a graph Easel can read: the import says so if it comes to it
        if is_detector(signature) or is_estimator(signature):
            return True
    return False


def _top_graphs(folder: Path) -> list[Path]:
    return sorted(path for path in folder.iterdir()
                  if path.suffix.lower() == ".onnx" and path.is_file())


def _import_pose(source: Path, building: Path, progress: Progress | None) -> None:
    """Check DWPose's two graphs and copy them in under their installed names, with any
    weights files beside them."""
    if progress is not None:
        progress("Checking DWPose's graphs", 1, 2)
    graphs = _top_graphs(source)
    description = describe_pose_graphs(graphs)
    by_source = dict(zip(description.sources, (description.detector, description.estimator),
                         strict=True))
    copies = {graph: _check_graph(graph, source) for graph in graphs}
    if progress is not None:
        progress("Copying the DWPose annotator", 2, 2)
    for graph, external in copies.items():
        copy_graph(graph, external, building, by_source[graph.name].file)
    description.save(building)
