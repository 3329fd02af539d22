"""The UNet that takes ControlNet residuals, made from an installed model's plain UNet graph.

The installed app has neither torch nor the ``onnx`` package (the generation path must not
import it, see tests/test_layers.py), so the variant is made by editing the graph file's
protobuf directly, as engine.runtime.onnx_weights reads it. The edit is what diffusers'
``UNet2DConditionModel.forward`` does with ``down_block_additional_residuals`` and
``mid_block_additional_residual``: each saved skip tensor gets its residual added where the up
path reads it, and the mid block's output gets the mid residual.

In a traced UNet each saved skip tensor is read by exactly one ``Concat(axis=1)`` in the up
blocks (``torch.cat([hidden_states, res_hidden_states], dim=1)``), the first of them in node
order reading the LAST skip and, as its first input, the mid block's output. So the edit adds
one graph input per skip (``down_block_{i}_additional_residual``) and one for the mid block
(``mid_block_additional_residual``), and one ``Add`` per input; every other node and every
initializer stays as it is, byte for byte (LoRAs find their weights by initializer name).

Inputs and outputs as OnnxStack/Amuse name them, so a ControlNet-ready UNet they ship in a
model's ``controlnet/`` folder is used as it is.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import mmap
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import ModelError
from engine.runtime.onnx_weights import _fields, _varint

log = logging.getLogger(__name__)

MID_RESIDUAL = "mid_block_additional_residual"
REFUSAL = "this model's UNet cannot take ControlNet residuals"
GRAPH_FILE = "model.onnx"
# Small files beside the plain UNet graph that hold for the variant too: the diffusers config
# and the LoRA weights map (initializer names are unchanged).
_SIDECARS = ("config.json", "weights_map.json")
# Skip connections of the real families when the UNet's config cannot be read: SD 1.x/2.x
# (4 blocks) and SDXL (3 blocks).
_KNOWN_SKIP_COUNTS = (12, 9)

# Protobuf field numbers (onnx.proto): ModelProto.graph; GraphProto.node, .initializer,
# .input; NodeProto.input, .output, .name, .op_type, .attribute; AttributeProto.name, .i;
# TensorProto.external_data; StringStringEntryProto.key, .value; ValueInfoProto.name, .type.
_MODEL_GRAPH = 7
_GRAPH_NODE, _GRAPH_INITIALIZER, _GRAPH_INPUT = 1, 5, 11
_NODE_INPUT, _NODE_OUTPUT, _NODE_NAME, _NODE_OP = 1, 2, 3, 4
_NODE_ATTRIBUTE = 5
_ATTRIBUTE_NAME, _ATTRIBUTE_INT = 1, 3
_TENSOR_EXTERNAL = 13
_FLOAT = 1  # TensorProto.FLOAT


def down_residual(index: int) -> str:
    """The name of the residual input of skip connection ``index`` (0 = conv_in's)."""
    return f"down_block_{index}_additional_residual"


def residual_names(count: int) -> list[str]:
    """The residual inputs of a UNet with ``count`` skip connections, in diffusers' order."""
    return [down_residual(index) for index in range(count)] + [MID_RESIDUAL]


# --- where the variant is --------------------------------------------------------------------

_process_folder: Path | None = None


def control_unet_path(model_folder: Path, model_hash: str, cache: Path | None) -> Path:
    """The UNet graph of this model that takes ControlNet residuals.

    The model's own ``controlnet/model.onnx`` when it has one that takes them (OnnxStack and
    Amuse ship one there); otherwise ``cache/control-unet/<model_hash>/model.onnx``, made
    from ``unet/model.onnx`` on first call. The model folder is never written: its manifest
    hash is the model's identity. With no ``cache`` (no data folder) a temporary folder
    serves for the life of the process. ModelError in one sentence when it cannot be made.
    """
    model_folder = Path(model_folder)
    shipped = model_folder / "controlnet" / GRAPH_FILE
    if shipped.is_file() and _takes_residuals(shipped):
        return shipped
    root = Path(cache) / "control-unet" if cache is not None else _temporary_root()
    folder = root / model_hash
    if not (folder / GRAPH_FILE).is_file():
        _make_once(model_folder / "unet" / GRAPH_FILE, folder)
    return folder / GRAPH_FILE


def _takes_residuals(graph: Path) -> bool:
    names = set(graph_input_names(graph))
    return MID_RESIDUAL in names and down_residual(0) in names


def _temporary_root() -> Path:
    global _process_folder
    if _process_folder is None:
        _process_folder = Path(tempfile.mkdtemp(prefix="easel-control-unet-"))
        atexit.register(shutil.rmtree, _process_folder, True)
    return _process_folder


def _make_once(unet_graph: Path, folder: Path) -> None:
    """Make the variant in a private folder and rename it into place: two processes making
    it at once each build their own, the first rename wins and the other's is dropped."""
    if not unet_graph.is_file():
        raise ModelError(f"The model has no UNet graph at {unet_graph}.")
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.parent / f".staging-{uuid.uuid4().hex}"
    staging.mkdir()
    try:
        make_control_unet(unet_graph, staging)
        if folder.is_dir() and not (folder / GRAPH_FILE).is_file():
            shutil.rmtree(folder, ignore_errors=True)  # what a crash left: not a variant
        try:
            staging.rename(folder)
        except OSError:
            if not (folder / GRAPH_FILE).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# --- the edit ----------------------------------------------------------------------------------

def make_control_unet(unet_graph: Path, destination: Path) -> None:
    """Write ``destination/model.onnx``: the UNet graph ``unet_graph`` with residual inputs.

    Its external weights (``model.onnx.data``) are hard-linked into ``destination``, not
    copied (a 3.4 GB file for SD 1.5), or copied where a link is impossible (another file
    system), which the log says. ModelError in one sentence when the graph has not the skip
    connections of an SD 1.x, 2.x or XL UNet.
    """
    unet_graph, destination = Path(unet_graph), Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    with unet_graph.open("rb") as file, mmap.mmap(file.fileno(), 0,
                                                  access=mmap.ACCESS_READ) as data:
        try:
            graph = _read_graph(data)
        except (IndexError, ValueError):
            raise ModelError(f"The model file {unet_graph} is damaged.") from None
        plan = _plan(graph, _unet_config(unet_graph.parent))
        for location in graph.external_locations:
            _link_or_copy(unet_graph.parent, location, destination)
        pieces = _edited_model(data, graph, plan)
        _write_atomically(destination / GRAPH_FILE, pieces)
        del pieces  # they are views of the mapped file, which closes next
    for name in _SIDECARS:
        if (unet_graph.parent / name).is_file():
            shutil.copyfile(unet_graph.parent / name, destination / name)


@dataclass
class _Node:
    start: int  # the NodeProto's bytes in the file
    end: int
    inputs: list[str]
    outputs: list[str]
    op_type: str
    axis: int | None


@dataclass
class _Graph:
    start: int  # the GraphProto's bytes in the file
    end: int
    nodes: list[_Node] = field(default_factory=list)
    input_names: list[str] = field(default_factory=list)
    sample_type: int = _FLOAT
    initializers: set[str] = field(default_factory=set)
    external_locations: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class _Plan:
    skip_concats: list[int]  # node indices, in node order (the first reads the last skip)
    mid_output: str
    mid_producer: int  # node index
    channels: list[int | None]  # of each skip, then the mid block's


def graph_input_names(graph: Path) -> list[str]:
    """The input names of an ONNX graph file (without the onnx package)."""
    with Path(graph).open("rb") as file, mmap.mmap(file.fileno(), 0,
                                                   access=mmap.ACCESS_READ) as data:
        try:
            return _read_graph(data).input_names
        except (IndexError, ValueError):
            raise ModelError(f"The model file {graph} is damaged.") from None


def _read_graph(data: mmap.mmap) -> _Graph:
    graph = next((_Graph(start, end) for number, _wire, start, end
                  in _fields(data, 0, len(data)) if number == _MODEL_GRAPH), None)
    if graph is None:
        raise ValueError("no graph")
    for number, _wire, start, end in _fields(data, graph.start, graph.end):
        if number == _GRAPH_NODE:
            graph.nodes.append(_read_node(data, start, end))
        elif number == _GRAPH_INPUT:
            name, elem_type = _read_value_info(data, start, end)
            graph.input_names.append(name)
            if name == "sample":
                graph.sample_type = elem_type
        elif number == _GRAPH_INITIALIZER:
            _read_initializer(data, start, end, graph)
    return graph


def _read_node(data: mmap.mmap, start: int, end: int) -> _Node:
    node = _Node(start, end, [], [], "", None)
    for number, _wire, value_start, value_end in _fields(data, start, end):
        if number == _NODE_INPUT:
            node.inputs.append(_text(data, value_start, value_end))
        elif number == _NODE_OUTPUT:
            node.outputs.append(_text(data, value_start, value_end))
        elif number == _NODE_OP:
            node.op_type = _text(data, value_start, value_end)
        elif number == _NODE_ATTRIBUTE:
            name, value = _int_attribute(data, value_start, value_end)
            if name == "axis":
                node.axis = value
    return node


def _int_attribute(data: mmap.mmap, start: int, end: int) -> tuple[str, int | None]:
    name, value = "", None
    for number, _wire, value_start, value_end in _fields(data, start, end):
        if number == _ATTRIBUTE_NAME:
            name = _text(data, value_start, value_end)
        elif number == _ATTRIBUTE_INT:
            raw = _varint(data, value_start)[0]
            value = raw - (1 << 64) if raw >= 1 << 63 else raw  # int64, two's complement
    return name, value


def _read_value_info(data: mmap.mmap, start: int, end: int) -> tuple[str, int]:
    """A graph input's name and tensor element type (ValueInfoProto.type.tensor_type)."""
    name, elem_type = "", _FLOAT
    for number, _wire, value_start, value_end in _fields(data, start, end):
        if number == 1:
            name = _text(data, value_start, value_end)
        elif number == 2:
            for kind, _w, tensor_start, tensor_end in _fields(data, value_start, value_end):
                if kind != 1:
                    continue
                for part, _w2, part_start, _part_end in _fields(data, tensor_start,
                                                                  tensor_end):
                    if part == 1:
                        elem_type = _varint(data, part_start)[0]
    return name, elem_type


def _read_initializer(data: mmap.mmap, start: int, end: int, graph: _Graph) -> None:
    for number, _wire, value_start, value_end in _fields(data, start, end):
        if number == 8:  # TensorProto.name
            graph.initializers.add(_text(data, value_start, value_end))
        elif number == _TENSOR_EXTERNAL:
            entry = {key: _text(data, s, e) for key, _w, s, e in
                     _fields(data, value_start, value_end)}
            if entry.get(1) == "location":
                graph.external_locations.add(entry.get(2, ""))


def _text(data: mmap.mmap, start: int, end: int) -> str:
    return bytes(data[start:end]).decode("utf-8")


# --- which Concats read the skip connections ---------------------------------------------------

def _plan(graph: _Graph, config: dict | None) -> _Plan:
    concats = _skip_concats(graph)
    expected = _expected_skip_count(config)
    if len(concats) not in expected or not _forms_up_path(graph, concats):
        raise ModelError(f"{REFUSAL[0].upper()}{REFUSAL[1:]}.")
    mid_output = graph.nodes[concats[0]].inputs[0]
    producer = next((index for index, node in enumerate(graph.nodes)
                     if mid_output in node.outputs), None)
    if producer is None:
        raise ModelError(f"{REFUSAL[0].upper()}{REFUSAL[1:]}.")
    return _Plan(concats, mid_output, producer, _skip_channels(config, len(concats)))


def _skip_concats(graph: _Graph) -> list[int]:
    """The Concats that join the up path and a saved skip tensor.

    ``Concat`` on the channel axis (1, or -3 of a 4-D tensor) of two computed tensors, whose
    second (the skip) is read by some other node as well: the down path flows on from every
    saved skip. That leaves out the timestep embedding's Concats (axis -1, and their sine and
    cosine are read once), SDXL's (it joins a graph input) and shape Concats (axis 0).
    """
    readers: dict[str, int] = {}
    for node in graph.nodes:
        for name in node.inputs:
            readers[name] = readers.get(name, 0) + 1
    computed = {name for node in graph.nodes for name in node.outputs}
    found = []
    for index, node in enumerate(graph.nodes):
        if node.op_type != "Concat" or node.axis not in (1, -3) or len(node.inputs) != 2:
            continue
        if all(name in computed for name in node.inputs) and readers[node.inputs[1]] > 1:
            found.append(index)
    return found


def _forms_up_path(graph: _Graph, concats: list[int]) -> bool:
    """True when each skip Concat reads what the one before it gave (through the up blocks)
    and every skip was computed before the up path began: the order the edit relies on."""
    first = concats[0]
    made_before = {name for node in graph.nodes[:first] for name in node.outputs}
    skips = [graph.nodes[index].inputs[1] for index in concats]
    if len(set(skips)) != len(skips) or not set(skips) <= made_before:
        return False
    downstream = set(graph.nodes[first].outputs)
    position = 1
    for index, node in enumerate(graph.nodes[first + 1:], start=first + 1):
        if position < len(concats) and index == concats[position]:
            if node.inputs[0] not in downstream:
                return False
            position += 1
        if downstream & set(node.inputs):
            downstream.update(node.outputs)
    return True


def _unet_config(folder: Path) -> dict | None:
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None


def _blocks(config: dict | None) -> tuple[list[int], list[int]] | None:
    """The UNet's (block channels, layers per block), or None when the config lacks them."""
    if config is None:
        return None
    channels, layers = config.get("block_out_channels"), config.get("layers_per_block")
    if not isinstance(channels, list) or not all(isinstance(c, int) for c in channels):
        return None
    if isinstance(layers, int):
        layers = [layers] * len(channels)
    if not isinstance(layers, list) or len(layers) != len(channels):
        return None
    return channels, layers


def _expected_skip_count(config: dict | None) -> tuple[int, ...]:
    blocks = _blocks(config)
    if blocks is None:
        return _KNOWN_SKIP_COUNTS
    channels, layers = blocks
    return (1 + sum(layers) + len(channels) - 1,)  # conv_in, each layer, each downsampler


def _skip_channels(config: dict | None, count: int) -> list[int | None]:
    """The channels of each skip tensor in diffusers' order, then the mid block's (None for
    each when the config cannot say)."""
    blocks = _blocks(config)
    if blocks is None:
        return [None] * (count + 1)
    channels, layers = blocks
    found = [channels[0]]
    for block, (width, depth) in enumerate(zip(channels, layers, strict=True)):
        found += [width] * depth + ([width] if block < len(channels) - 1 else [])
    return found + [channels[-1]]


# --- writing the edited graph -------------------------------------------------------------------

def _edited_model(data: mmap.mmap, graph: _Graph, plan: _Plan) -> list[bytes | memoryview]:
    """The edited file as pieces: the file's own bytes where nothing changes."""
    view = memoryview(data)
    count = len(plan.skip_concats)
    skip_of = {node: count - 1 - order for order, node in enumerate(plan.skip_concats)}
    mid_added = f"{MID_RESIDUAL}_added"
    pieces: list[bytes | memoryview] = []
    by_start = {node.start: index for index, node in enumerate(graph.nodes)}
    for number, field_start, start, end in _spans(data, graph.start, graph.end):
        piece = view[field_start:end]
        index = by_start.get(start) if number == _GRAPH_NODE else None
        if index is None:
            pieces.append(piece)
            continue
        node = graph.nodes[index]
        replace = {plan.mid_output: mid_added} if index > plan.mid_producer else {}
        if index in skip_of:
            skip = skip_of[index]
            added = f"{down_residual(skip)}_added"
            pieces.append(_field(_GRAPH_NODE, _add_node(node.inputs[1], down_residual(skip),
                                                        added)))
            inputs = [replace.get(node.inputs[0], node.inputs[0]), added]
            pieces.append(_field(_GRAPH_NODE, _with_inputs(data, node, inputs)))
        elif replace and plan.mid_output in node.inputs:
            inputs = [replace.get(name, name) for name in node.inputs]
            pieces.append(_field(_GRAPH_NODE, _with_inputs(data, node, inputs)))
        else:
            pieces.append(piece)
        if index == plan.mid_producer:
            pieces.append(_field(_GRAPH_NODE, _add_node(plan.mid_output, MID_RESIDUAL,
                                                        mid_added)))
    for skip, name in enumerate(residual_names(count)):
        pieces.append(_field(_GRAPH_INPUT, _residual_input(name, plan.channels[skip],
                                                           graph.sample_type, skip)))
    return _with_graph(data, pieces)


def _spans(data: mmap.mmap, start: int, end: int
           ) -> Iterator[tuple[int, int, int, int]]:
    """(field number, field start, value start, value end) of each field: ``_fields`` with
    where the field's key begins, so an unchanged field is copied whole."""
    field_start = start
    for number, _wire, value_start, value_end in _fields(data, start, end):
        yield number, field_start, value_start, value_end
        field_start = value_end


def _with_graph(data: mmap.mmap, graph_pieces: list) -> list:
    """The whole file: the model's other fields as they are, the graph field rebuilt."""
    view = memoryview(data)
    length = sum(len(piece) for piece in graph_pieces)
    pieces: list[bytes | memoryview] = []
    for number, field_start, _start, end in _spans(data, 0, len(data)):
        if number == _MODEL_GRAPH:
            pieces.append(_key(_MODEL_GRAPH, 2) + _encode_varint(length))
            pieces.extend(graph_pieces)
        else:
            pieces.append(view[field_start:end])
    return pieces


def _with_inputs(data: mmap.mmap, node: _Node, inputs: list[str]) -> bytes:
    """The NodeProto with other inputs, every other field as it was."""
    out = bytearray()
    position = 0
    for number, field_start, _start, end in _spans(data, node.start, node.end):
        if number == _NODE_INPUT:
            out += _string_field(_NODE_INPUT, inputs[position])
            position += 1
        else:
            out += data[field_start:end]
    return bytes(out)


def _add_node(first: str, second: str, output: str) -> bytes:
    return (_string_field(_NODE_INPUT, first) + _string_field(_NODE_INPUT, second)
            + _string_field(_NODE_OUTPUT, output) + _string_field(_NODE_NAME, f"/{output}")
            + _string_field(_NODE_OP, "Add"))


def _residual_input(name: str, channels: int | None, elem_type: int, index: int) -> bytes:
    """A ValueInfoProto: ``name``, a 4-D tensor (batch, channels, height, width)."""
    side = "mid" if name == MID_RESIDUAL else str(index)
    dims = [_dimension("batch"), _dimension(channels if channels else f"channels_{side}"),
            _dimension(f"height_{side}"), _dimension(f"width_{side}")]
    shape = b"".join(_field(1, dim) for dim in dims)
    tensor = _key(1, 0) + _encode_varint(elem_type) + _field(2, shape)
    return _string_field(1, name) + _field(2, _field(1, tensor))


def _dimension(value: int | str) -> bytes:
    if isinstance(value, int):
        return _key(1, 0) + _encode_varint(value)
    return _string_field(2, value)


def _key(number: int, wire: int) -> bytes:
    return _encode_varint(number << 3 | wire)


def _field(number: int, payload: bytes) -> bytes:
    return _key(number, 2) + _encode_varint(len(payload)) + payload


def _string_field(number: int, text: str) -> bytes:
    return _field(number, text.encode("utf-8"))


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


# --- files ------------------------------------------------------------------------------------

def _write_atomically(path: Path, pieces: list) -> None:
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with temporary.open("wb") as file:
            for piece in pieces:
                file.write(piece)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()


def _link_or_copy(source_folder: Path, location: str, destination: Path) -> None:
    """Put the external data file ``location`` beside the variant under the same name."""
    source = (source_folder / location).resolve()
    if not source.is_relative_to(source_folder.resolve()) or not source.is_file():
        raise ModelError(f"The UNet's weights file {location} is missing or outside its "
                         f"model folder.")
    target = destination / location
    if target.exists() and os.path.samefile(source, target):
        return
    temporary = destination / f".{location}.{uuid.uuid4().hex}.tmp"
    try:
        os.link(source, temporary)
        how = "linked"
    except OSError:
        shutil.copyfile(source, temporary)  # another file system: no link possible
        how = "copied"
    os.replace(temporary, target)
    log.info("ControlNet UNet: %s %s into %s", how, source, destination)

