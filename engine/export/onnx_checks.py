"""Checks one ONNX graph made by another tool before Easel installs it (needs the onnx package).

A graph is read as a ModelProto without its external weights, then refused when:
- a node or a model-local function uses an operator domain onnxruntime does not ship (custom
  operators would need a native library: code that comes with the model);
- an external weight points anywhere but a plain file name in the graph's own folder, or past
  the end of its file;
- the tensors the engine feeds and reads are missing, of another rank, or not float32.

``com.microsoft`` is allowed: its contrib operators are part of onnxruntime itself, and the
graphs optimum and onnxruntime's transformer optimizer write use them (fused attention,
GroupNorm, BiasSplitGelu).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

import onnx

from engine.errors import ModelError
from engine.vae_encoding import VAE_ENCODER_OUTPUTS

COMPONENT_NAMES = {"text_encoder": "text encoder", "unet": "UNet",
                   "vae_decoder": "VAE decoder", "vae_encoder": "VAE encoder"}
ALLOWED_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "com.microsoft"})

_FLOAT = onnx.TensorProto.FLOAT
_INTEGERS = (onnx.TensorProto.INT32, onnx.TensorProto.INT64)
_NUMBERS = (_FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, *_INTEGERS)

# component -> {tensor: (rank, accepted element types)}: what the pipelines feed and read.
REQUIRED_INPUTS: dict[str, dict[str, tuple[int, tuple[int, ...]]]] = {
    "text_encoder": {"input_ids": (2, _INTEGERS)},
    "unet": {"sample": (4, (_FLOAT,)), "timestep": (1, _NUMBERS),
             "encoder_hidden_states": (3, (_FLOAT,))},
    "vae_decoder": {"latent_sample": (4, (_FLOAT,))},
    "vae_encoder": {"sample": (4, (_FLOAT,))},
}
REQUIRED_OUTPUTS: dict[str, dict[str, tuple[int, tuple[int, ...]]]] = {
    "text_encoder": {"last_hidden_state": (3, (_FLOAT,))},
    "unet": {"out_sample": (4, (_FLOAT,))},
    "vae_decoder": {"sample": (4, (_FLOAT,))},
    "vae_encoder": {},  # one of VAE_ENCODER_OUTPUTS, checked on its own
}
# Element types whose stored size is not dims x item size (variable or packed 4-bit).
_UNSIZED_TYPES = frozenset(
    getattr(onnx.TensorProto, name) for name in ("STRING", "INT4", "UINT4", "FLOAT4E2M1")
    if hasattr(onnx.TensorProto, name))

Dim = int | str | None  # a fixed size, a named dynamic axis, or unknown


@dataclass(frozen=True)
class TensorSpec:
    name: str
    element_type: int
    shape: tuple[Dim, ...]


@dataclass(frozen=True)
class CheckedGraph:
    """What the import needs to know about one checked graph."""

    component: str
    path: Path
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]
    op_counts: dict[str, int]  # operator type -> number of nodes
    external_files: tuple[str, ...]  # file names beside the graph, in first-use order

    @property
    def op_types(self) -> frozenset[str]:
        return frozenset(self.op_counts)

    def dim(self, tensor: str, axis: int) -> int | None:
        """The fixed size of ``axis`` of an input or output, None when dynamic."""
        spec = self.inputs.get(tensor) or self.outputs[tensor]
        value = spec.shape[axis]
        return value if isinstance(value, int) else None


def check_graph(model_folder: Path, component: str) -> CheckedGraph:
    """Read and check ``model_folder/component/model.onnx``; ModelError says why it is refused."""
    path = model_folder / component / "model.onnx"
    label = f"The {COMPONENT_NAMES[component]} graph of '{model_folder.name}'"
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # protobuf's DecodeError and onnx's own errors share no base
        raise ModelError(f"{label} ({component}/model.onnx) is not an ONNX graph "
                         f"Easel can read.") from error
    _check_domains(model, label)
    external_files = _check_external_data(model, path.parent, model_folder, label)
    inputs, outputs = _tensor_specs(model)
    _check_tensors(component, inputs, outputs, label)
    op_counts = Counter(node.op_type for node in _all_nodes(model))
    return CheckedGraph(component, path, inputs, outputs, dict(op_counts), external_files)


def check_source_graph(graph: Path, source: Path, label: str, model_folder: Path
                       ) -> tuple[onnx.ModelProto, tuple[str, ...]]:
    """Read and check the ONNX graph ``graph`` of a lone graph the user imports (``source``,
    a file or a folder): no code or outward links beside it in a folder, no custom operators,
    external weights only as plain files under ``model_folder``. The model (without its
    weights) and the weights files' names; ModelError in one sentence otherwise."""
    from engine.onnx_folder import refuse_unsafe_files

    if source.is_dir():
        refuse_unsafe_files(source)
    try:
        model = onnx.load(str(graph), load_external_data=False)
    except Exception as error:  # protobuf's DecodeError and onnx's own errors share no base
        raise ModelError(f"'{source.name}' is not an ONNX graph Easel can read.") from error
    _check_domains(model, label)
    return model, _check_external_data(model, graph.parent, model_folder, label)


# --- walking the model ----------------------------------------------------------------------

def _subgraphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    yield graph
    for node in graph.node:
        yield from _attribute_subgraphs(node)


def _attribute_subgraphs(node: onnx.NodeProto) -> Iterator[onnx.GraphProto]:
    for attribute in node.attribute:  # If/Loop/Scan bodies
        if attribute.HasField("g"):
            yield from _subgraphs(attribute.g)
        for graph in attribute.graphs:
            yield from _subgraphs(graph)


def _all_nodes(model: onnx.ModelProto) -> Iterator[onnx.NodeProto]:
    for graph in _subgraphs(model.graph):
        yield from graph.node
    for function in model.functions:
        for node in function.node:
            yield node
            for graph in _attribute_subgraphs(node):
                yield from graph.node


def all_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Every tensor that can hold weights, external ones included."""
    for graph in _subgraphs(model.graph):
        yield from graph.initializer
        for sparse in graph.sparse_initializer:
            yield sparse.values
            yield sparse.indices
    for node in _all_nodes(model):
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            for sparse in [attribute.sparse_tensor, *attribute.sparse_tensors]:
                yield sparse.values
                yield sparse.indices


# --- the checks -----------------------------------------------------------------------------

def _check_domains(model: onnx.ModelProto, label: str) -> None:
    for function in model.functions:
        if function.domain not in ALLOWED_DOMAINS:
            raise ModelError(f"{label} declares functions of its own operator domain "
                             f"'{function.domain}'; Easel runs only the operators that come "
                             f"with ONNX Runtime.")
    for node in _all_nodes(model):
        if node.domain not in ALLOWED_DOMAINS:
            raise ModelError(f"{label} uses the custom operator {node.domain}.{node.op_type}; "
                             f"Easel runs only the operators that come with ONNX Runtime.")


def _check_external_data(model: onnx.ModelProto, graph_folder: Path, model_folder: Path,
                         label: str) -> tuple[str, ...]:
    files: dict[str, int] = {}  # name -> size, in first-use order
    root = model_folder.resolve()
    for tensor in all_tensors(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        entries = {entry.key: entry.value for entry in tensor.external_data}
        location = entries.get("location", "")
        _check_location(location, label)
        if location not in files:
            path = graph_folder / location
            if not path.is_file() or not path.resolve().is_relative_to(root):
                raise ModelError(f"{label} needs its weights file {location}, which is missing.")
            files[location] = path.stat().st_size
        _check_extent(tensor, entries, files[location], label)
    return tuple(files)


def _check_location(location: str, label: str) -> None:
    """Only a plain file name: no folders, no '..', no absolute or drive paths."""
    posix, windows = PurePosixPath(location), PureWindowsPath(location)
    # A colon would name a drive or an NTFS alternate data stream on Windows.
    plain = (location not in ("", ".", "..") and len(posix.parts) == 1
             and len(windows.parts) == 1 and not any(char in location for char in ":\0"))
    if not plain:
        raise ModelError(f"{label} points its weights at '{location}', outside its own folder; "
                         f"Easel reads weights only from files beside the graph.")


def _check_extent(tensor: onnx.TensorProto, entries: dict[str, str], file_size: int,
                  label: str) -> None:
    try:
        offset = int(entries.get("offset", "0"))
        length = int(entries["length"]) if "length" in entries else None
    except ValueError:
        raise ModelError(f"{label} has a damaged weight reference ({tensor.name}).") from None
    expected = _tensor_bytes(tensor)
    if length is None:
        length = file_size - offset if expected is None else expected
    if offset < 0 or length < 0 or offset + length > file_size or (
            expected is not None and length != expected):
        raise ModelError(f"{label} is damaged: the weights of {tensor.name or 'a tensor'} lie "
                         f"outside their file.")


def _tensor_bytes(tensor: onnx.TensorProto) -> int | None:
    """The stored size of a tensor of a fixed-width type (None for strings and packed types)."""
    if tensor.data_type in _UNSIZED_TYPES:
        return None
    try:
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    except (KeyError, TypeError, ValueError):
        return None
    return math.prod(tensor.dims) * itemsize


def _tensor_specs(model: onnx.ModelProto) -> tuple[dict[str, TensorSpec], dict[str, TensorSpec]]:
    # Old exporters list weights as graph inputs too; those need no feed.
    weights = {tensor.name for tensor in model.graph.initializer}
    inputs = {value.name: _spec(value) for value in model.graph.input if value.name not in weights}
    outputs = {value.name: _spec(value) for value in model.graph.output}
    return inputs, outputs


def _spec(value: onnx.ValueInfoProto) -> TensorSpec:
    # A tensor without a declared shape gets rank 0 here, and is refused as the wrong rank.
    tensor_type = value.type.tensor_type
    shape = tuple(
        dim.dim_value if dim.HasField("dim_value") else (dim.dim_param or None)
        for dim in tensor_type.shape.dim
    )
    return TensorSpec(value.name, tensor_type.elem_type, shape)


def _check_tensors(component: str, inputs: dict[str, TensorSpec],
                   outputs: dict[str, TensorSpec], label: str) -> None:
    required = REQUIRED_INPUTS[component]
    extra = [name for name in inputs if name not in required]
    if extra:
        raise ModelError(f"{label} needs an input the engine does not give ({extra[0]}), so it "
                         f"is not a Stable Diffusion 1.x/2.x {COMPONENT_NAMES[component]}.")
    for kind, found, wanted in (("input", inputs, required),
                                ("output", outputs, REQUIRED_OUTPUTS[component])):
        for name, (rank, types) in wanted.items():
            _check_tensor(found.get(name), name, kind, rank, types, label)
    if component == "vae_encoder":
        present = [name for name in VAE_ENCODER_OUTPUTS if name in outputs]
        if not present:
            raise ModelError(f"{label} has no latent_parameters or latent_sample output "
                             f"(it gives {', '.join(outputs) or 'nothing'}).")
        _check_tensor(outputs[present[0]], present[0], "output", 4, (_FLOAT,), label)


def _check_tensor(spec: TensorSpec | None, name: str, kind: str, rank: int,
                  types: tuple[int, ...], label: str) -> None:
    if spec is None:
        raise ModelError(f"{label} has no {kind} named '{name}', which the engine needs.")
    if len(spec.shape) != rank:
        raise ModelError(f"{label} has a {kind} '{name}' of rank {len(spec.shape)} where the "
                         f"engine needs rank {rank}.")
    if spec.element_type not in types:
        type_name = onnx.TensorProto.DataType.Name(spec.element_type) \
            if spec.element_type in onnx.TensorProto.DataType.values() else "unknown"
        raise ModelError(f"{label} has a {kind} '{name}' of type {type_name.lower()}; Easel "
                         f"runs graphs with float32 inputs and outputs (and integer token ids).")
