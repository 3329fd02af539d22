"""``weights_map.json``: which ONNX initializer holds each PyTorch weight of an exported graph.

The TorchScript exporter keeps a convolution's weight under its parameter name, but a
``Linear`` becomes a ``MatMul`` whose weight is constant-folded into a transposed copy with a
made-up name (``onnx::MatMul_2402``). A LoRA names its layers by the PyTorch modules, so the
engine needs the way back. Names and node scopes are the exporter's business and change with
its versions; the values do not. So the map is built by value, while the PyTorch module is
still in memory: every weight (2-D or more) is found among the graph's initializers as it is
or transposed. A value two weights share (or two initializers hold) is left out: a LoRA layer
on it then counts as unmatched instead of being merged into a guess.

The file sits beside ``model.onnx``:
``{"format": 1, "weights": {"down_blocks.1.attentions.0.proj_in.weight":
{"initializer": "unet.down_blocks...", "transposed": false, "shape": [320, 320, 1, 1]},
...}}``, the shape being PyTorch's (a transposed initializer holds its transpose).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper
from onnx.external_data_helper import uses_external_data

MAP_FILE = "weights_map.json"
MAP_FORMAT = 1
# The graphs a LoRA changes; the VAE's are never mapped.
MAPPED_COMPONENTS = ("text_encoder", "text_encoder_2", "unet")
_NUMPY_TYPES = {TensorProto.FLOAT: np.float32, TensorProto.FLOAT16: np.float16}


def write_weights_map(module, graph: Path) -> int:
    """Write ``weights_map.json`` beside the exported ``graph`` for the PyTorch ``module`` it
    was exported from; returns how many weights were found."""
    graph = Path(graph)
    text_encoder = graph.parent.name.startswith("text_encoder")
    by_value = _initializers_by_value(graph)
    weights: dict[str, dict] = {}
    claimed: dict[str, str] = {}  # digest -> the weight that claimed it
    for name, parameter in module.state_dict().items():
        if parameter.ndim < 2 or not parameter.is_floating_point():
            continue
        found = _find(parameter.detach().cpu().float().numpy(), by_value)
        if found is None:
            continue
        digest, initializer, transposed = found
        if digest in claimed:  # two weights with one value: neither can be told apart
            weights.pop(claimed[digest], None)
            continue
        claimed[digest] = name
        weights[_checkpoint_name(name) if text_encoder else name] = {
            "initializer": initializer, "transposed": transposed,
            "shape": list(parameter.shape)}
    text = json.dumps({"format": MAP_FORMAT, "weights": weights}, indent=0, sort_keys=True)
    (graph.parent / MAP_FILE).write_text(text + "\n", encoding="utf-8")
    return len(weights)


def _checkpoint_name(name: str) -> str:
    """A CLIP text encoder weight as checkpoints and LoRAs name it: transformers 5 dropped the
    ``text_model.`` level from CLIPTextModel (not from CLIPTextModelWithProjection)."""
    return name if name.startswith(("text_model.", "text_projection.")) else (
        f"text_model.{name}")


def _find(array: np.ndarray, by_value: dict[str, list[str]]
          ) -> tuple[str, str, bool] | None:
    candidates = [(array, False)]
    if array.ndim == 2:
        candidates.append((array.T, True))  # a Linear folded into MatMul's (in, out) layout
    for candidate, transposed in candidates:
        digest = _digest(candidate)
        names = by_value.get(digest)
        if names is not None and len(names) == 1:
            return digest, names[0], transposed
    return None


def _initializers_by_value(graph: Path) -> dict[str, list[str]]:
    """Float initializers of 2-D or more, by a digest of shape and values (one at a time in
    memory: a real UNet's weights are 3.4 GB)."""
    model = onnx.load(str(graph), load_external_data=False)
    by_value: dict[str, list[str]] = {}
    for tensor in model.graph.initializer:
        dtype = _NUMPY_TYPES.get(tensor.data_type)
        if dtype is None or len(tensor.dims) < 2:
            continue
        array = _tensor_values(tensor, graph.parent, dtype).astype(np.float32)
        by_value.setdefault(_digest(array), []).append(tensor.name)
    return by_value


def _tensor_values(tensor: TensorProto, folder: Path, dtype: type) -> np.ndarray:
    if not uses_external_data(tensor):
        return numpy_helper.to_array(tensor)
    entries = {entry.key: entry.value for entry in tensor.external_data}
    itemsize = np.dtype(dtype).itemsize
    offset = int(entries.get("offset", 0))
    length = int(entries.get("length", int(np.prod(tensor.dims)) * itemsize))
    data = np.fromfile(folder / entries["location"], dtype=np.uint8, count=length,
                       offset=offset)
    return data.view(dtype).reshape(tuple(tensor.dims))


def _digest(array: np.ndarray) -> str:
    contiguous = np.ascontiguousarray(array, dtype=np.float32)
    digest = hashlib.blake2b(str(contiguous.shape).encode(), digest_size=16)
    digest.update(contiguous.tobytes())
    return digest.hexdigest()


# --- graphs made elsewhere (optimum, Amuse): no PyTorch weights to compare with ----------------

_WEIGHT_INPUTS = {"MatMul": 1, "Gemm": 1, "Conv": 1}
# The wrapper modules exporters put around a component (ours: engine.export.graphs).
_WRAPPERS = ("unet", "text_encoder")


def write_weights_map_from_names(graph: Path) -> int:
    """Write ``weights_map.json`` for a graph exported by another tool, from the module scopes
    torch's exporter writes into node names (``/down_blocks.1/attentions.0/…/to_q/MatMul``):
    each MatMul, Gemm or Conv weight used by that one node is named after its module. A
    graph without such names (already fused by some optimiser) gets an empty map, so a LoRA
    on it is refused with the count of layers that found no weight. Returns the count."""
    graph = Path(graph)
    model = onnx.load(str(graph), load_external_data=False)
    shapes = {tensor.name: tuple(tensor.dims) for tensor in model.graph.initializer
              if tensor.data_type in _NUMPY_TYPES and len(tensor.dims) >= 2}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in set(node.input) & shapes.keys():
            consumers.setdefault(name, []).append(node)
    text_encoder = graph.parent.name.startswith("text_encoder")
    weights: dict[str, dict] = {}
    doubled: set[str] = set()
    for initializer, nodes in consumers.items():
        found = _named_weight(nodes, initializer, shapes[initializer])
        if found is None:
            continue
        name, entry = found
        name = _checkpoint_name(name) if text_encoder else name
        if name in weights:
            doubled.add(name)
        weights[name] = entry
    for name in doubled:  # two initializers claim one module: trust neither
        del weights[name]
    text = json.dumps({"format": MAP_FORMAT, "weights": weights}, indent=0, sort_keys=True)
    (graph.parent / MAP_FILE).write_text(text + "\n", encoding="utf-8")
    return len(weights)


def _named_weight(nodes: list[onnx.NodeProto], initializer: str, dims: tuple[int, ...]
                  ) -> tuple[str, dict] | None:
    if len(nodes) != 1:
        return None
    (node,) = nodes
    position = _WEIGHT_INPUTS.get(node.op_type)
    if position is None or len(node.input) <= position or node.input[position] != initializer:
        return None
    scopes = node.name.split("/")
    if len(scopes) < 3 or scopes[0] != "":
        return None  # no module scope in the name
    modules = scopes[1:-1]
    if modules[0] in _WRAPPERS and len(modules) > 1:
        modules = modules[1:]
    if node.op_type == "Gemm":
        transposed = not any(attribute.name == "transB" and attribute.i
                             for attribute in node.attribute)
    else:
        transposed = node.op_type == "MatMul"
    if transposed and len(dims) != 2:
        return None
    shape = list(reversed(dims)) if transposed else list(dims)
    return ".".join(modules) + ".weight", {"initializer": initializer, "transposed": transposed,
                                           "shape": shape}
