"""A diffusers ControlNet -> ``model.onnx`` + ``config.json``, laid out as OnnxStack/Amuse
read it (torch lives here).

Inputs, in OnnxStack's order: ``sample`` (B,4,h,w), ``timestep`` (B, float32, as our UNet
export), ``encoder_hidden_states`` (B,77·n,dim), SDXL's ``text_embeds`` (B,1280) and
``time_ids`` (B,6), ``controlnet_cond`` (B,3,H,W in [0, 1], H = 8h), ``conditioning_scale``
(float32, shape []); all float32. Outputs: ``down_block_{i}_additional_residual`` (one per
skip connection: 12 for SD 1.x/2.x, 9 for SDXL) and ``mid_block_additional_residual``,
already multiplied by the scale. The scale is a graph input, not a constant traced in, so
one graph serves every strength.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch

from engine.control.description import MID_RESIDUAL, down_residual
from engine.export.graphs import (
    EXTERNAL_DATA_THRESHOLD,
    _noise,
    export_graph,
    unet_added_conditions,
    unet_example,
)
from engine.export.weights_map import write_weights_map


class ControlNetGraph(torch.nn.Module):
    """A ``ControlNetModel`` with the inputs and outputs named above."""

    def __init__(self, controlnet: torch.nn.Module) -> None:
        super().__init__()
        self.controlnet = controlnet
        self.added_conditions = unet_added_conditions(controlnet)
        self.input_names = ("sample", "timestep", "encoder_hidden_states",
                            *self.added_conditions, "controlnet_cond", "conditioning_scale")
        skips = len(controlnet.controlnet_down_blocks)
        self.output_names = (*(down_residual(index) for index in range(skips)), MID_RESIDUAL)
        residual_axes = {name: {0: "batch", 2: f"{name}_height", 3: f"{name}_width"}
                         for name in self.output_names}
        self.dynamic_axes = {
            "sample": {0: "batch", 2: "height", 3: "width"},
            "timestep": {0: "batch"},
            "encoder_hidden_states": {0: "batch", 1: "sequence"},
            **{name: {0: "batch"} for name in self.added_conditions},
            "controlnet_cond": {0: "batch", 2: "picture_height", 3: "picture_width"},
            **residual_axes,
        }

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor,
                encoder_hidden_states: torch.Tensor, *rest: torch.Tensor
                ) -> tuple[torch.Tensor, ...]:
        *added, controlnet_cond, conditioning_scale = rest
        named = dict(zip(self.added_conditions, added, strict=True)) or None
        down, mid = self.controlnet(
            sample, timestep, encoder_hidden_states, controlnet_cond=controlnet_cond,
            conditioning_scale=conditioning_scale, added_cond_kwargs=named, return_dict=False)
        return (*down, mid)


def controlnet_example(controlnet: torch.nn.Module) -> tuple[torch.Tensor, ...]:
    """The UNet's example inputs (odd latent sizes, see ``unet_example``), a control picture
    as many times larger as the conditioning embedding divides, and a scale that is not 1."""
    # unet_example reads a UNet's config and num_upsamplers: a UNet with this down path
    # would have one upsampler per downsampler, and a ControlNet takes no timestep_cond.
    config = SimpleNamespace(**{**controlnet.config, "time_cond_proj_dim": None})
    shape = SimpleNamespace(config=config, num_upsamplers=len(controlnet.down_blocks) - 1)
    sample, timestep, hidden, *added = unet_example(shape)
    factor = 2 ** (len(controlnet.config.conditioning_embedding_out_channels) - 1)
    height, width = sample.shape[2:]
    picture = _noise(1, controlnet.config.conditioning_channels, height * factor,
                     width * factor).sigmoid()
    return (sample, timestep, hidden, *added, picture, torch.tensor(0.75))


def export_controlnet(controlnet: torch.nn.Module, folder: Path,
                      external_data_threshold: int = EXTERNAL_DATA_THRESHOLD) -> None:
    """Write ``folder/model.onnx`` (weights in ``model.onnx.data`` above 2 GB), the
    diffusers ``config.json`` and ``weights_map.json`` (so a LoRA could find its tensors)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    controlnet = controlnet.float().eval()
    export_graph(ControlNetGraph(controlnet), controlnet_example(controlnet),
                 folder / "model.onnx", external_data_threshold)
    controlnet.save_config(folder)  # config.json, as diffusers and Amuse read it
    write_weights_map(controlnet, folder / "model.onnx")
