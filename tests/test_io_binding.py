"""The UNet through onnxruntime's IO binding (engine.runtime.binding), on the CPU provider:
the plain runs' outputs and pixels, the conditioning bound once per denoising, cancelling a
run, and the CUDA-graph path's buffers, graph ids and fallback, run here with CPU buffers
(no CUDA graph is captured on the CPU: what is tested is the bookkeeping around it)."""

from __future__ import annotations

import shutil
import threading
import time

import numpy as np
import onnxruntime as ort
import pytest
from onnxruntime.capi.onnxruntime_pybind11_state import RuntimeException

from engine.errors import Cancelled
from engine.manifest import write_manifest
from engine.model import load_model
from engine.pipelines import diffusion
from engine.pipelines.image_to_image import ImageToImagePipeline
from engine.pipelines.text_to_image import TextToImagePipeline
from engine.request import ImageToImageRequest, TextToImageRequest
from engine.runtime import CancelToken, RuntimeOptions
from engine.runtime.binding import GRAPH_ID_OPTION, BoundCalls, bound_calls

SMALL = {"width": 64, "height": 48, "steps": 5}
PROMPT = {"prompt": "a dog", "negative_prompt": "a cat"}


@pytest.fixture
def model(installed_tiny_sd1, tmp_path):
    """A model of its own: its sessions (and their CUDA graph state) are new."""
    folder = tmp_path / "sd1"
    shutil.copytree(installed_tiny_sd1, folder)
    write_manifest(folder)
    return load_model(folder, RuntimeOptions(cpu_threads=1))


def unet_feeds(model, batch: int = 2) -> tuple[dict, dict]:
    """(constants, per-step inputs) of one UNet call of the tiny model, random."""
    rng = np.random.default_rng(0)
    constants = {"encoder_hidden_states": rng.standard_normal((batch, 77, 32), np.float32)}
    feeds = {"sample": rng.standard_normal((batch, 4, 24, 32), np.float32),
             "timestep": np.full((batch,), 500, dtype=model.unet.input_type("timestep"))}
    return constants, feeds


class PlainCalls:
    """The UNet's calls as they were before IO binding: ``Session.run`` with every input."""

    def __init__(self, session, constants, most=None, output="out_sample") -> None:
        self.session, self.constants, self.most = session, constants, most

    def __call__(self, feeds, cancel):
        feeds = {**self.constants, **feeds}
        most = self.most or len(feeds["sample"])
        return np.concatenate([
            self.session.run({name: value[start:start + most] for name, value in feeds.items()},
                             ["out_sample"], cancel)[0]
            for start in range(0, len(feeds["sample"]), most)])


def test_a_bound_call_gives_the_plain_runs_output(model):
    constants, feeds = unet_feeds(model, batch=3)
    (plain,) = model.unet.run({**constants, **feeds}, ["out_sample"])
    calls = BoundCalls(model.unet, constants)
    assert np.array_equal(calls(feeds, CancelToken()), plain)
    # Again with other latents: only they change.
    feeds["sample"] = feeds["sample"][::-1].copy()
    (plain,) = model.unet.run({**constants, **feeds}, ["out_sample"])
    assert np.array_equal(calls(feeds, CancelToken()), plain)
    # Two samples a run at most: the parts, each with its own rows of the constants.
    parts = BoundCalls(model.unet, constants, most=2)(feeds, CancelToken())
    assert np.array_equal(parts[:2], model.unet.run(
        {name: value[:2] for name, value in {**constants, **feeds}.items()},
        ["out_sample"])[0])
    assert np.array_equal(parts[2:], model.unet.run(
        {name: value[2:] for name, value in {**constants, **feeds}.items()},
        ["out_sample"])[0])


@pytest.mark.parametrize("guidance", [1.0, 7.5])
def test_pictures_are_those_of_plain_runs(model, monkeypatch, guidance):
    text = TextToImageRequest(**PROMPT, **SMALL, guidance=guidance, count=2, seed=4,
                              scheduler="euler_ancestral")
    picture = np.random.default_rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    edit = ImageToImageRequest(picture, **PROMPT, steps=5, guidance=guidance, seed=4)
    bound = [TextToImagePipeline(model)(text), ImageToImagePipeline(model)(edit)]
    monkeypatch.setattr(diffusion, "bound_calls", PlainCalls)
    plain = [TextToImagePipeline(model)(text), ImageToImagePipeline(model)(edit)]
    for ours, theirs in zip(bound, plain, strict=True):
        for image, other in zip(ours.images, theirs.images, strict=True):
            assert np.array_equal(image.pixels, other.pixels)


@pytest.fixture
def binds(monkeypatch):
    """How many times each input name was bound: as an OrtValue on the session's device
    (the conditioning, once), or from numpy, copied at each run (what changes each step)."""
    counts: dict[str, dict[str, int]] = {"device": {}, "numpy": {}}

    def counted(method: str, kind: str):
        bind = getattr(ort.IOBinding, method)

        def counting(self, name, value):
            counts[kind][name] = counts[kind].get(name, 0) + 1
            return bind(self, name, value)

        return counting

    monkeypatch.setattr(ort.IOBinding, "bind_ortvalue_input",
                        counted("bind_ortvalue_input", "device"))
    monkeypatch.setattr(ort.IOBinding, "bind_cpu_input", counted("bind_cpu_input", "numpy"))
    return counts


def test_the_conditioning_is_bound_once_per_denoising(model, binds):
    TextToImagePipeline(model)(TextToImageRequest(**PROMPT, **SMALL, guidance=7.5, seed=1))
    assert binds == {"device": {"encoder_hidden_states": 1},
                     "numpy": {"sample": 5, "timestep": 5}}
    binds["device"].clear()
    binds["numpy"].clear()
    TextToImagePipeline(model)(TextToImageRequest(**PROMPT, **SMALL, count=2, seed=1))
    assert binds == {"device": {"encoder_hidden_states": 2},  # once per picture
                     "numpy": {"sample": 10, "timestep": 10}}


class WaitsForTerminate:
    """An onnxruntime session whose runs last until ``RunOptions.terminate`` is set, then
    fail as onnxruntime does; it records that they saw it."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.started = threading.Event()
        self.terminated = threading.Event()

    def run_with_iobinding(self, binding, run_options) -> None:
        self.started.set()
        deadline = time.monotonic() + 10
        while not run_options.terminate and time.monotonic() < deadline:
            time.sleep(0.01)
        if run_options.terminate:
            self.terminated.set()
        raise RuntimeException("Exiting due to terminate flag being set to true.")

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_a_cancel_stops_a_bound_run_midway(model, monkeypatch):
    waiting = WaitsForTerminate(model.unet.ort_session)
    monkeypatch.setattr(model.unet, "_inner", waiting)
    cancel = CancelToken()

    def cancel_once_running() -> None:
        if waiting.started.wait(10):
            cancel.cancel()

    canceller = threading.Thread(target=cancel_once_running)
    canceller.start()
    with pytest.raises(Cancelled):
        TextToImagePipeline(model)(TextToImageRequest(**PROMPT, **SMALL), cancel=cancel)
    canceller.join()
    assert waiting.terminated.is_set()


def test_a_cancel_between_bound_steps_stops_the_job(model):
    cancel = CancelToken()
    steps = []

    def on_progress(progress):
        steps.append(progress.step)
        if progress.step == 2:
            cancel.cancel()

    with pytest.raises(Cancelled):
        TextToImagePipeline(model)(TextToImageRequest(**PROMPT, **{**SMALL, "steps": 30}),
                                   on_progress=on_progress, cancel=cancel)
    assert steps == [1, 2]


# --- CUDA graphs' bookkeeping, with CPU buffers -------------------------------------------


class GraphRuns:
    """Records the ``gpu_graph_id`` of every run of the real session; ``fail_graphs`` makes
    runs with a graph fail as a capture that CUDA refused would."""

    def __init__(self, inner, fail_graphs: bool = False) -> None:
        self.inner = inner
        self.fail_graphs = fail_graphs
        self.ids: list[int | None] = []

    def run_with_iobinding(self, binding, run_options=None) -> None:
        entry = run_options.get_run_config_entry(GRAPH_ID_OPTION) if run_options else ""
        graph = int(entry) if entry else None
        self.ids.append(graph)
        if self.fail_graphs and graph is not None and graph > 0:
            raise RuntimeException(
                "[ONNXRuntimeError] : 1 : FAIL : CUDA failure 900: operation not permitted "
                "when stream is capturing")
        self.inner.run_with_iobinding(binding, run_options)

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.fixture
def allocations(monkeypatch):
    """The shapes of the fixed buffers allocated."""
    shapes = []
    allocate = ort.OrtValue.ortvalue_from_shape_and_type

    def counting(shape, element_type, device_type="cpu", device_id=0, *args, **kwargs):
        shapes.append(tuple(shape))
        return allocate(shape, element_type, device_type, device_id, *args, **kwargs)

    monkeypatch.setattr(ort.OrtValue, "ortvalue_from_shape_and_type", counting)
    return shapes


def test_graph_calls_keep_one_set_of_buffers_and_a_graph_id_per_shape(model, monkeypatch,
                                                                      allocations):
    request = TextToImageRequest(**PROMPT, **SMALL, guidance=7.5, seed=6)
    plain = TextToImagePipeline(model)(request).images[0].pixels
    unet = model.unet
    runs = GraphRuns(unet.ort_session)
    monkeypatch.setattr(unet, "_inner", runs)
    monkeypatch.setattr(unet, "cuda_graph", True)
    graphed = TextToImagePipeline(model)(request)
    assert np.array_equal(graphed.images[0].pixels, plain)
    # The shape's first run learns its output without a graph, then graph 1 (never 0,
    # onnxruntime's own) runs with the same buffers: three inputs and the output.
    assert runs.ids == [-1, 1, 1, 1, 1]
    assert sorted(allocations) == sorted([(2, 4, 24, 32), (2,), (2, 77, 32), (2, 4, 24, 32)])
    # Another picture of the same shape: the same graph and buffers, new values copied in.
    runs.ids.clear()
    again = TextToImagePipeline(model)(TextToImageRequest(**PROMPT, **SMALL, guidance=7.5,
                                                          seed=7))
    assert runs.ids == [1] * 5 and len(allocations) == 4
    assert not np.array_equal(again.images[0].pixels, plain)
    # Another shape (no guidance: one sample a call) is another graph with its own buffers.
    runs.ids.clear()
    TextToImagePipeline(model)(TextToImageRequest(**PROMPT, **SMALL, guidance=1.0, seed=6))
    assert runs.ids == [-1, 2, 2, 2, 2] and len(allocations) == 8


def test_a_failed_graph_stops_cuda_graphs_says_so_and_goes_on(model, monkeypatch):
    request = TextToImageRequest(**PROMPT, **SMALL, guidance=7.5, count=2, seed=9)
    plain = TextToImagePipeline(model)(request)
    unet = model.unet
    runs = GraphRuns(unet.ort_session, fail_graphs=True)
    monkeypatch.setattr(unet, "_inner", runs)
    monkeypatch.setattr(unet, "cuda_graph", True)
    reasons = []
    monkeypatch.setattr(model, "stop_cuda_graph", reasons.append, raising=False)
    result = TextToImagePipeline(model)(request)
    for image, other in zip(result.images, plain.images, strict=True):
        assert np.array_equal(image.pixels, other.pixels)
    assert reasons == [
        "The GPU could not run unet/model.onnx as a CUDA graph (CUDA failure 900: operation "
        "not permitted when stream is capturing); it runs without CUDA graphs from now on."]
    assert reasons[0] in result.warnings
    # The failed step ran again without a graph, and every later run too (the session still
    # says it was made for graphs, so each run says -1: none).
    assert runs.ids == [-1, 1] + [-1] * 9
    runs.ids.clear()
    TextToImagePipeline(model)(TextToImageRequest(**PROMPT, **SMALL, seed=9))
    assert runs.ids == [-1] * 5 and len(reasons) == 1


def test_only_sessions_made_for_cuda_graphs_get_graph_calls(model, monkeypatch):
    constants, _ = unet_feeds(model)
    assert type(bound_calls(model.unet, constants)) is BoundCalls
    monkeypatch.setattr(model.unet, "cuda_graph", True)
    assert type(bound_calls(model.unet, constants)).__name__ == "GraphCalls"


def test_a_session_keeps_its_tensors_where_its_provider_does(model):
    from dataclasses import replace

    from engine.runtime.binding import device_of

    unet = model.unet
    assert device_of(unet) == "cpu"
    cuda = type("Session", (), {"device": replace(unet.device, in_use="cuda")})()
    assert device_of(cuda) == "cuda"
