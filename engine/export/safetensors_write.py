"""Writes a .safetensors file one tensor at a time.

safetensors' own ``save_file`` first turns every tensor into bytes in memory, which doubles
the peak memory of a conversion (an SDXL UNet is 5 GB in float16). This writes the same format
tensor by tensor, straight from each tensor's memory. It imports nothing from Easel: the pickle
loader's isolated process runs this file by its path.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from pathlib import Path

# torch dtype name -> safetensors dtype name.
DTYPE_NAMES = {
    "float16": "F16", "bfloat16": "BF16", "float32": "F32", "float64": "F64",
    "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2",
    "bool": "BOOL", "uint8": "U8", "int8": "I8", "int16": "I16", "int32": "I32", "int64": "I64",
}
HEADER_ALIGNMENT = 8  # the format pads the header so the data starts 8-byte aligned


def save_safetensors(tensors: Mapping, path: Path, metadata: dict[str, str] | None = None) -> None:
    """Write ``tensors`` (name -> torch.Tensor) to ``path`` in the safetensors format."""
    header: dict[str, object] = {}
    offset = 0
    for name, tensor in tensors.items():
        size = tensor.numel() * tensor.element_size()
        header[name] = {"dtype": DTYPE_NAMES[str(tensor.dtype).removeprefix("torch.")],
                        "shape": list(tensor.shape), "data_offsets": [offset, offset + size]}
        offset += size
    if metadata:
        header["__metadata__"] = metadata
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % HEADER_ALIGNMENT)
    with open(path, "wb") as file:
        file.write(struct.pack("<Q", len(encoded)))
        file.write(encoded)
        for tensor in tensors.values():
            file.write(_raw_bytes(tensor))


def _raw_bytes(tensor):
    """The tensor's bytes as a view (no copy for a contiguous tensor); little-endian, as the
    format requires, on every platform Easel runs on."""
    import torch

    flat = tensor.detach().cpu().contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy()
