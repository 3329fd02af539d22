"""Which model family a LoRA was made for, told from its layer names and shapes alone.

The surest sign is the width a cross-attention key or value reads: the text encoder's width,
768 for SD 1.x, 1024 for SD 2.x, 2048 for SDXL. Then a second text encoder, or a transformer
depth above one (only SDXL stacks several), says SDXL; a text-encoder-only LoRA is told by that
encoder's width. Tiny test models fit none of these and are told by their layers only.
"""

from __future__ import annotations

import re

from engine.export.checkpoint_family import FAMILY_NAMES
from engine.export.safetensors_check import TensorInfo

_CROSS_ATTENTION = re.compile(r"attn2[._](processor[._])?to_[kv]$")
_TEXT_QUERY = re.compile(r"^(lora_te1?_|text_encoder\.).*q_proj$")
_WIDTHS = {768: "sd1", 1024: "sd2", 2048: "sdxl"}
_SDXL_ONLY = ("lora_te2_", "text_encoder_2.")
_DEEP_TRANSFORMER = re.compile(r"transformer_blocks[._][1-9]")


def lora_family(layers: dict[str, dict[str, str]], tensors: dict[str, TensorInfo]
                ) -> str | None:
    """"sd1", "sd2" or "sdxl", or None when the layers do not tell."""
    def width(layer: str) -> int:
        return tensors[layers[layer]["down"]].shape[1]

    for layer in layers:
        if _CROSS_ATTENTION.search(layer) and width(layer) in _WIDTHS:
            return _WIDTHS[width(layer)]
    if any(layer.startswith(_SDXL_ONLY) or _DEEP_TRANSFORMER.search(layer) for layer in layers):
        return "sdxl"
    for layer in layers:
        if _TEXT_QUERY.search(layer) and width(layer) in (768, 1024):
            return _WIDTHS[width(layer)]
    return None


def family_name(family: str | None) -> str:
    """The family in the user's words."""
    return FAMILY_NAMES.get(family or "", "an unknown model family")
