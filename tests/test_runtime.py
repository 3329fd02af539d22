"""engine.runtime against real onnxruntime sessions on tiny graphs built here with onnx.helper."""

from __future__ import annotations

import ctypes
import json
import os
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from engine.errors import BadRequest, Cancelled, GenerationFailed, ModelError
from engine.runtime import (
    CancelToken,
    DeviceReport,
    RuntimeOptions,
    available_providers,
    build_session_options,
    clear_sessions,
    get_session,
    resolve_providers,
)
from engine.runtime.device import device_report, explain_not_started, no_nvidia_gpu
from engine.runtime.errors import translate_run_error

SIZE = 64
ONE_THREAD = RuntimeOptions(providers=("cpu",), cpu_threads=1)


# --- tiny models ---------------------------------------------------------------------------


def _save(graph: onnx.GraphProto, path: Path, *, external_data: bool = False) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    if external_data:
        onnx.save(
            model, path, save_as_external_data=True, location=path.name + ".data",
            size_threshold=0,
        )
    else:
        onnx.save(model, path)
    return path


def _dense_graph(seed: int = 0) -> onnx.GraphProto:
    """y = relu(x @ w + b): MatMul+Add+Relu, which onnxruntime fuses when it optimises."""
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((SIZE, SIZE)).astype(np.float32)
    bias = rng.standard_normal(SIZE).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["xw"]),
        helper.make_node("Add", ["xw", "b"], ["z"]),
        helper.make_node("Relu", ["z"], ["y"]),
    ]
    return helper.make_graph(
        nodes, "dense",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", SIZE])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", SIZE])],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")],
    )


@pytest.fixture
def dense_model(tmp_path: Path) -> Path:
    (tmp_path / "unet").mkdir()
    return _save(_dense_graph(), tmp_path / "unet" / "model.onnx")


@pytest.fixture
def conv_model(tmp_path: Path) -> Path:
    """A Conv: onnxruntime rewrites it into this processor's blocked layout when optimising."""
    rng = np.random.default_rng(2)
    weight = (rng.standard_normal((32, 16, 3, 3)) * 0.1).astype(np.float32)
    bias = rng.standard_normal(32).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1])],
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32, 32, 32])],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")],
    )
    (tmp_path / "vae_encoder").mkdir()
    return _save(graph, tmp_path / "vae_encoder" / "model.onnx")


@pytest.fixture
def external_model(tmp_path: Path) -> Path:
    (tmp_path / "vae_decoder").mkdir()
    return _save(_dense_graph(1), tmp_path / "vae_decoder" / "model.onnx", external_data=True)


def _loop_model(path: Path, size: int = 256) -> Path:
    """Multiplies x by the identity ``n`` times: a single call as long as a test needs."""
    body = helper.make_graph(
        [
            helper.make_node("MatMul", ["x_in", "w"], ["x_out"]),
            helper.make_node("Identity", ["keep_going_in"], ["keep_going_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("keep_going_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("x_in", TensorProto.FLOAT, [size, size]),
        ],
        [
            helper.make_tensor_value_info("keep_going_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("x_out", TensorProto.FLOAT, [size, size]),
        ],
    )
    true = helper.make_tensor("true", TensorProto.BOOL, [], [True])
    graph = helper.make_graph(
        [
            helper.make_node("Constant", [], ["keep_going"], value=true),
            helper.make_node("Loop", ["n", "keep_going", "x"], ["y"], body=body),
        ],
        "loop",
        [
            helper.make_tensor_value_info("n", TensorProto.INT64, []),
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [size, size]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [size, size])],
        [numpy_helper.from_array(np.eye(size, dtype=np.float32), "w")],
    )
    return _save(graph, path)


def _huge_allocation_model(path: Path) -> Path:
    """Asks for a tensor of ``shape`` floats: 2**48 of them cannot exist in any address space."""
    one = helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])
    graph = helper.make_graph(
        [helper.make_node("ConstantOfShape", ["shape"], ["y"], value=one)],
        "huge",
        [helper.make_tensor_value_info("shape", TensorProto.INT64, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["length"])],
    )
    return _save(graph, path)


def _inputs(batch: int = 3) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(7).standard_normal((batch, SIZE)).astype(np.float32)}


def _expected(graph_seed: int = 0, batch: int = 3) -> np.ndarray:
    rng = np.random.default_rng(graph_seed)
    weight = rng.standard_normal((SIZE, SIZE)).astype(np.float32)
    bias = rng.standard_normal(SIZE).astype(np.float32)
    return np.maximum(_inputs(batch)["x"] @ weight + bias, 0)


@pytest.fixture(autouse=True)
def _fresh_sessions():
    clear_sessions()
    yield
    clear_sessions()


@pytest.fixture
def installed(monkeypatch):
    """Pretend onnxruntime was built with the given providers (onnxruntime's own names)."""

    def install(*names: str) -> None:
        monkeypatch.setattr(ort, "get_available_providers", lambda: list(names))

    return install


# --- providers -----------------------------------------------------------------------------


def test_available_providers_are_short_names_and_include_the_cpu():
    names = available_providers()
    assert "cpu" in names
    assert all(name in {"tensorrt", "cuda", "directml", "coreml", "cpu"} for name in names)


def test_resolve_providers_keeps_the_users_order_and_puts_the_cpu_last(installed):
    installed("TensorrtExecutionProvider", "CUDAExecutionProvider", "DmlExecutionProvider",
              "CPUExecutionProvider")
    assert resolve_providers(["directml", "cuda"]) == ["directml", "cuda", "cpu"]
    assert resolve_providers(["CUDA", "tensorrt", "cuda"]) == ["cuda", "tensorrt", "cpu"]
    assert resolve_providers(["cpu"]) == ["cpu"]
    # Nothing after "cpu" would ever get a node.
    assert resolve_providers(["cpu", "cuda"]) == ["cpu"]


def test_resolve_providers_drops_what_is_not_installed(installed):
    installed("CUDAExecutionProvider", "CPUExecutionProvider")
    assert resolve_providers(["coreml", "directml"]) == ["cpu"]
    assert resolve_providers(["tensorrt", "cuda"]) == ["cuda", "cpu"]


def test_the_default_order_is_cuda_directml_coreml_then_cpu_without_tensorrt(installed):
    installed("TensorrtExecutionProvider", "CUDAExecutionProvider", "DmlExecutionProvider",
              "CoreMLExecutionProvider", "CPUExecutionProvider")
    assert resolve_providers([]) == ["cuda", "directml", "coreml", "cpu"]
    installed("CPUExecutionProvider")
    assert resolve_providers(()) == ["cpu"]


def test_an_unknown_provider_is_refused_in_one_sentence_listing_the_valid_ones():
    with pytest.raises(BadRequest) as caught:
        resolve_providers(["cuda", "vulkan"])
    message = str(caught.value)
    assert "'vulkan'" in message
    assert "tensorrt, cuda, directml, coreml, cpu" in message
    assert message.endswith(".") and message.count(". ") == 0


def test_runtime_options_are_normalised_and_checked():
    assert RuntimeOptions(providers=["CUDA", "cpu"]) == RuntimeOptions(providers=("cuda", "cpu"))
    with pytest.raises(BadRequest):
        RuntimeOptions(providers=("gpu",))
    with pytest.raises(BadRequest, match="negative"):
        RuntimeOptions(cpu_threads=-1)
    assert RuntimeOptions(cpu_threads=0).thread_count >= 1
    assert RuntimeOptions(cpu_threads=3).thread_count == 3


def test_cpu_sessions_do_not_spin_and_use_the_thread_setting():
    built = build_session_options(RuntimeOptions(cpu_threads=3), ["cpu"])
    assert built.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert built.get_session_config_entry("session.inter_op.allow_spinning") == "0"
    assert built.intra_op_num_threads == 3
    all_cores = build_session_options(RuntimeOptions(cpu_threads=0), ["cpu"])
    assert all_cores.intra_op_num_threads == RuntimeOptions().thread_count


# --- sessions and their cache --------------------------------------------------------------


def test_a_session_runs_and_reports_its_inputs(dense_model):
    session = get_session(dense_model, ONE_THREAD)
    assert session.input_names == ["x"]
    assert session.output_names == ["y"]
    assert session.input_type("x") == np.float32
    [result] = session.run(_inputs())
    np.testing.assert_allclose(result, _expected(), rtol=1e-5, atol=1e-5)
    assert session.device == DeviceReport(("cpu",), "cpu", None, cpu_threads=1)
    assert session.device.summary == "CPU (1 thread)"


def test_input_type_follows_the_model_and_refuses_unknown_inputs(tmp_path):
    session = get_session(_loop_model(tmp_path / "loop.onnx", size=4), ONE_THREAD)
    assert session.input_type("n") == np.int64
    with pytest.raises(ModelError, match="no input named 'timestep'"):
        session.input_type("timestep")


def test_the_same_file_and_options_give_the_same_session(dense_model):
    first = get_session(dense_model, ONE_THREAD)
    again = get_session(Path(str(dense_model)), RuntimeOptions(providers=["CPU"], cpu_threads=1))
    assert again is first


def test_other_providers_or_threads_give_another_session(dense_model, installed):
    on_one_thread = get_session(dense_model, ONE_THREAD)
    on_two_threads = get_session(dense_model, RuntimeOptions(providers=("cpu",), cpu_threads=2))
    assert on_two_threads is not on_one_thread
    # Asking for CUDA must never hand back the CPU session, even where CUDA then cannot start.
    installed("CUDAExecutionProvider", "CPUExecutionProvider")
    asked_for_cuda = get_session(dense_model, RuntimeOptions(providers=("cuda",), cpu_threads=1))
    assert asked_for_cuda is not on_one_thread
    assert asked_for_cuda.device.requested == ("cuda",)


def test_a_changed_file_gives_a_new_session(dense_model):
    first = get_session(dense_model, ONE_THREAD)
    _save(_dense_graph(seed=5), dense_model)
    stat = dense_model.stat()
    os.utime(dense_model, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    second = get_session(dense_model, ONE_THREAD)
    assert second is not first
    np.testing.assert_allclose(second.run(_inputs())[0], _expected(5), rtol=1e-5, atol=1e-5)


def test_a_model_with_external_weights_loads(external_model):
    assert (external_model.parent / "model.onnx.data").is_file()
    [result] = get_session(external_model, ONE_THREAD).run(_inputs())
    np.testing.assert_allclose(result, _expected(1), rtol=1e-5, atol=1e-5)


# --- the optimised-graph cache -------------------------------------------------------------


def _cached_graphs(cache: Path) -> list[Path]:
    return sorted(cache.glob("onnxruntime-*/*/*/model.onnx"))


def _feeds_for(session) -> dict[str, np.ndarray]:
    if session.input_names == ["x"] and session.path.parent.name == "vae_encoder":
        return {"x": np.random.default_rng(3).standard_normal((1, 16, 32, 32)).astype(np.float32)}
    return _inputs()


@pytest.mark.parametrize("model_fixture", ["dense_model", "external_model", "conv_model"])
def test_the_optimised_graph_is_cached_per_provider_and_reused(model_fixture, tmp_path, request):
    model = request.getfixturevalue(model_fixture)
    cache = tmp_path / "cache"
    options = RuntimeOptions(providers=("cpu",), cpu_threads=1, optimized_cache=cache)

    first = get_session(model, options)
    [graph] = _cached_graphs(cache)
    assert graph.parent.parent.name == "cpu"
    assert graph.parent.parent.parent.name == f"onnxruntime-{ort.__version__}"
    # Weights live beside the graph, so a > 2 GB graph caches the same way.
    assert (graph.parent / "model.onnx.data").is_file()
    assert first.loaded_from == model
    written = graph.stat().st_mtime_ns
    feeds = _feeds_for(first)
    [before] = first.run(feeds)

    clear_sessions()
    second = get_session(model, options)
    assert second is not first
    assert second.loaded_from == graph
    assert graph.stat().st_mtime_ns == written
    [after] = second.run(feeds)
    np.testing.assert_allclose(after, before, rtol=1e-6, atol=1e-6)
    assert not list(cache.rglob(".staging-*"))


def test_a_changed_model_replaces_its_cached_graph(dense_model, tmp_path):
    cache = tmp_path / "cache"
    options = RuntimeOptions(providers=("cpu",), cpu_threads=1, optimized_cache=cache)
    get_session(dense_model, options)
    _save(_dense_graph(seed=9), dense_model)
    stat = dense_model.stat()
    os.utime(dense_model, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))

    clear_sessions()
    session = get_session(dense_model, options)
    assert session.loaded_from == dense_model
    assert len(_cached_graphs(cache)) == 1
    np.testing.assert_allclose(session.run(_inputs())[0], _expected(9), rtol=1e-5, atol=1e-5)


def test_a_damaged_cached_graph_is_rebuilt_not_fatal(dense_model, tmp_path):
    cache = tmp_path / "cache"
    options = RuntimeOptions(providers=("cpu",), cpu_threads=1, optimized_cache=cache)
    get_session(dense_model, options)
    [graph] = _cached_graphs(cache)
    graph.write_bytes(b"half a file")

    clear_sessions()
    session = get_session(dense_model, options)
    np.testing.assert_allclose(session.run(_inputs())[0], _expected(), rtol=1e-5, atol=1e-5)
    clear_sessions()
    assert get_session(dense_model, options).loaded_from == graph


# --- the device report ---------------------------------------------------------------------


def _loadable(name: str) -> bool:
    try:
        ctypes.CDLL(name)
    except OSError:
        return False
    return True


def test_a_listed_cuda_that_cannot_start_is_reported_not_hidden(dense_model, tmp_path, capfd):
    """The real case: onnxruntime-gpu lists CUDA, then quietly runs on the CPU."""
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("this onnxruntime has no CUDA provider")
    cache = tmp_path / "cache"
    options = RuntimeOptions(providers=("cuda",), cpu_threads=1, optimized_cache=cache)
    capfd.readouterr()
    session = get_session(dense_model, options)
    if session.device.in_use == "cuda":
        pytest.skip("CUDA really works on this machine")

    device = session.device
    assert device.requested == ("cuda",)
    assert device.in_use == "cpu"
    if no_nvidia_gpu():  # a note, not a warning, and no advice to install CUDA
        assert (device.reason, device.note) == (
            None, "No NVIDIA GPU was found; Easel uses the CPU.")
    else:
        assert device.reason.startswith("The GPU was not used: CUDA could not start: ")
        assert device.reason.endswith("; running on the CPU.")
        assert "is missing" in device.reason
        if not _loadable("libcublasLt.so.13"):
            assert "the CUDA library libcublasLt.so.13 is missing" in device.reason
    assert device.summary == "CPU (1 thread)"
    # onnxruntime's red and yellow log lines stay off the console.
    printed = capfd.readouterr()
    assert "onnxruntime" not in printed.err + printed.out
    np.testing.assert_allclose(session.run(_inputs())[0], _expected(), rtol=1e-5, atol=1e-5)
    # The graph optimised while CUDA did not start is kept, marked as the CPU's, and the next
    # load uses it (every CPU-only install of onnxruntime-gpu is this case), still explaining.
    (stamp,) = cache.glob("onnxruntime-*/cuda+cpu/*/source.json")
    assert json.loads(stamp.read_text())["ran_on"] == ["cpu"]
    clear_sessions()
    again = get_session(dense_model, options)
    assert again.loaded_from == stamp.parent / "model.onnx"
    assert again.device == device
    np.testing.assert_allclose(again.run(_inputs())[0], _expected(), rtol=1e-5, atol=1e-5)


def _fake_loader(missing: dict[str, str], driver: object | None = None):
    """A stand-in for ctypes: ``missing`` maps a file name ending to the library it lacks."""

    def load(name: str, global_symbols: bool) -> object:
        for ending, lacks in missing.items():
            if name.endswith(ending):
                raise OSError(f"{lacks}: cannot open shared object file: No such file or directory")
        if name.endswith(("libcuda.so.1", "nvcuda.dll")) and driver is not None:
            return driver
        return object()

    return load


def _driver(version: int, init_status: int = 0) -> SimpleNamespace:
    def get_version(pointer):
        pointer.contents.value = version
        return 0

    return SimpleNamespace(cuInit=lambda flags: init_status, cuDriverGetVersion=get_version)


def test_the_reason_names_the_missing_cuda_library_when_a_driver_is_there(monkeypatch):
    monkeypatch.setattr(ort, "cuda_version", "13.0", raising=False)
    load = _fake_loader({
        "providers_cuda.so": "libcublasLt.so.13",
        "providers_cuda.dll": "libcublasLt.so.13",
    }, _driver(13000))
    report = device_report(
        ["cuda"], ["cpu"], cpu_threads=8, load=load, installed=["cuda", "cpu"]
    )
    assert report.reason == (
        "The GPU was not used: CUDA could not start: the CUDA library libcublasLt.so.13 is missing "
        f"(install the CUDA 13 runtime and cuDNN 9 that {ort.package_name} {ort.__version__} "
        'needs, or pip install "easel[cuda]"); running on the CPU.'
    )
    assert report.summary == "CPU (8 threads)" and report.note is None


@pytest.mark.parametrize(
    ("missing", "driver", "expected"),
    [
        ({"providers_cuda.so": "libcudnn.so.9"}, _driver(13000), "the cuDNN library libcudnn.so.9"),
        ({}, _driver(12040), "the NVIDIA driver supports CUDA 12.4 but this onnxruntime needs "
                             "CUDA 13 (update the driver)"),
        ({}, _driver(13000, init_status=100), "no NVIDIA GPU was found"),
        ({}, _driver(13000), "onnxruntime did not say why"),
    ],
)
def test_the_reason_for_other_cuda_failures(monkeypatch, missing, driver, expected):
    monkeypatch.setattr(ort, "cuda_version", "13.0", raising=False)
    monkeypatch.setattr("sys.platform", "linux")
    cause = explain_not_started(
        "cuda", load=_fake_loader(missing, driver), installed=["cuda", "cpu"]
    )
    assert expected in cause


def test_the_reason_for_a_provider_not_built_in_or_out_of_memory():
    report = device_report(["directml"], ["cpu"], cpu_threads=2, installed=["cpu"])
    assert report.reason == (
        "The GPU was not used: DirectML could not start: this onnxruntime package was built "
        "without it (it needs onnxruntime-directml, on Windows); running on the CPU."
    )
    no_memory = RuntimeError("CUDA failure 2: out of memory")
    report = device_report(
        ["tensorrt", "cuda"], ["cuda", "cpu"], cpu_threads=2,
        start_errors={"tensorrt": no_memory}, installed=["tensorrt", "cuda", "cpu"],
    )
    assert report.reason == (
        "The GPU was not used: TensorRT could not start: there is not enough GPU memory for this "
        "model; running on CUDA."
    )
    assert report.summary == "CUDA"


def test_no_reason_when_the_first_choice_runs():
    assert device_report(["cuda", "cpu"], ["cuda", "cpu"], cpu_threads=4).reason is None
    assert device_report(["cpu"], ["cpu"], cpu_threads=4).reason is None


# --- cancellation --------------------------------------------------------------------------


def test_a_cancel_token_is_set_once_and_calls_its_hooks_once():
    token = CancelToken()
    calls = []
    with token.on_cancel(lambda: calls.append("hook")):
        threads = [threading.Thread(target=token.cancel) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert token.cancelled
    assert calls == ["hook"]
    with pytest.raises(Cancelled, match=r"^Cancelled\.$"):
        token.raise_if_cancelled()
    # A hook registered after the cancel runs at once.
    with token.on_cancel(lambda: calls.append("late")):
        pass
    assert calls == ["hook", "late"]


def test_cancel_stops_a_long_single_run_from_another_thread(tmp_path):
    session = get_session(_loop_model(tmp_path / "loop.onnx"), ONE_THREAD)
    x = np.ones((256, 256), dtype=np.float32)
    started = time.perf_counter()
    session.run({"n": np.array(50, dtype=np.int64), "x": x})
    per_step = max((time.perf_counter() - started) / 50, 1e-5)
    steps = int(30 / per_step)  # about half a minute uninterrupted

    token = CancelToken()
    timer = threading.Timer(0.3, token.cancel)
    timer.start()
    started = time.perf_counter()
    with pytest.raises(Cancelled, match=r"^Cancelled\.$"):
        session.run({"n": np.array(steps, dtype=np.int64), "x": x}, cancel=token)
    stopped_after = time.perf_counter() - started
    timer.join()
    assert stopped_after < 15, "the cancel should land long before the run would finish"

    # The next run has fresh options and a fresh token: it runs normally.
    [result] = session.run({"n": np.array(3, dtype=np.int64), "x": x}, cancel=CancelToken())
    np.testing.assert_array_equal(result, x)


def test_a_run_with_a_cancelled_token_does_not_start(dense_model):
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        get_session(dense_model, ONE_THREAD).run(_inputs(), cancel=token)


# --- errors --------------------------------------------------------------------------------


def test_running_out_of_memory_says_what_to_lower(tmp_path):
    session = get_session(_huge_allocation_model(tmp_path / "huge.onnx"), ONE_THREAD)
    with pytest.raises(GenerationFailed) as caught:
        session.run({"shape": np.array([1 << 48], dtype=np.int64)})
    assert str(caught.value) == (
        "Out of memory on the computer: lower the image size or the number of images, "
        "or close other programs."
    )


@pytest.mark.parametrize(
    "message",
    [
        "[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code returned while "
        "running Conv node. Status Message: CUDA error cudaErrorMemoryAllocation:out of memory",
        "/onnxruntime_src/onnxruntime/core/framework/bfc_arena.cc:376 void* "
        "onnxruntime::BFCArena::AllocateRawInternal(size_t, bool) Failed to allocate memory "
        "for requested buffer of size 2147483648",
        "std::bad_alloc",
        "CUBLAS failure 3: CUBLAS_STATUS_ALLOC_FAILED",
    ],
)
def test_gpu_out_of_memory_messages_are_translated(message):
    error = translate_run_error(RuntimeError(message), Path("/models/sd/unet/model.onnx"), "CUDA")
    assert isinstance(error, GenerationFailed)
    assert str(error) == (
        "Out of memory on the GPU (CUDA): lower the image size or the number of images, "
        "or switch to the CPU."
    )


def test_an_input_the_model_cannot_take_is_a_bad_request(tmp_path):
    session = get_session(_loop_model(tmp_path / "unet.onnx", size=4), ONE_THREAD)
    with pytest.raises(BadRequest, match=r"^The model .*unet\.onnx cannot take this input"):
        session.run({"n": np.array(1), "x": np.ones((8, 8), dtype=np.float32)})


@pytest.mark.parametrize("content", [b"this is not a model", b"\x08\x09\x12\x04\x00\xff\xfe"])
def test_a_corrupt_model_file_is_a_model_error_naming_the_file(tmp_path, content):
    broken = tmp_path / "text_encoder" / "model.onnx"
    broken.parent.mkdir()
    broken.write_bytes(content)
    with pytest.raises(ModelError) as caught:
        get_session(broken, ONE_THREAD)
    assert str(broken) in str(caught.value)
    assert "damaged" in str(caught.value)


def test_a_truncated_model_file_is_a_model_error(dense_model):
    data = dense_model.read_bytes()
    dense_model.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="damaged"):
        get_session(dense_model, ONE_THREAD)


def test_a_missing_model_file_is_a_model_error(tmp_path):
    with pytest.raises(ModelError, match="is missing"):
        get_session(tmp_path / "unet" / "model.onnx", ONE_THREAD)
