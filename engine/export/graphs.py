"""PyTorch modules -> ONNX graphs with the engine's fixed tensor names (torch lives here).

Exporter choice: the TorchScript exporter (``torch.onnx.export(..., dynamo=False)``). Measured
on the tiny test UNet with torch 2.13, both exporters give graphs that match PyTorch at other
batches and sizes than the traced one, but the TorchScript one exports ~15x faster (2 s against
36 s) and its graphs are the ones ONNX Runtime's transformer optimizer fuses (MultiHeadAttention,
GroupNorm, BiasSplitGelu); on the dynamo graph it fuses no attention at all. Tracing freezes
Python-side shape decisions, so every wrapper below is traced at inputs chosen to take the
general path (see ``unet_example``).
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import onnx
import torch
from onnx.external_data_helper import (
    load_external_data_for_tensor,
    set_external_data,
    uses_external_data,
)

OPSET = 17
# Protobuf cannot serialise a message of 2 GiB or more; above 2 GB (leaving room for the graph
# itself) the weights go to one ``model.onnx.data`` file beside the graph, as optimum writes.
EXTERNAL_DATA_THRESHOLD = 2_000_000_000
# Tensors smaller than this stay inside the graph file even when the rest goes outside.
_INLINE_TENSOR_BYTES = 1024
# Offsets in the data file are aligned so ONNX Runtime can memory-map the weights.
_DATA_ALIGNMENT = 4096


class TextEncoderGraph(torch.nn.Module):
    """``input_ids`` (int32) -> ``last_hidden_state``, ``pooler_output``."""

    input_names = ("input_ids",)
    output_names = ("last_hidden_state", "pooler_output")
    dynamic_axes = {
        "input_ids": {0: "batch", 1: "sequence"},
        "last_hidden_state": {0: "batch", 1: "sequence"},
        "pooler_output": {0: "batch"},
    }

    def __init__(self, text_encoder: torch.nn.Module) -> None:
        super().__init__()
        self.text_encoder = text_encoder

    def forward(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        output = self.text_encoder(input_ids=input_ids, return_dict=True)
        return output.last_hidden_state, output.pooler_output


class HiddenStatesTextEncoderGraph(torch.nn.Module):
    """A text encoder that also gives every hidden state, for families that read an inner one
    (SDXL reads the penultimate layer).

    Outputs as optimum names them, so either tool reads the other's export: a CLIPTextModel
    gives ``last_hidden_state``, ``pooler_output``; a CLIPTextModelWithProjection (SDXL's
    second encoder) gives the projected ``text_embeds``, ``last_hidden_state``; then both give
    ``hidden_states.0`` (the token embeddings) to ``hidden_states.N`` (the last layer, before
    the final layer norm).
    """

    input_names = ("input_ids",)

    def __init__(self, text_encoder: torch.nn.Module) -> None:
        super().__init__()
        self.text_encoder = text_encoder
        self.projected = hasattr(text_encoder, "text_projection")
        first = ("text_embeds", "last_hidden_state") if self.projected else (
            "last_hidden_state", "pooler_output")
        layers = text_encoder.config.num_hidden_layers
        hidden = tuple(f"hidden_states.{index}" for index in range(layers + 1))
        self.output_names = first + hidden
        self.dynamic_axes = {
            "input_ids": {0: "batch", 1: "sequence"},
            **{name: {0: "batch", 1: "sequence"} for name in ("last_hidden_state", *hidden)},
            first[0 if self.projected else 1]: {0: "batch"},
        }

    def forward(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
        output = self.text_encoder(input_ids=input_ids, output_hidden_states=True,
                                   return_dict=True)
        first = ((output.text_embeds, output.last_hidden_state) if self.projected
                 else (output.last_hidden_state, output.pooler_output))
        return (*first, *output.hidden_states)


class UNetGraph(torch.nn.Module):
    """``sample``, ``timestep`` (float32 [batch]), ``encoder_hidden_states`` -> ``out_sample``.

    SDXL's UNet also takes ``text_embeds`` (the pooled text projection) and ``time_ids``
    (original size, crop corner, target size); an LCM UNet takes ``timestep_cond`` (the
    guidance-scale embedding). The inputs are those the UNet's config asks for.
    """

    output_names = ("out_sample",)

    def __init__(self, unet: torch.nn.Module) -> None:
        super().__init__()
        self.unet = unet
        self.added_conditions = unet_added_conditions(unet)
        self.extra_inputs = self.added_conditions + (
            ("timestep_cond",) if unet.config.time_cond_proj_dim else ())
        self.input_names = ("sample", "timestep", "encoder_hidden_states", *self.extra_inputs)
        self.dynamic_axes = {
            "sample": {0: "batch", 2: "height", 3: "width"},
            "timestep": {0: "batch"},
            "encoder_hidden_states": {0: "batch", 1: "sequence"},
            **{name: {0: "batch"} for name in self.extra_inputs},
            "out_sample": {0: "batch", 2: "height", 3: "width"},
        }

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor,
                encoder_hidden_states: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        named = dict(zip(self.extra_inputs, extra, strict=True))
        added = {name: named[name] for name in self.added_conditions} or None
        return self.unet(sample, timestep, encoder_hidden_states,
                         timestep_cond=named.get("timestep_cond"), added_cond_kwargs=added,
                         return_dict=False)[0]


def unet_added_conditions(unet: torch.nn.Module) -> tuple[str, ...]:
    """The ``added_cond_kwargs`` the UNet needs: SDXL's size conditioning, or none."""
    return ("text_embeds", "time_ids") if unet.config.addition_embed_type == "text_time" else ()


class VaeDecoderGraph(torch.nn.Module):
    """``latent_sample`` (already divided by the scaling factor) -> ``sample`` (about -1..1)."""

    input_names = ("latent_sample",)
    output_names = ("sample",)
    dynamic_axes = {
        "latent_sample": {0: "batch", 2: "height", 3: "width"},
        "sample": {0: "batch", 2: "height", 3: "width"},
    }

    def __init__(self, vae: torch.nn.Module) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, latent_sample: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latent_sample, return_dict=False)[0]  # with post_quant_conv


class VaeEncoderGraph(torch.nn.Module):
    """``sample`` -> ``latent_parameters``: mean and log-variance concatenated on channels.

    No sampling in the graph: the pipeline draws the noise from the seed's generator, so
    image-to-image stays reproducible (and clamps the log-variance to [-30, 20] as diffusers'
    DiagonalGaussianDistribution does).
    """

    input_names = ("sample",)
    output_names = ("latent_parameters",)
    dynamic_axes = {
        "sample": {0: "batch", 2: "height", 3: "width"},
        "latent_parameters": {0: "batch", 2: "height", 3: "width"},
    }

    def __init__(self, vae: torch.nn.Module) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, sample: torch.Tensor) -> torch.Tensor:
        parameters = self.vae.encoder(sample)
        if self.vae.quant_conv is not None:
            parameters = self.vae.quant_conv(parameters)
        return parameters


# --- example inputs to trace with ----------------------------------------------------------

def text_encoder_example(text_encoder: torch.nn.Module) -> tuple[torch.Tensor, ...]:
    config = text_encoder.config
    length = config.max_position_embeddings
    ids = torch.full((1, length), config.vocab_size - 1, dtype=torch.int32)
    ids[0, : length // 2] = torch.arange(length // 2, dtype=torch.int32)
    return (ids,)


def unet_example(unet: torch.nn.Module) -> tuple[torch.Tensor, ...]:
    """Inputs whose latent size is NOT a multiple of the UNet's total upsampling factor.

    diffusers then passes every upsampler its output size taken from the skip connection (it
    interpolates by a fixed factor of 2 otherwise); traced that way, the graph is right at
    every size, including the multiples of 8 pixels that are not multiples of 64.
    """
    config = unet.config
    factor = 2 ** unet.num_upsamplers
    height, width = factor + 1, 2 * factor + 3
    extra = []
    if unet_added_conditions(unet):
        time_ids = 6 * config.addition_time_embed_dim
        extra += [_noise(1, config.projection_class_embeddings_input_dim - time_ids),
                  torch.tensor([[height * 8.0, width * 8.0, 0.0, 0.0, height * 8.0, width * 8.0]])]
    if config.time_cond_proj_dim:
        extra.append(_noise(1, config.time_cond_proj_dim))
    return (
        _noise(1, config.in_channels, height, width),
        torch.tensor([999.0]),
        _noise(1, 7, config.cross_attention_dim),
        *extra,
    )


def vae_decoder_example(vae: torch.nn.Module) -> tuple[torch.Tensor, ...]:
    return (_noise(1, vae.config.latent_channels, 5, 7),)


def vae_encoder_example(vae: torch.nn.Module) -> tuple[torch.Tensor, ...]:
    scale = 2 ** (len(vae.config.block_out_channels) - 1)
    return (_noise(1, vae.config.in_channels, 5 * scale, 7 * scale).clamp(-1, 1),)


def _noise(*shape: int) -> torch.Tensor:
    # A private generator: exporting leaves the caller's global torch seed alone.
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0))


# --- export and save -----------------------------------------------------------------------

def export_graph(graph: torch.nn.Module, example: tuple[torch.Tensor, ...], destination: Path,
                 external_data_threshold: int = EXTERNAL_DATA_THRESHOLD) -> None:
    """Export ``graph`` to ``destination`` (``model.onnx``), weights outside it if large."""
    destination = Path(destination)
    with tempfile.TemporaryDirectory(prefix=".export-", dir=destination.parent) as scratch:
        exported = Path(scratch) / "model.onnx"
        _trace_to_onnx(graph.eval(), example, exported)
        save_model(exported, destination, external_data_threshold)


def _trace_to_onnx(graph: torch.nn.Module, example: tuple[torch.Tensor, ...],
                   path: Path) -> None:
    with torch.no_grad(), _quiet_tracing():
        torch.onnx.export(
            graph, example, str(path), dynamo=False, opset_version=OPSET,
            input_names=list(graph.input_names), output_names=list(graph.output_names),
            dynamic_axes=graph.dynamic_axes, do_constant_folding=True,
        )


@contextmanager
def _quiet_tracing() -> Iterator[None]:
    # Tracing warns about every Python branch on a shape (the size tests check the graphs
    # instead), about the TorchScript exporter's deprecation (see the module notes) and about
    # Slice steps it cannot fold; none of it is news to a user importing a model.
    with warnings.catch_warnings():
        for category in (torch.jit.TracerWarning, DeprecationWarning, FutureWarning, UserWarning):
            warnings.simplefilter("ignore", category)
        yield


def save_model(exported: Path, destination: Path,
               external_data_threshold: int = EXTERNAL_DATA_THRESHOLD) -> None:
    """Write the ONNX model at ``exported`` (any external files beside it) as ``destination``.

    Small models become one file. Larger ones get all their weights in one
    ``<name>.data`` file beside the graph, written tensor by tensor so a 3.4 GB UNet never
    sits in memory twice (the exporter itself writes one file per tensor above 2 GB).
    """
    exported, destination = Path(exported), Path(destination)
    if _folder_bytes(exported.parent) <= external_data_threshold:
        model = onnx.load(str(exported), load_external_data=True)
        onnx.save_model(model, str(destination))
        return
    model = onnx.load(str(exported), load_external_data=False)
    _move_weights_to_data_file(model, exported.parent, destination)
    onnx.save_model(model, str(destination))


def _folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.iterdir() if path.is_file())


def _move_weights_to_data_file(model: onnx.ModelProto, source_folder: Path,
                               destination: Path) -> None:
    data_name = destination.name + ".data"
    with open(destination.parent / data_name, "wb") as data:
        for tensor in model.graph.initializer:
            if uses_external_data(tensor):  # one tensor in memory at a time
                load_external_data_for_tensor(tensor, str(source_folder))
            if not tensor.HasField("raw_data") or len(tensor.raw_data) < _INLINE_TENSOR_BYTES:
                continue
            offset = _aligned(data.tell())
            data.seek(offset)
            data.write(tensor.raw_data)
            set_external_data(tensor, location=data_name, offset=offset,
                              length=len(tensor.raw_data))
            tensor.ClearField("raw_data")


def _aligned(offset: int) -> int:
    return (offset + _DATA_ALIGNMENT - 1) // _DATA_ALIGNMENT * _DATA_ALIGNMENT
