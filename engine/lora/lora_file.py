"""A LoRA .safetensors file read with numpy: its layers, each a low-rank pair and an alpha.

Two namings are read. kohya / AUTOMATIC1111 (sd-scripts, LyCORIS' LoCon):
``lora_unet_<module_with_underscores>.lora_down.weight`` / ``.lora_up.weight`` / ``.alpha``,
text encoders as ``lora_te_`` (SDXL: ``lora_te1_``, ``lora_te2_``). diffusers / PEFT:
``unet.<module>.lora_A.weight`` / ``.lora_B.weight`` (optionally ``.alpha``), text encoders
under ``text_encoder.`` and ``text_encoder_2.``; diffusers' older ``.lora.down.weight`` /
``.lora_linear_layer.down.weight`` / ``processor.to_q_lora.down.weight`` spellings too.
Other LyCORIS algorithms (LoHa, LoKr, DoRA, Tucker LoCon) are refused in one sentence.
"""

from __future__ import annotations

import json
import math
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.errors import ModelError
from engine.export.safetensors_check import LENGTH_BYTES, TensorInfo, check_safetensors

# (suffix, role): how each naming ends a layer's tensors.
_ROLES = (
    (".lora_down.weight", "down"), (".lora_up.weight", "up"),
    (".lora_A.weight", "down"), (".lora_B.weight", "up"),
    (".lora.down.weight", "down"), (".lora.up.weight", "up"),
    (".lora_linear_layer.down.weight", "down"), (".lora_linear_layer.up.weight", "up"),
    ("_lora.down.weight", "down"), ("_lora.up.weight", "up"),  # processor.to_q_lora.down
    (".alpha", "alpha"),
)
# Tensor name parts of the LyCORIS algorithms that are not a plain low-rank product.
_UNSUPPORTED = {"hada_w1_a": "LoHa", "lokr_w1": "LoKr", "lokr_w1_a": "LoKr",
                "dora_scale": "DoRA", "lora_mid": "Tucker-decomposed LoCon"}
_NUMPY_TYPES = {"F32": "<f4", "F16": "<f2", "F64": "<f8"}
_KOHYA = re.compile(r"lora_(unet|te[12]?)_")


@dataclass(frozen=True)
class LoraLayer:
    """One adapted layer: ``delta = up @ down * alpha / rank`` (convolution kernels included)."""

    down: np.ndarray  # (rank, in) or (rank, in, kh, kw)
    up: np.ndarray  # (out, rank) or (out, rank, 1, 1)
    alpha: float | None  # None: alpha equals the rank (scale 1)

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])

    @property
    def scale(self) -> float:
        return 1.0 if self.alpha is None else self.alpha / self.rank


def is_lora_name(name: str) -> bool:
    """True for a tensor name only LoRA files use."""
    return bool(_KOHYA.match(name)) or any(name.endswith(suffix) for suffix, role in _ROLES
                                           if role != "alpha")


def naming_of(names: set[str] | list[str]) -> str:
    """"kohya" or "diffusers": how a LoRA's tensor names are spelt."""
    return "kohya" if any(_KOHYA.match(name) for name in names) else "diffusers"


def layer_names(tensors: dict[str, TensorInfo], file_name: str) -> dict[str, dict[str, str]]:
    """Each layer's name -> {role: tensor name}; one sentence when the file is not a LoRA
    Easel can apply."""
    layers: dict[str, dict[str, str]] = {}
    for name in tensors:
        for part, algorithm in _UNSUPPORTED.items():
            if part in name:
                raise ModelError(f"'{file_name}' is a {algorithm} network, which Easel cannot "
                                 f"apply yet (only LoRA and LoCon).")
        role = next(((suffix, role) for suffix, role in _ROLES if name.endswith(suffix)), None)
        if role is None:
            continue  # metadata-like extras (e.g. a stored step count) are not layers
        layers.setdefault(name[: -len(role[0])], {})[role[1]] = name
    complete = {layer: roles for layer, roles in layers.items() if {"down", "up"} <= set(roles)}
    broken = [layer for layer, roles in layers.items()
              if layer not in complete and set(roles) != {"alpha"}]
    if broken:
        raise ModelError(f"'{file_name}' is damaged: LoRA layer '{broken[0]}' lacks its "
                         f"{'up' if 'down' in layers[broken[0]] else 'down'} weights.")
    if not complete:
        raise ModelError(f"'{file_name}' holds no LoRA layers.")
    return complete


def read_lora(path: Path) -> dict[str, LoraLayer]:
    """Every layer of the LoRA file ``path`` (header checked before anything is read)."""
    path = Path(path)
    tensors = check_safetensors(path)
    layers = layer_names(tensors, path.name)
    offsets = _data_offsets(path)
    result = {}
    for layer, roles in layers.items():
        down = _read(path, offsets, tensors, roles["down"])
        up = _read(path, offsets, tensors, roles["up"])
        _check_pair(path.name, layer, down, up)
        alpha = None
        if "alpha" in roles:
            alpha = float(_read(path, offsets, tensors, roles["alpha"]).reshape(-1)[0])
        result[layer] = LoraLayer(down, up, alpha)
    return result


def _check_pair(file_name: str, layer: str, down: np.ndarray, up: np.ndarray) -> None:
    if down.ndim not in (2, 4) or up.ndim != down.ndim or up.shape[1] != down.shape[0] or (
            up.ndim == 4 and up.shape[2:] != (1, 1)):
        raise ModelError(f"'{file_name}' is damaged: the two halves of LoRA layer '{layer}' "
                         f"do not fit together.")


def _data_offsets(path: Path) -> dict[str, tuple[int, int]]:
    with path.open("rb") as file:
        (size,) = struct.unpack("<Q", file.read(LENGTH_BYTES))
        header = json.loads(file.read(size))
    start = LENGTH_BYTES + size
    return {name: (start + entry["data_offsets"][0], start + entry["data_offsets"][1])
            for name, entry in header.items() if name != "__metadata__"}


def _read(path: Path, offsets: dict[str, tuple[int, int]], tensors: dict[str, TensorInfo],
          name: str) -> np.ndarray:
    info = tensors[name]
    begin, _end = offsets[name]
    count = math.prod(info.shape)
    if info.dtype == "BF16":  # numpy has no bfloat16: it is the top half of a float32
        raw = np.fromfile(path, dtype="<u2", count=count, offset=begin)
        values = (raw.astype(np.uint32) << 16).view(np.float32)
    elif info.dtype in _NUMPY_TYPES:
        values = np.fromfile(path, dtype=_NUMPY_TYPES[info.dtype], count=count, offset=begin)
    else:
        raise ModelError(f"'{path.name}' stores '{name}' as {info.dtype}, which is not a "
                         f"LoRA weight type.")
    return values.astype(np.float32).reshape(info.shape)
