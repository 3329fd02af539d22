"""Every exported UNet attention runs as one com.microsoft.MultiHeadAttention, computing the
same as the exported MatMul/Softmax/MatMul core; an attention that differs is kept as it is.

The exported graphs (tests/tiny_models.py, tiny_models_xl.py) are compared with a plain
export of the same diffusers UNet made here with engine.export.graphs, which the rewrite
never saw.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from engine.errors import ModelError
from engine.export.attention import attention_to_mha, rewrite_unet_attention
from tests import tiny_models, tiny_models_xl

pytestmark = pytest.mark.slow

FAMILIES = {
    "sd1": (lambda: tiny_models.tiny_diffusers("sd1"), lambda: tiny_models.tiny_onnx("sd1")),
    "sd2": (lambda: tiny_models.tiny_diffusers("sd2"), lambda: tiny_models.tiny_onnx("sd2")),
    "sdxl": (lambda: tiny_models_xl.tiny_diffusers("sdxl"),
             lambda: tiny_models_xl.tiny_onnx("sdxl")),
}
# Batch 2 as guidance runs it; a square and an oblong latent, neither the traced size.
LATENTS = ((16, 16), (24, 40))


def _load_unet(diffusers_folder: Path):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel.from_pretrained(diffusers_folder / "unet").eval()


def _plain_export(unet, destination: Path, **options) -> Path:
    """The UNet exported as engine.export does, without the attention rewrite."""
    from engine.export.graphs import UNetGraph, export_graph, unet_example

    destination.mkdir(parents=True, exist_ok=True)
    graph = destination / "model.onnx"
    export_graph(UNetGraph(unet), unet_example(unet), graph, **options)
    return graph


def _attention_heads(unet) -> dict[str, int]:
    """diffusers' attention modules by name -> their head count."""
    from diffusers.models.attention_processor import Attention

    return {name: module.heads for name, module in unet.named_modules()
            if isinstance(module, Attention)}


def _mha_heads(graph: onnx.ModelProto) -> dict[str, int]:
    """MultiHeadAttention node -> its module name ("/unet/<module path>/MultiHeadAttention")
    and its num_heads."""
    found = {}
    for node in graph.graph.node:
        if node.op_type == "MultiHeadAttention":
            module = node.name.removeprefix("/unet/").rsplit("/", 1)[0].replace("/", ".")
            found[module] = helper.get_attribute_value(node.attribute[0])
    return found


def _session(graph: Path | onnx.ModelProto) -> ort.InferenceSession:
    source = str(graph) if isinstance(graph, Path) else graph.SerializeToString()
    return ort.InferenceSession(source, providers=["CPUExecutionProvider"])


def _feeds(session: ort.InferenceSession, latent: tuple[int, int], seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    feeds = {}
    for tensor in session.get_inputs():
        if tensor.name == "timestep":
            feeds[tensor.name] = np.array([981.0, 21.0], np.float32)
            continue
        shape = [2 if not isinstance(size, int) else size for size in tensor.shape]
        if tensor.name == "sample":
            shape[2:] = latent
        elif tensor.name == "encoder_hidden_states":
            shape[1] = 77
        feeds[tensor.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


def _assert_same_outputs(expected: ort.InferenceSession, actual: ort.InferenceSession) -> None:
    for number, latent in enumerate(LATENTS):
        feeds = _feeds(expected, latent, seed=number)
        np.testing.assert_allclose(actual.run(None, feeds)[0], expected.run(None, feeds)[0],
                                   atol=1e-5, rtol=0)


def _op_count(graph: onnx.ModelProto, op_type: str) -> int:
    return sum(node.op_type == op_type for node in graph.graph.node)


@pytest.fixture(scope="module")
def plain_sd1(tmp_path_factory) -> Path:
    unet = _load_unet(tiny_models.tiny_diffusers("sd1"))
    return _plain_export(unet, tmp_path_factory.mktemp("plain-sd1"))


# --- the exporter's own graphs -------------------------------------------------------------

@pytest.mark.parametrize("family", FAMILIES)
def test_every_exported_attention_is_one_operator_with_its_block_head_count(family):
    diffusers_folder, onnx_folder = (make() for make in FAMILIES[family])
    unet = _load_unet(diffusers_folder)
    graph = onnx.load(str(onnx_folder / "unet" / "model.onnx"))
    assert _op_count(graph, "Softmax") == 0
    assert _mha_heads(graph) == _attention_heads(unet)
    assert any(opset.domain == "com.microsoft" for opset in graph.opset_import)
    onnx.checker.check_model(graph)  # among its checks: the nodes are topologically sorted


@pytest.mark.parametrize("family", FAMILIES)
def test_exported_graph_computes_what_the_unrewritten_export_does(family, tmp_path):
    diffusers_folder, onnx_folder = (make() for make in FAMILIES[family])
    plain = _plain_export(_load_unet(diffusers_folder), tmp_path)
    assert _op_count(onnx.load(str(plain)), "MultiHeadAttention") == 0
    _assert_same_outputs(_session(plain), _session(onnx_folder / "unet" / "model.onnx"))


def test_head_counts_that_differ_per_block_are_each_kept(tmp_path):
    """Two attention levels with 2 and 4 heads, as SD 2.x and SDXL differ per level."""
    import torch
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=16, in_channels=4,
        out_channels=4, cross_attention_dim=24, attention_head_dim=(2, 4),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"), norm_num_groups=8).eval()
    plain = _plain_export(unet, tmp_path / "plain")
    model = onnx.load(str(plain))
    assert attention_to_mha(model) == len(_attention_heads(unet))
    assert _mha_heads(model) == _attention_heads(unet)
    assert set(_mha_heads(model).values()) == {2, 4}
    _assert_same_outputs(_session(plain), _session(model))


# --- what is not the pattern is kept ---------------------------------------------------------

def _first_attention(model: onnx.ModelProto):
    """The first Softmax, its scores MatMul and the query's and key's scaling Muls."""
    producers = {output: node for node in model.graph.node for output in node.output}
    softmax = next(node for node in model.graph.node if node.op_type == "Softmax")
    scores = producers[softmax.input[0]]
    return softmax, scores, producers[scores.input[0]], producers[scores.input[1]]


def _set_scale(model: onnx.ModelProto, mul: onnx.NodeProto, value: float) -> None:
    name = f"{mul.name}/test_scale"
    model.graph.initializer.append(numpy_helper.from_array(np.array(value, np.float32), name))
    mul.input[1] = name


def _head_dim(model: onnx.ModelProto, softmax: onnx.NodeProto) -> int:
    from engine.export.fusion import head_splits

    module = softmax.name.rsplit("/", 1)[0]
    return next(split.head_dim for split in head_splits(model)
                if split.reshape.name.startswith(module + "/"))


def test_an_attention_with_another_scale_is_kept_and_still_computes(plain_sd1):
    model = onnx.load(str(plain_sd1))
    attentions = _op_count(model, "Softmax")
    softmax, _, query_mul, key_mul = _first_attention(model)
    _set_scale(model, query_mul, 0.5)
    _set_scale(model, key_mul, 0.5)
    reference = _session(model)
    assert attention_to_mha(model) == attentions - 1
    assert [node.name for node in model.graph.node if node.op_type == "Softmax"] == [
        softmax.name]
    _assert_same_outputs(reference, _session(model))


def test_the_scale_checked_is_the_product_of_the_query_and_key_scales(plain_sd1):
    """A constant query scale of 1/sqrt(head_dim) and a key scale of 1 is the default."""
    model = onnx.load(str(plain_sd1))
    attentions = _op_count(model, "Softmax")
    softmax, _, query_mul, key_mul = _first_attention(model)
    _set_scale(model, query_mul, 1 / np.sqrt(_head_dim(model, softmax)))
    _set_scale(model, key_mul, 1.0)
    reference = _session(model)
    assert attention_to_mha(model) == attentions
    _assert_same_outputs(reference, _session(model))


def test_an_attention_with_a_mask_is_kept(plain_sd1):
    model = onnx.load(str(plain_sd1))
    attentions = _op_count(model, "Softmax")
    softmax, scores, _, _ = _first_attention(model)
    model.graph.initializer.append(numpy_helper.from_array(np.zeros((), np.float32), "mask"))
    masked = helper.make_node("Add", [scores.output[0], "mask"], ["masked_scores"])
    position = list(model.graph.node).index(softmax)
    model.graph.node.insert(position, masked)
    softmax.input[0] = "masked_scores"
    assert attention_to_mha(model) == attentions - 1
    assert _op_count(model, "Softmax") == 1
    onnx.checker.check_model(model)


# --- the graph file ----------------------------------------------------------------------------

def test_rewriting_a_graph_file_leaves_its_weights_file_alone(tmp_path):
    unet = _load_unet(tiny_models.tiny_diffusers("sd1"))
    plain = _plain_export(unet, tmp_path / "plain")
    graph = _plain_export(unet, tmp_path / "rewritten", external_data_threshold=1)
    data = graph.parent / "model.onnx.data"
    before = hashlib.sha256(data.read_bytes()).hexdigest()
    assert rewrite_unet_attention(graph) == len(_attention_heads(unet))
    assert hashlib.sha256(data.read_bytes()).hexdigest() == before
    assert sorted(path.name for path in graph.parent.iterdir()) == [
        "model.onnx", "model.onnx.data"]
    _assert_same_outputs(_session(plain), _session(graph))


def test_a_file_that_is_not_a_graph_is_refused_in_one_sentence(tmp_path):
    graph = tmp_path / "model.onnx"
    graph.write_bytes(b"\xff\x00 not protobuf at all \xff" * 10)
    with pytest.raises(ModelError, match=r"^The exported UNet graph .* cannot be read\.$"):
        rewrite_unet_attention(graph)
