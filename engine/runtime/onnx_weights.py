"""Read named initializers out of an ONNX graph file without the ``onnx`` package.

The generation path must not import onnx (see pyproject's import contracts), and onnxruntime
has no API that hands back a graph's weights. The file format is plain protobuf, and the few
fields needed here are stable parts of the ONNX spec: ``ModelProto.graph`` (7),
``GraphProto.initializer`` (5) and, in ``TensorProto``, ``dims`` (1), ``data_type`` (2),
``name`` (8), ``raw_data`` (9), ``external_data`` (13). The file is memory-mapped and only the
asked-for tensors are copied out, so a 3.4 GB UNet is never read whole.
"""

from __future__ import annotations

import mmap
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.errors import ModelError

# ONNX TensorProto.DataType values the engine merges LoRAs into.
_DTYPES = {1: np.dtype("<f4"), 10: np.dtype("<f2"), 11: np.dtype("<f8")}
_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5


@dataclass(frozen=True)
class StoredTensor:
    """Where an initializer's values lie: in the graph file or in an external data file."""

    dims: tuple[int, ...]
    data_type: int
    raw: tuple[int, int] | None  # (start, end) of raw_data in the graph file
    external: dict[str, str]


def read_initializers(graph: Path, names: Collection[str]
                      ) -> tuple[dict[str, np.ndarray], frozenset[str]]:
    """The initializers ``names`` of the ONNX file ``graph`` as float arrays (copies), and
    which of them are stored outside the graph file (external data); ModelError in one
    sentence when one is missing or not a float tensor."""
    graph = Path(graph)
    wanted = set(names)
    with graph.open("rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
        try:
            found = find_tensors(data, wanted)
        except (IndexError, ValueError):
            raise ModelError(f"The model file {graph} is damaged.") from None
        missing = wanted - set(found)
        if missing:
            raise ModelError(f"The model file {graph} has no weight named "
                             f"'{sorted(missing)[0]}'.")
        values = {name: _values(tensor, data, graph, name) for name, tensor in found.items()}
    external = frozenset(name for name, tensor in found.items() if tensor.raw is None)
    return values, external


def same_initializers(first: Path, second: Path, names: Collection[str]) -> bool:
    """True when both ONNX files hold every initializer ``names`` with equal shapes and
    values, ``first`` as external data; one pair in memory at a time. False, never an
    error, when one is missing or unreadable."""
    wanted = set(names)
    try:
        with _Graph(first) as one, _Graph(second) as other:
            found, others = one.tensors(wanted), other.tensors(wanted)
            if set(found) != wanted or set(others) != wanted:
                return False
            if any(found[name].raw is not None for name in wanted):
                return False
            return all(np.array_equal(one.values(found[name], name),
                                      other.values(others[name], name)) for name in wanted)
    except (ModelError, OSError, IndexError, ValueError):
        return False


class _Graph:
    """An ONNX file, memory-mapped while open."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def __enter__(self) -> _Graph:
        self._file = self.path.open("rb")
        self._data = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        return self

    def __exit__(self, *exc: object) -> None:
        self._data.close()
        self._file.close()

    def tensors(self, wanted: set[str]) -> dict[str, StoredTensor]:
        return find_tensors(self._data, wanted)

    def values(self, tensor: StoredTensor, name: str) -> np.ndarray:
        return _values(tensor, self._data, self.path, name)


def find_tensors(data: mmap.mmap, wanted: set[str]) -> dict[str, StoredTensor]:
    """The initializers ``wanted`` found in the ONNX file ``data``, by name."""
    found: dict[str, StoredTensor] = {}
    for field, _wire, start, end in fields(data, 0, len(data)):
        if field != 7:  # ModelProto.graph
            continue
        for inner, _wire2, tensor_start, tensor_end in fields(data, start, end):
            if inner != 5:  # GraphProto.initializer
                continue
            name, tensor = _tensor(data, tensor_start, tensor_end)
            if name in wanted:
                found[name] = tensor
    return found


def _tensor(data: mmap.mmap, start: int, end: int) -> tuple[str, StoredTensor]:
    name, dims, data_type, raw, external = "", [], 0, None, {}
    for field, wire, value_start, value_end in fields(data, start, end):
        if field == 1:
            dims.extend(_ints(data, wire, value_start, value_end))
        elif field == 2:
            data_type = read_varint(data, value_start)[0]
        elif field == 8:
            name = bytes(data[value_start:value_end]).decode("utf-8")
        elif field == 9:
            raw = (value_start, value_end)
        elif field == 13:
            entry = {key: bytes(data[s:e]).decode("utf-8")
                     for key, _w, s, e in fields(data, value_start, value_end)}
            external[entry.get(1, "")] = entry.get(2, "")
    return name, StoredTensor(tuple(dims), data_type, raw, external)


def _values(tensor: StoredTensor, data: mmap.mmap, graph: Path, name: str) -> np.ndarray:
    dtype = _DTYPES.get(tensor.data_type)
    if dtype is None:
        raise ModelError(f"The weight '{name}' of {graph} is not a float tensor.")
    count = int(np.prod(tensor.dims, dtype=np.int64))
    if tensor.raw is not None:
        start, end = tensor.raw
        values = np.frombuffer(data, dtype=dtype, count=count, offset=start)
        if end - start != count * dtype.itemsize:
            raise ModelError(f"The weight '{name}' of {graph} is damaged.")
        return values.reshape(tensor.dims).copy()
    location = tensor.external.get("location")
    if not location:
        raise ModelError(f"The weight '{name}' of {graph} is stored in a way Easel cannot "
                         f"read.")
    path = (graph.parent / location).resolve()
    if not path.is_relative_to(graph.parent.resolve()):
        raise ModelError(f"The weight '{name}' of {graph} points outside the model folder.")
    offset = int(tensor.external.get("offset", "0"))
    values = np.fromfile(path, dtype=dtype, count=count, offset=offset)
    if values.size != count:
        raise ModelError(f"The weight '{name}' of {graph} is damaged.")
    return values.reshape(tensor.dims)


# --- protobuf wire format ---------------------------------------------------------------------

def read_varint(data: mmap.mmap | bytes, position: int) -> tuple[int, int]:
    """The varint at ``position`` and the position after it."""
    result, shift = 0, 0
    while True:
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, position
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def fields(data: mmap.mmap | bytes, start: int, end: int
           ) -> Iterator[tuple[int, int, int, int]]:
    """(field number, wire type, value start, value end) of each field in ``data[start:end]``;
    for varints the value starts at the varint itself."""
    position = start
    while position < end:
        key, position = read_varint(data, position)
        field, wire = key >> 3, key & 7
        if wire == _VARINT:
            _value, after = read_varint(data, position)
        elif wire == _FIXED64:
            after = position + 8
        elif wire == _BYTES:
            length, position = read_varint(data, position)
            after = position + length
        elif wire == _FIXED32:
            after = position + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if after > end:
            raise ValueError("field runs past its message")
        yield field, wire, position, after
        position = after


def _ints(data: mmap.mmap, wire: int, start: int, end: int) -> list[int]:
    if wire == _VARINT:
        return [read_varint(data, start)[0]]
    values, position = [], start  # packed
    while position < end:
        value, position = read_varint(data, position)
        values.append(value)
    return values
