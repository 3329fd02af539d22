"""Preparing a model for this processor at import, so its first load only reads the cache.

An import (command line or window) optimises each graph as a load would and keeps the result
where the load looks; a model that still needs it (imported before, cache emptied) says
"Preparing" in the progress before its first load; nothing about preparing fails an import.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import pytest

from desktop.app import generation
from desktop.app.generation import PREPARING_STAGE, EnginePipelines
from desktop.cli import main
from desktop.cli.common import runtime_options
from desktop.model_prepare import prepare_installed
from desktop.model_store import ModelStore
from engine.errors import Cancelled, ModelError
from engine.model import load_model, model_graphs, prepare_model
from engine.request import TextToImageRequest
from engine.runtime import CancelToken, RuntimeOptions, clear_sessions, needs_preparing
from engine.runtime import prepare as prepare_module
from engine.runtime.graph_cache import STAMP_FILE, CachedGraph


def unprepared_graphs(folder: Path, runtime: RuntimeOptions) -> list:
    """The graphs whose first load with ``runtime`` would still optimise them."""
    return [graph for graph in model_graphs(folder) if needs_preparing(graph.file, runtime)]


@pytest.fixture(autouse=True)
def _fresh_sessions():
    clear_sessions()
    yield
    clear_sessions()


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("EASEL_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("EASEL_PROVIDERS", raising=False)
    return tmp_path / "home"


def cli_runtime() -> RuntimeOptions:
    """What ``easel generate`` loads with when given no --providers or --threads."""
    return runtime_options(argparse.Namespace(providers="", threads=0, precision="auto"))


@pytest.fixture
def model(installed_tiny_sd1, tmp_path) -> Path:
    """A copy of the tiny installed model, free to change."""
    return Path(shutil.copytree(installed_tiny_sd1, tmp_path / "models" / "tiny"))


def cache_runtime(tmp_path: Path) -> RuntimeOptions:
    # The default providers: on onnxruntime-gpu without a GPU they resolve to cuda+cpu while
    # only the CPU runs, which the cache stamp records.
    return RuntimeOptions(cpu_threads=1, optimized_cache=tmp_path / "cache")


# --- the command line's import ------------------------------------------------------------

def test_a_cli_import_leaves_every_graph_prepared_and_the_load_reads_the_cache(
        home, tiny_sd1_onnx, capsys):
    assert main(["models", "import", str(tiny_sd1_onnx), "--name", "tiny"]) == 0

    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("Installed 'tiny'") and "prepared for this processor in" in last
    folder, runtime = home / "models" / "tiny", cli_runtime()
    graphs = model_graphs(folder)
    assert {graph.file.parent.name for graph in graphs} == {
        "text_encoder", "unet", "vae_decoder", "vae_encoder"}
    assert unprepared_graphs(folder, runtime) == []
    loaded = load_model(folder, runtime, "tiny")
    for component in ("text_encoder", "unet", "vae_decoder", "vae_encoder"):
        session = loaded.session(component)
        assert session.loaded_from.is_relative_to(home / "cache" / "optimized"), component


def test_no_prepare_leaves_the_work_to_the_first_load(home, tiny_sd1_onnx, capsys):
    assert main(["models", "import", str(tiny_sd1_onnx), "--name", "tiny", "--no-prepare"]) == 0

    out = capsys.readouterr()
    last = out.out.strip().splitlines()[-1]
    assert last.startswith("Installed 'tiny' (sd1, ") and "prepared" not in last
    assert "Preparing" not in out.err
    folder = home / "models" / "tiny"
    assert len(unprepared_graphs(folder, cli_runtime())) == 4
    assert load_model(folder, cli_runtime()).unet.loaded_from == folder / "unet" / "model.onnx"


def test_a_failing_prepare_keeps_the_model_installed_and_says_so(home, tiny_sd1_onnx, capsys,
                                                                   monkeypatch):
    def out_of_memory(path, options, half=False):
        raise ModelError(f"There is not enough memory to load {path.name}.")

    monkeypatch.setattr(prepare_module, "open_session", out_of_memory)

    assert main(["models", "import", str(tiny_sd1_onnx), "--name", "tiny"]) == 0

    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("Installed 'tiny'")
    assert "it will be prepared for this processor at its first use (there is not enough " \
           "memory to load model.onnx)." in last
    assert last.count(". ") == 0  # one sentence
    assert main(["models", "list"]) == 0
    assert "tiny" in capsys.readouterr().out
    assert len(unprepared_graphs(home / "models" / "tiny", cli_runtime())) == 4


def test_a_cache_that_cannot_be_written_is_said_and_the_model_still_loads(
        model, tmp_path, monkeypatch):
    monkeypatch.setattr(CachedGraph, "stage", lambda self: None)  # as on a read-only disk
    store = ModelStore(model.parent)
    installed = next(item for item in store.installed() if item.name == "tiny")

    outcome = prepare_installed(installed, cache_runtime(tmp_path))

    assert not outcome.prepared
    assert "could not be kept" in outcome.clause() and "first use" in outcome.clause()
    assert load_model(model, cache_runtime(tmp_path)).unet.input_names  # still works


# --- needs_preparing ------------------------------------------------------------------------

def test_needs_preparing_before_not_after_and_again_when_the_model_changes(model, tmp_path):
    runtime = cache_runtime(tmp_path)
    unet = model / "unet" / "model.onnx"
    assert needs_preparing(unet, runtime)

    preparation = prepare_model(model, runtime)

    assert {graph.file for graph in preparation.prepared} == {
        graph.file for graph in model_graphs(model)}
    assert not needs_preparing(unet, runtime)
    stat = unet.stat()
    os.utime(unet, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # re-exported
    assert needs_preparing(unet, runtime)
    assert [graph.file for graph in unprepared_graphs(model, runtime)] == [unet]
    again = prepare_model(model, runtime)
    assert [graph.file for graph in again.prepared] == [unet]  # only what changed


def test_a_graph_made_on_other_providers_than_start_now_needs_preparing(model, tmp_path):
    runtime = cache_runtime(tmp_path)
    prepare_model(model, runtime)
    unet = model / "unet" / "model.onnx"
    stamps = list((tmp_path / "cache").rglob(f"unet-*/{STAMP_FILE}"))
    assert len(stamps) == 1
    stamp = json.loads(stamps[0].read_text())
    stamp["ran_on"] = ["tensorrt", "cpu"]  # never what starts when TensorRT is not asked for
    stamps[0].write_text(json.dumps(stamp))

    assert needs_preparing(unet, runtime)


def test_nothing_needs_preparing_without_a_cache(model):
    assert not needs_preparing(model / "unet" / "model.onnx", RuntimeOptions(cpu_threads=1))
    assert prepare_model(model, RuntimeOptions(cpu_threads=1)).prepared == ()


def test_a_cancel_keeps_what_is_done_and_leaves_nothing_half_written(model, tmp_path):
    runtime, cancel = cache_runtime(tmp_path), CancelToken()
    said: list[str] = []

    def progress(stage: str, number: int, total: int) -> None:
        said.append(stage)
        cancel.cancel()  # pressed while the first graph (the UNet) is prepared

    with pytest.raises(Cancelled):
        prepare_model(model, runtime, progress, cancel)

    assert said == ["Preparing the UNet for this processor (once)"]
    assert not needs_preparing(model / "unet" / "model.onnx", runtime)
    assert len(unprepared_graphs(model, runtime)) == 3
    assert not list((tmp_path / "cache").rglob(".staging-*"))


def test_a_stopped_prepare_is_an_outcome_not_an_error(model, tmp_path):
    installed = next(item for item in ModelStore(model.parent).installed())

    outcome = prepare_installed(installed, cache_runtime(tmp_path), should_stop=lambda: True)

    assert outcome.clause() == ("it will be prepared for this processor at its first use "
                                "(preparing was stopped)")
    assert len(unprepared_graphs(model, cache_runtime(tmp_path))) == 4


# --- the window ---------------------------------------------------------------------------------

class Recorded:
    """A job's context: what the queue would show."""

    def __init__(self) -> None:
        self.cancel = CancelToken()
        self.stages: list[str] = []

    def report(self, step, steps, image=0, images=1, preview=None, stage=""):  # noqa: ANN001
        self.stages.append(stage)


def test_the_window_import_job_prepares_with_the_options_it_is_given(home, tiny_sd1_onnx,
                                                                      tmp_path):
    context, runtime = Recorded(), cache_runtime(tmp_path)
    store = ModelStore(home / "models")

    model = generation.import_model(store, tiny_sd1_onnx, context, "tiny", runtime=runtime)

    assert unprepared_graphs(model.path, runtime) == []
    assert "Preparing the UNet for this processor (once)" in context.stages
    assert context.stages[-1].startswith("Prepared for this processor in")


def _stages(pipelines: EnginePipelines, name: str) -> list[str]:
    stages: list[str] = []
    request = TextToImageRequest("a red chair", width=64, height=64, steps=1, seed=1)
    pipelines.run(name, request, lambda progress: stages.append(progress.stage), CancelToken())
    return stages


def test_first_use_of_an_unprepared_model_says_preparing_and_a_prepared_one_does_not(
        model, tmp_path):
    runtime = cache_runtime(tmp_path)
    store = ModelStore(model.parent)

    first = _stages(EnginePipelines(store, runtime), "tiny")
    assert first[0] == PREPARING_STAGE.format(model="tiny")
    assert first[1:] == [""]  # then the step

    clear_sessions()  # a new start of the app: the cache is filled now
    assert _stages(EnginePipelines(store, runtime), "tiny") == [""]


def test_switching_between_two_kept_models_reloads_nothing(model, tmp_path):
    shutil.copytree(model, model.parent / "other")
    runtime = cache_runtime(tmp_path)
    pipelines = EnginePipelines(ModelStore(model.parent), runtime, keep_loaded=2)
    _stages(pipelines, "tiny")
    _stages(pipelines, "other")
    unets = {name: pipelines._models[name].unet for name in ("tiny", "other")}

    for name in ("tiny", "other", "tiny"):
        assert _stages(pipelines, name) == [""]  # no "Preparing", no new load
        assert pipelines._models[name].unet is unets[name]


def test_the_preparing_stage_reaches_the_queue_without_a_preview(model, tmp_path):
    from desktop.app.worker import JobContext
    from desktop.library import Library

    sent = []  # what the job queue receives, through the worker's own context
    context = JobContext(sent.append, CancelToken())
    pipelines = EnginePipelines(ModelStore(model.parent), cache_runtime(tmp_path))
    library = Library.open(tmp_path / "data")
    request = TextToImageRequest("a red chair", width=64, height=64, steps=1, seed=1)

    outcome = generation.generate(pipelines, library, "tiny", request, context)

    assert len(outcome.entries) == 1
    shown = [(progress.stage, progress.preview is not None) for progress in sent]
    assert shown == [(PREPARING_STAGE.format(model="tiny"), False), ("", True)]
