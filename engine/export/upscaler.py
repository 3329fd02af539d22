"""Installs super-resolution networks ("upscalers") as ONNX model folders the engine runs.

Three forms come in, told apart by content (engine.export.formats):
- a checkpoint of a Real-ESRGAN-family network, ``.safetensors`` or ``.pth``: spandrel reads
  the architecture and its settings from the tensor names and shapes, and the network is
  exported to ONNX at a fixed scale with dynamic height and width. A ``.pth`` is a pickle, so it
  is first converted to safetensors by engine.export.pickle_convert (``torch.load`` with
  ``weights_only=True`` in a separate process, no fallback): nothing here ever unpickles;
- an ONNX upscaler, as a lone ``.onnx`` file or in Amuse's layout (a folder with ``model.onnx``
  at its top): checked like any imported graph (operators, external weights, no code beside
  it), its scale measured by running it once on a small picture, then copied as it is.

The destination folder gets ``model.onnx`` (plus any weights file it names) and ``easel.json``
with the upscaler's description; the checksum manifest is the model store's job.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from engine.errors import ModelError
from engine.export.formats import ONNX_UPSCALER, PICKLE, SAFETENSORS, detect_format
from engine.upscale.description import GRAPH_FILE, UpscalerDescription

Progress = Callable[[str, int, int], None]
ShouldStop = Callable[[], bool]

PROBE_SIDE = 64  # the side of the picture an ONNX upscaler's scale is measured on


def import_upscaler(source: Path, destination: Path, progress: Progress | None = None,
                    should_stop: ShouldStop | None = None) -> UpscalerDescription:
    """Install the upscaler ``source`` (checkpoint, ONNX file or Amuse folder) into the empty
    or absent folder ``destination``; ModelError says in one sentence why one is refused."""
    source, destination = Path(source), Path(destination)
    kind = detect_format(source)
    destination.mkdir(parents=True, exist_ok=True)
    if kind == ONNX_UPSCALER:
        return import_onnx_upscaler(source, destination, progress)
    if kind not in (SAFETENSORS, PICKLE):
        raise ModelError(f"'{source.name}' is not an upscaler: it is a Stable Diffusion model.")
    from engine.export.upscaler_checkpoint import export_upscaler_checkpoint

    if kind == SAFETENSORS:
        return export_upscaler_checkpoint(source, destination, progress, should_stop)
    from engine.export.pickle_convert import pickle_to_safetensors

    # Inside the destination, so an import killed half-way leaves nothing the model store
    # does not clear (it removes abandoned import folders whole).
    with tempfile.TemporaryDirectory(prefix=".convert-", dir=destination) as scratch:
        converted = Path(scratch) / f"{source.name}.safetensors"
        if progress is not None:
            progress("Reading the checkpoint's tensors", 1, 3)
        pickle_to_safetensors(source, converted)
        return export_upscaler_checkpoint(converted, destination, progress, should_stop,
                                          label=source.name)


# --- ONNX upscalers (a lone graph, or Amuse's folder) -----------------------------------------

def import_onnx_upscaler(source: Path, destination: Path,
                         progress: Progress | None = None) -> UpscalerDescription:
    """Check the ONNX upscaler ``source`` and copy it into ``destination`` as it is."""
    import onnx

    from engine.export.onnx_checks import _tensor_specs, check_source_graph

    folder = source if source.is_dir() else source.parent
    graph = source / GRAPH_FILE if source.is_dir() else source
    label = f"The upscaler '{source.name}'"
    model, external = check_source_graph(graph, source, label, folder)
    inputs, outputs = _tensor_specs(model)
    if len(inputs) != 1 or not outputs:
        raise ModelError(f"{label} takes {len(inputs)} inputs; an upscaler takes one picture.")
    (image,) = inputs.values()
    upscaled = next(iter(outputs.values()))
    for spec in (image, upscaled):
        if len(spec.shape) != 4 or spec.element_type != onnx.TensorProto.FLOAT or \
                spec.shape[1] not in (3, None) and not isinstance(spec.shape[1], str):
            raise ModelError(f"{label} does not take and give float32 RGB pictures "
                             f"(batch, 3, height, width), so it is not an upscaler Easel runs.")
    fixed = image.shape[2] if isinstance(image.shape[2], int) else None
    if progress is not None:
        progress("Measuring the upscaler's scale", 1, 2)
    scale = _measured_scale(graph, image.name, upscaled.name, fixed, label)
    description = UpscalerDescription(scale=scale, architecture="ONNX", input_name=image.name,
                                      output_name=upscaled.name, tile_size=fixed)
    if progress is not None:
        progress(f"Copying the {description.summary}", 2, 2)
    shutil.copyfile(graph, destination / GRAPH_FILE)
    for name in external:  # plain file names beside the graph, checked above
        shutil.copyfile(graph.parent / name, destination / name)
    description.save(destination)
    return description


def _measured_scale(graph: Path, input_name: str, output_name: str, fixed: int | None,
                    label: str) -> int:
    """Run the graph once on a small random picture and compare the sizes."""
    import onnxruntime as ort

    side = fixed or PROBE_SIDE
    try:
        session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
        probe = np.random.default_rng(0).random((1, 3, side, side), dtype=np.float32)
        (result,) = session.run([output_name], {input_name: probe})
    except Exception as error:  # onnxruntime's errors share no base class
        raise ModelError(f"{label} does not run on a {side}×{side} picture, so it cannot be "
                         f"used as an upscaler.") from error
    height, width = result.shape[2:] if result.ndim == 4 else (0, 0)
    scale = height // side
    if result.ndim != 4 or result.shape[1] != 3 or scale < 2 or height != width or \
            height != scale * side:
        raise ModelError(f"{label} turns a {side}×{side} picture into one of shape "
                         f"{tuple(result.shape)}, not a 2x or larger RGB picture.")
    return scale
