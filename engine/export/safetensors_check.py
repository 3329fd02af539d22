"""Checks a .safetensors file's header before anything is allocated from it.

A .safetensors file is an 8-byte little-endian header length, a JSON header naming every
tensor's dtype, shape and byte range, then the raw data. A damaged or hostile header can claim
a header of gigabytes, tensors outside the file, or two tensors sharing bytes; all of that is
refused here, with plain ``json`` and ``struct`` (no torch), before any library maps the file.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

from engine.errors import ModelError

# Real headers are well under 1 MB (SDXL: about 200 kB); anything this big is not a model.
MAX_HEADER_BYTES = 100 * 1024 * 1024
LENGTH_BYTES = 8
# Bytes per element of every dtype the safetensors format names with a whole-byte size.
DTYPE_SIZES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
}


@dataclass(frozen=True)
class TensorInfo:
    """One tensor as the header describes it."""

    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class SafetensorsHeader:
    """A checked header: the tensor table and the free-text metadata (name -> text)."""

    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]


def check_safetensors(path: Path) -> dict[str, TensorInfo]:
    """Return the tensor table of the .safetensors file ``path``, or raise ModelError saying why
    the file cannot be trusted; only the header is read."""
    return check_safetensors_header(path).tensors


def check_safetensors_header(path: Path) -> SafetensorsHeader:
    """``check_safetensors``, keeping the header's metadata as well."""
    path = Path(path)
    try:
        with path.open("rb") as file:
            file_size = path.stat().st_size
            header_size = _header_size(file.read(LENGTH_BYTES), file_size, path.name)
            header_bytes = file.read(header_size)
    except OSError:
        raise ModelError(f"'{path.name}' cannot be read.") from None
    header = _parse_header(header_bytes, path.name)
    data_size = file_size - LENGTH_BYTES - header_size
    tensors, metadata = {}, {}
    ranges = []
    for name, entry in header.items():
        if name == "__metadata__":
            _check_metadata(entry, path.name)
            metadata = entry
            continue
        tensors[name], byte_range = _check_entry(name, entry, data_size, path.name)
        ranges.append((*byte_range, name))
    _check_ranges_cover_data(ranges, data_size, path.name)
    return SafetensorsHeader(tensors=tensors, metadata=metadata)


def _damaged(name: str, reason: str) -> ModelError:
    return ModelError(f"'{name}' is not a valid .safetensors file: {reason}.")


def _header_size(prefix: bytes, file_size: int, name: str) -> int:
    if len(prefix) < LENGTH_BYTES:
        raise _damaged(name, "it is too short to hold a header")
    (size,) = struct.unpack("<Q", prefix)
    if size > MAX_HEADER_BYTES:
        raise _damaged(name, f"it claims a header of {size:,} bytes")
    if LENGTH_BYTES + size > file_size:
        raise _damaged(name, "its header runs past the end of the file")
    return size


def _refuse_duplicates(pairs: list[tuple[str, object]]) -> dict:
    # json.loads would keep the last of two equal names silently, hiding a tensor.
    result = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate name {key!r}")
        result[key] = value
    return result


def _parse_header(header_bytes: bytes, name: str) -> dict:
    try:
        header = json.loads(header_bytes.decode("utf-8"), object_pairs_hook=_refuse_duplicates)
    except (UnicodeDecodeError, ValueError):
        raise _damaged(name, "its header is not readable JSON") from None
    if not isinstance(header, dict):
        raise _damaged(name, "its header is not a table of tensors")
    return header


def _check_metadata(metadata: object, name: str) -> None:
    if not (isinstance(metadata, dict)
            and all(isinstance(value, str) for value in metadata.values())):
        raise _damaged(name, "its metadata is not a table of texts")


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_entry(tensor: str, entry: object, data_size: int,
                 name: str) -> tuple[TensorInfo, tuple[int, int]]:
    if not isinstance(entry, dict):
        raise _damaged(name, f"tensor {tensor!r} has no description")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in DTYPE_SIZES:
        raise _damaged(name, f"tensor {tensor!r} has the unknown type {dtype!r}")
    if not (isinstance(shape, list) and all(_is_count(size) for size in shape)):
        raise _damaged(name, f"tensor {tensor!r} has an invalid shape")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_is_count, offsets))
            and offsets[0] <= offsets[1] <= data_size):
        raise _damaged(name, f"tensor {tensor!r} points outside the file's data")
    begin, end = offsets
    if end - begin != math.prod(shape) * DTYPE_SIZES[dtype]:
        raise _damaged(name, f"tensor {tensor!r} takes {end - begin:,} bytes but its shape "
                             f"needs {math.prod(shape) * DTYPE_SIZES[dtype]:,}")
    return TensorInfo(dtype, tuple(shape)), (begin, end)


def _check_ranges_cover_data(ranges: list[tuple[int, int, str]], data_size: int,
                             name: str) -> None:
    """The tensors must tile the data area exactly: no shared bytes, no hidden bytes."""
    position = 0
    for begin, end, tensor in sorted(ranges):
        if begin < position:
            raise _damaged(name, f"tensor {tensor!r} overlaps another tensor")
        if begin > position:
            raise _damaged(name, f"bytes before tensor {tensor!r} belong to no tensor")
        position = end
    if position != data_size:
        raise _damaged(name, "its data area does not match its header")
