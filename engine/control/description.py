"""What the engine needs to know about an installed ControlNet, read without torch or onnx.

An installed ControlNet folder holds ``model.onnx`` (+ its weights file), the diffusers
``config.json`` when the source had one, and ``easel.json`` marked ``"kind": "controlnet"``:
the family it fits, the control it was trained for (None when its source did not say) and
the number of down-block residuals its graph gives (12 for SD 1.x/2.x, 9 for SDXL; tiny test
models have fewer). The graph's tensor names are OnnxStack's, checked here from the protobuf
itself (``read_graph_signature``), so the importer and the engine agree on one list.
"""

from __future__ import annotations

import json
import mmap
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from engine.errors import ModelError
from engine.runtime.onnx_weights import fields, read_varint

DESCRIPTION_FILE = "easel.json"  # one per model folder, as every kind's
GRAPH_FILE = "model.onnx"
CONTROLNET_KIND = "controlnet"
DESCRIPTION_FORMAT = 1
FAMILIES = ("sd1", "sd2", "sdxl")
# The graph's names (OnnxStack's): what every ControlNet takes, and SDXL's size conditioning.
CONTROLNET_INPUTS = ("sample", "timestep", "encoder_hidden_states", "controlnet_cond",
                     "conditioning_scale")
SDXL_INPUTS = ("text_embeds", "time_ids")
MID_RESIDUAL = "mid_block_additional_residual"
_DOWN_RESIDUAL = re.compile(r"down_block_(\d+)_additional_residual")
Described = TypeVar("Described")

# Controls by the words their makers put in names ("control_v11p_sd15_canny",
# "controlnet-openpose-sdxl-1.0", "control_sd15_hed"): word -> control.
CONTROL_WORDS = {
    "canny": "canny", "depth": "depth", "openpose": "openpose", "pose": "openpose",
    "dwpose": "openpose", "scribble": "scribble", "lineart": "lineart",
    "softedge": "softedge", "hed": "softedge", "pidi": "softedge", "pidinet": "softedge",
    "mlsd": "mlsd", "normal": "normal", "normalbae": "normal", "seg": "seg",
    "segmentation": "seg", "tile": "tile", "inpaint": "inpaint", "inpainting": "inpaint",
    "ip2p": "ip2p", "shuffle": "shuffle", "qrcode": "qrcode", "qr": "qrcode",
}
CONTROLS = tuple(sorted({*CONTROL_WORDS.values(), "lineart_anime"}))


def down_residual(index: int) -> str:
    return f"down_block_{index}_additional_residual"


@dataclass(frozen=True)
class ControlNetDescription:
    family: str  # "sd1", "sd2" or "sdxl": the models it fits
    control: str | None  # "canny", "depth", ... (CONTROLS); None when the source did not say
    residuals: int  # down-block residuals the graph gives, before the mid-block one
    source: str = ""  # the file or folder it was imported from
    licence: str | None = None

    def as_json(self) -> dict:
        return {"kind": CONTROLNET_KIND, "format": DESCRIPTION_FORMAT, "family": self.family,
                "control": self.control, "residuals": self.residuals, "source": self.source,
                "licence": self.licence}

    def save(self, folder: Path) -> None:
        text = json.dumps(self.as_json(), indent=2) + "\n"
        (Path(folder) / DESCRIPTION_FILE).write_text(text, encoding="utf-8")


def read_controlnet_description(folder: Path) -> ControlNetDescription:
    """The description of the ControlNet installed in ``folder``; ModelError in one sentence
    when it or its graph is missing or damaged."""
    return read_installed_graph(folder, "ControlNet", _from_json)


def read_installed_graph(folder: Path, what: str,
                         parse: Callable[[object, str], Described]) -> Described:
    """What ``parse`` (easel.json's data, the folder's name) makes of the description of the
    one-graph model (a ControlNet, an annotator) installed in ``folder``; ModelError naming
    it as ``what`` when the description cannot be read or the graph is gone."""
    folder = Path(folder)
    try:
        data = json.loads((folder / DESCRIPTION_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"'{folder.name}' is not an installed {what} (it has no "
                         f"{DESCRIPTION_FILE}).") from None
    except (OSError, ValueError):
        raise ModelError(f"The description of {what} '{folder.name}' cannot be "
                         f"read.") from None
    description = parse(data, folder.name)
    if not (folder / GRAPH_FILE).is_file():
        raise ModelError(f"The {what} '{folder.name}' has lost its {GRAPH_FILE}; import "
                         f"it again.")
    return description


def _from_json(data: object, name: str) -> ControlNetDescription:
    damaged = ModelError(f"The description of ControlNet '{name}' is damaged.")
    if not isinstance(data, dict) or data.get("kind") != CONTROLNET_KIND:
        raise damaged
    family, control, residuals = data.get("family"), data.get("control"), data.get("residuals")
    licence = data.get("licence")
    if (family not in FAMILIES or not (control is None or isinstance(control, str))
            or not isinstance(residuals, int) or isinstance(residuals, bool) or residuals < 1
            or not (licence is None or isinstance(licence, str))):
        raise damaged
    if not isinstance(data.get("format"), int) or data["format"] > DESCRIPTION_FORMAT:
        raise ModelError(f"ControlNet '{name}' was installed by a newer Easel; update Easel or "
                         f"import it again.")
    return ControlNetDescription(family, control, residuals, str(data.get("source", "")),
                                 licence)


def control_in_names(*names: str | None) -> str | None:
    """The control the first of ``names`` that names one says ("control_v11p_sd15_canny" ->
    "canny"), else None; whole words only, so "sd15" or "v11p" never match."""
    for name in names:
        words = [word for word in re.split(r"[^a-z0-9]+", (name or "").lower()) if word]
        if "lineartanime" in words or ("lineart" in words and "anime" in words):
            return "lineart_anime"
        found = next((CONTROL_WORDS[word] for word in words if word in CONTROL_WORDS), None)
        if found is not None:
            return found
    return None


# --- the graph's inputs and outputs, from the protobuf ----------------------------------------

Dim = int | str | None  # a fixed size, a named dynamic axis, or unknown


@dataclass(frozen=True)
class GraphSignature:
    """The names and shapes of an ONNX graph's inputs and outputs."""

    inputs: dict[str, tuple[Dim, ...]]
    outputs: dict[str, tuple[Dim, ...]]

    @property
    def residuals(self) -> int:
        """How many down-block residuals it gives, numbered from 0 without a gap."""
        numbers = {int(match.group(1)) for name in self.outputs
                   if (match := _DOWN_RESIDUAL.fullmatch(name))}
        count = 0
        while count in numbers:
            count += 1
        return count

    def looks_like_controlnet(self) -> bool:
        """Takes a control picture or gives the mid-block residual: a ControlNet, complete
        or not (``missing_names`` says what a complete one lacks)."""
        return "controlnet_cond" in self.inputs or MID_RESIDUAL in self.outputs

    def missing_names(self) -> list[str]:
        """The names a ControlNet graph must have that this one lacks."""
        inputs = [*CONTROLNET_INPUTS, *(SDXL_INPUTS if self.takes_sizes else ())]
        missing = [name for name in inputs if name not in self.inputs]
        if self.residuals == 0:
            missing.append(down_residual(0))
        if MID_RESIDUAL not in self.outputs:
            missing.append(MID_RESIDUAL)
        return missing

    @property
    def takes_sizes(self) -> bool:
        return any(name in self.inputs for name in SDXL_INPUTS)

    @property
    def text_width(self) -> int | None:
        """The last dimension of ``encoder_hidden_states`` when the graph fixes it."""
        shape = self.inputs.get("encoder_hidden_states", ())
        return shape[-1] if shape and isinstance(shape[-1], int) else None


def read_graph_signature(graph: Path) -> GraphSignature:
    """The inputs and outputs of the ONNX file ``graph`` (weights are skipped, not read);
    ModelError when it is not an ONNX file."""
    graph = Path(graph)
    try:
        with graph.open("rb") as file, \
                mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return _signature(data)
    except (OSError, IndexError, ValueError, UnicodeDecodeError):
        raise ModelError(f"'{graph.name}' is not an ONNX graph Easel can read.") from None


def _signature(data: mmap.mmap) -> GraphSignature:
    inputs: dict[str, tuple[Dim, ...]] = {}
    outputs: dict[str, tuple[Dim, ...]] = {}
    initializers: set[str] = set()
    for field, _wire, start, end in fields(data, 0, len(data)):
        if field != 7:  # ModelProto.graph
            continue
        for inner, _wire2, value_start, value_end in fields(data, start, end):
            if inner in (11, 12):  # GraphProto.input, GraphProto.output: ValueInfoProto
                name, shape = _value_info(data, value_start, value_end)
                (inputs if inner == 11 else outputs)[name] = shape
            elif inner == 5:  # GraphProto.initializer: old exporters list weights as inputs
                initializers.add(_initializer_name(data, value_start, value_end))
    if not outputs:
        raise ValueError("no graph")
    inputs = {name: shape for name, shape in inputs.items() if name not in initializers}
    return GraphSignature(inputs, outputs)


def _value_info(data: mmap.mmap, start: int, end: int) -> tuple[str, tuple[Dim, ...]]:
    name, dims = "", []
    for field, _wire, value_start, value_end in fields(data, start, end):
        if field == 1:
            name = bytes(data[value_start:value_end]).decode("utf-8")
        elif field == 2:  # TypeProto -> tensor_type (1) -> shape (2) -> dim (1)
            dims = [_dim(data, s, e) for s, e in _nested(data, value_start, value_end,
                                                         (1, 2, 1))]
    return name, tuple(dims)


def _nested(data: mmap.mmap, start: int, end: int, path: tuple[int, ...]
            ) -> list[tuple[int, int]]:
    """The (start, end) of every field reached by following the field numbers ``path``."""
    spans = [(start, end)]
    for number in path:
        spans = [(s, e) for outer_start, outer_end in spans
                 for field, _wire, s, e in fields(data, outer_start, outer_end)
                 if field == number]
    return spans


def _dim(data: mmap.mmap, start: int, end: int) -> Dim:
    for field, _wire, value_start, value_end in fields(data, start, end):
        if field == 1:  # dim_value
            return read_varint(data, value_start)[0]
        if field == 2:  # dim_param
            return bytes(data[value_start:value_end]).decode("utf-8")
    return None


def _initializer_name(data: mmap.mmap, start: int, end: int) -> str:
    for field, _wire, value_start, value_end in fields(data, start, end):
        if field == 8:  # TensorProto.name
            return bytes(data[value_start:value_end]).decode("utf-8")
    return ""
