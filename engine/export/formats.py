"""Tells what kind of model a path holds from its content, never from its name.

A file called ``model.safetensors`` may be a pickle and a ``.ckpt`` may be safetensors; only
the bytes decide which reader may touch it. Pure Python (no torch).
"""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

from engine.errors import ModelError
from engine.export.safetensors_check import LENGTH_BYTES, MAX_HEADER_BYTES

DIFFUSERS_FOLDER = "diffusers-folder"
ONNX_FOLDER = "onnx-folder"
SAFETENSORS = "safetensors"
PICKLE = "pickle"
ZIP_MAGIC = b"PK\x03\x04"
# A pickle starts with the PROTO opcode and a protocol number; torch.save uses 2, pickle 2-5.
PICKLE_PROTOCOLS = range(2, 6)


def detect_format(path: Path) -> str:
    """One of "diffusers-folder", "onnx-folder", "safetensors" or "pickle"; anything else is
    refused with a ModelError."""
    path = Path(path)
    if path.is_dir():
        found = _folder_format(path)
    elif path.is_file():
        found = _file_format(path)
    else:
        raise ModelError(f"'{path.name}' does not exist.")
    if found is None:
        raise ModelError(f"'{path.name}' is not a model Easel can import: it is neither a "
                         f"diffusers or ONNX model folder nor a .safetensors or PyTorch "
                         f"checkpoint file.")
    return found


def _folder_format(folder: Path) -> str | None:
    # The ONNX layout (optimum, Amuse/OnnxStack) keeps each graph in its component folder.
    if any((folder / component / "model.onnx").is_file()
           for component in ("unet", "text_encoder", "vae_decoder")):
        return ONNX_FOLDER
    if (folder / "model_index.json").is_file():
        return DIFFUSERS_FOLDER
    return None


def _file_format(path: Path) -> str | None:
    with path.open("rb") as file:
        start = file.read(LENGTH_BYTES + 1)
    if start.startswith(ZIP_MAGIC):
        return PICKLE if _is_torch_zip(path) else None
    if len(start) >= 2 and start[0] == 0x80 and start[1] in PICKLE_PROTOCOLS:
        return PICKLE
    if _looks_like_safetensors(start, path):
        return SAFETENSORS
    return None


def _is_torch_zip(path: Path) -> bool:
    """torch.save's zip format: one top folder holding the pickle ``data.pkl``."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("/data.pkl") or name == "data.pkl"
                       for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _looks_like_safetensors(start: bytes, path: Path) -> bool:
    """A plausible header length followed by the opening brace of the JSON header.

    The header itself is checked in full by engine.export.safetensors_check before use."""
    if len(start) <= LENGTH_BYTES or start[LENGTH_BYTES:LENGTH_BYTES + 1] != b"{":
        return False
    (size,) = struct.unpack("<Q", start[:LENGTH_BYTES])
    return 2 <= size <= min(MAX_HEADER_BYTES, path.stat().st_size - LENGTH_BYTES)

