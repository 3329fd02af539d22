"""Unloading one model lets only its own ONNX sessions go; other loaded models keep theirs.

The app keeps a few models loaded (EnginePipelines' ``keep_loaded``); evicting the least
recently used one must not make the kept ones reopen their sessions on the next picture.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from desktop.app.generation import EnginePipelines
from desktop.model_store import ModelStore
from engine.model import load_model
from engine.request import TextToImageRequest
from engine.runtime import CancelToken, RuntimeOptions, clear_sessions, release_sessions

CPU = RuntimeOptions(providers=("cpu",), cpu_threads=1)


@pytest.fixture(autouse=True)
def _fresh_sessions():
    clear_sessions()
    yield
    clear_sessions()


@pytest.fixture
def models(installed_tiny_sd1, tmp_path) -> Path:
    """A model store folder holding three copies of the tiny model: a, b and c."""
    root = tmp_path / "models"
    for name in "abc":
        shutil.copytree(installed_tiny_sd1, root / name)
    return root


def test_closing_a_model_releases_only_its_own_sessions(models):
    a, b = load_model(models / "a", CPU), load_model(models / "b", CPU)
    a_encoder, a_decoder = a.text_encoder, a.vae_decoder
    b_encoder = b.text_encoder
    assert b.text_encoder is b_encoder  # cached while loaded

    b.close()

    assert a.text_encoder is a_encoder and a.vae_decoder is a_decoder
    reopened = b.text_encoder
    assert reopened is not b_encoder  # b's was forgotten; using b again opens it anew
    assert reopened.input_names == b_encoder.input_names


def test_releasing_a_folder_leaves_a_folder_with_a_longer_name_alone(models):
    shutil.copytree(models / "a", models / "ab")
    a, ab = load_model(models / "a", CPU), load_model(models / "ab", CPU)
    kept = ab.text_encoder
    a.text_encoder  # noqa: B018 (opens the session)
    assert release_sessions(models / "a") == 1
    assert ab.text_encoder is kept


class RecordingPipelines(EnginePipelines):
    """The real engine, keeping the models it loads so a test can look at their sessions."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.loaded: dict[str, object] = {}

    def _model(self, name):
        model = super()._model(name)
        self.loaded[name] = model
        return model


def _picture(pipelines: EnginePipelines, model: str) -> None:
    request = TextToImageRequest("a red chair", width=64, height=64, steps=1, seed=1)
    result = pipelines.run(model, request, lambda progress: None, CancelToken())
    assert result.images[0].pixels.shape == (64, 64, 3)


def test_evicting_a_model_keeps_the_other_loaded_models_sessions(models, tmp_path):
    pipelines = RecordingPipelines(ModelStore(models), CPU, keep_loaded=2)
    _picture(pipelines, "a")
    _picture(pipelines, "b")
    b_unet = pipelines.loaded["b"].unet
    a_unet = pipelines.loaded["a"].unet

    _picture(pipelines, "c")  # three loaded, two kept: a (least recently used) goes

    assert list(pipelines._models) == ["b", "c"]
    assert pipelines.loaded["b"].unet is b_unet  # still loaded: nothing reopened
    assert pipelines.loaded["a"].unet is not a_unet  # a's sessions were let go
    _picture(pipelines, "a")  # and a loads again (evicting b now)
    assert list(pipelines._models) == ["c", "a"]


def test_new_runtime_options_unload_every_model_and_fewer_kept_models_unload_some(models):
    pipelines = RecordingPipelines(ModelStore(models), CPU, keep_loaded=2)
    _picture(pipelines, "a")
    _picture(pipelines, "b")
    b_unet = pipelines.loaded["b"].unet

    pipelines.reconfigure(CPU, keep_loaded=1)  # same options, fewer kept: a goes, b stays
    _picture(pipelines, "b")
    assert list(pipelines._models) == ["b"] and pipelines.loaded["b"].unet is b_unet

    two_threads = RuntimeOptions(providers=("cpu",), cpu_threads=2)
    pipelines.reconfigure(two_threads, keep_loaded=1)
    _picture(pipelines, "b")
    assert pipelines.loaded["b"].unet is not b_unet  # reopened for the new options
    assert pipelines.runtime == two_threads
