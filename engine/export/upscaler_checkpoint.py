"""Exports a Real-ESRGAN-family checkpoint (.safetensors) to an ONNX upscaler through spandrel.

spandrel reads the architecture and its settings from the tensor names and shapes; the network
is traced to ONNX at a fixed scale with dynamic height and width, then run once at another size
to prove the axes really are dynamic. Pickle checkpoints reach this only after
engine.export.pickle_convert has turned them into safetensors.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from engine.errors import Cancelled, ExportUnavailable, ModelError
from engine.export.upscaler import Progress, ShouldStop
from engine.upscale.description import GRAPH_FILE, UpscalerDescription

# The networks whose export is tested; spandrel knows many more (transformers such as SwinIR
# or HAT among them) whose graphs are not known to export and run correctly.
SUPPORTED_ARCHITECTURES = {"ESRGAN": "ESRGAN", "Compact": "Compact"}
EXAMPLE_SIDE = 64  # the traced input's side; any other works, the axes are dynamic
INPUT_NAME, OUTPUT_NAME = "image", "upscaled"
SPANDREL_UNAVAILABLE = ('Importing upscaler checkpoints needs spandrel: pip install '
                        '"spandrel>=0.4,<0.5".')


def export_upscaler_checkpoint(checkpoint: Path, destination: Path,
                               progress: Progress | None = None,
                               should_stop: ShouldStop | None = None,
                               label: str | None = None) -> UpscalerDescription:
    """Export the .safetensors upscaler ``checkpoint`` to ``destination/model.onnx``."""
    from safetensors.torch import load_file

    from engine.export.graphs import export_graph
    from engine.export.safetensors_check import check_safetensors

    label = label or Path(checkpoint).name
    check_safetensors(checkpoint)  # before anything is allocated from the file
    network, description = load_network(load_file(str(checkpoint)), label)
    if should_stop is not None and should_stop():
        raise Cancelled("The model import was cancelled.")
    if progress is not None:
        progress(f"Exporting the {description.summary}", 2, 3)
    side = _round_up(EXAMPLE_SIDE, description.size_multiple)
    example = (torch.rand(1, 3, side, side),)
    export_graph(_UpscalerGraph(network), example, destination / GRAPH_FILE)
    if progress is not None:
        progress("Checking the exported graph", 3, 3)
    _check_scale(destination / GRAPH_FILE, description, label)
    description.save(destination)
    return description


def load_network(state_dict: dict, label: str) -> tuple[torch.nn.Module, UpscalerDescription]:
    """The PyTorch network spandrel builds from ``state_dict`` (eval mode, float32, CPU) and
    the description of the upscaler it makes; ModelError when it is not one Easel runs."""
    spandrel = import_spandrel()
    try:
        loaded = spandrel.ModelLoader(device="cpu").load_from_state_dict(state_dict)
    except spandrel.UnsupportedModelError:
        raise ModelError(f"'{label}' is not a network Easel can import as an upscaler "
                         f"(spandrel does not recognise its weights).") from None
    except Exception as error:  # spandrel's own checks raise plain errors on odd shapes
        raise ModelError(f"'{label}' looks like an upscaler but its weights do not fit "
                         f"together, so it cannot be read.") from error
    architecture = loaded.architecture.id
    name = SUPPORTED_ARCHITECTURES.get(architecture)
    if name is None or not isinstance(loaded, spandrel.ImageModelDescriptor):
        raise ModelError(f"'{label}' is a {architecture} network; Easel imports "
                         f"Real-ESRGAN-family upscalers (ESRGAN, RRDBNet, compact).")
    if loaded.scale < 2 or loaded.input_channels != 3 or loaded.output_channels != 3:
        raise ModelError(f"'{label}' is a {loaded.scale}x network for {loaded.input_channels}"
                         f"-channel pictures; Easel imports RGB upscalers of 2x or more.")
    description = UpscalerDescription(scale=loaded.scale, architecture=name,
                                      input_name=INPUT_NAME, output_name=OUTPUT_NAME,
                                      size_multiple=loaded.size_requirements.multiple_of)
    network = loaded.model.float().eval()
    return network, description


def import_spandrel() -> types.ModuleType:
    """spandrel, or ExportUnavailable in one sentence."""
    try:
        with _torchvision_stand_in():
            import spandrel
    except ImportError:
        raise ExportUnavailable(SPANDREL_UNAVAILABLE) from None
    except RuntimeError as error:  # a torchvision built for another torch fails this way
        raise ExportUnavailable("Importing upscaler checkpoints needs a torchvision built for "
                                "the installed torch, or none at all.") from error
    return spandrel


@contextlib.contextmanager
def _torchvision_stand_in() -> Iterator[None]:
    """spandrel imports torchvision when it loads, for two restoration networks Easel never
    imports (LaMa, RestoreFormer). torchvision must match torch's build exactly, and PyPI has
    no CPU build to pair with a CPU torch, so where it is absent a stand-in that refuses every
    use lets spandrel load. It is removed again at once: nothing else may take torchvision
    for installed."""
    if "torchvision" in sys.modules or importlib.util.find_spec("torchvision") is not None:
        yield
        return
    names = ("torchvision", "torchvision.transforms", "torchvision.transforms.functional")
    stand_ins = {name: _refusing_module(name) for name in names}
    sys.modules.update(stand_ins)
    try:
        yield
    finally:
        for name in names:
            if sys.modules.get(name) is stand_ins[name]:
                del sys.modules[name]


def _refusing_module(name: str) -> types.ModuleType:
    module = types.ModuleType(name)

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise ExportUnavailable("This network needs torchvision, which is not installed.")

    module.__getattr__ = lambda attribute: refuse  # every name is a function that refuses
    return module


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


class _UpscalerGraph(torch.nn.Module):
    """``image`` float32 (1, 3, H, W) in [0, 1] -> ``upscaled`` (1, 3, H x s, W x s)."""

    input_names = (INPUT_NAME,)
    output_names = (OUTPUT_NAME,)
    dynamic_axes = {INPUT_NAME: {2: "height", 3: "width"},
                    OUTPUT_NAME: {2: "upscaled_height", 3: "upscaled_width"}}

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.network(image)


def _check_scale(graph: Path, description: UpscalerDescription, label: str) -> None:
    """The exported graph at a size other than the traced one: dynamic axes really work."""
    import onnxruntime as ort

    side = _round_up(EXAMPLE_SIDE // 2 + 3, description.size_multiple)

    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    probe = np.zeros((1, 3, side, side + description.size_multiple), np.float32)
    (result,) = session.run([description.output_name], {description.input_name: probe})
    expected = (1, 3, side * description.scale,
                (side + description.size_multiple) * description.scale)
    if result.shape != expected:
        raise ModelError(f"'{label}' exported to a graph that does not keep its scale at other "
                         f"sizes, so Easel cannot run it in tiles.")
