"""ONNX Runtime's Stable Diffusion fusions (attention, LayerNorm, GELU) on our UNet exports.

onnxruntime ships a "transformer optimizer" that rewrites a UNet graph into its fused contrib
operators: ``Attention`` / ``MultiHeadAttention`` for each attention block, LayerNorm and GELU
fusions, and on CUDA also ``GroupNorm``, ``BiasSplitGelu`` and channels-last convolutions.

Run as it is on a graph from torch's TorchScript exporter it crashes under NumPy 2: it reads
each attention's head count from the shape that feeds the query's ``Reshape``, which the
exporter computes at run time as ``Concat(batch, [-1], [heads], head_dim)``, and calls
``int()`` on the one-element ``[heads]`` array (NumPy 2 refuses that). Nothing there can be
made to read as a plain int, so instead of patching the optimizer we fix the graph:

1. ``fold_attention_shapes`` replaces each such computed shape with the constant
   ``[0, -1, heads, head_dim]`` (``0`` copies the batch, as the original took it from the
   input). That is the same reshape without a dozen shape nodes; the optimizer then no longer
   finds a ``Concat`` to read, and falls back to the head count it is given.
2. That head count is one number for the whole model. SD 1.x has 8 heads in every block;
   SD 2.x and SDXL have 64-wide heads, so their counts differ per block. The optimizer is
   given the largest count dividing them all (it only uses it to check divisibility on the
   fp32 path, where query, key and value weights are not packed per head), and each fused
   node's ``num_heads`` is then set to its own block's count, read from the folded shapes.

The result is a plain ONNX file onnxruntime loads like any other; ``com.microsoft`` operators
are part of onnxruntime. Only fp32 is handled (packed per-head weights are an fp16 feature).
This module needs the ``onnx`` package, so it lives with the exporter.
"""

from __future__ import annotations

import logging
import math
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

log = logging.getLogger(__name__)

# Contrib operators the CPU provider has no kernel for; they are fused only for CUDA.
_CUDA_ONLY_FUSIONS = ("enable_group_norm", "enable_skip_group_norm", "enable_bias_splitgelu",
                      "enable_nhwc_conv", "enable_bias_add")
FUSED_OPERATORS = ("Attention", "MultiHeadAttention", "SkipLayerNormalization",
                   "BiasSplitGelu", "GroupNorm", "SkipGroupNorm", "NhwcConv", "BiasAdd",
                   "FastGelu", "BiasGelu", "Gelu")


class FusionFailed(RuntimeError):
    """The optimizer gave a graph we cannot vouch for; keep the unfused one."""


@dataclass(frozen=True)
class FusionResult:
    """What one run of the fusion did."""

    heads: dict[str, int]  # the query MatMul's output -> that attention's head count
    fused: dict[str, int]  # fused operator type -> node count in the written graph


@dataclass(frozen=True)
class _Heads:
    by_output: dict[str, int]  # query/key/value MatMul output -> heads
    by_input: dict[str, set[int]]  # their input (several blocks may share one) -> heads


@dataclass(frozen=True)
class HeadSplit:
    """One attention's query, key or value split into heads by the exporter's ``Reshape``."""

    reshape: onnx.NodeProto
    projection: onnx.NodeProto  # the MatMul (2-D weight) whose output is split
    heads: int
    head_dim: int


def head_splits(model: onnx.ModelProto) -> list[HeadSplit]:
    """Every ``Reshape`` of a MatMul output into heads, with the head count the exporter
    computed for it (``Concat(batch, [-1], [heads], head_dim)``); the graph is not changed.

    The head dimension is the weight's width over the head count, so a reshape whose head
    count does not divide the weight's width is not an attention head split.
    """
    graph = model.graph
    producers = {output: node for node in graph.node for output in node.output}
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    constants = _ConstantReader(producers, initializers)
    found = []
    for node in graph.node:
        if node.op_type != "Reshape" or len(node.input) < 2:
            continue
        concat = producers.get(node.input[1])
        data = producers.get(node.input[0])
        if concat is None or concat.op_type != "Concat" or len(concat.input) != 4:
            continue
        if data is None or data.op_type != "MatMul" or data.input[1] not in initializers:
            continue
        flattened, heads = constants.value(concat.input[1]), constants.value(concat.input[2])
        weight = initializers[data.input[1]]
        if flattened is None or heads is None or flattened.size != 1 or heads.size != 1:
            continue
        heads_count = int(heads.reshape(-1)[0])
        if int(flattened.reshape(-1)[0]) != -1 or len(weight.dims) != 2 or heads_count <= 0:
            continue
        if weight.dims[1] % heads_count:
            continue
        found.append(HeadSplit(node, data, heads_count, weight.dims[1] // heads_count))
    return found


def fold_attention_shapes(model: onnx.ModelProto) -> _Heads:
    """Give every attention ``Reshape`` a constant ``[0, -1, heads, head_dim]`` shape.

    Only the reshapes ``head_splits`` finds are folded; any other ``Concat`` shape is left
    alone. The nodes that computed the old shapes are left for the optimizer's pruning.
    """
    graph = model.graph
    by_output: dict[str, int] = {}
    by_input: dict[str, set[int]] = {}
    for split in head_splits(model):
        node, data = split.reshape, split.projection
        name = f"{node.name or node.output[0]}/folded_shape"
        shape = np.array([0, -1, split.heads, split.head_dim], dtype=np.int64)
        graph.initializer.append(numpy_helper.from_array(shape, name))
        node.input[1] = name
        by_output[data.output[0]] = split.heads
        by_input.setdefault(data.input[0], set()).add(split.heads)
    return _Heads(by_output, by_input)


class _ConstantReader:
    """Values of ``Constant`` nodes and initializers, by tensor name."""

    def __init__(self, producers: dict[str, onnx.NodeProto],
                 initializers: dict[str, onnx.TensorProto]) -> None:
        self._producers = producers
        self._initializers = initializers

    def value(self, name: str) -> np.ndarray | None:
        if name in self._initializers:
            return numpy_helper.to_array(self._initializers[name])
        node = self._producers.get(name)
        if node is None or node.op_type != "Constant":
            return None
        return constant_value(node)


def constant_value(node: onnx.NodeProto) -> np.ndarray | None:
    """The value a ``Constant`` node gives, whichever of its attributes holds it."""
    for attribute in node.attribute:
        if attribute.name == "value":
            return numpy_helper.to_array(attribute.t)
        if attribute.name in ("value_ints", "value_int"):
            return np.array(helper.get_attribute_value(attribute), dtype=np.int64)
        if attribute.name in ("value_floats", "value_float"):
            return np.array(helper.get_attribute_value(attribute), dtype=np.float32)
    return None


def fuse_unet(source: Path, destination: Path, provider: str = "cpu") -> FusionResult:
    """Write the fused UNet ``source`` as ``destination`` (weights in ``<name>.data``).

    ``provider`` is "cpu" or "cuda": the CPU provider has no kernels for GroupNorm,
    BiasSplitGelu or channels-last convolutions, so those are fused only for CUDA.
    Raises ``FusionFailed`` when an attention was fused without a known head count.
    """
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.onnx_model_unet import UnetOnnxModel

    model = onnx.load(str(source), load_external_data=True)
    heads = fold_attention_shapes(model)
    options = FusionOptions("unet")
    # Packing query, key and value per head is what onnxruntime does for fp16 only.
    options.enable_packed_qkv = False
    options.enable_packed_kv = False
    if provider != "cuda":
        for flag in _CUDA_ONLY_FUSIONS:
            setattr(options, flag, False)
    counts = sorted(set(heads.by_output.values()))
    fallback = math.gcd(*counts) if counts else 0
    # The optimizer's progress bar and per-fusion info lines are noise in an import.
    quiet = _Quiet("onnxruntime.transformers", "fusion_base", "onnx_model", "fusion_utils")
    with quiet:
        optimizer = UnetOnnxModel(model, num_heads=fallback, hidden_size=0)
        optimizer.optimize(options)
        optimizer.topological_sort()
    fused = optimizer.model
    _set_head_counts(fused, heads)
    destination = Path(destination)
    onnx.save_model(fused, str(destination), save_as_external_data=True,
                    all_tensors_to_one_file=True, location=destination.name + ".data",
                    size_threshold=1024)
    operators = Counter(node.op_type for node in fused.graph.node)
    return FusionResult(dict(heads.by_output),
                        {name: operators[name] for name in FUSED_OPERATORS if operators[name]})


def _set_head_counts(model: onnx.ModelProto, heads: _Heads) -> None:
    """Give each fused attention node its own block's head count (see the module notes)."""
    for node in model.graph.node:
        if node.domain != "com.microsoft" or node.op_type not in ("Attention",
                                                                  "MultiHeadAttention"):
            continue
        # Self-attention nodes take the normed hidden states the query MatMul took; cross-
        # attention nodes take the query MatMul's output.
        count = heads.by_output.get(node.input[0])
        if count is None and len(heads.by_input.get(node.input[0], ())) == 1:
            (count,) = heads.by_input[node.input[0]]
        if count is None:
            raise FusionFailed(f"no head count known for the fused node {node.name}")
        for attribute in node.attribute:
            if attribute.name == "num_heads":
                attribute.i = count


class _Quiet:
    """Raise the named loggers to WARNING and hide tqdm bars for the duration."""

    def __init__(self, *names: str) -> None:
        self._names = names
        self._levels: dict[str, int] = {}

    def __enter__(self) -> None:
        self._tqdm = os.environ.get("TQDM_DISABLE")
        os.environ["TQDM_DISABLE"] = "1"
        for name in self._names:
            logger = logging.getLogger(name)
            self._levels[name] = logger.level
            logger.setLevel(logging.WARNING)

    def __exit__(self, *exc: object) -> None:
        if self._tqdm is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = self._tqdm
        for name, level in self._levels.items():
            logging.getLogger(name).setLevel(level)
