"""The UNet that reads image tokens, made from an installed model's plain UNet graph without
torch or the ``onnx`` package.

What diffusers' ``IPAdapterAttnProcessor2_0`` adds to every cross-attention (``attn2``) is
``scale × attention(query, ip_tokens · W_k_ip, ip_tokens · W_v_ip)``, summed into the
attention's output before its ``to_out.0`` projection. In the graph that is: the output of
the ``to_q`` MatMul (the query, before it is split into heads) and the first input of the
``to_out.0`` MatMul (the heads joined again). Both are found by VALUE, not by node names:
``unet/weights_map.json`` (engine.export.weights_map) says which initializer holds each
``attn2.to_q.weight`` and ``attn2.to_out.0.weight``, and the one MatMul that reads it is the
layer's. So the edit works on any UNet the exporter or the optimum import mapped, and refuses
in one sentence one whose attention was fused away (no map).

Per layer the edit inserts, before the ``to_out.0`` MatMul: two MatMuls (tokens × W_k_ip,
W_v_ip), the head split (Reshape, Transpose), scores × 1/√head_dim, Softmax, × values, the
heads joined, × ``ip_scale`` and an Add into the attention's output. New graph inputs:
``ip_tokens`` (batch, tokens, cross_attention_dim) and ``ip_scale`` (batch,): one scale per
sample, so the denoising loop's batch splitting (``engine.runtime.binding.BoundCalls``)
slices it like every other input. Every existing node and initializer stays byte for byte
(LoRAs still find their weights); the adapter's weights go to ``ip_adapter.data`` beside
the graph, the UNet's own external weights are hard-linked (engine.runtime.onnx_edit), so
ControlNet's edit applies to the result as to any UNet.
"""

from __future__ import annotations

import json
import math
import mmap
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.control.unet_variant import make_control_unet
from engine.errors import ModelError
from engine.export.safetensors_check import LENGTH_BYTES, check_safetensors
from engine.runtime.onnx_edit import (
    FLOAT,
    FLOAT16,
    GRAPH_FILE,
    GRAPH_INITIALIZER,
    GRAPH_INPUT,
    GRAPH_NODE,
    Graph,
    Piece,
    copy_sidecars,
    external_tensor,
    field,
    link_or_copy,
    made_once,
    mapped_graph,
    node_proto,
    process_folder,
    raw_tensor,
    spans,
    value_info,
    with_graph,
    with_inputs,
    write_atomically,
)
from engine.runtime.onnx_weights import find_tensors

IP_TOKENS = "ip_tokens"
IP_SCALE = "ip_scale"
DATA_FILE = "ip_adapter.data"
MAP_FILE = "weights_map.json"
_SIDECARS = ("config.json", MAP_FILE)
_LAYER = re.compile(r"(.+\.attn2)\.(to_q|to_out\.0)\.weight")
_IP_WEIGHT = re.compile(r"(\d+)\.to_([kv])_ip\.weight")
_SECTIONS = {"down_blocks": 0, "up_blocks": 1, "mid_block": 2}  # diffusers' module order
_NUMPY = {FLOAT: np.dtype("<f4"), FLOAT16: np.dtype("<f2")}
_ALIGN = 64
REFUSAL = ("this model's UNet graph does not name its attention weights (it has no usable "
           "unet/weights_map.json), so image prompts cannot be added to it")


@dataclass(frozen=True)
class _Layer:
    module: str  # "down_blocks.1.attentions.0.transformer_blocks.0.attn2"
    query: str  # the to_q MatMul's output
    out_node: int  # the to_out.0 MatMul's node index
    heads: int
    inner: int
    key: np.ndarray  # to_k_ip weight (inner, cross_attention_dim), torch's layout
    value: np.ndarray


# --- where the variant is --------------------------------------------------------------------

def ip_unet_path(model_folder: Path, model_hash: str, adapter_folder: Path, adapter_hash: str,
                 cache: Path | None, control: bool = False) -> Path:
    """The UNet graph of this model with this adapter's image branch: made on first call in
    ``cache/ip-unet/<model hash>-<adapter hash>/`` (``control/`` under it for the one that
    also takes ControlNet residuals); a temporary folder for the process without a cache."""
    root = Path(cache) / "ip-unet" if cache is not None else process_folder("easel-ip-unet-")
    folder = root / f"{model_hash}-{adapter_hash}"
    if not (folder / GRAPH_FILE).is_file():
        made_once(folder, lambda staging: make_ip_unet(
            Path(model_folder) / "unet" / GRAPH_FILE, Path(adapter_folder), staging))
    if not control:
        return folder / GRAPH_FILE
    controlled = folder / "control"
    if not (controlled / GRAPH_FILE).is_file():
        made_once(controlled, lambda staging: make_control_unet(folder / GRAPH_FILE, staging))
    return controlled / GRAPH_FILE


# --- the edit ----------------------------------------------------------------------------------

def make_ip_unet(unet_graph: Path, adapter_folder: Path, destination: Path) -> None:
    """Write ``destination/model.onnx``: ``unet_graph`` with the image branch of the adapter
    installed in ``adapter_folder`` (its ``ip_adapter.safetensors``) in every
    cross-attention. ModelError in one sentence when they do not fit together."""
    from engine.image_prompt.description import WEIGHTS_FILE

    unet_graph, destination = Path(unet_graph), Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    weights = read_ip_weights(Path(adapter_folder) / WEIGHTS_FILE)
    with mapped_graph(unet_graph) as (data, graph):
        layers, dtype = _layers(data, graph, unet_graph.parent, weights)
        for location in graph.external_locations:
            link_or_copy(unet_graph.parent, location, destination)
        initializers = _write_weights(layers, dtype, destination / DATA_FILE)
        pieces = _edited(data, graph, layers, dtype, initializers)
        write_atomically(destination / GRAPH_FILE, pieces)
        del pieces  # views of the mapped file, which closes next
    copy_sidecars(unet_graph.parent, destination, _SIDECARS)


def read_ip_weights(path: Path) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """The adapter's (to_k_ip, to_v_ip) weights by their number in its file, as float32."""
    tensors = check_safetensors(path)
    with path.open("rb") as file:
        (size,) = struct.unpack("<Q", file.read(LENGTH_BYTES))
        header = json.loads(file.read(size))
    found: dict[int, dict[str, np.ndarray]] = {}
    for name, info in tensors.items():
        match = _IP_WEIGHT.fullmatch(name)
        if match is None:
            continue
        begin = LENGTH_BYTES + size + header[name]["data_offsets"][0]
        dtype = {"F32": "<f4", "F16": "<f2"}.get(info.dtype)
        if dtype is None or len(info.shape) != 2:
            raise ModelError(f"The IP-Adapter weights {path.name} are damaged.")
        values = np.fromfile(path, dtype=dtype, count=math.prod(info.shape), offset=begin)
        found.setdefault(int(match.group(1)), {})[match.group(2)] = (
            values.astype(np.float32).reshape(info.shape))
    if not found or any(set(pair) != {"k", "v"} for pair in found.values()):
        raise ModelError(f"The IP-Adapter weights {path.name} are damaged.")
    return {number: (pair["k"], pair["v"]) for number, pair in sorted(found.items())}


def _layers(data: mmap.mmap, graph: Graph, folder: Path,
            weights: dict[int, tuple[np.ndarray, np.ndarray]]) -> tuple[list[_Layer], np.dtype]:
    """Each cross-attention in diffusers' order (the order the adapter numbers them), with
    its query, its output's node and the adapter's weights for it."""
    modules = _attention_modules(folder)
    if len(modules) != len(weights):
        raise ModelError(f"The IP-Adapter has {len(weights)} attention layers and this "
                         f"model's UNet has {len(modules)}, so they do not fit together.")
    readers = _matmul_readers(graph)
    heads = _heads(folder)
    layers = []
    for (module, names), (key, value) in zip(modules, weights.values(), strict=True):
        query_node, out_node = readers.get(names["to_q"]), readers.get(names["to_out.0"])
        if query_node is None or out_node is None:
            raise ModelError(f"{REFUSAL[0].upper()}{REFUSAL[1:]}.")
        inner = names["inner"]
        if key.shape[0] != inner or value.shape != key.shape:
            raise ModelError("The IP-Adapter's attention layers do not have this model's "
                             "sizes, so it is for another model.")
        layers.append(_Layer(module, graph.nodes[query_node].outputs[0], out_node,
                             heads(module), inner, key, value))
    tensor = find_tensors(data, {modules[0][1]["to_q"]}).get(modules[0][1]["to_q"])
    if tensor is None or tensor.data_type not in _NUMPY:
        raise ModelError(f"{REFUSAL[0].upper()}{REFUSAL[1:]}.")
    return layers, _NUMPY[tensor.data_type]


def _attention_modules(folder: Path) -> list[tuple[str, dict]]:
    """Each ``attn2`` module named in the weights map, sorted as diffusers registers them
    (down blocks, up blocks, then the mid block), with its two initializers."""
    try:
        entries = json.loads((folder / MAP_FILE).read_text(encoding="utf-8"))["weights"]
    except (OSError, ValueError, KeyError, TypeError):
        raise ModelError(f"{REFUSAL[0].upper()}{REFUSAL[1:]}.") from None
    modules: dict[str, dict] = {}
    for name, entry in entries.items():
        match = _LAYER.fullmatch(name)
        if match is None:
            continue
        module = modules.setdefault(match.group(1), {})
        module[match.group(2)] = entry["initializer"]
        if match.group(2) == "to_q":
            module["inner"] = int(entry["shape"][0])
    complete = [(name, found) for name, found in modules.items()
                if {"to_q", "to_out.0", "inner"} <= found.keys()]
    if not complete or len(complete) != len(modules):
        raise ModelError(f"{REFUSAL[0].upper()}{REFUSAL[1:]}.")
    return sorted(complete, key=lambda item: _module_order(item[0]))


def _module_order(module: str) -> tuple:
    section = module.split(".", 1)[0]
    numbers = tuple(int(part) for part in module.split(".") if part.isdigit())
    return (_SECTIONS.get(section, 3), *numbers)


def _matmul_readers(graph: Graph) -> dict[str, int]:
    """Initializer -> the one MatMul that reads it as its weight (input 1)."""
    readers: dict[str, list[int]] = {}
    for index, node in enumerate(graph.nodes):
        if node.op_type == "MatMul" and len(node.inputs) == 2 \
                and node.inputs[1] in graph.initializers:
            readers.setdefault(node.inputs[1], []).append(index)
    return {name: found[0] for name, found in readers.items() if len(found) == 1}


def _heads(folder: Path):
    """module -> its attention heads, from the UNet's diffusers config (diffusers reads
    ``attention_head_dim`` as the number of heads when ``num_attention_heads`` is unset)."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        heads = config.get("num_attention_heads") or config["attention_head_dim"]
        blocks = len(config["block_out_channels"])
    except (OSError, ValueError, KeyError, TypeError):
        raise ModelError("This model's UNet has no readable config.json, so image prompts "
                         "cannot be added to it.") from None
    heads = [heads] * blocks if isinstance(heads, int) else list(heads)

    def of(module: str) -> int:
        parts = module.split(".")
        if parts[0] == "down_blocks":
            return int(heads[int(parts[1])])
        if parts[0] == "up_blocks":
            return int(heads[::-1][int(parts[1])])
        return int(heads[-1])

    return of


# --- writing ------------------------------------------------------------------------------------

def _write_weights(layers: list[_Layer], dtype: np.dtype, path: Path
                   ) -> dict[str, tuple[tuple[int, ...], int, int]]:
    """The adapter's weights in MatMul's (in, out) layout, one aligned block each; returns
    initializer name -> (dims, offset, length)."""
    placed = {}
    with path.open("wb") as file:
        for number, layer in enumerate(layers):
            for role, weight in (("k", layer.key), ("v", layer.value)):
                raw = np.ascontiguousarray(weight.T, dtype=dtype).tobytes()
                offset = (file.tell() + _ALIGN - 1) // _ALIGN * _ALIGN
                file.seek(offset)
                file.write(raw)
                placed[_weight_name(number, role)] = (weight.T.shape, offset, len(raw))
    return placed


def _weight_name(number: int, role: str) -> str:
    return f"ip_adapter.{number}.to_{role}_ip.weight"


def _edited(data: mmap.mmap, graph: Graph, layers: list[_Layer], dtype: np.dtype,
            initializers: dict) -> list[Piece]:
    view = memoryview(data)
    by_out = {layer.out_node: (number, layer) for number, layer in enumerate(layers)}
    by_start = {node.start: index for index, node in enumerate(graph.nodes)}
    first = min(by_out)
    pieces: list[Piece] = []
    for number, field_start, start, end in spans(data, graph.start, graph.end):
        index = by_start.get(start) if number == GRAPH_NODE else None
        if index == first:
            pieces.append(field(GRAPH_NODE, node_proto(
                "Reshape", [IP_SCALE, "/ip_adapter/scale_shape"], ["/ip_adapter/scale"])))
        if index in by_out:
            layer_number, layer = by_out[index]
            added = _layer_nodes(layer_number, layer, graph.nodes[index].inputs[0])
            pieces.extend(field(GRAPH_NODE, node) for node in added)
            node = graph.nodes[index]
            replaced = [f"/ip_adapter/{layer_number}/sum", *node.inputs[1:]]
            pieces.append(field(GRAPH_NODE, with_inputs(data, node, replaced)))
        else:
            pieces.append(view[field_start:end])
    pieces.extend(field(GRAPH_INITIALIZER, tensor)
                  for tensor in _constants(layers, dtype, initializers))
    element = _element(dtype)
    pieces.append(field(GRAPH_INPUT, value_info(IP_TOKENS, element, [
        "batch", "ip_token_count", layers[0].key.shape[1]])))
    pieces.append(field(GRAPH_INPUT, value_info(IP_SCALE, element, ["batch"])))
    return with_graph(data, pieces)


def _element(dtype: np.dtype) -> int:
    return FLOAT16 if dtype == np.float16 else FLOAT


def _layer_nodes(number: int, layer: _Layer, attention_output: str) -> list[bytes]:
    """The image branch of one cross-attention, ending in ``/ip_adapter/{n}/sum``."""
    p = f"/ip_adapter/{number}"
    head_dim = layer.inner // layer.heads
    heads = f"/ip_adapter/heads_{layer.heads}_{head_dim}"
    joined = f"/ip_adapter/joined_{layer.inner}"
    return [
        node_proto("MatMul", [IP_TOKENS, _weight_name(number, "k")], [f"{p}/key"]),
        node_proto("MatMul", [IP_TOKENS, _weight_name(number, "v")], [f"{p}/value"]),
        node_proto("Reshape", [layer.query, heads], [f"{p}/query_heads"]),
        node_proto("Transpose", [f"{p}/query_heads"], [f"{p}/q"], perm=[0, 2, 1, 3]),
        node_proto("Reshape", [f"{p}/key", heads], [f"{p}/key_heads"]),
        node_proto("Transpose", [f"{p}/key_heads"], [f"{p}/k"], perm=[0, 2, 3, 1]),
        node_proto("Reshape", [f"{p}/value", heads], [f"{p}/value_heads"]),
        node_proto("Transpose", [f"{p}/value_heads"], [f"{p}/v"], perm=[0, 2, 1, 3]),
        node_proto("MatMul", [f"{p}/q", f"{p}/k"], [f"{p}/scores"]),
        node_proto("Mul", [f"{p}/scores", f"/ip_adapter/softmax_scale_{head_dim}"],
              [f"{p}/scaled"]),
        node_proto("Softmax", [f"{p}/scaled"], [f"{p}/weights"], axis=-1),
        node_proto("MatMul", [f"{p}/weights", f"{p}/v"], [f"{p}/attended"]),
        node_proto("Transpose", [f"{p}/attended"], [f"{p}/attended_t"], perm=[0, 2, 1, 3]),
        node_proto("Reshape", [f"{p}/attended_t", joined], [f"{p}/image"]),
        node_proto("Mul", [f"{p}/image", "/ip_adapter/scale"], [f"{p}/weighted"]),
        node_proto("Add", [attention_output, f"{p}/weighted"], [f"{p}/sum"]),
    ]


def _constants(layers: list[_Layer], dtype: np.dtype, initializers: dict) -> list[bytes]:
    """The adapter's weights (external) and the small shape and scale constants."""
    tensors = [external_tensor(name, dims, _element(dtype), DATA_FILE, offset, length)
               for name, (dims, offset, length) in initializers.items()]
    tensors.append(raw_tensor("/ip_adapter/scale_shape", np.array([-1, 1, 1], np.int64)))
    for heads, head_dim in sorted({(layer.heads, layer.inner // layer.heads)
                                   for layer in layers}):
        tensors.append(raw_tensor(f"/ip_adapter/heads_{heads}_{head_dim}",
                                   np.array([0, -1, heads, head_dim], np.int64)))
    for inner in sorted({layer.inner for layer in layers}):
        tensors.append(raw_tensor(f"/ip_adapter/joined_{inner}",
                                   np.array([0, -1, inner], np.int64)))
    for head_dim in sorted({layer.inner // layer.heads for layer in layers}):
        scale = np.array(1.0 / math.sqrt(head_dim), dtype=dtype)  # as torch's sdpa default
        tensors.append(raw_tensor(f"/ip_adapter/softmax_scale_{head_dim}", scale))
    return tensors
