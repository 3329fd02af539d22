"""Which weight of an installed model each LoRA layer name means.

Built from the model's ``weights_map.json`` files (engine.export.weights_map), which name every
weight as diffusers and transformers do. Every spelling a LoRA may use for a weight is derived
from that name, so a lookup is a dictionary hit and never a guess at where underscores were
dots: kohya's ``lora_unet_down_blocks_1_attentions_0_proj_in``, kohya's SDXL spelling of the
original (LDM / SGM) UNet ``lora_unet_input_blocks_4_1_proj_in``, diffusers/PEFT's
``unet.down_blocks.1.attentions.0.proj_in`` and text encoders ``lora_te_`` / ``lora_te1_`` /
``lora_te2_`` / ``text_encoder.`` / ``text_encoder_2.``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from engine.errors import ModelError

MAP_FILE = "weights_map.json"  # as engine.export.weights_map writes it
COMPONENTS = ("unet", "text_encoder", "text_encoder_2")
_PREFIXES = {
    "unet": (("lora_unet_", "_"), ("unet.", "."), ("", ".")),
    "text_encoder": (("lora_te_", "_"), ("lora_te1_", "_"), ("text_encoder.", ".")),
    "text_encoder_2": (("lora_te2_", "_"), ("text_encoder_2.", ".")),
}
# diffusers' attention-processor spellings of a layer, and their module names.
_PROCESSOR = ((".processor.to_out", ".to_out.0"), (".processor.to_", ".to_"),
              ("self_attn.to_q", "self_attn.q_proj"), ("self_attn.to_k", "self_attn.k_proj"),
              ("self_attn.to_v", "self_attn.v_proj"), ("self_attn.to_out", "self_attn.out_proj"))
# Resnet parts: diffusers name -> the original UNet's.
_RESNET_PARTS = {"conv1": "in_layers.2", "conv2": "out_layers.3", "norm1": "in_layers.0",
                 "norm2": "out_layers.0", "time_emb_proj": "emb_layers.1",
                 "conv_shortcut": "skip_connection"}
_LDM_TOP = {"conv_in": "input_blocks.0.0", "conv_out": "out.2", "conv_norm_out": "out.0",
            "time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
            "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2"}


@dataclass(frozen=True)
class Target:
    """One weight a LoRA layer changes."""

    component: str  # "unet", "text_encoder", "text_encoder_2"
    weight: str  # its PyTorch name ("down_blocks.1.attentions.0.proj_in.weight")
    initializer: str  # its name in the ONNX graph
    transposed: bool  # the graph holds its transpose (a Linear folded into MatMul)
    shape: tuple[int, ...]  # PyTorch's shape


class ModelTargets:
    """Every LoRA spelling of every mapped weight of one installed model."""

    def __init__(self, folder: Path, model_name: str) -> None:
        self.folder = Path(folder)
        self.model_name = model_name
        self._by_name: dict[str, Target] = {}
        maps = {component: self.folder / component / MAP_FILE for component in COMPONENTS
                if (self.folder / component / "model.onnx").is_file()}
        if not all(path.is_file() for path in maps.values()):
            raise ModelError(f"Model '{model_name}' was installed before Easel could apply "
                             f"LoRAs to it; remove it and import it again to use LoRAs.")
        for component, path in maps.items():
            self._add_component(component, _read_map(path, model_name))

    def find(self, layer: str) -> Target | None:
        """The weight the LoRA layer ``layer`` changes, or None when the model has none."""
        for spelling, module in _PROCESSOR:
            layer = layer.replace(spelling, module)
        return self._by_name.get(layer)

    def _add_component(self, component: str, weights: dict[str, dict]) -> None:
        modules = [name.removesuffix(".weight") for name in weights if name.endswith(".weight")]
        ldm = _LdmNames(modules) if component == "unet" else None
        for module in modules:
            entry = weights[module + ".weight"]
            target = Target(component, module + ".weight", entry["initializer"],
                            bool(entry["transposed"]), tuple(entry["shape"]))
            spellings = [module]
            if ldm is not None and (original := ldm.name(module)) is not None:
                spellings.append(original)
            for prefix, separator in _PREFIXES[component]:
                for spelling in spellings:
                    if separator == "." and spelling is not module:
                        continue  # the original UNet's names come in kohya's spelling only
                    self._by_name[prefix + spelling.replace(".", separator)] = target


def _read_map(path: Path, model_name: str) -> dict[str, dict]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        weights = data["weights"]
        for entry in weights.values():
            str(entry["initializer"]), bool(entry["transposed"]), tuple(entry["shape"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise ModelError(f"The weights map of model '{model_name}' ({path.parent.name}) is "
                         f"damaged; import the model again to use LoRAs.") from None
    return weights


class _LdmNames:
    """diffusers UNet module names -> the original (LDM / SGM) UNet's, which kohya's SDXL
    LoRAs use: input_blocks / middle_block / output_blocks counted as the original counts."""

    def __init__(self, modules: list[str]) -> None:
        resnets = [int(match.group(1)) for module in modules
                   if (match := re.match(r"down_blocks\.\d+\.resnets\.(\d+)\.", module))]
        self.per_block = max(resnets, default=-1) + 1
        self.up_with_attention = {int(match.group(1)) for module in modules
                                  if (match := re.match(r"up_blocks\.(\d+)\.attentions\.",
                                                        module))}

    def name(self, module: str) -> str | None:
        if module in _LDM_TOP:
            return _LDM_TOP[module]
        parts = module.split(".")
        if parts[0] == "mid_block" and len(parts) > 3:
            slot = {("resnets", "0"): 0, ("attentions", "0"): 1, ("resnets", "1"): 2}.get(
                (parts[1], parts[2]))
            return None if slot is None else self._inner(f"middle_block.{slot}", parts[1],
                                                         parts[3:])
        if parts[0] not in ("down_blocks", "up_blocks") or len(parts) < 5:
            return None
        block, kind, index, rest = int(parts[1]), parts[2], int(parts[3]), parts[4:]
        span = self.per_block + 1  # the original counts the down/upsampler as a layer
        if parts[0] == "down_blocks":
            if kind == "downsamplers":
                return f"input_blocks.{1 + block * span + self.per_block}.0.op"
            return self._inner(f"input_blocks.{1 + block * span + index}."
                               f"{0 if kind == 'resnets' else 1}", kind, rest)
        if kind == "upsamplers":
            slot = 2 if block in self.up_with_attention else 1
            return f"output_blocks.{block * span + self.per_block}.{slot}.conv"
        return self._inner(f"output_blocks.{block * span + index}."
                           f"{0 if kind == 'resnets' else 1}", kind, rest)

    @staticmethod
    def _inner(prefix: str, kind: str, rest: list[str]) -> str | None:
        if kind == "resnets":
            part = _RESNET_PARTS.get(".".join(rest))
            return None if part is None else f"{prefix}.{part}"
        return f"{prefix}.{'.'.join(rest)}"
