"""Each exported attention of a UNet as one ONNX Runtime ``MultiHeadAttention`` node.

torch's exporter writes ``scaled_dot_product_attention`` as its definition: the projected
query, key and value split into heads (Reshape, Transpose), query and key each scaled by
sqrt(1/sqrt(head_dim)), ``MatMul``, ``Softmax``, ``MatMul`` and the heads joined again
(Transpose, Reshape). Run that way every head's full score matrix is held in memory: at
512×512 that is 4096×4096 per head, and on the CPU the UNet call is memory-bound there.
``com.microsoft.MultiHeadAttention`` (CPU and CUDA kernels in every onnxruntime) computes the
same from the projected query, key and value without holding the scores (flash attention on
the CPU). A batch-2 512×512 SD 1.5 UNet call on 2 Zen 4 cores took 0.92× as long on a quiet
machine (0.68× while other jobs shared it), 256×256 0.98× (tests/benchmarks/unet_matmul_cpu.py,
``levers --variants mha``).

Only the attention core is replaced. The projections stay plain MatMuls with their weights
under the same initializer names, so LoRAs (engine.lora), the ControlNet UNet variant and the
IP-Adapter edit (which find the ``to_q`` output and the ``to_out.0`` input by weight) work on
the rewritten graph as before. An attention that is not exactly that pattern (another scale,
a mask, other operators between) is left as it is.

Each attention's head count comes from the exporter's own head split (engine.export.fusion
``head_splits``): SD 1.x has 8 heads everywhere, SD 2.x and SDXL 64-wide heads, so their
counts differ per block. The scale the exporter computes from the shapes at run time is
evaluated here with placeholder sizes and must be MultiHeadAttention's default,
1/sqrt(head_dim).
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import helper, numpy_helper
from onnx.external_data_helper import uses_external_data

from engine.errors import ModelError
from engine.export.fusion import HeadSplit, constant_value, head_splits

log = logging.getLogger(__name__)

MS_DOMAIN = "com.microsoft"
# Two sets of placeholder sizes (batch, query tokens, key tokens): a scale or a shape that
# changes between them depends on more than the head size, so it is not the pattern.
_PLACEHOLDERS = ((3, 5, 7), (2, 11, 13))
_HEADS_PERM = [0, 2, 1, 3]  # [batch, tokens, heads, dim] <-> [batch, heads, tokens, dim]
_KEY_PERM = [0, 2, 3, 1]  # the key transposed for Q·Kᵀ: [batch, heads, dim, tokens]


@dataclass(frozen=True)
class _Core:
    """One matched attention core, the tensors named in the exporter's graph."""

    query: HeadSplit
    key: HeadSplit
    value: HeadSplit
    tensors: dict[str, str]  # role -> tensor name, for the shape evaluation
    scales: tuple[str, str]  # the query's and the key's scale tensors
    merge: onnx.NodeProto  # the Reshape that joins the heads: the MHA takes its place
    merge_shape: str
    name: str


def rewrite_unet_attention(graph: Path) -> int:
    """Rewrite the UNet graph file ``graph`` in place (see ``attention_to_mha``); the weights
    in an external data file beside it are neither read nor changed. Returns the count of
    attentions replaced."""
    graph = Path(graph)
    try:
        model = onnx.load(str(graph), load_external_data=False)
    except (OSError, DecodeError) as error:
        raise ModelError(f"The exported UNet graph {graph} cannot be read.") from error
    replaced = attention_to_mha(model)
    if replaced == 0:
        return 0
    # Written beside the graph and renamed over it, so a failure never leaves half a graph.
    handle, scratch = tempfile.mkstemp(prefix=".attention-", suffix=".onnx", dir=graph.parent)
    os.close(handle)
    try:
        onnx.save_model(model, scratch)  # external tensors keep their location and offsets
        os.replace(scratch, graph)
    finally:
        if os.path.exists(scratch):
            os.unlink(scratch)
    return replaced


def attention_to_mha(model: onnx.ModelProto) -> int:
    """Replace each attention core of ``model`` with one ``com.microsoft.MultiHeadAttention``
    on its projected query, key and value, in place; returns how many were replaced. The
    graph stays topologically sorted; attentions that do not match exactly are kept."""
    graph = model.graph
    producers = {output: node for node in graph.node for output in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    splits = {split.reshape.output[0]: split for split in head_splits(model)}
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    softmaxes = [node for node in graph.node if node.op_type == "Softmax"]
    replaced = 0
    for softmax in softmaxes:
        core = _match(softmax, producers, consumers, splits)
        if core is None or not _scale_and_shape_fit(core, producers, initializers):
            continue
        heads = core.query.heads
        # In the merge Reshape's place: everything it needs is computed before it.
        core.merge.CopyFrom(helper.make_node(
            "MultiHeadAttention",
            [core.query.projection.output[0], core.key.projection.output[0],
             core.value.projection.output[0]],
            [core.merge.output[0]], name=core.name, domain=MS_DOMAIN, num_heads=heads))
        replaced += 1
    skipped = len(softmaxes) - replaced
    if skipped:
        log.info("%d of %d attentions kept as they were (not the exported pattern)",
                 skipped, len(softmaxes))
    if replaced:
        _drop_dead(model)
        if not any(opset.domain == MS_DOMAIN for opset in model.opset_import):
            model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return replaced


# --- matching -----------------------------------------------------------------------------------

def _match(softmax: onnx.NodeProto, producers: dict, consumers: dict,
           splits: dict[str, HeadSplit]) -> _Core | None:
    """The attention core around ``softmax``, or None when any part differs."""
    if _attribute(softmax, "axis", -1) not in (-1, 3):
        return None
    scores = producers.get(softmax.input[0])
    weighted = _only_consumer(softmax.output[0], consumers)
    if scores is None or scores.op_type != "MatMul" or weighted is None \
            or weighted.op_type != "MatMul" or weighted.input[0] != softmax.output[0]:
        return None
    if _only_consumer(scores.output[0], consumers) is not softmax:
        return None
    query = _scaled_heads(scores.input[0], _HEADS_PERM, producers, consumers, splits)
    key = _scaled_heads(scores.input[1], _KEY_PERM, producers, consumers, splits)
    value = _heads(weighted.input[1], _HEADS_PERM, producers, consumers, splits)
    joined = _only_consumer(weighted.output[0], consumers)
    if None in (query, key, value) or joined is None or joined.op_type != "Transpose" \
            or list(_attribute(joined, "perm", [])) != _HEADS_PERM:
        return None
    merge = _only_consumer(joined.output[0], consumers)
    if merge is None or merge.op_type != "Reshape" or merge.input[0] != joined.output[0]:
        return None
    (q_split, q_heads, q_scaled, q_scale), (k_split, k_heads, k_scaled, k_scale) = query, key
    v_split, v_heads = value
    if not (q_split.heads == k_split.heads == v_split.heads
            and q_split.head_dim == k_split.head_dim == v_split.head_dim):
        return None
    tensors = {
        "query_input": q_split.projection.input[0], "key_input": k_split.projection.input[0],
        "value_input": v_split.projection.input[0], "query": q_split.projection.output[0],
        "key": k_split.projection.output[0], "value": v_split.projection.output[0],
        "query_split": q_split.reshape.output[0], "key_split": k_split.reshape.output[0],
        "value_split": v_split.reshape.output[0], "query_heads": q_heads,
        "key_heads": k_heads, "value_heads": v_heads, "query_scaled": q_scaled,
        "key_scaled": k_scaled, "scores": scores.output[0], "weights": softmax.output[0],
        "attended": weighted.output[0], "joined": joined.output[0]}
    name = (softmax.name.rsplit("/", 1)[0] + "/MultiHeadAttention" if "/" in softmax.name
            else f"{merge.output[0]}/MultiHeadAttention")
    return _Core(q_split, k_split, v_split, tensors, (q_scale, k_scale), merge,
                 merge.input[1], name)


def _scaled_heads(name: str, perm: list[int], producers: dict, consumers: dict,
                  splits: dict[str, HeadSplit]) -> tuple[HeadSplit, str, str, str] | None:
    """``Mul(Transpose(head split), scale)``: (split, transposed, scaled, scale) or None."""
    mul = producers.get(name)
    if mul is None or mul.op_type != "Mul" or len(mul.input) != 2 \
            or _only_consumer(name, consumers) is None:
        return None
    for heads_input, scale in (mul.input, mul.input[::-1]):
        found = _heads(heads_input, perm, producers, consumers, splits)
        if found is not None:
            return found[0], found[1], name, scale
    return None


def _heads(name: str, perm: list[int], producers: dict, consumers: dict,
           splits: dict[str, HeadSplit]) -> tuple[HeadSplit, str] | None:
    """``Transpose(perm)`` of a head split read by one operator (and shape reads): (split,
    transposed) or None."""
    transpose = producers.get(name)
    if transpose is None or transpose.op_type != "Transpose" \
            or list(_attribute(transpose, "perm", [])) != perm:
        return None
    split = splits.get(transpose.input[0])
    if split is None or _only_consumer(name, consumers) is None \
            or _only_consumer(transpose.input[0], consumers) is not transpose:
        return None
    return split, name


def _only_consumer(name: str, consumers: dict) -> onnx.NodeProto | None:
    """The one operator reading ``name`` besides ``Shape`` nodes (which only size it)."""
    readers = [node for node in consumers.get(name, []) if node.op_type != "Shape"]
    return readers[0] if len(readers) == 1 else None


def _attribute(node: onnx.NodeProto, name: str, default):
    for attribute in node.attribute:
        if attribute.name == name:
            return helper.get_attribute_value(attribute)
    return default


# --- the scale and the joined shape, evaluated -------------------------------------------------

def _scale_and_shape_fit(core: _Core, producers: dict, initializers: dict) -> bool:
    """Query scale × key scale is 1/sqrt(head_dim) and the heads are joined back into
    [batch, tokens, heads × head_dim], whatever the batch and token counts."""
    heads, head_dim = core.query.heads, core.query.head_dim
    expected_scale = 1.0 / math.sqrt(head_dim)
    self_attention = core.tensors["query_input"] == core.tensors["key_input"]
    for batch, query_tokens, key_tokens in _PLACEHOLDERS:
        if self_attention:
            key_tokens = query_tokens
        shapes = _core_shapes(core, batch, query_tokens, key_tokens, initializers)
        if shapes is None:
            return False
        values = _ShapeValues(producers, initializers, shapes)
        scales = [values.of(name) for name in core.scales]
        if any(scale is None or scale.size != 1 for scale in scales):
            return False
        product = float(scales[0].reshape(-1)[0]) * float(scales[1].reshape(-1)[0])
        if not math.isclose(product, expected_scale, rel_tol=1e-5):
            return False
        joined = values.of(core.merge_shape)
        if joined is None or joined.shape != (3,):
            return False
        if joined[0] not in (0, batch) or joined[1] not in (-1, query_tokens) \
                or joined[2] != heads * head_dim:
            return False
    return True


def _core_shapes(core: _Core, batch: int, query_tokens: int, key_tokens: int,
                 initializers: dict) -> dict[str, tuple[int, ...]] | None:
    """Every tensor of the core with its shape at these placeholder sizes."""
    heads, dim = core.query.heads, core.query.head_dim
    widths = []
    for split in (core.query, core.key, core.value):
        weight = initializers[split.projection.input[1]]
        widths.append(int(weight.dims[0]))
    if core.tensors["key_input"] == core.tensors["value_input"] and widths[1] != widths[2]:
        return None
    roles = {
        "query_input": (batch, query_tokens, widths[0]),
        "key_input": (batch, key_tokens, widths[1]),
        "value_input": (batch, key_tokens, widths[2]),
        "query": (batch, query_tokens, heads * dim),
        "key": (batch, key_tokens, heads * dim),
        "value": (batch, key_tokens, heads * dim),
        "query_split": (batch, query_tokens, heads, dim),
        "key_split": (batch, key_tokens, heads, dim),
        "value_split": (batch, key_tokens, heads, dim),
        "query_heads": (batch, heads, query_tokens, dim),
        "key_heads": (batch, heads, dim, key_tokens),
        "value_heads": (batch, heads, key_tokens, dim),
        "query_scaled": (batch, heads, query_tokens, dim),
        "key_scaled": (batch, heads, dim, key_tokens),
        "scores": (batch, heads, query_tokens, key_tokens),
        "weights": (batch, heads, query_tokens, key_tokens),
        "attended": (batch, heads, query_tokens, dim),
        "joined": (batch, query_tokens, heads, dim),
    }
    shapes: dict[str, tuple[int, ...]] = {}
    for role, shape in roles.items():
        name = core.tensors[role]
        if shapes.setdefault(name, shape) != shape:  # one tensor in two roles, two shapes
            return None
    return shapes


class _ShapeValues:
    """The value of a tensor computed only from constants and the shapes of known tensors
    (the exporter's scale and reshape targets), or None when it depends on anything else."""

    _UNARY = {"Sqrt": np.sqrt, "Reciprocal": np.reciprocal, "Neg": np.negative,
              "Identity": lambda value: value}
    _BINARY = {"Mul": np.multiply, "Add": np.add, "Sub": np.subtract, "Pow": np.power}

    def __init__(self, producers: dict, initializers: dict,
                 shapes: dict[str, tuple[int, ...]]) -> None:
        self._producers = producers
        self._initializers = initializers
        self._shapes = shapes
        self._known: dict[str, np.ndarray | None] = {}

    def of(self, name: str) -> np.ndarray | None:
        if name not in self._known:
            self._known[name] = self._evaluate(name)
        return self._known[name]

    def _evaluate(self, name: str) -> np.ndarray | None:
        if name in self._initializers:
            tensor = self._initializers[name]
            return None if uses_external_data(tensor) else numpy_helper.to_array(tensor)
        node = self._producers.get(name)
        if node is None:
            return None
        if node.op_type == "Constant":
            return constant_value(node)
        if node.op_type == "Shape":
            return self._shape(node)
        inputs = [self.of(each) if each else None for each in node.input]
        if any(value is None for value in inputs[:1]):
            return None
        try:
            return self._compute(node, inputs)
        except (ValueError, IndexError, TypeError, ZeroDivisionError):
            return None

    def _shape(self, node: onnx.NodeProto) -> np.ndarray | None:
        shape = self._shapes.get(node.input[0])
        if shape is None:
            return None
        start, end = _attribute(node, "start", 0), _attribute(node, "end", None)
        return np.array(shape[start:end], dtype=np.int64)

    def _compute(self, node: onnx.NodeProto, inputs: list) -> np.ndarray | None:
        op = node.op_type
        if op in self._UNARY:
            return np.asarray(self._UNARY[op](inputs[0]))
        if op in self._BINARY and len(inputs) == 2 and inputs[1] is not None:
            return np.asarray(self._BINARY[op](inputs[0], inputs[1])).astype(inputs[0].dtype)
        if op == "Div" and len(inputs) == 2 and inputs[1] is not None:
            if np.issubdtype(inputs[0].dtype, np.integer):
                return np.asarray(np.trunc(inputs[0] / inputs[1])).astype(inputs[0].dtype)
            return np.asarray(inputs[0] / inputs[1]).astype(inputs[0].dtype)
        if op == "Cast":
            return inputs[0].astype(helper.tensor_dtype_to_np_dtype(_attribute(node, "to", 1)))
        if op == "Gather" and len(inputs) == 2 and inputs[1] is not None:
            return np.take(inputs[0], inputs[1], axis=_attribute(node, "axis", 0))
        if op == "Unsqueeze" and len(inputs) == 2 and inputs[1] is not None:
            return np.expand_dims(inputs[0], tuple(int(axis) for axis in inputs[1]))
        if op == "Squeeze":
            axes = inputs[1] if len(inputs) > 1 else None
            return np.squeeze(inputs[0], None if axes is None else tuple(int(a) for a in axes))
        if op == "Concat" and all(value is not None for value in inputs):
            return np.concatenate(inputs, axis=_attribute(node, "axis", 0))
        if op == "Slice":
            return _slice(inputs)
        return None


def _slice(inputs: list) -> np.ndarray | None:
    data, starts, ends = inputs[0], inputs[1], inputs[2] if len(inputs) > 2 else None
    if starts is None or ends is None:
        return None
    axes = inputs[3] if len(inputs) > 3 and inputs[3] is not None else range(len(starts))
    steps = inputs[4] if len(inputs) > 4 and inputs[4] is not None else [1] * len(starts)
    index = [slice(None)] * data.ndim
    for axis, start, end, step in zip(axes, starts, ends, steps, strict=False):
        # ONNX clamps out-of-range ends (INT64_MAX means "to the end"), as Python slices do.
        index[int(axis)] = slice(int(start), int(end), int(step))
    return data[tuple(index)]


# --- cleaning up --------------------------------------------------------------------------------

def _drop_dead(model: onnx.ModelProto) -> None:
    """Remove the nodes nothing needs any more (keeping the others' order), the initializers
    only they read and the shape notes of tensors no longer computed."""
    graph = model.graph
    needed = {output.name for output in graph.output}
    kept = []
    for node in reversed(list(graph.node)):
        if any(output in needed for output in node.output):
            kept.append(node)
            needed.update(node.input)
    kept.reverse()
    before = {name for node in graph.node for name in node.input}
    del graph.node[:]
    graph.node.extend(kept)
    inputs = {value.name for value in graph.input}
    unused = [tensor for tensor in graph.initializer
              if tensor.name in before and tensor.name not in needed
              and tensor.name not in inputs]
    for tensor in unused:
        graph.initializer.remove(tensor)
    produced = {name for node in kept for name in node.output}
    stale = [info for info in graph.value_info if info.name not in produced]
    for info in stale:
        graph.value_info.remove(info)
