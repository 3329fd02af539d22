"""The UNet that takes ControlNet residuals, made from an installed model's plain UNet graph.

The installed app has neither torch nor the ``onnx`` package (the generation path must not
import it, see tests/test_layers.py), so the variant is made by editing the graph file's
protobuf directly (engine.runtime.onnx_edit). The edit is what diffusers'
``UNet2DConditionModel.forward`` does with ``down_block_additional_residuals`` and
``mid_block_additional_residual``: each saved skip tensor gets its residual added where the up
path reads it, and the mid block's output gets the mid residual.

In a traced UNet each saved skip tensor is read by exactly one ``Concat(axis=1)`` in the up
blocks (``torch.cat([hidden_states, res_hidden_states], dim=1)``), the first of them in node
order reading the LAST skip and, as its first input, the mid block's output. So the edit adds
one graph input per skip (``down_block_{i}_additional_residual``) and one for the mid block
(``mid_block_additional_residual``), and one ``Add`` per input; every other node and every
initializer stays as it is, byte for byte (LoRAs find their weights by initializer name).

Inputs and outputs as OnnxStack/Amuse name them, so a ControlNet-ready UNet they ship in a
model's ``controlnet/`` folder is used as it is.
"""

from __future__ import annotations

import json
import mmap
from dataclasses import dataclass
from pathlib import Path

from engine.control.description import MID_RESIDUAL, down_residual
from engine.errors import ModelError
from engine.runtime.onnx_edit import (
    FLOAT,
    GRAPH_FILE,
    GRAPH_INPUT,
    GRAPH_NODE,
    Graph,
    Piece,
    copy_sidecars,
    field,
    graph_input_names,
    link_or_copy,
    made_once,
    mapped_graph,
    node_proto,
    process_folder,
    spans,
    value_info,
    with_graph,
    with_inputs,
    write_atomically,
)

REFUSAL = "this model's UNet cannot take ControlNet residuals"
# Small files beside the plain UNet graph that hold for the variant too: the diffusers config
# and the LoRA weights map (initializer names are unchanged).
_SIDECARS = ("config.json", "weights_map.json")
# Skip connections of the real families when the UNet's config cannot be read: SD 1.x/2.x
# (4 blocks) and SDXL (3 blocks).
_KNOWN_SKIP_COUNTS = (12, 9)



def residual_names(count: int) -> list[str]:
    """The residual inputs of a UNet with ``count`` skip connections, in diffusers' order."""
    return [down_residual(index) for index in range(count)] + [MID_RESIDUAL]


# --- where the variant is --------------------------------------------------------------------

def control_unet_path(model_folder: Path, model_hash: str, cache: Path | None) -> Path:
    """The UNet graph of this model that takes ControlNet residuals.

    The model's own ``controlnet/model.onnx`` when it has one that takes them (OnnxStack and
    Amuse ship one there); otherwise ``cache/control-unet/<model_hash>/model.onnx``, made
    from ``unet/model.onnx`` on first call. The model folder is never written: its manifest
    hash is the model's identity. With no ``cache`` (no data folder) a temporary folder
    serves for the life of the process. ModelError in one sentence when it cannot be made.
    """
    model_folder = Path(model_folder)
    shipped = model_folder / "controlnet" / GRAPH_FILE
    if shipped.is_file() and _takes_residuals(shipped):
        return shipped
    root = (Path(cache) / "control-unet" if cache is not None
            else process_folder("easel-control-unet-"))
    folder = root / model_hash
    if not (folder / GRAPH_FILE).is_file():
        unet_graph = model_folder / "unet" / GRAPH_FILE
        if not unet_graph.is_file():
            raise ModelError(f"The model has no UNet graph at {unet_graph}.")
        made_once(folder, lambda staging: make_control_unet(unet_graph, staging))
    return folder / GRAPH_FILE


def _takes_residuals(graph: Path) -> bool:
    names = set(graph_input_names(graph))
    return MID_RESIDUAL in names and down_residual(0) in names


# --- the edit ----------------------------------------------------------------------------------

def make_control_unet(unet_graph: Path, destination: Path) -> None:
    """Write ``destination/model.onnx``: the UNet graph ``unet_graph`` with residual inputs.

    Its external weights (``model.onnx.data``) are hard-linked into ``destination``, not
    copied (a 3.4 GB file for SD 1.5), or copied where a link is impossible (another file
    system), which the log says. ModelError in one sentence when the graph has not the skip
    connections of an SD 1.x, 2.x or XL UNet.
    """
    unet_graph, destination = Path(unet_graph), Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    with mapped_graph(unet_graph) as (data, graph):
        plan = _plan(graph, _unet_config(unet_graph.parent))
        for location in graph.external_locations:
            link_or_copy(unet_graph.parent, location, destination)
        pieces = _edited_model(data, graph, plan)
        write_atomically(destination / GRAPH_FILE, pieces)
        del pieces  # they are views of the mapped file, which closes next
    copy_sidecars(unet_graph.parent, destination, _SIDECARS)


@dataclass(frozen=True)
class _Plan:
    skip_concats: list[int]  # node indices, in node order (the first reads the last skip)
    mid_output: str
    mid_producer: int  # node index
    channels: list[int | None]  # of each skip, then the mid block's


# --- which Concats read the skip connections ---------------------------------------------------

def _plan(graph: Graph, config: dict | None) -> _Plan:
    concats = _skip_concats(graph)
    expected = _expected_skip_count(config)
    if len(concats) not in expected or not _forms_up_path(graph, concats):
        raise ModelError(f"{REFUSAL[0].upper()}{REFUSAL[1:]}.")
    mid_output = graph.nodes[concats[0]].inputs[0]
    producer = next((index for index, node in enumerate(graph.nodes)
                     if mid_output in node.outputs), None)
    if producer is None:
        raise ModelError(f"{REFUSAL[0].upper()}{REFUSAL[1:]}.")
    return _Plan(concats, mid_output, producer, _skip_channels(config, len(concats)))


def _skip_concats(graph: Graph) -> list[int]:
    """The Concats that join the up path and a saved skip tensor.

    ``Concat`` on the channel axis (1, or -3 of a 4-D tensor) of two computed tensors, whose
    second (the skip) is read by some other node as well: the down path flows on from every
    saved skip. That leaves out the timestep embedding's Concats (axis -1, and their sine and
    cosine are read once), SDXL's (it joins a graph input) and shape Concats (axis 0).
    """
    readers: dict[str, int] = {}
    for node in graph.nodes:
        for name in node.inputs:
            readers[name] = readers.get(name, 0) + 1
    computed = {name for node in graph.nodes for name in node.outputs}
    found = []
    for index, node in enumerate(graph.nodes):
        if node.op_type != "Concat" or node.axis not in (1, -3) or len(node.inputs) != 2:
            continue
        if all(name in computed for name in node.inputs) and readers[node.inputs[1]] > 1:
            found.append(index)
    return found


def _forms_up_path(graph: Graph, concats: list[int]) -> bool:
    """True when each skip Concat reads what the one before it gave (through the up blocks)
    and every skip was computed before the up path began: the order the edit relies on."""
    first = concats[0]
    made_before = {name for node in graph.nodes[:first] for name in node.outputs}
    skips = [graph.nodes[index].inputs[1] for index in concats]
    if len(set(skips)) != len(skips) or not set(skips) <= made_before:
        return False
    downstream = set(graph.nodes[first].outputs)
    position = 1
    for index, node in enumerate(graph.nodes[first + 1:], start=first + 1):
        if position < len(concats) and index == concats[position]:
            if node.inputs[0] not in downstream:
                return False
            position += 1
        if downstream & set(node.inputs):
            downstream.update(node.outputs)
    return True


def _unet_config(folder: Path) -> dict | None:
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None


def _blocks(config: dict | None) -> tuple[list[int], list[int]] | None:
    """The UNet's (block channels, layers per block), or None when the config lacks them."""
    if config is None:
        return None
    channels, layers = config.get("block_out_channels"), config.get("layers_per_block")
    if not isinstance(channels, list) or not all(isinstance(c, int) for c in channels):
        return None
    if isinstance(layers, int):
        layers = [layers] * len(channels)
    if not isinstance(layers, list) or len(layers) != len(channels):
        return None
    return channels, layers


def _expected_skip_count(config: dict | None) -> tuple[int, ...]:
    blocks = _blocks(config)
    if blocks is None:
        return _KNOWN_SKIP_COUNTS
    channels, layers = blocks
    return (1 + sum(layers) + len(channels) - 1,)  # conv_in, each layer, each downsampler


def _skip_channels(config: dict | None, count: int) -> list[int | None]:
    """The channels of each skip tensor in diffusers' order, then the mid block's (None for
    each when the config cannot say)."""
    blocks = _blocks(config)
    if blocks is None:
        return [None] * (count + 1)
    channels, layers = blocks
    found = [channels[0]]
    for block, (width, depth) in enumerate(zip(channels, layers, strict=True)):
        found += [width] * depth + ([width] if block < len(channels) - 1 else [])
    return found + [channels[-1]]


# --- writing the edited graph -------------------------------------------------------------------

def _edited_model(data: mmap.mmap, graph: Graph, plan: _Plan) -> list[Piece]:
    """The edited file as pieces: the file's own bytes where nothing changes."""
    view = memoryview(data)
    count = len(plan.skip_concats)
    skip_of = {node: count - 1 - order for order, node in enumerate(plan.skip_concats)}
    mid_added = f"{MID_RESIDUAL}_added"
    pieces: list[Piece] = []
    by_start = {node.start: index for index, node in enumerate(graph.nodes)}
    for number, field_start, start, end in spans(data, graph.start, graph.end):
        piece = view[field_start:end]
        index = by_start.get(start) if number == GRAPH_NODE else None
        if index is None:
            pieces.append(piece)
            continue
        node = graph.nodes[index]
        replace = {plan.mid_output: mid_added} if index > plan.mid_producer else {}
        if index in skip_of:
            skip = skip_of[index]
            added = f"{down_residual(skip)}_added"
            pieces.append(field(GRAPH_NODE, _add_node(node.inputs[1], down_residual(skip),
                                                       added)))
            inputs = [replace.get(node.inputs[0], node.inputs[0]), added]
            pieces.append(field(GRAPH_NODE, with_inputs(data, node, inputs)))
        elif replace and plan.mid_output in node.inputs:
            inputs = [replace.get(name, name) for name in node.inputs]
            pieces.append(field(GRAPH_NODE, with_inputs(data, node, inputs)))
        else:
            pieces.append(piece)
        if index == plan.mid_producer:
            pieces.append(field(GRAPH_NODE, _add_node(plan.mid_output, MID_RESIDUAL,
                                                       mid_added)))
    sample_type = graph.input_types.get("sample", FLOAT)
    for skip, name in enumerate(residual_names(count)):
        pieces.append(field(GRAPH_INPUT, _residual_input(name, plan.channels[skip],
                                                          sample_type, skip)))
    return with_graph(data, pieces)


def _add_node(first: str, second: str, output: str) -> bytes:
    return node_proto("Add", [first, second], [output], name=f"/{output}")


def _residual_input(name: str, channels: int | None, elem_type: int, index: int) -> bytes:
    """A ValueInfoProto: ``name``, a 4-D tensor (batch, channels, height, width)."""
    side = "mid" if name == MID_RESIDUAL else str(index)
    return value_info(name, elem_type, ["batch", channels if channels else f"channels_{side}",
                                        f"height_{side}", f"width_{side}"])
