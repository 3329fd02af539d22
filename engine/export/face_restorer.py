"""Installs face restorers (GFPGAN v1.3/v1.4, RestoreFormer, CodeFormer) as ONNX model folders.

A ``.pth`` or ``.safetensors`` checkpoint comes in; a ``.pth`` is a pickle, so it is first
turned into safetensors by engine.export.pickle_convert (``torch.load(weights_only=True)`` in a
separate process): nothing here ever unpickles. spandrel tells the architecture by the tensor
names and builds the network; GFPGAN's settings (output size, channel widths) are read from the
tensors' shapes here, as spandrel assumes the released 512 px ones. The network is traced to
ONNX at its fixed square size, taking and giving RGB in [0, 1] (the [-1, 1] the networks work
in is inside the graph), with GFPGAN's stored noise instead of fresh random noise, so a face
restores the same each time. CodeFormer lives in spandrel_extra_arches (spandrel 0.4 keeps it
apart); only that architecture is registered with spandrel, and only when a checkpoint's names
say CodeFormer. Its fidelity weight ``w`` (0 = quality, 1 = fidelity to the input) is a float32
scalar input of the graph, so one export serves every fidelity.
"""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path

from engine.errors import Cancelled, ExportUnavailable, ModelError
from engine.export.formats import PICKLE, SAFETENSORS, detect_format
from engine.export.upscaler import Progress, ShouldStop
from engine.faces.description import GRAPH_FILE, FaceRestorerDescription

# Tensor names each architecture is told by (spandrel's own detection uses the same).
GFPGAN_NAMES = ("toRGB.0.weight", "stylegan_decoder.style_mlp.1.weight")
RESTOREFORMER_NAMES = ("quantize.embedding.weight", "encoder.conv_in.weight", "quant_conv.weight")
CODEFORMER_NAMES = ("position_emb", "idx_pred_layer.0.weight")
LICENCES = {
    "GFPGAN": ("Apache-2.0 (GFPGAN); its StyleGAN2 decoder derives from NVIDIA's StyleGAN2 "
               "(NVIDIA Source Code License) through rosinality's stylegan2-pytorch (MIT)"),
    "RestoreFormer": "Apache-2.0",
    "CodeFormer": "S-Lab License 1.0 (non-commercial)",
}
NON_COMMERCIAL = {"CodeFormer"}
FIXED_SIDES = {"RestoreFormer": 512, "CodeFormer": 512}  # as spandrel builds them
INPUT_NAME, OUTPUT_NAME, FIDELITY_NAME = "image", "restored", "fidelity"
TRACED_FIDELITY = 0.5  # any value above 0: CodeFormer skips its fusion in Python at 0
EXTRA_ARCHES_UNAVAILABLE = ("'{label}' is a CodeFormer checkpoint, which needs "
                            "spandrel_extra_arches: pip install --no-deps "
                            "\"spandrel_extra_arches==0.2.0\".")


def architecture_of(names: set[str]) -> str | None:
    """"GFPGAN", "RestoreFormer" or "CodeFormer" by the tensor names, else None."""
    for architecture, wanted in (("CodeFormer", CODEFORMER_NAMES), ("GFPGAN", GFPGAN_NAMES),
                                 ("RestoreFormer", RESTOREFORMER_NAMES)):
        if all(name in names for name in wanted):
            return architecture
    return None


def import_face_restorer(source: Path, destination: Path, progress: Progress | None = None,
                         should_stop: ShouldStop | None = None) -> FaceRestorerDescription:
    """Install the face restorer checkpoint ``source`` into the folder ``destination``."""
    source, destination = Path(source), Path(destination)
    kind = detect_format(source)
    if kind not in (SAFETENSORS, PICKLE):
        raise ModelError(f"'{source.name}' is not a face restorer checkpoint (.pth or "
                         f".safetensors).")
    destination.mkdir(parents=True, exist_ok=True)
    if kind == SAFETENSORS:
        return export_face_restorer(source, destination, progress, should_stop)
    from engine.export.pickle_convert import pickle_to_safetensors

    # Inside the destination, so an import killed half-way leaves nothing the store keeps.
    with tempfile.TemporaryDirectory(prefix=".convert-", dir=destination) as scratch:
        converted = Path(scratch) / f"{source.name}.safetensors"
        if progress is not None:
            progress("Reading the checkpoint's tensors", 1, 3)
        pickle_to_safetensors(source, converted)
        return export_face_restorer(converted, destination, progress, should_stop,
                                    label=source.name)


def export_face_restorer(checkpoint: Path, destination: Path, progress: Progress | None = None,
                         should_stop: ShouldStop | None = None,
                         label: str | None = None) -> FaceRestorerDescription:
    """Export the .safetensors face restorer ``checkpoint`` to ``destination/model.onnx``."""
    import torch
    from safetensors.torch import load_file

    from engine.export.graphs import export_graph
    from engine.export.safetensors_check import check_safetensors

    label = label or Path(checkpoint).name
    check_safetensors(checkpoint)
    network, description = load_face_restorer(load_file(str(checkpoint)), label)
    if should_stop is not None and should_stop():
        raise Cancelled("The model import was cancelled.")
    if progress is not None:
        progress(f"Exporting the {description.summary}", 2, 3)
    side = description.input_size
    example = (torch.rand(1, 3, side, side),)
    if description.fidelity_input:
        example += (torch.tensor(TRACED_FIDELITY),)
    export_graph(_restorer_graph(network, description.architecture), example,
                 destination / GRAPH_FILE)
    if progress is not None:
        progress("Checking the exported graph", 3, 3)
    _check_graph(destination / GRAPH_FILE, description, label)
    description.save(destination)
    return description


def load_face_restorer(state_dict: dict, label: str):
    """The network (eval, float32, CPU) and its description; ModelError in one sentence when
    it is not a face restorer Easel imports."""
    from engine.export.upscaler_checkpoint import import_spandrel

    spandrel = import_spandrel()
    if architecture_of(set(state_dict)) == "CodeFormer":
        _register_codeformer(spandrel, label)
    detected = next((support.architecture for support
                     in spandrel.MAIN_REGISTRY.architectures("detection")
                     if support.architecture.detect(state_dict)), None)
    if detected is None or detected.id not in LICENCES:
        raise ModelError(f"'{label}' is not a face restorer Easel imports (GFPGAN v1.3/v1.4, "
                         f"RestoreFormer or CodeFormer).")
    try:
        if detected.id == "GFPGAN":
            network, side = _gfpgan(state_dict), 2 ** (_gfpgan_log_size(state_dict))
        else:
            network = spandrel.ModelLoader(device="cpu").load_from_state_dict(state_dict).model
            side = FIXED_SIDES[detected.id]
            if detected.id == "CodeFormer":
                _traceable_codeformer(network)
    except ModelError:
        raise
    except Exception as error:  # spandrel and load_state_dict raise plain errors on shapes
        raise ModelError(f"'{label}' looks like a {detected.id} checkpoint but its weights do "
                         f"not fit together, so it cannot be read.") from error
    description = FaceRestorerDescription(architecture=detected.id, input_size=side,
                                          licence=LICENCES[detected.id],
                                          non_commercial=detected.id in NON_COMMERCIAL,
                                          input_name=INPUT_NAME, output_name=OUTPUT_NAME,
                                          fidelity_input=FIDELITY_NAME
                                          if detected.id == "CodeFormer" else None)
    return network.float().eval(), description


def _register_codeformer(spandrel, label: str) -> None:
    """Add spandrel_extra_arches' CodeFormer to spandrel's registry. Only CodeFormer, not
    ``spandrel_extra_arches.install()``'s nine others: those would let upscaler imports in
    the same process claim files (SRFormer, Restormer, ...) that Easel never tested."""
    try:
        from spandrel_extra_arches import EXTRA_REGISTRY
    except ImportError:
        raise ExportUnavailable(EXTRA_ARCHES_UNAVAILABLE.format(label=label)) from None
    spandrel.MAIN_REGISTRY.add(EXTRA_REGISTRY["CodeFormer"], ignore_duplicates=True)


def _gfpgan_log_size(state_dict: dict) -> int:
    downs = {name.split(".")[1] for name in state_dict if name.startswith("conv_body_down.")}
    return len(downs) + 2


def _gfpgan(state_dict: dict):
    """spandrel's GFPGANv1Clean with the settings the tensors' shapes say: the released
    checkpoints are 512 px, full width and channel multiplier 2; others (tests' tiny ones)
    differ."""
    from spandrel.architectures.GFPGAN import GFPGAN

    width = state_dict["stylegan_decoder.constant_input.weight"].shape[1]
    style = state_dict["stylegan_decoder.style_mlp.1.weight"].shape[0]
    layers = sum(1 for name in state_dict
                 if name.startswith("stylegan_decoder.style_mlp.") and name.endswith(".weight"))
    for multiplier, sft_half in itertools.product((2, 1, 4), (True, False)):
        network = GFPGAN(out_size=2 ** _gfpgan_log_size(state_dict), num_style_feat=style,
                         channel_multiplier=multiplier, num_mlp=layers, narrow=width / 512,
                         sft_half=sft_half, fix_decoder=False, input_is_latent=True,
                         different_w=True)
        try:
            network.load_state_dict(state_dict, strict=True)
        except RuntimeError:
            continue  # not these settings: shapes or names differ
        return network
    raise ModelError("The GFPGAN checkpoint's tensors fit none of GFPGAN's settings.")


def _traceable_codeformer(network) -> None:
    """CodeFormer picks its fusion blocks by ``str(x.shape[-1])``; traced, a size is a tensor
    and the key reads "tensor(32)". Its fusion blocks are looked up by the number inside."""
    import torch

    class SizeKeyed(torch.nn.ModuleDict):
        def __getitem__(self, key: str) -> torch.nn.Module:
            return super().__getitem__(key.removeprefix("tensor(").removesuffix(")"))

    network.fuse_convs_dict = SizeKeyed(network.fuse_convs_dict)


def _restorer_graph(network, architecture: str):
    """The traced module around ``network``; torch is imported only when exporting."""
    import torch

    class Graph(torch.nn.Module):
        """``image`` float32 (1, 3, S, S) RGB in [0, 1] -> ``restored``, the same; CodeFormer
        also takes ``fidelity``, a float32 scalar in [0, 1]."""

        output_names = (OUTPUT_NAME,)
        dynamic_axes: dict = {}

        def __init__(self, network: torch.nn.Module, architecture: str) -> None:
            super().__init__()
            self.network = network
            self.architecture = architecture
            self.input_names = ((INPUT_NAME, FIDELITY_NAME) if architecture == "CodeFormer"
                                else (INPUT_NAME,))

        def forward(self, image: torch.Tensor,
                    fidelity: torch.Tensor | None = None) -> torch.Tensor:
            face = image * 2 - 1
            if self.architecture == "GFPGAN":
                restored = self.network(face, return_rgb=False, randomize_noise=False)[0]
            elif self.architecture == "CodeFormer":
                # Its ``if weight > 0`` is frozen True by the trace; at 0 the fusion then adds
                # 0 * residual, which is what skipping it gives.
                restored = self.network(face, fidelity)[0]
            else:
                restored = self.network(face)[0]
            return ((restored + 1) / 2).clamp(0, 1)

    return Graph(network, architecture)


def _check_graph(graph: Path, description: FaceRestorerDescription, label: str) -> None:
    """Run the exported graph once: a face in, a face of the same size out."""
    import numpy as np
    import onnxruntime as ort

    side = description.input_size
    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    probe = np.full((1, 3, side, side), 0.5, np.float32)
    feed = {INPUT_NAME: probe}
    if description.fidelity_input:
        feed[description.fidelity_input] = np.array(TRACED_FIDELITY, np.float32)
    (result,) = session.run([OUTPUT_NAME], feed)
    if result.shape != probe.shape or not np.isfinite(result).all():
        raise ModelError(f"'{label}' exported to a graph that does not give back a "
                         f"{side}×{side} face, so Easel cannot use it.")
