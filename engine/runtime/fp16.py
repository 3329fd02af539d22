"""Half-precision copies of a model's float32 ONNX graphs, for the GPU, without ``onnx``.

On a GPU the UNet and the text encoders run about twice as fast in float16, in half the
memory, as diffusers runs them with ``torch_dtype=float16``. ``convert_to_fp16`` writes such a
copy of an exported float32 graph; ``half_graph`` makes it once per model and keeps it in the
optimised-graph cache. The copy keeps the graph's interface: its float inputs and outputs stay
float32 (a Cast at each), so the pipelines feed and read float32 exactly as before. Inside:

- every float initializer and Constant becomes float16 under its own name (LoRAs and
  embeddings replace weights by name), finite values clamped to float16's range (an attention
  mask's -3.4e38 becomes -65504, not minus infinity);
- the operators that need float32, or lose too much in float16, stay float32 with Casts
  around them: those onnxruntime's own converter keeps (its transformers/float16.py:
  Range, CumSum, TopK, ...), the inputs some operators take only as float32 (Resize's roi
  and scales, GroupNorm's gamma and beta), and the sinusoidal embeddings of the timestep and
  of SDXL's size conditions: Sin and Cos with every element-wise step that leads to them.
  A timestep of 999 times a frequency is off by up to 0.5 in float16, which scrambles the
  sines; diffusers computes them in float32 too and casts after;
- a float tensor that both precisions need is cast once, not per consumer; a small weight or
  Constant needed in both is kept twice instead, exactly;
- the inner value_info is dropped: onnxruntime infers the types again.

The graph is read as engine.runtime.onnx_edit reads one (protobuf by hand, field numbers from
onnx.proto; the installed app has no onnx package): untouched nodes are copied byte for byte,
changed ones rebuilt. Weights are converted a slice at a time and written to the copy's
external data file as they go, so even a 10 GB SDXL UNet is never held in memory, once or
twice. Graphs with control flow (If, Loop) or local functions are refused in one sentence;
the session then runs in float32 and says why.
"""

from __future__ import annotations

import dataclasses
import logging
import mmap
import os
import struct
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from engine.errors import ModelError
from engine.runtime import graph_cache
from engine.runtime.onnx_edit import (
    MODEL_GRAPH,
    encode_varint,
    external_tensor,
    field,
    int64,
    key,
    process_folder,
    raw_tensor,
    spans,
    string_field,
    write_atomically,
)
from engine.runtime.onnx_weights import fields, read_varint

log = logging.getLogger(__name__)

# Stamped on every cached copy: a change to what the converter writes makes old copies stale.
VERSION = "fp16-1"
GRAPH_FILE = "model.onnx"
DATA_FILE = "model.onnx.data"

# TensorProto.DataType
FLOAT, UINT8, INT8, UINT16, INT16, INT32, INT64, STRING, BOOL = 1, 2, 3, 4, 5, 6, 7, 8, 9
FLOAT16, DOUBLE, UINT32, UINT64, BFLOAT16 = 10, 11, 12, 13, 16
_ITEM_SIZES = {FLOAT: 4, UINT8: 1, INT8: 1, UINT16: 2, INT16: 2, INT32: 4, INT64: 8, BOOL: 1,
               FLOAT16: 2, DOUBLE: 8, UINT32: 4, UINT64: 8, BFLOAT16: 2}
HALF, SINGLE = "fp16", "fp32"

_FP16_MAX = float(np.finfo(np.float16).max)
_CHUNK = 1 << 22  # float32 values converted at a time: 16 MB in, 8 MB out
_INLINE_BYTES = 1024  # smaller tensors stay in the graph file, as onnx.save does
_SMALL_COPY = 4096  # a weight both precisions need is kept twice up to this many values
_ALIGNMENT, _PAGE_ALIGNMENT, _PAGE_ALIGNED_FROM = 64, 65536, 1 << 20

# Operators kept in float32, after onnxruntime's DEFAULT_OP_BLOCK_LIST (its ai.onnx ones: the
# rest are ai.onnx.ml's), with the quantisation operators whose scales are float32.
FP32_OPERATORS = frozenset({
    "Range", "CumSum", "TopK", "NonMaxSuppression", "RoiAlign", "Upsample", "Min", "Max",
    "RandomUniformLike", "DequantizeLinear", "QuantizeLinear", "DynamicQuantizeLinear",
})
# Sinusoidal embeddings: these and every step in _EMBEDDING_STEPS that leads to them.
_SINUSOIDS = frozenset({"Sin", "Cos"})
_EMBEDDING_STEPS = frozenset({
    "Mul", "Div", "Add", "Sub", "Neg", "Exp", "Log", "Pow", "Sqrt", "Reciprocal", "Cast",
    "CastLike", "Unsqueeze", "Squeeze", "Reshape", "Expand", "Flatten", "Identity", "Concat",
    "Slice", "Gather", "Transpose", "Tile", "Split", "Where", "Range",
})
# Inputs that stay float32 on an operator that otherwise computes in float16 (opset 11+;
# com.microsoft's GroupNorm takes float32 gamma and beta on every provider but DirectML).
_FP32_INPUTS = {("", "Resize"): (1, 2), ("com.microsoft", "GroupNorm"): (1, 2),
                ("com.microsoft", "SkipGroupNorm"): (1, 2)}
# Inputs that take either precision as they are.
_ANY_PRECISION = {("", "Shape"): (0,), ("", "Size"): (0,), ("", "Cast"): (0,),
                  ("", "CastLike"): (0,)}
# Operators whose float output type is an attribute, float32 when absent.
_DTYPE_ATTRIBUTE = frozenset({"RandomNormal", "RandomUniform", "RandomNormalLike",
                              "EyeLike", "Bernoulli"})
_FIXED_TYPES = {
    "Shape": INT64, "Size": INT64, "NonZero": INT64, "ArgMax": INT64, "ArgMin": INT64,
    "Equal": BOOL, "Less": BOOL, "LessOrEqual": BOOL, "Greater": BOOL, "GreaterOrEqual": BOOL,
    "Not": BOOL, "And": BOOL, "Or": BOOL, "Xor": BOOL, "IsNaN": BOOL, "IsInf": BOOL,
    "MatMulInteger": INT32, "ConvInteger": INT32,
}

# ModelProto fields
_MODEL_OPSET, _MODEL_FUNCTIONS = 8, 25
# GraphProto fields
_G_NODE, _G_INITIALIZER, _G_SPARSE, _G_INPUT, _G_OUTPUT, _G_VALUE_INFO = 1, 5, 15, 11, 12, 13
# NodeProto fields
_N_INPUT, _N_OUTPUT, _N_NAME, _N_OP, _N_ATTRIBUTE, _N_DOMAIN = 1, 2, 3, 4, 5, 7
# AttributeProto fields and types
_A_NAME, _A_F, _A_I, _A_T, _A_G, _A_FLOATS, _A_GRAPHS, _A_TYPE = 1, 2, 3, 5, 6, 7, 11, 20
_A_INT, _A_TENSOR = 2, 4
# TensorProto fields
_T_DIMS, _T_TYPE, _T_FLOATS, _T_NAME, _T_RAW, _T_EXTERNAL, _T_LOCATION = 1, 2, 4, 8, 9, 13, 14


@dataclass(frozen=True)
class Conversion:
    """What ``convert_to_fp16`` did."""

    half_weights: int  # float initializers and Constants now float16
    kept_fp32: tuple[str, ...]  # float initializers left float32 (only float32 operators use them)
    fp32_nodes: int  # operators left computing in float32
    casts: int  # Cast nodes added
    seconds: float


# --- reading ------------------------------------------------------------------------------------

@dataclass
class _Attribute:
    start: int  # the whole NodeProto.attribute field, key included
    end: int
    name: str
    kind: int
    i: int | None = None
    tensor: tuple[int, int] | None = None  # the TensorProto of ``t``
    f: float | None = None
    floats: list[float] | None = None
    subgraph: bool = False


@dataclass
class _Node:
    start: int  # the whole GraphProto.node field, key included
    body: int  # where the NodeProto itself begins
    end: int
    inputs: list[str]
    outputs: list[str]
    op: str = ""
    domain: str = ""
    attributes: dict[str, _Attribute] = dataclasses.field(default_factory=dict)

    @property
    def kind(self) -> tuple[str, str]:
        return ("" if self.domain == "ai.onnx" else self.domain, self.op)


@dataclass
class _Tensor:
    start: int  # the whole GraphProto.initializer field, key included
    end: int
    name: str = ""
    dims: tuple[int, ...] = ()
    data_type: int = FLOAT
    raw: tuple[int, int] | None = None
    floats: list[tuple[int, int, int]] = dataclasses.field(default_factory=list)  # wire, span
    external: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def count(self) -> int:
        return int(np.prod(self.dims, dtype=np.int64))


@dataclass
class _Value:
    start: int
    end: int
    name: str
    elem_type: int | None


@dataclass
class _Graph:
    nodes: list[_Node] = dataclasses.field(default_factory=list)
    initializers: list[_Tensor] = dataclasses.field(default_factory=list)
    inputs: list[_Value] = dataclasses.field(default_factory=list)
    outputs: list[_Value] = dataclasses.field(default_factory=list)
    value_types: dict[str, int] = dataclasses.field(default_factory=dict)
    other_fields: list[tuple[int, int]] = dataclasses.field(default_factory=list)


def _text(data: mmap.mmap, start: int, end: int) -> str:
    return bytes(data[start:end]).decode("utf-8")


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _read_model(data: mmap.mmap, source: Path) -> tuple[_Graph, int]:
    """The graph and the default-domain opset of the ONNX file in ``data``."""
    graph, opset = None, 0
    for number, _wire, start, end in fields(data, 0, len(data)):
        if number == MODEL_GRAPH:
            graph = _read_graph(data, start, end, source)
        elif number == _MODEL_OPSET:
            domain, version = "", 0
            for inner, _w, value_start, value_end in fields(data, start, end):
                if inner == 1:
                    domain = _text(data, value_start, value_end)
                elif inner == 2:
                    version = read_varint(data, value_start)[0]
            if domain in ("", "ai.onnx"):
                opset = version
        elif number == _MODEL_FUNCTIONS:
            raise _Unsupported("it defines its own functions")
    if graph is None:
        raise ValueError("no graph")
    return graph, opset


def _read_graph(data: mmap.mmap, start: int, end: int, source: Path) -> _Graph:
    graph = _Graph()
    for number, field_start, value_start, value_end in spans(data, start, end):
        if number == _G_NODE:
            graph.nodes.append(_read_node(data, field_start, value_start, value_end))
        elif number == _G_INITIALIZER:
            graph.initializers.append(_read_tensor(data, field_start, value_start, value_end))
        elif number in (_G_INPUT, _G_OUTPUT, _G_VALUE_INFO):
            value = _read_value(data, field_start, value_start, value_end)
            if number == _G_INPUT:
                graph.inputs.append(value)
            elif number == _G_OUTPUT:
                graph.outputs.append(value)
            elif value.elem_type is not None:
                graph.value_types[value.name] = value.elem_type
        elif number == _G_SPARSE:
            raise _Unsupported("it has sparse weights")
        else:  # name, doc_string, quantization annotations, metadata: kept as they are
            graph.other_fields.append((field_start, value_end))
    return graph


def _read_node(data: mmap.mmap, field_start: int, start: int, end: int) -> _Node:
    node = _Node(field_start, start, end, [], [])
    for number, attribute_start, value_start, value_end in spans(data, start, end):
        if number == _N_INPUT:
            node.inputs.append(_text(data, value_start, value_end))
        elif number == _N_OUTPUT:
            node.outputs.append(_text(data, value_start, value_end))
        elif number == _N_OP:
            node.op = _text(data, value_start, value_end)
        elif number == _N_DOMAIN:
            node.domain = _text(data, value_start, value_end)
        elif number == _N_ATTRIBUTE:
            attribute = _read_attribute(data, attribute_start, value_start, value_end)
            node.attributes[attribute.name] = attribute
    return node


def _read_attribute(data: mmap.mmap, field_start: int, start: int, end: int) -> _Attribute:
    attribute = _Attribute(field_start, end, "", 0)
    for number, wire, value_start, value_end in fields(data, start, end):
        if number == _A_NAME:
            attribute.name = _text(data, value_start, value_end)
        elif number == _A_TYPE:
            attribute.kind = read_varint(data, value_start)[0]
        elif number == _A_I:
            attribute.i = _signed(read_varint(data, value_start)[0])
        elif number == _A_F:
            attribute.f = struct.unpack("<f", data[value_start:value_end])[0]
        elif number == _A_T:
            attribute.tensor = (value_start, value_end)
        elif number == _A_FLOATS:
            values = attribute.floats or []
            if wire == 2:  # packed
                values.extend(np.frombuffer(data[value_start:value_end], "<f4").tolist())
            else:
                values.append(struct.unpack("<f", data[value_start:value_end])[0])
            attribute.floats = values
        elif number in (_A_G, _A_GRAPHS):
            attribute.subgraph = True
    return attribute


def _read_tensor(data: mmap.mmap, field_start: int, start: int, end: int) -> _Tensor:
    tensor = _Tensor(field_start, end)
    dims: list[int] = []
    for number, wire, value_start, value_end in fields(data, start, end):
        if number == _T_DIMS:
            if wire == 0:
                dims.append(_signed(read_varint(data, value_start)[0]))
            else:  # packed
                position = value_start
                while position < value_end:
                    value, position = read_varint(data, position)
                    dims.append(_signed(value))
        elif number == _T_TYPE:
            tensor.data_type = read_varint(data, value_start)[0]
        elif number == _T_NAME:
            tensor.name = _text(data, value_start, value_end)
        elif number == _T_RAW:
            tensor.raw = (value_start, value_end)
        elif number == _T_FLOATS:
            tensor.floats.append((wire, value_start, value_end))
        elif number == _T_EXTERNAL:
            entry = {part: _text(data, s, e) for part, _w, s, e
                     in fields(data, value_start, value_end)}
            tensor.external[entry.get(1, "")] = entry.get(2, "")
    tensor.dims = tuple(dims)
    return tensor


def _read_value(data: mmap.mmap, field_start: int, start: int, end: int) -> _Value:
    """A ValueInfoProto's name and tensor element type (None when it is no plain tensor)."""
    value = _Value(field_start, end, "", None)
    for number, _wire, value_start, value_end in fields(data, start, end):
        if number == 1:
            value.name = _text(data, value_start, value_end)
        elif number == 2:  # TypeProto
            for kind, _w, type_start, type_end in fields(data, value_start, value_end):
                if kind != 1:  # tensor_type
                    continue
                for part, _w2, part_start, _part_end in fields(data, type_start, type_end):
                    if part == 1:
                        value.elem_type = read_varint(data, part_start)[0]
    return value


class _Unsupported(Exception):
    """A graph this converter does not handle, and why (a clause)."""


# --- tensor values ------------------------------------------------------------------------------

class _Weights:
    """Where a graph's weights are read from: the graph file and its external data files,
    a slice at a time with plain reads (nothing of a 10 GB UNet stays resident)."""

    def __init__(self, source: Path, data: mmap.mmap) -> None:
        self.source = source
        self.data = data  # the graph file, mapped: for small values
        self._files: dict[Path, BinaryIO] = {}

    def close(self) -> None:
        for file in self._files.values():
            file.close()

    def _open(self, path: Path) -> BinaryIO:
        if path not in self._files:
            self._files[path] = path.open("rb")
        return self._files[path]

    def stored(self, tensor: _Tensor) -> tuple[BinaryIO, int, int]:
        """(open file, offset, size in bytes) of a tensor's stored values."""
        if tensor.raw is not None:
            start, end = tensor.raw
            return self._open(self.source), start, end - start
        location = tensor.external.get("location", "")
        folder = self.source.parent.resolve()
        path = (folder / location).resolve()
        if not location or not path.is_relative_to(folder):
            raise ModelError(f"The weight '{tensor.name}' of {_label(self.source)} points "
                             f"outside its model folder.")
        try:
            file = self._open(path)
        except OSError:
            raise ModelError(f"The weights file {location} of {_label(self.source)} is "
                             f"missing.") from None
        offset = int(tensor.external.get("offset") or 0)
        length = tensor.external.get("length")
        size = int(length) if length else tensor.count * _ITEM_SIZES.get(tensor.data_type, 1)
        return file, offset, size

    def byte_chunks(self, tensor: _Tensor) -> Iterator[bytes]:
        """The stored bytes of a raw or external tensor, a slice at a time."""
        chunk = _CHUNK * 4
        file, offset, size = self.stored(tensor)
        file.seek(offset)
        remaining = size
        while remaining:
            block = file.read(min(chunk, remaining))
            if not block:
                raise ModelError(f"The weight '{tensor.name}' of {_label(self.source)} is "
                                 f"damaged.")
            remaining -= len(block)
            yield block

    def float_chunks(self, tensor: _Tensor) -> Iterator[np.ndarray]:
        """A float32 tensor's values, flat, a slice at a time."""
        total = 0
        for values in self._float_parts(tensor):
            total += values.size
            yield values
        if total != tensor.count:
            raise ModelError(f"The weight '{tensor.name}' of {_label(self.source)} is damaged.")

    def _float_parts(self, tensor: _Tensor) -> Iterator[np.ndarray]:
        if tensor.floats:  # float_data: small tensors some exporters write
            for wire, start, end in tensor.floats:
                count = (end - start) // 4 if wire == 2 else 1  # packed, or one value
                yield np.frombuffer(self.data, "<f4", count, start).astype(np.float32)
        elif tensor.raw is not None or tensor.external:
            for block in self.byte_chunks(tensor):
                yield np.frombuffer(block, "<f4").astype(np.float32)

    def floats(self, tensor: _Tensor) -> np.ndarray:
        """A small float32 tensor's values, whole, in its shape."""
        parts = list(self.float_chunks(tensor))
        values = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        return values.reshape(tensor.dims)


def to_half(values: np.ndarray) -> np.ndarray:
    """float32 values as float16, finite ones clamped to float16's range (never made
    infinite); infinities and NaN stay what they are."""
    with np.errstate(over="ignore"):
        half = values.astype(np.float16)
    overflow = np.isinf(half) & np.isfinite(values)
    if overflow.any():
        half[overflow] = np.copysign(_FP16_MAX, values[overflow])
    return half


class _DataFile:
    """The converted copy's external data file, written front to back."""

    def __init__(self, path: Path) -> None:
        self.file = path.open("wb")
        self.offset = 0

    def start(self, size: int) -> int:
        """Pad to where a tensor of ``size`` bytes begins: page-aligned from 1 MB on, so
        onnxruntime can map large weights in place, as onnx.save aligns them."""
        alignment = _PAGE_ALIGNMENT if size >= _PAGE_ALIGNED_FROM else _ALIGNMENT
        padding = -self.offset % alignment
        if padding:
            self.file.write(b"\0" * padding)
            self.offset += padding
        return self.offset

    def write(self, block: bytes | np.ndarray) -> None:
        view = memoryview(block).cast("B")
        self.file.write(view)
        self.offset += len(view)

    def finish(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()


# --- deciding precisions ------------------------------------------------------------------------

def _element_types(graph: _Graph, data: mmap.mmap) -> dict[str, int]:
    """Every tensor's element type, inferred in node order (ONNX keeps nodes sorted) by the
    few rules the converter needs: an operator's float outputs follow its inputs unless the
    operator says otherwise (Cast, Shape, comparisons, ...)."""
    types: dict[str, int] = {}
    for value in graph.inputs:
        if value.elem_type is not None:
            types[value.name] = value.elem_type
    for tensor in graph.initializers:
        types[tensor.name] = tensor.data_type
    for node in graph.nodes:
        inferred = _output_types(node, types, data)
        for index, name in enumerate(node.outputs):
            if not name:
                continue
            elem_type = inferred[index] if index < len(inferred) else None
            if elem_type is None:
                elem_type = graph.value_types.get(name)
            if elem_type is not None:
                types[name] = elem_type
    return types


def _output_types(node: _Node, types: dict[str, int], data: mmap.mmap) -> list[int | None]:
    def input_type(index: int) -> int | None:
        return types.get(node.inputs[index]) if index < len(node.inputs) else None

    def attribute(name: str, default: int | None) -> int | None:
        found = node.attributes.get(name)
        return found.i if found is not None and found.i is not None else default

    domain, op = node.kind
    first = next((types[name] for name in node.inputs if name in types), None)
    if domain != "":
        return [first] * len(node.outputs)
    if op in _FIXED_TYPES:
        return [_FIXED_TYPES[op]] * len(node.outputs)
    if op == "Cast":
        return [attribute("to", None)]
    if op == "CastLike":
        return [input_type(1)]
    if op in ("Constant", "ConstantOfShape"):
        return [_constant_type(node, data)]
    if op == "Where":
        return [input_type(1)]
    if op in ("RandomNormal", "RandomUniform"):
        return [attribute("dtype", FLOAT)]
    if op in _DTYPE_ATTRIBUTE or op == "RandomUniformLike":
        return [attribute("dtype", input_type(0))]
    if op == "Multinomial":
        return [attribute("dtype", INT32)]
    if op in ("TopK", "MaxPool"):
        return [first, INT64]
    if op == "Dropout":
        return [first, BOOL]
    if op == "Unique":
        return [first, INT64, INT64, INT64]
    if op == "DequantizeLinear":
        return [input_type(1)]
    if op == "QuantizeLinear":
        return [input_type(2) or UINT8]
    if op == "DynamicQuantizeLinear":
        return [UINT8, FLOAT, UINT8]
    return [first] * len(node.outputs)


def _constant_type(node: _Node, data: mmap.mmap) -> int | None:
    for name, attribute in node.attributes.items():
        if attribute.tensor is not None:
            return _tensor_type(data, *attribute.tensor)
        if name in ("value_float", "value_floats"):
            return FLOAT
        if name in ("value_int", "value_ints"):
            return INT64
    return FLOAT if node.op == "ConstantOfShape" else None


def _tensor_type(data: mmap.mmap, start: int, end: int) -> int:
    for number, _wire, value_start, _value_end in fields(data, start, end):
        if number == _T_TYPE:
            return read_varint(data, value_start)[0]
    return 0


def _float32_nodes(graph: _Graph, floats: set[str]) -> set[int]:
    """The nodes that compute in float32: the blocked operators, and each Sin or Cos with the
    element-wise steps that lead to it from the graph's inputs and constants."""
    producers = {name: index for index, node in enumerate(graph.nodes) for name in node.outputs}
    kept: set[int] = set()
    waiting: list[int] = []
    for index, node in enumerate(graph.nodes):
        domain, op = node.kind
        if domain == "" and op in FP32_OPERATORS:
            kept.add(index)
        elif domain == "" and op in _SINUSOIDS:
            waiting.append(index)
    while waiting:
        index = waiting.pop()
        if index in kept:
            continue
        kept.add(index)
        for name in graph.nodes[index].inputs:
            producer = producers.get(name)
            if name in floats and producer is not None:
                domain, op = graph.nodes[producer].kind
                if domain == "" and op in _EMBEDDING_STEPS | _SINUSOIDS:
                    waiting.append(producer)
    return kept


def _needed(node: _Node, index: int, float32: bool, opset: int) -> str | None:
    """The precision input ``index`` of ``node`` must have; None for either."""
    if index in _ANY_PRECISION.get(node.kind, ()):
        return None
    if float32:
        return SINGLE
    fp32_inputs = _FP32_INPUTS.get(node.kind, ())
    if node.kind == ("", "Resize") and opset <= 10:
        fp32_inputs = (1,)  # opset 10's Resize: (X, scales)
    return SINGLE if index in fp32_inputs else HALF


@dataclass
class _Plan:
    """Where each float tensor lives (its home precision and name) and which other-precision
    variants of it the consumers need."""

    graph: _Graph
    floats: set[str]
    float32_nodes: set[int]
    needs: dict[tuple[int, int], str | None]  # (node, input) -> precision, None for either
    taken: set[str]
    home: dict[str, str] = dataclasses.field(default_factory=dict)  # tensor -> precision
    names: dict[str, str] = dataclasses.field(default_factory=dict)  # renamed homes
    variants: dict[tuple[str, str], str] = dataclasses.field(default_factory=dict)
    copies: set[str] = dataclasses.field(default_factory=set)  # float32 variant kept exactly

    def name(self, tensor: str, precision: str | None) -> str:
        """The name of ``tensor`` in ``precision`` (None: where it is made)."""
        if precision is None or precision == self.home.get(tensor, precision):
            return self.names.get(tensor, tensor)
        return self.variants[(tensor, precision)]

    def unique(self, wanted: str) -> str:
        name, number = wanted, 1
        while name in self.taken:
            number += 1
            name = f"{wanted}_{number}"
        self.taken.add(name)
        return name


def _plan(graph: _Graph, types: dict[str, int], opset: int) -> _Plan:
    floats = {name for name, elem_type in types.items() if elem_type == FLOAT}
    float32_nodes = _float32_nodes(graph, floats)
    taken = set(types) | {value.name for value in graph.inputs + graph.outputs}
    taken |= {name for node in graph.nodes for name in node.outputs}
    plan = _Plan(graph, floats, float32_nodes, {}, taken)
    small = {tensor.name for tensor in graph.initializers if tensor.count <= _SMALL_COPY}
    sources = {tensor.name for tensor in graph.initializers}
    constants = {node.outputs[0] for node in graph.nodes
                 if node.kind == ("", "Constant") and node.outputs}
    demand: dict[str, set[str]] = {}
    for index, node in enumerate(graph.nodes):
        for position, name in enumerate(node.inputs):
            if name in floats:
                need = _needed(node, position, index in float32_nodes, opset)
                plan.needs[(index, position)] = need
                if need is not None:
                    demand.setdefault(name, set()).add(need)
    for value in graph.inputs:
        if value.name in floats and value.name not in sources:
            plan.home[value.name] = SINGLE
    for name in (sources | constants) & floats:
        # A weight only float32 operators use stays float32, as onnxruntime's converter does.
        plan.home[name] = SINGLE if demand.get(name) == {SINGLE} else HALF
    for index, node in enumerate(graph.nodes):
        for name in node.outputs:
            if name in floats and name not in plan.home:
                plan.home[name] = SINGLE if index in float32_nodes else HALF
    outputs = {value.name for value in graph.outputs}
    for name in outputs & floats:
        if plan.home.get(name) == HALF:
            if name in sources or name in constants:
                raise _Unsupported(f"its output {name} is a constant")
            plan.names[name] = plan.unique(f"{name}/fp16")
    for name, needs in demand.items():
        for need in sorted(needs - {plan.home[name]}):
            if name in outputs and need == SINGLE:
                plan.variants[(name, need)] = name  # the float32 output itself
                continue
            plan.variants[(name, need)] = plan.unique(f"{name}/{need}")
            if need == SINGLE and name in (small | constants):
                plan.copies.add(name)  # both precisions of a small weight: kept twice
    return plan


# --- writing ------------------------------------------------------------------------------------

def _attribute_int(name: str, value: int) -> bytes:
    return field(_N_ATTRIBUTE, string_field(_A_NAME, name) + key(_A_I, 0) + int64(value)
                 + key(_A_TYPE, 0) + encode_varint(_A_INT))


def _attribute_tensor(name: str, tensor: bytes) -> bytes:
    return field(_N_ATTRIBUTE, string_field(_A_NAME, name) + field(_A_T, tensor)
                 + key(_A_TYPE, 0) + encode_varint(_A_TENSOR))


def _cast(source: str, target: str, to: int) -> bytes:
    node = (string_field(_N_INPUT, source) + string_field(_N_OUTPUT, target)
            + string_field(_N_NAME, target) + string_field(_N_OP, "Cast"))
    return field(_G_NODE, node + _attribute_int("to", to))


def _node(data: mmap.mmap, node: _Node, inputs: list[str], outputs: list[str],
          attributes: dict[str, bytes | None]) -> bytes:
    """The node with other inputs and outputs, and ``attributes`` replaced, added or (None)
    removed; the node's own bytes when nothing changes."""
    if inputs == node.inputs and outputs == node.outputs and not attributes:
        return data[node.start:node.end]
    out = bytearray()
    inputs_left, outputs_left = iter(inputs), iter(outputs)
    done: set[str] = set()
    for number, field_start, start, end in spans(data, node.body, node.end):
        if number == _N_INPUT:
            out += string_field(_N_INPUT, next(inputs_left))
        elif number == _N_OUTPUT:
            out += string_field(_N_OUTPUT, next(outputs_left))
        elif number == _N_ATTRIBUTE and (name := _attribute_name(data, start, end)) in attributes:
            done.add(name)
            out += attributes[name] or b""
        else:
            out += data[field_start:end]
    for name, value in attributes.items():
        if name not in done and value is not None:
            out += value
    return field(_G_NODE, bytes(out))


def _attribute_name(data: mmap.mmap, start: int, end: int) -> str:
    for number, _wire, value_start, value_end in fields(data, start, end):
        if number == _A_NAME:
            return _text(data, value_start, value_end)
    return ""


class _Writer:
    """Writes the converted graph from a plan: its pieces in order, its weights to the data
    file as they come."""

    def __init__(self, data: mmap.mmap, plan: _Plan, weights: _Weights, out: _DataFile) -> None:
        self.data = data
        self.plan = plan
        self.weights = weights
        self.out = out
        self.casts = 0
        self.half_weights = 0
        self.kept: list[str] = []

    def graph(self) -> list[bytes]:
        """The GraphProto's fields: the Casts of the inputs and weights first, the nodes each
        followed by the Casts of what it makes, the weights, the inputs and outputs as they
        were (weights listed as inputs become plain weights), then the other fields. The
        inner value_info is left out."""
        graph = self.plan.graph
        weights = [tensor.name for tensor in graph.initializers]
        inputs = [value for value in graph.inputs if value.name not in set(weights)]
        pieces: list[bytes] = []
        for name in [value.name for value in inputs] + weights:
            pieces += self._casts(name)
        for index, node in enumerate(graph.nodes):
            pieces += self._node(index, node)
        for tensor in graph.initializers:
            pieces += self._initializer(tensor)
        pieces += [self.data[value.start:value.end] for value in inputs + graph.outputs]
        pieces += [self.data[start:end] for start, end in graph.other_fields]
        return pieces

    def _casts(self, name: str) -> list[bytes]:
        """The Casts that make the other precision of float tensor ``name`` where consumers
        need it, and a float32 graph output from its float16 home."""
        plan = self.plan
        if name not in plan.floats:
            return []
        home = plan.name(name, None)
        pieces = []
        if home != name:  # a graph output made in float16
            pieces.append(_cast(home, name, FLOAT))
        for precision, to in ((HALF, FLOAT16), (SINGLE, FLOAT)):
            variant = plan.variants.get((name, precision))
            exact = precision == SINGLE and name in plan.copies
            if variant is not None and variant != name and not exact:
                pieces.append(_cast(home, variant, to))
        self.casts += len(pieces)
        return pieces

    def _node(self, index: int, node: _Node) -> list[bytes]:
        plan = self.plan
        inputs = [plan.name(name, plan.needs.get((index, position)))
                  for position, name in enumerate(node.inputs)]
        outputs = [plan.name(name, None) for name in node.outputs]
        if node.kind == ("", "Constant") and plan.home.get(node.outputs[0]) == HALF:
            self.half_weights += 1
            pieces = [_node(self.data, node, inputs, outputs, self._half_constant(node))]
            if node.outputs[0] in plan.copies:  # the float32 consumers' copy, exact
                exact = plan.variants[(node.outputs[0], SINGLE)]
                pieces.append(_node(self.data, node, node.inputs, [exact], {}))
        else:
            attributes = {} if index in plan.float32_nodes else self._half_attributes(node)
            pieces = [_node(self.data, node, inputs, outputs, attributes)]
        for name in node.outputs:
            pieces += self._casts(name)
        return pieces

    def _half_constant(self, node: _Node) -> dict[str, bytes | None]:
        for name, attribute in node.attributes.items():
            if attribute.tensor is not None:
                return {name: _attribute_tensor(name, self._half_tensor(*attribute.tensor))}
            if name in ("value_float", "value_floats"):
                values = np.array(attribute.f if name == "value_float" else attribute.floats,
                                  np.float32)
                return {name: None, "value": _attribute_tensor("value",
                                                               raw_tensor("", to_half(values)))}
        return {}

    def _half_attributes(self, node: _Node) -> dict[str, bytes | None]:
        """A float16 operator's attributes that name float32 as the type it makes."""
        domain, op = node.kind
        attributes = node.attributes
        if domain != "":
            return {}
        if op == "Cast" and "to" in attributes and attributes["to"].i == FLOAT:
            return {"to": _attribute_int("to", FLOAT16)}
        if op == "ConstantOfShape":
            value = attributes.get("value")
            if value is None or value.tensor is None:  # float32 zeros by default
                return {"value": _attribute_tensor("value", raw_tensor(
                    "", np.zeros(1, np.float16)))}
            if _tensor_type(self.data, *value.tensor) == FLOAT:
                return {"value": _attribute_tensor("value", self._half_tensor(*value.tensor))}
        if op in _DTYPE_ATTRIBUTE:
            dtype = attributes.get("dtype")
            if dtype is not None and dtype.i == FLOAT or (
                    dtype is None and op in ("RandomNormal", "RandomUniform")):
                return {"dtype": _attribute_int("dtype", FLOAT16)}
        return {}

    def _half_tensor(self, start: int, end: int) -> bytes:
        """A float32 TensorProto inside a node (a constant's value) as float16."""
        tensor = _read_tensor(self.data, start, start, end)
        if tensor.data_type != FLOAT:
            return self.data[start:end]
        if tensor.external:
            raise _Unsupported("a constant's value is stored outside the graph")
        return raw_tensor(tensor.name, to_half(self.weights.floats(tensor)))

    def _initializer(self, tensor: _Tensor) -> list[bytes]:
        """The weight in the copy, and its exact float32 copy where one is kept: float16
        where float16 operators use it, written to the data file a slice at a time (inline
        when small); a weight of another type stays as it is, moved to the copy's data
        file when it was stored outside the graph."""
        half = tensor.data_type == FLOAT and self.plan.home.get(tensor.name) == HALF
        pieces = []
        if tensor.name in self.plan.copies:
            exact = self.plan.variants[(tensor.name, SINGLE)]
            pieces.append(field(_G_INITIALIZER, raw_tensor(exact, self.weights.floats(tensor))))
        if tensor.data_type == FLOAT and not half:
            self.kept.append(tensor.name)
        if not half and not tensor.external:
            return [self.data[tensor.start:tensor.end], *pieces]
        if half:
            self.half_weights += 1
            size = tensor.count * 2
            if size < _INLINE_BYTES:
                values = to_half(self.weights.floats(tensor))
                return [field(_G_INITIALIZER, raw_tensor(tensor.name, values)), *pieces]
            chunks: Iterator[bytes | np.ndarray] = (
                to_half(values) for values in self.weights.float_chunks(tensor))
        else:
            size = self.weights.stored(tensor)[2]
            chunks = self.weights.byte_chunks(tensor)
        offset = self.out.start(size)
        for chunk in chunks:
            self.out.write(chunk)
        if self.out.offset - offset != size:
            raise ModelError(f"The weight '{tensor.name}' of {_label(self.weights.source)} "
                             f"is damaged.")
        element = FLOAT16 if half else tensor.data_type
        stored = external_tensor(tensor.name, tensor.dims, element, DATA_FILE, offset, size)
        return [field(_G_INITIALIZER, stored), *pieces]


def _model(data: mmap.mmap, graph_pieces: list[bytes]) -> list[bytes]:
    """The whole file: the model's other fields as they are, the graph rebuilt. Copies, not
    views of the map, so nothing holds the map open after an error."""
    length = sum(len(piece) for piece in graph_pieces)
    pieces = []
    for number, field_start, _start, end in spans(data, 0, len(data)):
        if number == MODEL_GRAPH:
            pieces.append(key(MODEL_GRAPH, 2) + encode_varint(length))
            pieces += graph_pieces
        else:
            pieces.append(data[field_start:end])
    return pieces


# --- the public part ----------------------------------------------------------------------------

def convert_to_fp16(source: Path, destination: Path) -> Conversion:
    """Write the float16 copy of the float32 ONNX graph ``source`` (and its external
    weights) into the folder ``destination``: ``model.onnx`` and ``model.onnx.data``.

    ModelError in one sentence when the graph is damaged or of a kind this converter does not
    handle (control flow, local functions, sparse weights).
    """
    started = time.perf_counter()
    source, destination = Path(source), Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    try:
        with source.open("rb") as file, mmap.mmap(file.fileno(), 0,
                                                   access=mmap.ACCESS_READ) as data:
            graph, opset = _read_model(data, source)
            for node in graph.nodes:
                if any(attribute.subgraph for attribute in node.attributes.values()):
                    raise _Unsupported(f"it uses control flow ({node.op})")
            plan = _plan(graph, _element_types(graph, data), opset)
            weights = _Weights(source, data)
            out = _DataFile(destination / DATA_FILE)
            try:
                writer = _Writer(data, plan, weights, out)
                pieces = _model(data, writer.graph())
                out.finish()
            finally:
                weights.close()
                out.file.close()
        write_atomically(destination / GRAPH_FILE, pieces)
    except _Unsupported as reason:
        raise ModelError(f"The model file {_label(source)} cannot run in fp16: {reason}.") \
            from None
    except (IndexError, ValueError, struct.error):
        raise ModelError(f"The model file {_label(source)} is damaged.") from None
    conversion = Conversion(writer.half_weights, tuple(writer.kept), len(plan.float32_nodes),
                            writer.casts, time.perf_counter() - started)
    log.info("fp16 copy of %s: %d weights in fp16, %d kept in fp32, %d fp32 operators, "
             "%d casts, %.1f s", source, conversion.half_weights, len(conversion.kept_fp32),
             conversion.fp32_nodes, conversion.casts, conversion.seconds)
    return conversion


def _label(source: Path) -> str:
    # "unet/model.onnx" says which part of the model folder; the full path is noise.
    return f"{source.parent.name}/{source.name}" if source.parent.name else source.name


_making = threading.Lock()


def half_entry(model: Path, cache: Path, providers: Sequence[str]) -> graph_cache.CachedGraph:
    """The cache entry that holds the float16 copy of ``model`` made for ``providers``."""
    return graph_cache.converted_graph(cache, Path(model).resolve(), providers, HALF, VERSION)


def half_graph(model: Path, cache: Path | None, providers: Sequence[str]) -> Path:
    """The float16 copy of ``model`` for ``providers`` (short names, best first): a fresh one
    from the cache folder ``cache`` (made from the same model files by this converter), or
    made now, into a private folder renamed into place, so that no reader ever sees half a
    copy. Without a cache folder, or with one that cannot be written, the copy goes to a
    temporary folder kept for this process.

    ModelError when the graph cannot be converted; OSError when no copy can be written.
    """
    model = Path(model).resolve()
    roots = ([Path(cache)] if cache is not None else []) + [process_folder("easel-fp16-")]
    with _making:  # two threads of this process never make the same copy at once
        for root in roots:
            entry = half_entry(model, root, providers)
            if entry.is_fresh():
                return entry.model
            staging = entry.stage()
            if staging is None:
                continue
            try:
                convert_to_fp16(model, staging)
            except BaseException:
                entry.abandon(staging)
                raise
            entry.commit(staging, providers)
            if entry.is_fresh():
                return entry.model
    raise OSError(f"The fp16 copy of {_label(model)} could not be written.")


def fit_overrides(graph: Path, arrays: dict[str, np.ndarray]
                  ) -> tuple[dict[str, np.ndarray], frozenset[str]]:
    """Replacement weights (a LoRA's, embeddings': made from the float32 model) in the type
    each has in the converted ``graph``, and which of them it stores outside its file
    (engine.runtime.sessions hands those over another way)."""
    found: dict[str, _Tensor] = {}
    with graph.open("rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
        for number, _wire, start, end in fields(data, 0, len(data)):
            if number != MODEL_GRAPH:
                continue
            for inner, field_start, value_start, value_end in spans(data, start, end):
                if inner == _G_INITIALIZER:
                    tensor = _read_tensor(data, field_start, value_start, value_end)
                    if tensor.name in arrays:
                        found[tensor.name] = tensor
    fitted = {}
    for name, array in arrays.items():
        tensor = found.get(name)
        if tensor is not None and tensor.data_type == FLOAT16 and array.dtype != np.float16:
            array = to_half(np.asarray(array, np.float32))
        fitted[name] = array
    external = frozenset(name for name, tensor in found.items() if tensor.external)
    return fitted, external
