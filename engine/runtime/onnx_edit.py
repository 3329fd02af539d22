"""Edit an ONNX graph file's protobuf without the ``onnx`` package, for the UNet variants the
engine makes on the user's machine (engine.control.unet_variant, engine.image_prompt.unet_edit).

The installed app has neither torch nor onnx (see pyproject's import contracts), so a graph is
read as engine.runtime.onnx_weights reads it and written back as pieces: the file's own bytes
(views of the memory-mapped file) wherever nothing changes, so every untouched node and
initializer stays byte for byte (LoRAs find their weights by initializer name), and new
protobuf messages where the edit adds or changes something. Field numbers are onnx.proto's.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import logging
import mmap
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.errors import ModelError
from engine.runtime.onnx_weights import fields, read_varint

log = logging.getLogger(__name__)

GRAPH_FILE = "model.onnx"
# ModelProto.graph; GraphProto.node, .initializer, .input; NodeProto.input, .output, .name,
# .op_type, .attribute; AttributeProto.name, .i; TensorProto.external_data.
MODEL_GRAPH = 7
GRAPH_NODE, GRAPH_INITIALIZER, GRAPH_INPUT = 1, 5, 11
NODE_INPUT, NODE_OUTPUT, NODE_NAME, NODE_OP = 1, 2, 3, 4
_NODE_ATTRIBUTE = 5
_ATTRIBUTE_NAME, _ATTRIBUTE_INT = 1, 3
_TENSOR_EXTERNAL = 13
FLOAT, FLOAT16, INT64 = 1, 10, 7  # TensorProto.DataType


# --- reading ------------------------------------------------------------------------------------

@dataclass
class Node:
    start: int  # the NodeProto's bytes in the file
    end: int
    inputs: list[str]
    outputs: list[str]
    op_type: str
    axis: int | None


@dataclass
class Graph:
    start: int  # the GraphProto's bytes in the file
    end: int
    nodes: list[Node] = dataclasses.field(default_factory=list)
    input_names: list[str] = dataclasses.field(default_factory=list)
    input_types: dict[str, int] = dataclasses.field(default_factory=dict)  # TensorProto.DataType
    initializers: set[str] = dataclasses.field(default_factory=set)
    external_locations: set[str] = dataclasses.field(default_factory=set)


@contextlib.contextmanager
def mapped_graph(path: Path) -> Iterator[tuple[mmap.mmap, Graph]]:
    """The ONNX file ``path`` memory-mapped, and its graph read; pieces taken from the map
    must be dropped before the block ends. ModelError in one sentence when it is damaged."""
    path = Path(path)
    with path.open("rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
        try:
            graph = read_graph(data)
        except (IndexError, ValueError):
            raise ModelError(f"The model file {path} is damaged.") from None
        yield data, graph


def graph_input_names(graph: Path) -> list[str]:
    """The input names of an ONNX graph file."""
    with mapped_graph(graph) as (_data, read):
        return read.input_names


def read_graph(data: mmap.mmap) -> Graph:
    """The nodes, inputs and initializer names of the graph in ``data`` (an ONNX file)."""
    graph = next((Graph(start, end) for number, _wire, start, end
                  in fields(data, 0, len(data)) if number == MODEL_GRAPH), None)
    if graph is None:
        raise ValueError("no graph")
    for number, _wire, start, end in fields(data, graph.start, graph.end):
        if number == GRAPH_NODE:
            graph.nodes.append(_read_node(data, start, end))
        elif number == GRAPH_INPUT:
            name, elem_type = _read_value_info(data, start, end)
            graph.input_names.append(name)
            graph.input_types[name] = elem_type
        elif number == GRAPH_INITIALIZER:
            _read_initializer(data, start, end, graph)
    return graph


def _read_node(data: mmap.mmap, start: int, end: int) -> Node:
    node = Node(start, end, [], [], "", None)
    for number, _wire, value_start, value_end in fields(data, start, end):
        if number == NODE_INPUT:
            node.inputs.append(_text(data, value_start, value_end))
        elif number == NODE_OUTPUT:
            node.outputs.append(_text(data, value_start, value_end))
        elif number == NODE_OP:
            node.op_type = _text(data, value_start, value_end)
        elif number == _NODE_ATTRIBUTE:
            name, value = _int_attribute(data, value_start, value_end)
            if name == "axis":
                node.axis = value
    return node


def _int_attribute(data: mmap.mmap, start: int, end: int) -> tuple[str, int | None]:
    name, value = "", None
    for number, _wire, value_start, value_end in fields(data, start, end):
        if number == _ATTRIBUTE_NAME:
            name = _text(data, value_start, value_end)
        elif number == _ATTRIBUTE_INT:
            raw = read_varint(data, value_start)[0]
            value = raw - (1 << 64) if raw >= 1 << 63 else raw  # int64, two's complement
    return name, value


def _read_value_info(data: mmap.mmap, start: int, end: int) -> tuple[str, int]:
    """A graph input's name and tensor element type (ValueInfoProto.type.tensor_type)."""
    name, elem_type = "", FLOAT
    for number, _wire, value_start, value_end in fields(data, start, end):
        if number == 1:
            name = _text(data, value_start, value_end)
        elif number == 2:
            for kind, _w, tensor_start, tensor_end in fields(data, value_start, value_end):
                if kind != 1:
                    continue
                for part, _w2, part_start, _part_end in fields(data, tensor_start, tensor_end):
                    if part == 1:
                        elem_type = read_varint(data, part_start)[0]
    return name, elem_type


def _read_initializer(data: mmap.mmap, start: int, end: int, graph: Graph) -> None:
    for number, _wire, value_start, value_end in fields(data, start, end):
        if number == 8:  # TensorProto.name
            graph.initializers.add(_text(data, value_start, value_end))
        elif number == _TENSOR_EXTERNAL:
            entry = {key: _text(data, s, e) for key, _w, s, e in
                     fields(data, value_start, value_end)}
            if entry.get(1) == "location":
                graph.external_locations.add(entry.get(2, ""))


def _text(data: mmap.mmap, start: int, end: int) -> str:
    return bytes(data[start:end]).decode("utf-8")


# --- rebuilding ---------------------------------------------------------------------------------

Piece = bytes | memoryview


def spans(data: mmap.mmap, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """(field number, field start, value start, value end) of each field: ``fields`` with
    where the field's key begins, so an unchanged field is copied whole."""
    field_start = start
    for number, _wire, value_start, value_end in fields(data, start, end):
        yield number, field_start, value_start, value_end
        field_start = value_end


def with_graph(data: mmap.mmap, graph_pieces: list[Piece]) -> list[Piece]:
    """The whole file: the model's other fields as they are, the graph field rebuilt."""
    view = memoryview(data)
    length = sum(len(piece) for piece in graph_pieces)
    pieces: list[Piece] = []
    for number, field_start, _start, end in spans(data, 0, len(data)):
        if number == MODEL_GRAPH:
            pieces.append(key(MODEL_GRAPH, 2) + encode_varint(length))
            pieces.extend(graph_pieces)
        else:
            pieces.append(view[field_start:end])
    return pieces


def with_inputs(data: mmap.mmap, node: Node, inputs: list[str]) -> bytes:
    """The NodeProto with other inputs, every other field as it was."""
    out = bytearray()
    position = 0
    for number, field_start, _start, end in spans(data, node.start, node.end):
        if number == NODE_INPUT:
            out += string_field(NODE_INPUT, inputs[position])
            position += 1
        else:
            out += data[field_start:end]
    return bytes(out)


# --- new messages ------------------------------------------------------------------------------

def node_proto(op: str, inputs: list[str], outputs: list[str], *, name: str | None = None,
         perm: list[int] | None = None, axis: int | None = None) -> bytes:
    """A NodeProto, named after its first output unless ``name`` is given."""
    out = b"".join(string_field(NODE_INPUT, value) for value in inputs)
    out += b"".join(string_field(NODE_OUTPUT, value) for value in outputs)
    out += string_field(NODE_NAME, outputs[0] if name is None else name)
    out += string_field(NODE_OP, op)
    if perm is not None:  # AttributeProto: name 1, ints 8, type 20 (INTS = 7)
        ints = b"".join(key(8, 0) + int64(value) for value in perm)
        out += field(_NODE_ATTRIBUTE, string_field(1, "perm") + ints + key(20, 0)
                     + encode_varint(7))
    if axis is not None:  # i 3, type 20 (INT = 2)
        out += field(_NODE_ATTRIBUTE, string_field(1, "axis") + key(3, 0) + int64(axis)
                     + key(20, 0) + encode_varint(2))
    return out


def value_info(name: str, elem_type: int, dims: list[int | str]) -> bytes:
    """A ValueInfoProto of a tensor: each dimension a fixed size or a named dynamic axis."""
    shape = b"".join(field(1, key(1, 0) + encode_varint(size) if isinstance(size, int)
                           else string_field(2, size)) for size in dims)
    tensor = key(1, 0) + encode_varint(elem_type) + field(2, shape)
    return string_field(1, name) + field(2, field(1, tensor))


def raw_tensor(name: str, values: np.ndarray) -> bytes:
    """A TensorProto holding ``values`` (int64, float32 or float16) in the graph file."""
    element = {np.dtype(np.int64): INT64, np.dtype(np.float32): FLOAT,
               np.dtype(np.float16): FLOAT16}[values.dtype]
    return (_dims(values.shape) + key(2, 0) + encode_varint(element)
            + string_field(8, name) + field(9, values.astype(values.dtype.newbyteorder("<"))
                                            .tobytes()))


def external_tensor(name: str, dims: tuple[int, ...], elem_type: int, location: str,
                    offset: int, length: int) -> bytes:
    """A TensorProto whose values lie in the file ``location`` beside the graph."""
    entries = b"".join(field(13, string_field(1, entry) + string_field(2, value))
                       for entry, value in (("location", location), ("offset", str(offset)),
                                            ("length", str(length))))
    return (_dims(dims) + key(2, 0) + encode_varint(elem_type) + string_field(8, name)
            + entries + key(14, 0) + encode_varint(1))  # data_location EXTERNAL


def _dims(dims: tuple[int, ...]) -> bytes:
    return b"".join(key(1, 0) + encode_varint(int(size)) for size in dims)


# --- protobuf wire format -----------------------------------------------------------------------

def key(number: int, wire: int) -> bytes:
    return encode_varint(number << 3 | wire)


def field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (a message, string or bytes)."""
    return key(number, 2) + encode_varint(len(payload)) + payload


def string_field(number: int, text: str) -> bytes:
    return field(number, text.encode("utf-8"))


def int64(value: int) -> bytes:
    return encode_varint(value & (1 << 64) - 1)  # two's complement, as protobuf's int64


def encode_varint(value: int) -> bytes:
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

def write_atomically(path: Path, pieces: list[Piece]) -> None:
    """Write ``pieces`` to ``path`` so that no reader ever sees half a graph."""
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


def link_or_copy(source_folder: Path, location: str, destination: Path) -> None:
    """Put the external data file ``location`` beside the edited graph under the same name:
    hard-linked, not copied (a 3.4 GB file for SD 1.5), or copied where a link is impossible
    (another file system), which the log says."""
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
    log.info("Edited UNet: %s %s into %s", how, source, destination)


def copy_sidecars(source_folder: Path, destination: Path, names: tuple[str, ...]) -> None:
    """Copy the small files ``names`` that hold for the edited graph too, where they exist."""
    for name in names:
        if (source_folder / name).is_file():
            shutil.copyfile(source_folder / name, destination / name)


def made_once(folder: Path, make: Callable[[Path], None]) -> None:
    """Make ``folder`` (holding ``model.onnx``) with ``make`` in a private folder and rename
    it into place: two processes making it at once each build their own, the first rename
    wins and the other's is dropped."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.parent / f".staging-{uuid.uuid4().hex}"
    staging.mkdir()
    try:
        make(staging)
        if folder.is_dir() and not (folder / GRAPH_FILE).is_file():
            shutil.rmtree(folder, ignore_errors=True)  # what a crash left: not a variant
        try:
            staging.rename(folder)
        except OSError:
            if not (folder / GRAPH_FILE).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


_process_folders: dict[str, Path] = {}


def process_folder(prefix: str) -> Path:
    """A temporary folder for the life of the process (where edited graphs go without a data
    folder to cache them in), removed at exit."""
    if prefix not in _process_folders:
        _process_folders[prefix] = Path(tempfile.mkdtemp(prefix=prefix))
        atexit.register(shutil.rmtree, _process_folders[prefix], True)
    return _process_folders[prefix]
