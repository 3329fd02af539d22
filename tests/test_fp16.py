"""fp16 copies of the float32 graphs for GPU providers (engine.runtime.fp16) and the sessions,
cache, preparation and VAE fallback around them.

The CPU provider has few fp16 kernels, so the copies are checked for structure with the onnx
package and for values with onnx's reference evaluator, which computes in float16 with numpy
(MultiHeadAttention, a com.microsoft operator it lacks, is given to it below), and with
onnxruntime's CPU provider, which runs a float16 graph by casting around the kernels it lacks.
"""

from __future__ import annotations

import gc
import os
import shutil
import weakref
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun

from engine.errors import BadRequest, ModelError
from engine.model import load_model, model_graphs, prepare_model
from engine.runtime import (
    InitializerOverrides,
    RuntimeOptions,
    Session,
    clear_sessions,
    get_session,
    needs_preparing,
)
from engine.runtime import fp16 as fp16_module
from engine.runtime import sessions as sessions_module
from engine.runtime.fp16 import convert_to_fp16, fit_overrides, half_graph, to_half
from engine.runtime.graph_cache import STAMP_FILE
from engine.runtime.onnx_weights import read_initializers
from engine.runtime.sessions import runs_in_half
from tests import tiny_models_xl

CPU = ("cpu",)
FP16_CPU = RuntimeOptions(providers=CPU, precision="fp16")


@pytest.fixture(autouse=True)
def _fresh_sessions():
    clear_sessions()
    yield
    clear_sessions()


class MultiHeadAttention(OpRun):
    """com.microsoft.MultiHeadAttention as the UNet uses it (query, key, value; no bias or
    mask), computed in the inputs' own type as the float16 kernel would."""

    op_domain = "com.microsoft"

    def _run(self, query, key, value, *unused, num_heads=None, scale=None, **attributes):
        def heads(x: np.ndarray) -> np.ndarray:
            return x.reshape(x.shape[0], x.shape[1], num_heads, -1).transpose(0, 2, 1, 3)

        q, k, v = heads(query), heads(key), heads(value)
        factor = scale or 1 / np.sqrt(q.shape[-1])
        scores = (q @ k.transpose(0, 1, 3, 2)) * query.dtype.type(factor)
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        weights = scores / scores.sum(-1, keepdims=True)
        joined = (weights @ v).transpose(0, 2, 1, 3)
        return (joined.reshape(query.shape[0], query.shape[1], -1).astype(query.dtype),)


def _reference(graph: Path) -> ReferenceEvaluator:
    return ReferenceEvaluator(str(graph), new_ops=[MultiHeadAttention])


def _feeds(component: str, batch: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    if component.startswith("text_encoder"):
        return {"input_ids": rng.integers(0, 49408, (batch, 77)).astype(np.int32)}
    if component == "vae_decoder":
        return {"latent_sample": rng.standard_normal((batch, 4, 8, 8)).astype(np.float32)}
    feeds = {"sample": rng.standard_normal((batch, 4, 8, 8)).astype(np.float32),
             "timestep": np.array([981.0, 21.0][:batch], np.float32),
             "encoder_hidden_states": rng.standard_normal((batch, 77, 32)).astype(np.float32)}
    if component == "unet_xl":
        feeds["encoder_hidden_states"] = rng.standard_normal((batch, 77, 64)).astype(np.float32)
        feeds["text_embeds"] = rng.standard_normal((batch, 32)).astype(np.float32)
        feeds["time_ids"] = np.tile(np.array([[1024, 1024, 0, 0, 1024, 1024]], np.float32),
                                    (batch, 1))
    return feeds


def _assert_close_in_fp16(actual: list[np.ndarray], expected: list[np.ndarray]) -> None:
    """float16's rounding (11 bits: 1e-3 of the largest value, with room for the layers it
    goes through), and not the float32 result itself: the copy does compute in float16."""
    for got, want in zip(actual, expected, strict=True):
        assert got.dtype == np.float32 and got.shape == want.shape
        scale = float(np.abs(want).max())
        difference = float(np.abs(got - want).max())
        assert difference <= 5e-3 * max(scale, 1.0), (difference, scale)
        assert difference > 0


def _copy(tmp_path: Path, folder: Path, component: str) -> Path:
    """The fp16 copy of ``folder``'s ``component``, made in ``tmp_path``."""
    convert_to_fp16(folder / component / "model.onnx", tmp_path / component)
    return tmp_path / component / "model.onnx"


# --- the converted graph ------------------------------------------------------------------------

@pytest.mark.parametrize("component", ["text_encoder", "unet", "vae_decoder"])
def test_the_copy_is_a_valid_graph_with_fp16_weights_and_the_same_fp32_interface(
        tiny_sd1_onnx, tmp_path, component):
    source = onnx.load(str(tiny_sd1_onnx / component / "model.onnx"))
    conversion = convert_to_fp16(tiny_sd1_onnx / component / "model.onnx", tmp_path)
    copy = onnx.load(str(tmp_path / "model.onnx"))
    onnx.checker.check_model(copy, full_check=True)

    weights = {tensor.name: tensor for tensor in copy.graph.initializer}
    assert set(weights) == {tensor.name for tensor in source.graph.initializer}
    assert {tensor.data_type for tensor in weights.values()} == {TensorProto.FLOAT16}
    assert conversion.kept_fp32 == ()
    for tensor in source.graph.initializer:  # the same shapes, the values rounded
        half = numpy_helper.to_array(weights[tensor.name], base_dir=str(tmp_path))
        np.testing.assert_array_equal(half, to_half(numpy_helper.to_array(tensor)))
    assert [(value.name, value.type) for value in copy.graph.input] == [
        (value.name, value.type) for value in source.graph.input]
    assert [(value.name, value.type) for value in copy.graph.output] == [
        (value.name, value.type) for value in source.graph.output]
    assert not copy.graph.value_info
    producers = {name: node for node in copy.graph.node for name in node.output}
    for value in copy.graph.output:  # each float32 output is a Cast from the float16 work
        cast = producers[value.name]
        assert cast.op_type == "Cast" and cast.attribute[0].i == TensorProto.FLOAT
    casts = {value.name: [node for node in copy.graph.node if node.op_type == "Cast"
                          and list(node.input) == [value.name] and node.attribute[0].i == 10]
             for value in copy.graph.input}
    assert all(len(found) <= 1 for found in casts.values())  # one for all fp16 users
    for image in ("sample", "latent_sample"):
        assert len(casts.get(image, [None])) == 1
    stored = onnx.load(str(tmp_path / "model.onnx"), load_external_data=False)
    for tensor in stored.graph.initializer:  # from 1 KB on, in the data file beside it
        outside = tensor.data_location == TensorProto.EXTERNAL
        assert outside == (np.prod(tensor.dims) * 2 >= 1024), tensor.name
    assert (tmp_path / "model.onnx.data").stat().st_size > 0


@pytest.mark.parametrize("component", ["text_encoder", "unet", "vae_decoder"])
def test_the_copy_computes_what_the_fp32_graph_does_to_fp16_precision(
        tiny_sd1_onnx, tmp_path, component):
    source = tiny_sd1_onnx / component / "model.onnx"
    copy = _copy(tmp_path, tiny_sd1_onnx, component)
    feeds = _feeds(component)
    expected = _reference(source).run(None, feeds)
    _assert_close_in_fp16(_reference(copy).run(None, feeds), expected)
    # onnxruntime takes the copy as it is, and computes the same on the CPU too.
    cpu = ort.InferenceSession(str(copy), providers=["CPUExecutionProvider"])
    _assert_close_in_fp16(cpu.run(None, feeds), expected)


def test_the_unets_multi_head_attention_computes_in_fp16(tiny_sd1_onnx, tmp_path):
    copy = onnx.load(str(_copy(tmp_path, tiny_sd1_onnx, "unet")))
    attentions = [node for node in copy.graph.node if node.op_type == "MultiHeadAttention"]
    assert attentions and all(node.domain == "com.microsoft" for node in attentions)
    casts = {name for node in copy.graph.node if node.op_type == "Cast" for name in node.output}
    # Their inputs come straight from the float16 projections, with no Cast between.
    assert not any(name in casts for node in attentions for name in node.input)
    reference = _reference(tmp_path / "unet" / "model.onnx")
    query = attentions[0].input[0]
    assert reference.run([query], _feeds("unet"))[0].dtype == np.float16


def _sinusoid_inputs(graph: Path) -> list[str]:
    model = onnx.load(str(graph), load_external_data=False)
    return [node.input[0] for node in model.graph.node if node.op_type in ("Sin", "Cos")]


def _assert_sinusoids_in_fp32(source: Path, copy: Path, feeds: dict) -> None:
    names = _sinusoid_inputs(copy)
    assert names and names == _sinusoid_inputs(source)
    expected = _reference(source).run(names, feeds)
    actual = _reference(copy).run(names, feeds)
    for got, want in zip(actual, expected, strict=True):
        # The timestep times each frequency, exactly as in float32: float16 would be off by
        # up to 0.5 at 999, which scrambles the sines.
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, want)


def test_the_timestep_embedding_is_computed_in_fp32(tiny_sd1_onnx, tmp_path):
    copy = _copy(tmp_path, tiny_sd1_onnx, "unet")
    source = tiny_sd1_onnx / "unet" / "model.onnx"
    _assert_sinusoids_in_fp32(source, copy, _feeds("unet"))
    angles = _reference(source).run(_sinusoid_inputs(source)[:1], _feeds("unet"))[0]
    rounded = angles.astype(np.float16).astype(np.float32)
    assert np.abs(rounded - angles).max() > 0.1  # what float16 would have made of them


@pytest.mark.slow
def test_sdxls_timestep_and_size_embeddings_are_computed_in_fp32(tmp_path):
    folder = tiny_models_xl.tiny_onnx("sdxl")
    copy = _copy(tmp_path, folder, "unet")
    source = folder / "unet" / "model.onnx"
    feeds = _feeds("unet_xl")
    assert len(_sinusoid_inputs(copy)) == 4  # timestep and time_ids, sines and cosines
    _assert_sinusoids_in_fp32(source, copy, feeds)
    _assert_close_in_fp16(_reference(copy).run(None, feeds), _reference(source).run(None, feeds))
    second = _copy(tmp_path, folder, "text_encoder_2")
    _assert_close_in_fp16(_reference(second).run(None, _feeds("text_encoder")),
                          _reference(folder / "text_encoder_2" / "model.onnx").run(
                              None, _feeds("text_encoder")))


# --- the rules, on small graphs -----------------------------------------------------------------

def _constant(name: str, values) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(
        np.asarray(values, np.float32), name))


def _island_graph(path: Path) -> Path:
    """Resize with float32 scales, a float32 Range whose step a float16 Mul shares,
    ConstantOfShape with its default float zeros, a Cast to float and a weight listed
    among the inputs, as older exporters list them."""
    weight = numpy_helper.from_array(np.linspace(-1, 1, 16, dtype=np.float32), "weight")
    nodes = [
        _constant("scales", [1, 1, 2, 2]),
        helper.make_node("Resize", ["x", "", "scales"], ["up"], mode="nearest"),
        _constant("start", 0.0), _constant("limit", 1.0), _constant("step", 0.1),
        helper.make_node("Range", ["start", "limit", "step"], ["steps"]),
        helper.make_node("Mul", ["up", "step"], ["scaled"]),
        helper.make_node("Shape", ["up"], ["shape"]),
        helper.make_node("ConstantOfShape", ["shape"], ["zeros"]),
        helper.make_node("Add", ["scaled", "zeros"], ["summed"]),
        helper.make_node("Reshape", ["weight", "shape"], ["reshaped"]),
        helper.make_node("Add", ["summed", "reshaped"], ["out"]),
        helper.make_node("Shape", ["x"], ["x_shape"]),
        helper.make_node("Cast", ["x_shape"], ["dims"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["dims", "step"], ["sizes"]),
    ]
    graph = helper.make_graph(
        nodes, "islands",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 2, 2]),
         helper.make_tensor_value_info("weight", TensorProto.FLOAT, [16])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 1, 4, 4]),
         helper.make_tensor_value_info("steps", TensorProto.FLOAT, [10]),
         helper.make_tensor_value_info("sizes", TensorProto.FLOAT, [4])],
        initializer=[weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path / "model.onnx"))
    return path / "model.onnx"


def test_operators_and_inputs_that_need_fp32_keep_it(tmp_path):
    source = _island_graph(tmp_path / "source")
    convert_to_fp16(source, tmp_path / "copy")
    copy = onnx.load(str(tmp_path / "copy" / "model.onnx"))
    onnx.checker.check_model(copy, full_check=True)
    constants = {node.output[0]: node.attribute[0].t for node in copy.graph.node
                 if node.op_type == "Constant"}
    nodes = {node.op_type: node for node in copy.graph.node}
    assert constants[nodes["Resize"].input[2]].data_type == TensorProto.FLOAT
    assert {constants[name].data_type for name in nodes["Range"].input} == {TensorProto.FLOAT}
    # The step both precisions use is kept twice, exactly, not cast from float16.
    assert constants["step"].data_type == TensorProto.FLOAT16
    assert nodes["Range"].input[2] != "step"
    assert nodes["ConstantOfShape"].attribute[0].t.data_type == TensorProto.FLOAT16
    assert [node.attribute[0].i for node in copy.graph.node if node.op_type == "Cast"
            and node.input == ["x_shape"]] == [TensorProto.FLOAT16]
    assert [value.name for value in copy.graph.input] == ["x"]  # the weight is a weight now
    feeds = {"x": np.array([[[[1.5, -2.25], [3.0, 0.1]]]], np.float32)}
    expected = ReferenceEvaluator(str(source)).run(None, {**feeds, "weight": np.linspace(
        -1, 1, 16, dtype=np.float32)})
    actual = ReferenceEvaluator(str(tmp_path / "copy" / "model.onnx")).run(None, feeds)
    np.testing.assert_array_equal(actual[1], expected[1])  # Range in float32, exactly
    np.testing.assert_allclose(actual[0], expected[0], atol=2e-3)
    np.testing.assert_allclose(actual[2], expected[2], atol=2e-3)
    assert all(value.dtype == np.float32 for value in actual)


def _dense_graph(path: Path, weight: np.ndarray, *, external: bool) -> Path:
    """y = x·W + b, with a shape tensor, stored inside the graph or outside it."""
    nodes = [helper.make_node("MatMul", ["x", "w"], ["xw"]),
             helper.make_node("Add", ["xw", "b"], ["sum"]),
             helper.make_node("Reshape", ["sum", "shape"], ["y"])]
    initializers = [numpy_helper.from_array(weight, "w"),
                    numpy_helper.from_array(np.arange(weight.shape[1], dtype=np.float32), "b"),
                    numpy_helper.from_array(np.array([-1, weight.shape[1]], np.int64), "shape")]
    graph = helper.make_graph(
        nodes, "dense", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, weight.shape[1]])],
        initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path / "model.onnx"), save_as_external_data=external,
              all_tensors_to_one_file=True, location="model.onnx.data", size_threshold=0)
    return path / "model.onnx"


def test_weights_stored_outside_are_converted_a_slice_at_a_time(tmp_path, monkeypatch):
    monkeypatch.setattr(fp16_module, "_CHUNK", 1000)  # 64×64 weights: five slices
    weight = np.random.default_rng(1).standard_normal((64, 64)).astype(np.float32)
    source = _dense_graph(tmp_path / "source", weight, external=True)
    convert_to_fp16(source, tmp_path / "copy")
    copy = onnx.load(str(tmp_path / "copy" / "model.onnx"), load_external_data=False)
    stored = {tensor.name: {entry.key: entry.value for entry in tensor.external_data}
              for tensor in copy.graph.initializer}
    assert stored["w"]["location"] == "model.onnx.data" and int(stored["w"]["length"]) == 8192
    assert all(int(entry.get("offset", 0)) % 64 == 0 for entry in stored.values() if entry)
    assert stored["shape"]["location"] == "model.onnx.data"  # moved to the copy's own file
    loaded = onnx.load(str(tmp_path / "copy" / "model.onnx"))
    values = {tensor.name: numpy_helper.to_array(tensor) for tensor in loaded.graph.initializer}
    np.testing.assert_array_equal(values["w"], weight.astype(np.float16))
    np.testing.assert_array_equal(values["shape"], [-1, 64])
    x = np.random.default_rng(2).standard_normal((2, 64)).astype(np.float32)
    expected = ReferenceEvaluator(str(source)).run(None, {"x": x})
    actual = ReferenceEvaluator(str(tmp_path / "copy" / "model.onnx")).run(None, {"x": x})
    np.testing.assert_allclose(actual[0], expected[0], atol=0.1, rtol=1e-2)


def test_values_beyond_fp16_are_clamped_but_infinities_stay():
    values = np.array([1e6, -1e6, 65519.0, np.inf, -np.inf, np.nan, 1.0, -3.4e38], np.float32)
    half = to_half(values)
    assert half.dtype == np.float16
    np.testing.assert_array_equal(half[:5], [65504, -65504, 65504, np.inf, -np.inf])
    assert np.isnan(half[5]) and half[6] == 1 and half[7] == -65504


def test_a_graph_with_control_flow_is_refused_in_one_sentence(tmp_path):
    branch = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "branch", [],
                               [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    graph = helper.make_graph(
        [helper.make_node("If", ["flag"], ["out"], then_branch=branch, else_branch=branch)],
        "flow", [helper.make_tensor_value_info("flag", TensorProto.BOOL, []),
                 helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1])])
    (tmp_path / "unet").mkdir()
    onnx.save(helper.make_model(graph), str(tmp_path / "unet" / "model.onnx"))
    with pytest.raises(ModelError, match=r"^The model file unet/model.onnx cannot run in "
                                         r"fp16: it uses control flow \(If\)\.$"):
        convert_to_fp16(tmp_path / "unet" / "model.onnx", tmp_path / "copy")


def test_a_damaged_graph_is_a_model_error(tmp_path):
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "model.onnx").write_bytes(b"\x08\x07\x3a\xff\xff\xff\x0f garbage")
    with pytest.raises(ModelError, match="is damaged"):
        convert_to_fp16(tmp_path / "unet" / "model.onnx", tmp_path / "copy")


# --- made once, cached --------------------------------------------------------------------------

@pytest.fixture
def encoder(tiny_sd1_onnx, tmp_path) -> Path:
    """A copy of the tiny text encoder, free to change."""
    shutil.copytree(tiny_sd1_onnx / "text_encoder", tmp_path / "model" / "text_encoder")
    return tmp_path / "model" / "text_encoder" / "model.onnx"


def _counting(monkeypatch) -> list[Path]:
    made: list[Path] = []
    convert = fp16_module.convert_to_fp16

    def counted(source: Path, destination: Path):
        made.append(source)
        return convert(source, destination)

    monkeypatch.setattr(fp16_module, "convert_to_fp16", counted)
    return made


def test_the_copy_is_made_once_and_reused_from_the_cache(encoder, tmp_path, monkeypatch):
    made = _counting(monkeypatch)
    cache = tmp_path / "cache"
    first = half_graph(encoder, cache, ["cuda", "cpu"])
    assert first.is_relative_to(cache / f"onnxruntime-{ort.__version__}" / "cuda+cpu")
    assert first.parent.name.startswith("text_encoder-model-")
    assert first.parent.name.endswith("-fp16")
    assert (first.parent / STAMP_FILE).is_file() and (first.parent / "model.onnx.data").is_file()
    written = first.stat().st_mtime_ns
    assert half_graph(encoder, cache, ["cuda", "cpu"]) == first
    assert first.stat().st_mtime_ns == written and len(made) == 1
    half_graph(encoder, cache, ["directml", "cpu"])  # each provider list has its own
    assert len(made) == 2
    assert not list(first.parent.parent.glob(".staging-*"))


def test_a_changed_model_makes_its_copy_stale(encoder, tmp_path, monkeypatch):
    made = _counting(monkeypatch)
    cache = tmp_path / "cache"
    first = half_graph(encoder, cache, ["cuda", "cpu"])
    os.utime(encoder, ns=(encoder.stat().st_atime_ns, encoder.stat().st_mtime_ns + 10**9))
    assert half_graph(encoder, cache, ["cuda", "cpu"]) == first
    assert len(made) == 2
    assert fp16_module.half_entry(encoder, cache, ["cuda", "cpu"]).is_fresh()


def test_a_failed_conversion_leaves_nothing_behind(encoder, tmp_path, monkeypatch):
    cache = tmp_path / "cache"

    def fails_half_way(source: Path, destination: Path):
        (destination / "model.onnx.data").write_bytes(b"half of the weights")
        raise OSError("No space left on device")

    monkeypatch.setattr(fp16_module, "convert_to_fp16", fails_half_way)
    with pytest.raises(OSError, match="No space left"):
        half_graph(encoder, cache, ["cuda", "cpu"])
    entry = fp16_module.half_entry(encoder, cache, ["cuda", "cpu"])
    assert not entry.is_fresh() and not entry.folder.exists()
    assert not list(cache.rglob(".staging-*")) and not list(cache.rglob("*.data"))


def test_without_a_cache_folder_the_copy_lives_for_the_process(encoder, monkeypatch, tmp_path):
    made = _counting(monkeypatch)
    first = half_graph(encoder, None, ["cuda", "cpu"])
    assert not first.is_relative_to(tmp_path) and first.is_file()
    assert half_graph(encoder, None, ["cuda", "cpu"]) == first and len(made) == 1


# --- precision in the runtime options and sessions ---------------------------------------------

@pytest.mark.parametrize("bad", ["fp8", "half", "", None, 16])
def test_an_unknown_precision_is_refused_in_one_sentence(bad):
    with pytest.raises(BadRequest, match=r"^Unknown precision .*: choose auto, fp16 or fp32\.$"):
        RuntimeOptions(precision=bad)


def test_precision_and_cuda_graph_options_are_normalised_and_checked():
    assert RuntimeOptions(precision=" FP16 ").precision == "fp16"
    assert RuntimeOptions(precision="fp16") == RuntimeOptions(precision="Fp16")
    assert RuntimeOptions().precision == "auto" and RuntimeOptions().cuda_graph is True
    with pytest.raises(BadRequest, match="true or false"):
        RuntimeOptions(cuda_graph="yes")


def test_auto_is_fp16_on_gpu_providers_only():
    auto = RuntimeOptions()
    assert runs_in_half(auto, ["cuda", "cpu"]) and runs_in_half(auto, ["tensorrt", "cpu"])
    assert runs_in_half(auto, ["directml", "cpu"])
    assert not runs_in_half(auto, ["coreml", "cpu"]) and not runs_in_half(auto, ["cpu"])
    assert runs_in_half(FP16_CPU, ["cpu"])
    assert not runs_in_half(RuntimeOptions(precision="fp32"), ["cuda", "cpu"])


def test_on_the_cpu_with_auto_nothing_changes(installed_tiny_sd1, tmp_path, monkeypatch):
    made = _counting(monkeypatch)
    runtime = RuntimeOptions(providers=CPU, optimized_cache=tmp_path / "cache")
    model = load_model(installed_tiny_sd1, runtime)
    for session in (model.unet, model.text_encoder, model.vae_decoder):
        assert session.precision == "fp32" and session.device.precision is None
        assert session.notes == ()
    decoded, warning = model.decode(_feeds("vae_decoder", batch=1)["latent_sample"])
    assert warning is None and np.isfinite(decoded).all()
    assert made == [] and not list((tmp_path / "cache").rglob("*-fp16"))


def test_an_fp16_session_runs_the_cached_copy_and_says_so(tiny_sd1_onnx, tmp_path):
    runtime = RuntimeOptions(providers=CPU, precision="fp16", optimized_cache=tmp_path / "c")
    graph = tiny_sd1_onnx / "text_encoder" / "model.onnx"
    session = get_session(graph, runtime, half=True)
    assert session.precision == "fp16" and session.device.precision == "fp16"
    assert session.loaded_from.is_relative_to(tmp_path / "c") and session.notes == ()
    assert session.path == graph.resolve()
    plain = get_session(graph, runtime)  # a graph that may not run in fp16 does not
    assert plain.precision == "fp32" and plain.loaded_from != session.loaded_from
    feeds = _feeds("text_encoder")
    _assert_close_in_fp16(session.run(feeds), plain.run(feeds))


def test_lora_weights_are_cast_to_the_fp16_copys_types(tiny_sd1_onnx, tmp_path):
    graph = tiny_sd1_onnx / "text_encoder" / "model.onnx"
    model = onnx.load(str(graph), load_external_data=False)
    shapes = {tensor.name: tuple(tensor.dims) for tensor in model.graph.initializer}
    matrix = next(name for name, dims in shapes.items() if dims == (32, 32))
    vector = next(name for name, dims in shapes.items() if dims == (32,))
    base, _external = read_initializers(graph, [matrix, vector])

    def build():  # as engine.lora merges: float32 arrays from the float32 model
        return {matrix: base[matrix] * 3.0, vector: base[vector] + 2.0}, frozenset()

    overrides = InitializerOverrides(("test-lora",), build)
    copy = half_graph(graph, None, ["cpu"])
    fitted, external = fit_overrides(copy, build()[0])
    assert {array.dtype for array in fitted.values()} == {np.dtype(np.float16)}
    assert external == {matrix}  # 2 KB in fp16: outside the copy's file; the vector inside
    feeds = _feeds("text_encoder")
    half = get_session(graph, FP16_CPU, overrides, half=True)
    single = get_session(graph, RuntimeOptions(providers=CPU), overrides)
    assert half.precision == "fp16"
    expected = single.run(feeds)
    _assert_close_in_fp16(half.run(feeds), expected)
    clear_sessions()
    plain = get_session(graph, RuntimeOptions(providers=CPU)).run(feeds)
    assert np.abs(plain[0] - expected[0]).max() > 0.1  # the LoRA does change the result


def test_a_copy_that_cannot_be_made_runs_in_fp32_and_says_why(tiny_sd1_onnx, monkeypatch):
    def refuses(model, cache, providers):
        raise ModelError("The model file text_encoder/model.onnx cannot run in fp16: it uses "
                         "control flow (If).")

    monkeypatch.setattr(fp16_module, "half_graph", refuses)
    session = get_session(tiny_sd1_onnx / "text_encoder" / "model.onnx", FP16_CPU, half=True)
    assert session.precision == "fp32"
    assert session.notes == ("The model file text_encoder/model.onnx cannot run in fp16: it "
                             "uses control flow (If). text_encoder/model.onnx runs in fp32.",)


def test_a_copy_onnxruntime_refuses_runs_in_fp32_and_says_why(tiny_sd1_onnx, tmp_path,
                                                               monkeypatch):
    broken = tmp_path / "broken" / "model.onnx"
    broken.parent.mkdir()
    broken.write_bytes(b"not a graph")
    monkeypatch.setattr(fp16_module, "half_graph", lambda model, cache, providers: broken)
    session = get_session(tiny_sd1_onnx / "text_encoder" / "model.onnx", FP16_CPU, half=True)
    assert session.precision == "fp32" and session.device.precision is None
    assert len(session.notes) == 1
    assert session.notes[0].startswith("The fp16 copy of text_encoder/model.onnx could not be "
                                       "loaded (")
    assert session.notes[0].endswith("); it runs in fp32.")


# --- CUDA graphs, session side ------------------------------------------------------------------

def test_cuda_graphs_are_asked_of_the_cuda_provider_only():
    options = RuntimeOptions()
    assert sessions_module._provider_options("cuda", options, cuda_graph=True) == {
        "enable_cuda_graph": "1"}
    assert sessions_module._provider_options("cuda", options) == {}
    assert sessions_module._provider_options("cpu", options, cuda_graph=True) == {}


def test_cuda_graphs_on_the_cpu_change_nothing(tiny_sd1_onnx):
    session = get_session(tiny_sd1_onnx / "unet" / "model.onnx", RuntimeOptions(providers=CPU),
                          half=True, cuda_graph=True)
    assert session.cuda_graph is False and session.notes == ()


def test_a_session_that_cannot_replay_cuda_graphs_falls_back_and_says_why(tiny_sd1_onnx,
                                                                           monkeypatch):
    create = sessions_module._create
    asked: list[bool] = []

    def no_graphs_here(path, providers, options, *, cuda_graph=False, half=False):
        asked.append(cuda_graph)
        if cuda_graph:
            raise ort.capi.onnxruntime_pybind11_state.Fail(
                "This session cannot use the CUDA Graph feature as requested by the user as "
                "all compute graph nodes have not been partitioned to the CUDA EP.")
        return create(path, ["cpu"], options, half=half)

    monkeypatch.setattr(sessions_module, "_create", no_graphs_here)
    monkeypatch.setattr(sessions_module, "resolve_providers", lambda names: ["cuda", "cpu"])
    runtime = RuntimeOptions(precision="fp32")
    session = get_session(tiny_sd1_onnx / "unet" / "model.onnx", runtime, cuda_graph=True)
    assert asked == [True, False] and session.cuda_graph is False
    assert session.notes == ("CUDA graphs are not used for unet/model.onnx: This session "
                             "cannot use the CUDA Graph feature as requested by the user as all "
                             "compute graph nodes have not been partitioned to the CUDA EP.",)


def test_stopping_cuda_graphs_lets_the_replaying_session_go(installed_tiny_sd1):
    model = load_model(installed_tiny_sd1, RuntimeOptions(providers=CPU))
    replaying = model.unet
    gone = weakref.ref(replaying)
    assert model.unet is replaying and model.cuda_graph_stopped is None
    model.stop_cuda_graph("The CUDA graph replay failed: the shapes changed.")
    del replaying
    gc.collect()
    assert gone() is None  # its memory goes
    assert model.cuda_graph_stopped == "The CUDA graph replay failed: the shapes changed."
    plain = model.unet
    assert plain is model.unet is model.session("unet") and plain.cuda_graph is False


# --- the VAE decoder's fp16 fallback ------------------------------------------------------------

@pytest.fixture
def overflowing_fp16_decoder(monkeypatch) -> list[str]:
    """The VAE decoder's fp16 session gives an infinity, as SDXL's VAE does in fp16."""
    runs: list[str] = []
    run = Session.run

    def overflowing(self, feeds, outputs=None, cancel=None):
        results = run(self, feeds, outputs, cancel)
        if self.path.parent.name == "vae_decoder":
            runs.append(self.precision)
            if self.precision == "fp16":
                results[0][0, 0, 0, 0] = np.inf
        return results

    monkeypatch.setattr(Session, "run", overflowing)
    return runs


def test_a_vae_decoder_that_overflows_in_fp16_decodes_again_in_fp32_and_says_so_once(
        installed_tiny_sd1, overflowing_fp16_decoder, caplog):
    model = load_model(installed_tiny_sd1, FP16_CPU)
    latents = _feeds("vae_decoder", batch=1)["latent_sample"]
    assert model.vae_decoder.precision == "fp16"
    decoded, warning = model.decode(latents)
    assert warning == (f"The VAE decoder of model '{model.name}' overflowed in fp16, so it "
                       f"decodes in fp32 from now on (slower, more memory).")
    assert overflowing_fp16_decoder == ["fp16", "fp32"] and model.vae_in_fp32
    fp32 = ort.InferenceSession(str(installed_tiny_sd1 / "vae_decoder" / "model.onnx"),
                                providers=["CPUExecutionProvider"])
    expected = fp32.run(None, {"latent_sample": latents})[0]
    np.testing.assert_allclose(decoded, expected, atol=1e-5)  # fp32's output, not fp16's
    again, second_warning = model.decode(latents)
    assert second_warning is None and overflowing_fp16_decoder == ["fp16", "fp32", "fp32"]
    np.testing.assert_array_equal(again, decoded)
    assert model.vae_decoder.precision == "fp32"
    assert sum("overflowed in fp16" in record.message for record in caplog.records) == 1


def test_the_overflow_warning_reaches_the_pictures_result_once(installed_tiny_sd1,
                                                              overflowing_fp16_decoder):
    from engine.pipelines.text_to_image import TextToImagePipeline
    from engine.request import TextToImageRequest

    model = load_model(installed_tiny_sd1, FP16_CPU)
    pipeline = TextToImagePipeline(model)
    request = TextToImageRequest("a cat", width=64, height=64, steps=2, count=2, seed=3)
    first = pipeline(request)
    said = [warning for warning in first.warnings if "overflowed in fp16" in warning]
    assert len(said) == 1 and len(first.images) == 2
    assert overflowing_fp16_decoder == ["fp16", "fp32", "fp32"]  # the second: fp32 at once
    again = pipeline(request)
    assert not any("overflowed" in warning for warning in again.warnings)
    for made, remade in zip(first.images, again.images, strict=True):
        np.testing.assert_array_equal(made.pixels, remade.pixels)


def test_a_vae_decoder_that_does_not_overflow_stays_in_fp16(installed_tiny_sd1):
    model = load_model(installed_tiny_sd1, FP16_CPU)
    latents = _feeds("vae_decoder", batch=1)["latent_sample"]
    decoded, warning = model.decode(latents)
    assert warning is None and not model.vae_in_fp32
    assert model.vae_decoder.precision == "fp16"
    single = get_session(installed_tiny_sd1 / "vae_decoder" / "model.onnx",
                         RuntimeOptions(providers=CPU)).run({"latent_sample": latents})
    _assert_close_in_fp16([decoded], single)


def test_an_fp32_decoder_output_is_never_decoded_twice(installed_tiny_sd1, monkeypatch):
    runs: list[str] = []
    run = Session.run

    def not_a_number(self, feeds, outputs=None, cancel=None):
        runs.append(self.precision)
        results = run(self, feeds, outputs, cancel)
        results[0][...] = np.nan
        return results

    monkeypatch.setattr(Session, "run", not_a_number)
    model = load_model(installed_tiny_sd1, RuntimeOptions(providers=CPU))
    decoded, warning = model.decode(_feeds("vae_decoder", batch=1)["latent_sample"])
    assert runs == ["fp32"] and warning is None and np.isnan(decoded).all()


# --- preparing ----------------------------------------------------------------------------------

def test_preparing_makes_the_fp16_copies_the_runtime_will_use(installed_tiny_sd1, tmp_path,
                                                              monkeypatch):
    runtime = RuntimeOptions(providers=CPU, precision="fp16", optimized_cache=tmp_path / "c")
    graphs = {graph.file.parent.name: graph for graph in model_graphs(installed_tiny_sd1)}
    assert {name for name, graph in graphs.items() if graph.half} == {
        "unet", "text_encoder", "vae_decoder"}
    assert all(needs_preparing(graph.file, runtime, graph.half) for graph in graphs.values())
    preparation = prepare_model(installed_tiny_sd1, runtime)
    assert len(preparation.prepared) == len(graphs)
    assert not any(needs_preparing(graph.file, runtime, graph.half)
                   for graph in graphs.values())
    copies = sorted(path.name.split("-")[0] for path in (tmp_path / "c").rglob("*-fp16"))
    assert copies == ["text_encoder", "unet", "vae_decoder"]
    made = _counting(monkeypatch)
    clear_sessions()
    model = load_model(installed_tiny_sd1, runtime)
    assert model.unet.precision == "fp16" and model.vae_encoder.precision == "fp32"
    assert model.unet.loaded_from.is_relative_to(tmp_path / "c") and made == []
    # Auto on the CPU: the fp32 graphs are prepared, as before, and no copy is made.
    auto = RuntimeOptions(providers=CPU, optimized_cache=tmp_path / "auto")
    prepare_model(installed_tiny_sd1, auto)
    assert made == [] and not list((tmp_path / "auto").rglob("*-fp16"))
    assert not any(needs_preparing(graph.file, auto, graph.half) for graph in graphs.values())


def test_what_a_session_could_not_do_is_said_in_the_result_once(installed_tiny_sd1,
                                                                monkeypatch):
    from engine.pipelines.text_to_image import TextToImagePipeline
    from engine.request import TextToImageRequest

    def cannot(model, cache, providers):
        raise ModelError(f"The graph {model.parent.name} cannot be converted to fp16.")

    monkeypatch.setattr(fp16_module, "half_graph", cannot)
    pipeline = TextToImagePipeline(load_model(installed_tiny_sd1, FP16_CPU))
    request = TextToImageRequest("a cat", width=64, height=64, steps=2, seed=3)
    said = [warning for warning in pipeline(request).warnings if "fp16" in warning]
    assert said == [f"The graph {name} cannot be converted to fp16. {name}/model.onnx runs "
                    f"in fp32." for name in ("text_encoder", "unet", "vae_decoder")]
    assert not any("fp16" in warning for warning in pipeline(request).warnings)
