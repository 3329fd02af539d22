"""Tells what kind of model a path holds from its content, never from its name.

A file called ``model.safetensors`` may be a pickle and a ``.ckpt`` may be safetensors; only
the bytes decide which reader may touch it. Pure Python (no torch).
"""

from __future__ import annotations

import io
import json
import pickletools
import struct
import zipfile
from pathlib import Path

from engine.errors import ModelError
from engine.export.safetensors_check import LENGTH_BYTES, MAX_HEADER_BYTES

DIFFUSERS_FOLDER = "diffusers-folder"
ONNX_FOLDER = "onnx-folder"
SAFETENSORS = "safetensors"
PICKLE = "pickle"
# A super-resolution network's graph on its own, or in a folder as Amuse keeps its upscalers.
ONNX_UPSCALER = "onnx-upscaler"
# One diffusers model on its own (config.json naming its class, beside its weights), as
# ControlNets are shared; the kind that knows the class imports it.
DIFFUSERS_MODEL = "diffusers-model"
# Amuse's ControlNet folder: the graph in controlnet/model.onnx, no pipeline around it.
ONNX_CONTROLNET = "onnx-controlnet"
# A folder of ONNX graphs with no model.onnx, as DWPose's person detector and pose estimator
# are shared (yolox_l.onnx, dw-ll_ucoco_384.onnx); the annotator kind reads them.
ONNX_GRAPHS = "onnx-graphs"
# A folder of bare weights files and nothing that names a model, as madebyollin keeps TAESD
# (taesd_decoder.safetensors, taesd_encoder.pth): the kind that knows the files reads them.
WEIGHTS_FOLDER = "weights-folder"
_WEIGHTS_SUFFIXES = {".safetensors", ".pth", ".pt", ".bin"}
ZIP_MAGIC = b"PK\x03\x04"
# A pickle starts with the PROTO opcode and a protocol number; torch.save uses 2, pickle 2-5.
PICKLE_PROTOCOLS = range(2, 6)


def detect_format(path: Path) -> str:
    """One of "diffusers-folder", "onnx-folder", "onnx-upscaler", "onnx-controlnet",
    "diffusers-model", "onnx-graphs", "weights-folder", "safetensors" or "pickle"; anything
    else is refused with a ModelError."""
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
    if (folder / "model.onnx").is_file():  # Amuse's upscaler layout: the one graph at the top
        return ONNX_UPSCALER
    if (folder / "controlnet" / "model.onnx").is_file():
        return ONNX_CONTROLNET
    if (folder / "config.json").is_file():
        return DIFFUSERS_MODEL
    if any(path.suffix.lower() == ".onnx" and path.is_file() for path in folder.iterdir()):
        return ONNX_GRAPHS
    if any(path.suffix.lower() in _WEIGHTS_SUFFIXES and path.is_file()
           for path in folder.iterdir()):
        return WEIGHTS_FOLDER
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
    if _looks_like_onnx(start):
        return ONNX_UPSCALER  # Stable Diffusion models are folders of graphs, never one file
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



def _looks_like_onnx(start: bytes) -> bool:
    """A serialised ONNX ModelProto opens with field 1, ir_version (3 to 12 so far), as a
    varint. A weak sign on its own; the upscaler import then reads the whole graph."""
    return len(start) >= 2 and start[0] == 0x08 and 3 <= start[1] <= 31


# --- telling an upscaler checkpoint from a Stable Diffusion one, by its tensor names ----------

# Names only super-resolution networks use: ESRGAN and Real-ESRGAN (both key styles), the
# compact Real-ESRGAN (SRVGG), and BasicSR's wrappers around any of them.
UPSCALER_NAMES = ("conv_first.weight", "model.0.weight", "body.0.weight", "params_ema",
                  "params")
# Prefixes of Stable Diffusion checkpoints (ldm and diffusers naming), which win over the above.
DIFFUSION_PREFIXES = ("model.diffusion_model.", "first_stage_model.", "cond_stage_model.",
                      "conditioner.", "down_blocks.", "unet.", "lora_")
_MAX_NAMES_BYTES = 64 * 1024 * 1024  # a state dict's pickle (names, not weights) is far smaller


def looks_like_upscaler(path: Path, kind: str) -> bool:
    """True when the .safetensors or pickle checkpoint ``path`` (of format ``kind``) names its
    tensors as a super-resolution network does. Reads names only: a safetensors header as
    JSON, a pickle's opcodes through pickletools, which decodes them without building any
    object or importing anything."""
    if kind == SAFETENSORS:
        names = _safetensors_names(Path(path))
    elif kind == PICKLE:
        names = pickled_strings(Path(path))
    else:
        return False
    if any(name.startswith(DIFFUSION_PREFIXES) for name in names):
        return False
    return any(name in names for name in UPSCALER_NAMES)


def _safetensors_names(path: Path) -> set[str]:
    try:
        with path.open("rb") as file:
            (size,) = struct.unpack("<Q", file.read(LENGTH_BYTES))
            if size > MAX_HEADER_BYTES:
                return set()
            header = json.loads(file.read(size))
    except (OSError, ValueError, struct.error):
        return set()  # the full header check refuses it later, in a sentence
    return set(header) if isinstance(header, dict) else set()


def pickled_strings(path: Path) -> set[str]:
    """The strings in a torch checkpoint's pickle: its tensor names, among others."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                entry = next((info for info in archive.infolist()
                              if info.filename.endswith("data.pkl")), None)
                if entry is None or entry.file_size > _MAX_NAMES_BYTES:
                    return set()
                return _strings_in(io.BytesIO(archive.read(entry)), pickles=1)
        # torch's legacy format: small pickles (magic number, protocol, system info), then the
        # object itself, then the raw storages.
        with path.open("rb") as file:
            return _strings_in(io.BytesIO(file.read(_MAX_NAMES_BYTES)), pickles=4)
    except (OSError, zipfile.BadZipFile):
        return set()


def _strings_in(stream: io.BytesIO, pickles: int) -> set[str]:
    strings: set[str] = set()
    try:
        for _ in range(pickles):
            for _opcode, argument, _position in pickletools.genops(stream):
                if isinstance(argument, str):
                    strings.add(argument)
    except (ValueError, EOFError, UnicodeDecodeError):
        pass  # a cut or odd pickle: whatever was read is all there is to judge by
    return strings
