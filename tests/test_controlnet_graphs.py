"""The two ControlNet graphs against diffusers in PyTorch (fp32, CPU): our ControlNet export,
and the UNet variant that takes its residuals (engine.control.unet_variant), made by editing
our plain UNet export, for tiny random SD 1.x and SDXL models."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
onnx = pytest.importorskip("onnx")

from engine.control.unet_variant import (  # noqa: E402
    REFUSAL,
    control_unet_path,
    graph_input_names,
    make_control_unet,
    residual_names,
)
from engine.errors import ModelError  # noqa: E402
from engine.export import graphs  # noqa: E402
from engine.export.controlnet import export_controlnet  # noqa: E402
from tests.tiny_controlnets import tiny_sd1_controlnet, tiny_sdxl_controlnet  # noqa: E402
from tests.tiny_models import CONFIGS  # noqa: E402
from tests.tiny_models_xl import XL_CONFIGS  # noqa: E402

UNET_CONFIGS = {"sd1": CONFIGS["sd1"]["unet"], "sd2": CONFIGS["sd2"]["unet"],
                "sdxl": XL_CONFIGS["sdxl"]["unet"]}
BATCH, HEIGHT, WIDTH = 2, 8, 12  # latents; the tiny ControlNet's picture is twice as large


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    """Per family: the torch UNet and ControlNet, our exports of both, and the variant."""
    built = {}
    for family in ("sd1", "sdxl"):
        folder = tmp_path_factory.mktemp(family)
        unet = _tiny_unet(family)
        controlnet = (tiny_sdxl_controlnet if family == "sdxl" else tiny_sd1_controlnet)(seed=3)
        _export_unet(unet, folder / "unet")
        export_controlnet(controlnet, folder / "controlnet-model")
        make_control_unet(folder / "unet" / "model.onnx", folder / "variant")
        built[family] = {"unet": unet, "controlnet": controlnet, "folder": folder}
    return built


def _tiny_unet(family: str):
    torch.manual_seed(0)
    return diffusers.UNet2DConditionModel(**UNET_CONFIGS[family]).eval()


def _export_unet(unet, folder: Path, threshold: int = graphs.EXTERNAL_DATA_THRESHOLD) -> None:
    folder.mkdir(parents=True)
    graphs.export_graph(graphs.UNetGraph(unet), graphs.unet_example(unet),
                        folder / "model.onnx", threshold)
    unet.save_config(folder)


def _feeds(family: str, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    width = UNET_CONFIGS[family]["cross_attention_dim"]
    feeds = {
        "sample": rng.standard_normal((BATCH, 4, HEIGHT, WIDTH), dtype=np.float32),
        "timestep": np.array([421.0] * BATCH, dtype=np.float32),
        "encoder_hidden_states": rng.standard_normal((BATCH, 77, width), dtype=np.float32),
    }
    if family == "sdxl":
        feeds["text_embeds"] = rng.standard_normal((BATCH, 32), dtype=np.float32)
        feeds["time_ids"] = np.tile(np.array([[64, 96, 0, 0, 64, 96]], np.float32),
                                    (BATCH, 1))
    return feeds


def _picture(seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.random((BATCH, 3, 2 * HEIGHT, 2 * WIDTH), dtype=np.float32)


def _added(feeds: dict) -> dict | None:
    if "text_embeds" not in feeds:
        return None
    return {name: torch.from_numpy(feeds[name]) for name in ("text_embeds", "time_ids")}


def _torch_residuals(controlnet, feeds: dict, picture: np.ndarray, scale: float) -> list:
    with torch.no_grad():
        down, mid = controlnet(
            torch.from_numpy(feeds["sample"]), torch.from_numpy(feeds["timestep"]),
            torch.from_numpy(feeds["encoder_hidden_states"]),
            controlnet_cond=torch.from_numpy(picture), conditioning_scale=scale,
            added_cond_kwargs=_added(feeds), return_dict=False)
    return [tensor.numpy() for tensor in (*down, mid)]


def _torch_unet(unet, feeds: dict, residuals: list | None) -> np.ndarray:
    extra = {}
    if residuals is not None:
        extra = {"down_block_additional_residuals": tuple(torch.from_numpy(r)
                                                          for r in residuals[:-1]),
                 "mid_block_additional_residual": torch.from_numpy(residuals[-1])}
    with torch.no_grad():
        return unet(torch.from_numpy(feeds["sample"]), torch.from_numpy(feeds["timestep"]),
                    torch.from_numpy(feeds["encoder_hidden_states"]),
                    added_cond_kwargs=_added(feeds), return_dict=False, **extra)[0].numpy()


def _run(graph: Path, feeds: dict) -> list[np.ndarray]:
    return ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"]).run(None, feeds)


def _residual_feeds(residuals: list) -> dict[str, np.ndarray]:
    return dict(zip(residual_names(len(residuals) - 1), residuals, strict=True))


# --- the ControlNet graph ---------------------------------------------------------------------

@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_controlnet_graph_matches_diffusers_at_two_scales(models, family):
    model = models[family]
    feeds, picture = _feeds(family), _picture()
    graph = model["folder"] / "controlnet-model" / "model.onnx"
    outputs = {}
    for scale in (1.0, 0.5):
        ours = _run(graph, {**feeds, "controlnet_cond": picture,
                            "conditioning_scale": np.array(scale, dtype=np.float32)})
        theirs = _torch_residuals(model["controlnet"], feeds, picture, scale)
        assert len(ours) == len(theirs) == 7  # 6 skips of the tiny UNet + the mid block
        for mine, reference in zip(ours, theirs, strict=True):
            np.testing.assert_allclose(mine, reference, atol=1e-4, rtol=0)
        outputs[scale] = ours
    # The scale is the graph's input, not a constant traced in: half the scale, half the
    # residuals (and they are not zero, so this can fail).
    assert min(np.abs(output).max() for output in outputs[1.0]) > 1e-2
    for full, half in zip(outputs[1.0], outputs[0.5], strict=True):
        np.testing.assert_allclose(half, full * 0.5, atol=1e-5, rtol=0)


def test_controlnet_graph_names_and_types(models):
    session = ort.InferenceSession(str(models["sdxl"]["folder"] / "controlnet-model" /
                                       "model.onnx"))
    inputs = {node.name: (node.type, node.shape) for node in session.get_inputs()}
    assert list(inputs) == ["sample", "timestep", "encoder_hidden_states", "text_embeds",
                            "time_ids", "controlnet_cond", "conditioning_scale"]
    assert all(kind == "tensor(float)" for kind, _shape in inputs.values())
    assert inputs["conditioning_scale"][1] == []
    assert [node.name for node in session.get_outputs()] == residual_names(6)
    folder = models["sdxl"]["folder"] / "controlnet-model"
    assert (folder / "config.json").is_file() and (folder / "weights_map.json").is_file()


# --- the UNet that takes residuals ------------------------------------------------------------

@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_variant_with_residuals_matches_diffusers(models, family):
    model = models[family]
    feeds = _feeds(family)
    residuals = _torch_residuals(model["controlnet"], feeds, _picture(), 1.0)
    ours = _run(model["folder"] / "variant" / "model.onnx",
                {**feeds, **_residual_feeds(residuals)})[0]
    theirs = _torch_unet(model["unet"], feeds, residuals)
    np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)
    # The residuals matter: without them the output is far from this one.
    assert np.abs(theirs - _torch_unet(model["unet"], feeds, None)).max() > 1e-2


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_variant_with_zero_residuals_is_the_plain_unet(models, family):
    folder = models[family]["folder"]
    feeds = _feeds(family, seed=5)
    zeros = [np.zeros_like(r) for r in _torch_residuals(models[family]["controlnet"], feeds,
                                                         _picture(), 1.0)]
    plain = _run(folder / "unet" / "model.onnx", feeds)[0]
    variant = _run(folder / "variant" / "model.onnx", {**feeds, **_residual_feeds(zeros)})[0]
    np.testing.assert_allclose(variant, plain, atol=1e-6, rtol=0)


def test_residuals_on_the_wrong_skips_fail_the_comparison(models):
    # Skips 1 and 2 have the same shape, so swapping them runs; the comparison must see it.
    model = models["sd1"]
    feeds = _feeds("sd1")
    residuals = _torch_residuals(model["controlnet"], feeds, _picture(), 1.0)
    assert residuals[1].shape == residuals[2].shape
    swapped = [residuals[0], residuals[2], residuals[1], *residuals[3:]]
    ours = _run(model["folder"] / "variant" / "model.onnx",
                {**feeds, **_residual_feeds(swapped)})[0]
    theirs = _torch_unet(model["unet"], feeds, residuals)
    assert np.abs(ours - theirs).max() > 1e-2


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
def test_skip_concats_are_the_only_channel_concats(tmp_path, family):
    """What the edit relies on, checked with onnx's shape inference on our exports: the
    channel Concats are exactly the skip ones (4-D), the first reads the last skip, and each
    residual input takes its skip's channels."""
    unet = _tiny_unet(family)
    _export_unet(unet, tmp_path / "unet")
    model = onnx.shape_inference.infer_shapes(onnx.load(str(tmp_path / "unet" / "model.onnx")))
    ranks = {info.name: len(info.type.tensor_type.shape.dim)
             for info in [*model.graph.value_info, *model.graph.input]}
    concats = [node for node in model.graph.node if node.op_type == "Concat"]
    channel = [node for node in concats if _axis(node) in (1, -3)]
    assert len(channel) == 6
    assert all(ranks[name] == 4 for node in channel for name in node.input)
    other_4d = [node for node in concats if node not in channel
                and any(ranks.get(name) == 4 for name in node.input)]
    assert other_4d == []
    assert "mid_block" in channel[0].input[0] and "down_blocks.1" in channel[0].input[1]
    assert channel[-1].input[1].startswith("/unet/conv_in/")
    make_control_unet(tmp_path / "unet" / "model.onnx", tmp_path / "variant")
    variant = onnx.load(str(tmp_path / "variant" / "model.onnx"))
    onnx.checker.check_model(variant)  # still valid and in topological order
    channels = {info.name: info.type.tensor_type.shape.dim[1].dim_value
                for info in variant.graph.input if info.name in residual_names(6)}
    assert [channels[name] for name in residual_names(6)] == [32, 32, 32, 32, 64, 64, 64]
    plain = onnx.load(str(tmp_path / "unet" / "model.onnx"))
    assert [t.name for t in variant.graph.initializer] == [t.name for t in
                                                           plain.graph.initializer]
    assert len(variant.graph.node) == len(plain.graph.node) + 7


def _axis(node) -> int:
    return next(attribute.i for attribute in node.attribute if attribute.name == "axis")


def test_external_weights_are_hard_linked(tmp_path):
    unet = _tiny_unet("sd1")
    _export_unet(unet, tmp_path / "unet", threshold=1)  # weights outside, as a real UNet's
    data = tmp_path / "unet" / "model.onnx.data"
    assert data.is_file()
    make_control_unet(tmp_path / "unet" / "model.onnx", tmp_path / "variant")
    assert os.stat(tmp_path / "variant" / "model.onnx.data").st_ino == os.stat(data).st_ino
    feeds = _feeds("sd1")
    zeros = [np.zeros_like(r) for r in _torch_residuals(tiny_sd1_controlnet(), feeds,
                                                         _picture(), 1.0)]
    np.testing.assert_array_equal(
        _run(tmp_path / "variant" / "model.onnx", {**feeds, **_residual_feeds(zeros)})[0],
        _run(tmp_path / "unet" / "model.onnx", feeds)[0])


def test_a_graph_without_skip_concats_is_refused(models, tmp_path):
    # The ControlNet has the UNet's config but no up path: no skip Concats at all.
    graph = models["sd1"]["folder"] / "controlnet-model" / "model.onnx"
    with pytest.raises(ModelError) as refused:
        make_control_unet(graph, tmp_path / "variant")
    assert str(refused.value) == "This model's UNet cannot take ControlNet residuals."
    assert REFUSAL[1:] in str(refused.value)
    assert not (tmp_path / "variant" / "model.onnx").exists()


# --- where the variant is ---------------------------------------------------------------------

def test_control_unet_path_makes_the_variant_once_in_the_cache(models, tmp_path):
    model_folder = models["sd1"]["folder"]
    before = sorted(path.relative_to(model_folder) for path in model_folder.rglob("*"))
    path = control_unet_path(model_folder, "abc123", tmp_path / "cache")
    assert path == tmp_path / "cache" / "control-unet" / "abc123" / "model.onnx"
    assert residual_names(6) == graph_input_names(path)[3:]
    made = path.stat().st_mtime_ns
    assert control_unet_path(model_folder, "abc123", tmp_path / "cache") == path
    assert path.stat().st_mtime_ns == made  # made once
    after = sorted(path.relative_to(model_folder) for path in model_folder.rglob("*"))
    assert after == before  # the model folder is never written
    assert [p.name for p in path.parent.parent.iterdir()] == ["abc123"]  # no staging left


def test_control_unet_path_uses_a_shipped_controlnet_unet(models, tmp_path):
    # OnnxStack/Amuse ship the ControlNet-ready UNet as the model's controlnet/model.onnx.
    model_folder = tmp_path / "model"
    (model_folder / "controlnet").mkdir(parents=True)
    shipped = model_folder / "controlnet" / "model.onnx"
    shipped.write_bytes((models["sd1"]["folder"] / "variant" / "model.onnx").read_bytes())
    assert control_unet_path(model_folder, "h", tmp_path / "cache") == shipped
    assert not (tmp_path / "cache").exists()


def test_control_unet_path_without_a_cache_uses_a_temporary_folder(models):
    path = control_unet_path(models["sdxl"]["folder"], "xl", None)
    assert path.is_file() and not path.is_relative_to(models["sdxl"]["folder"])
    assert graph_input_names(path)[-1] == "mid_block_additional_residual"
