"""onnxruntime's SD fusion on our exported UNets: it runs, it fuses, and it computes the same.

The optimizer itself crashes on our graphs under NumPy 2 (see engine/export/fusion.py); these
tests hold the graph fix that lets it run to the same numbers, for SD 1.x-style UNets (one head
count everywhere) and for UNets whose head count differs per block (SD 2.x, SDXL).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from engine.export.fusion import fold_attention_shapes, fuse_unet

pytestmark = pytest.mark.slow


def _run(path: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def _feeds(unet: Path, seed: int = 0) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(unet), providers=["CPUExecutionProvider"])
    width = {node.name: node for node in session.get_inputs()}["encoder_hidden_states"].shape[2]
    rng = np.random.default_rng(seed)
    # Batch 2 as guidance runs it, a size other than the traced one, text of 77 tokens.
    return {
        "sample": rng.standard_normal((2, 4, 24, 16), dtype=np.float32),
        "timestep": np.array([981.0, 981.0], dtype=np.float32),
        "encoder_hidden_states": rng.standard_normal((2, 77, width), dtype=np.float32),
    }


def _assert_fused_matches(unet: Path, fused: Path, provider_heads: set[int]) -> None:
    result = fuse_unet(unet, fused)
    assert result.fused.get("Attention", 0) >= 1, result.fused
    assert result.fused.get("MultiHeadAttention", 0) >= 1, result.fused
    assert set(result.heads.values()) == provider_heads
    graph = onnx.load(str(fused), load_external_data=False)
    heads = {attribute.i for node in graph.graph.node
             if node.op_type in ("Attention", "MultiHeadAttention")
             for attribute in node.attribute if attribute.name == "num_heads"}
    assert heads == provider_heads
    feeds = _feeds(unet)
    expected, actual = _run(unet, feeds), _run(fused, feeds)
    np.testing.assert_allclose(actual, expected, atol=2e-5, rtol=0)


@pytest.fixture(scope="module")
def plain_unet(tiny_sd1_diffusers, tmp_path_factory) -> Path:
    """The tiny SD 1.x UNet as torch exports it, before the exporter turns its attentions
    into MultiHeadAttention (engine.export.attention): what ONNX Runtime's fusion reads."""
    from diffusers import UNet2DConditionModel

    from engine.export.graphs import UNetGraph, export_graph, unet_example

    unet = UNet2DConditionModel.from_pretrained(tiny_sd1_diffusers / "unet").eval()
    graph = tmp_path_factory.mktemp("plain-unet") / "model.onnx"
    export_graph(UNetGraph(unet), unet_example(unet), graph)
    return graph


def test_fusion_runs_on_a_tiny_sd1_unet_and_computes_the_same(plain_unet, tmp_path):
    _assert_fused_matches(plain_unet, tmp_path / "model.onnx", {8})
    # The CPU graph carries no operator the CPU provider lacks (GroupNorm, NhwcConv...).
    graph = onnx.load(str(tmp_path / "model.onnx"), load_external_data=False)
    assert not {node.op_type for node in graph.graph.node} & {
        "GroupNorm", "SkipGroupNorm", "NhwcConv", "BiasSplitGelu", "BiasAdd"}


def test_fusion_gives_each_block_its_own_head_count(tmp_path):
    """Two attention levels with 2 and 4 heads, as SD 2.x and SDXL differ per level."""
    import torch
    from diffusers import UNet2DConditionModel

    from engine.export.graphs import UNetGraph, export_graph, unet_example

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=16, in_channels=4,
        out_channels=4, cross_attention_dim=24, attention_head_dim=(2, 4),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"), norm_num_groups=8)
    source = tmp_path / "source"
    source.mkdir()
    export_graph(UNetGraph(unet), unet_example(unet), source / "model.onnx")
    _assert_fused_matches(source / "model.onnx", tmp_path / "model.onnx", {2, 4})


def test_folding_leaves_no_attention_shape_for_the_optimizer_to_misread(plain_unet):
    model = onnx.load(str(plain_unet))
    heads = fold_attention_shapes(model)
    producers = {output: node for node in model.graph.node for output in node.output}
    # Query, key and value of both attentions in each of the 6 transformer blocks.
    assert len(heads.by_output) == 6 * 2 * 3
    assert set(heads.by_output.values()) == {8}
    for node in model.graph.node:
        if node.op_type == "Reshape" and producers.get(node.input[0], node).op_type == "MatMul":
            shape = producers.get(node.input[1])
            assert shape is None or shape.op_type != "Concat" or len(shape.input) != 4


def test_cuda_fusion_runs_and_keeps_the_head_counts(plain_unet, tmp_path):
    """The CUDA set (GroupNorm, NHWC convolutions...) has no CPU kernels; it must still fuse."""
    result = fuse_unet(plain_unet, tmp_path / "model.onnx", "cuda")
    assert result.fused.get("GroupNorm", 0) >= 1 and result.fused.get("NhwcConv", 0) >= 1
    graph = onnx.load(str(tmp_path / "model.onnx"), load_external_data=False)
    attentions = [node for node in graph.graph.node
                  if node.op_type in ("Attention", "MultiHeadAttention")]
    assert attentions
    for node in attentions:
        assert [attribute.i for attribute in node.attribute if attribute.name == "num_heads"] == [8]
