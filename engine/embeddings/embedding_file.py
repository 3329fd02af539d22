"""Textual-inversion embedding files: the vectors each text encoder gets for one name.

The formats people share, told apart by their tensor names (as A1111's
modules/textual_inversion/textual_inversion.py and diffusers' load_textual_inversion read them):

- A1111 ``.pt``: ``{"string_to_param": {"*": (n, width)}, ...}``; the pickle is read only as
  plain tensors (engine.export.pickle_convert), which leaves the tensor named ``*``;
- A1111 ``.safetensors``: ``emb_params`` (n, width);
- diffusers ``learned_embeds``: one tensor named after its token, ``{"<cat-toy>": (width,)}``;
- SDXL files: ``clip_l`` (n, 768) for the first text encoder and ``clip_g`` (n, 1280) for the
  second;
- and Easel's own installed form, ``text_encoder`` / ``text_encoder_2``.

The family is told by the width: 768 is SD 1.x's CLIP ViT-L, 1024 SD 2.x's OpenCLIP ViT-H,
768 + 1280 SDXL's pair.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np

from engine.errors import ModelError
from engine.export.safetensors_check import LENGTH_BYTES, TensorInfo, check_safetensors

EMBEDDING_FILE = "embedding.safetensors"  # an installed embedding's vectors, in its folder
MAX_VECTORS = 75  # one chunk: an embedding never straddles two (A1111)
# The widths of each text encoder's vectors -> the family they fit.
_FAMILIES = {(768,): "sd1", (1024,): "sd2", (768, 1280): "sdxl"}
_NUMPY_TYPES = {"F32": "<f4", "F16": "<f2", "F64": "<f8"}


def embedding_layout(tensors: dict[str, TensorInfo], shown: str
                     ) -> tuple[str | None, dict[str, str]]:
    """(family, {text encoder component: tensor name}) of an embedding file's tensor table,
    the family None when the widths fit none (a test's tiny model); ModelError in one
    sentence when it is no embedding."""
    names = set(tensors)
    if {"clip_l", "clip_g"} <= names:
        roles = {"text_encoder": "clip_l", "text_encoder_2": "clip_g"}
    elif {"text_encoder", "text_encoder_2"} <= names:
        roles = {"text_encoder": "text_encoder", "text_encoder_2": "text_encoder_2"}
    elif "emb_params" in names:
        roles = {"text_encoder": "emb_params"}
    elif len(names) == 1:  # A1111's .pt ("*", or "string_to_param.*") or diffusers' token
        roles = {"text_encoder": next(iter(names))}
    else:
        raise ModelError(f"'{shown}' is not a textual-inversion embedding: it holds "
                         f"{len(names)} tensors and none of the names embeddings use.")
    shapes = {component: _shape(tensors[tensor], shown) for component, tensor in roles.items()}
    counts = {shape[0] for shape in shapes.values()}
    if len(counts) != 1 or not 1 <= counts.pop() <= MAX_VECTORS:
        raise ModelError(f"'{shown}' is not an embedding Easel can use: it must have 1 to "
                         f"{MAX_VECTORS} vectors, the same number for each text encoder.")
    widths = tuple(shape[1] for shape in shapes.values())
    return _FAMILIES.get(widths), roles


def family_of(vectors: dict[str, np.ndarray], shown: str) -> str:
    """The family whose text encoders the vectors fit; one sentence when none does."""
    family = _FAMILIES.get(tuple(values.shape[1] for values in vectors.values()))
    if family is None:
        widths = " + ".join(str(values.shape[1]) for values in vectors.values())
        raise ModelError(f"'{shown}' has vectors {widths} wide, which fit no model family "
                         f"(768 is Stable Diffusion 1.x, 1024 is 2.x, 768 + 1280 is SDXL).")
    return family


def read_embedding(path: Path) -> tuple[str | None, dict[str, np.ndarray]]:
    """(family or None, {text encoder component: float32 vectors (n, width)}) of the file
    ``path`` (a .safetensors in any of the formats above), header checked before reading."""
    path = Path(path)
    tensors = check_safetensors(path)
    family, roles = embedding_layout(tensors, path.name)
    offsets = _data_offsets(path)
    vectors = {}
    for component, tensor in roles.items():
        info = tensors[tensor]
        if info.dtype not in _NUMPY_TYPES and info.dtype != "BF16":
            raise ModelError(f"'{path.name}' stores its vectors as {info.dtype}, which is not "
                             f"a floating-point type.")
        values = _read(path, offsets[tensor], info)
        if not np.isfinite(values).all():
            raise ModelError(f"'{path.name}' is damaged: its vectors are not all numbers.")
        vectors[component] = values.reshape(_shape(info, path.name))
    return family, vectors


def _shape(info: TensorInfo, shown: str) -> tuple[int, int]:
    """(vectors, width): diffusers saves one vector as a 1-D tensor."""
    if len(info.shape) == 1:
        return 1, info.shape[0]
    if len(info.shape) == 2:
        return info.shape[0], info.shape[1]
    raise ModelError(f"'{shown}' is not a textual-inversion embedding: its tensor has "
                     f"{len(info.shape)} dimensions, not a list of vectors.")


def _data_offsets(path: Path) -> dict[str, int]:
    with path.open("rb") as file:
        (size,) = struct.unpack("<Q", file.read(LENGTH_BYTES))
        header = json.loads(file.read(size))
    start = LENGTH_BYTES + size
    return {name: start + entry["data_offsets"][0]
            for name, entry in header.items() if name != "__metadata__"}


def _read(path: Path, begin: int, info: TensorInfo) -> np.ndarray:
    count = math.prod(info.shape)
    if info.dtype == "BF16":  # numpy has no bfloat16: it is the top half of a float32
        raw = np.fromfile(path, dtype="<u2", count=count, offset=begin)
        return (raw.astype(np.uint32) << 16).view(np.float32)
    values = np.fromfile(path, dtype=_NUMPY_TYPES[info.dtype], count=count, offset=begin)
    return values.astype(np.float32)
