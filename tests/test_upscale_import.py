"""Installing upscalers in the model store, told by content: Real-ESRGAN checkpoints
(.safetensors, and .pth only through the safe pickle conversion), ONNX upscalers (a lone graph
or Amuse's folder); they stay apart from the models that make pictures."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from desktop.model_store import UPSCALER, ModelStore
from engine.errors import ModelError
from engine.export.formats import ONNX_UPSCALER, PICKLE, detect_format, looks_like_upscaler
from engine.upscale import UpscalePipeline, UpscaleRequest, load_upscaler
from tests.test_pickle_import import Payload
from tests.test_upscale import picture, rrdb_state

torch = pytest.importorskip("torch")
from tests.test_upscale import _spandrel_or_skip  # noqa: E402 (skips without spandrel)

_spandrel_or_skip()


@pytest.fixture
def store(tmp_path) -> ModelStore:
    return ModelStore(tmp_path / "models")


@pytest.fixture(scope="module")
def exported_graph(tmp_path_factory) -> Path:
    from tests.test_upscale import export_tiny

    return export_tiny(tmp_path_factory.mktemp("exported") / "tiny-x4", 4) / "model.onnx"


def test_a_real_esrgan_pth_installs_through_the_safe_conversion(tmp_path, store, monkeypatch):
    import engine.export.pickle_convert as pickle_convert

    conversions = []
    original = pickle_convert.pickle_to_safetensors
    monkeypatch.setattr(pickle_convert, "pickle_to_safetensors",
                        lambda *paths: conversions.append(paths) or original(*paths))
    checkpoint = tmp_path / "RealESRGAN_x4plus.pth"
    # As BasicSR saves its releases: the averaged weights under "params_ema".
    torch.save({"params_ema": rrdb_state(4)}, checkpoint)
    assert detect_format(checkpoint) == PICKLE and looks_like_upscaler(checkpoint, PICKLE)
    installed = store.import_model(checkpoint)
    assert len(conversions) == 1  # torch.load(weights_only=True) in its own process
    assert (installed.name, installed.kind, installed.family) == (
        "RealESRGAN_x4plus", UPSCALER, "4x upscaler (ESRGAN)")
    assert [model.name for model in store.upscalers()] == ["RealESRGAN_x4plus"]
    assert store.list() == []  # not among the models that make pictures
    assert sorted(path.name for path in installed.path.iterdir()) == [
        "easel.json", "manifest.json", "model.onnx"]  # the intermediate file is gone
    result = UpscalePipeline(load_upscaler(installed.path))(UpscaleRequest(picture(24, 24)))
    assert result.images[0].pixels.shape == (96, 96, 3)


def test_a_checkpoint_with_the_original_esrgan_names_installs(tmp_path, store):
    from safetensors.torch import save_file

    from engine.export.upscaler_checkpoint import import_spandrel

    # spandrel's own module names its weights the way the original ESRGAN code did.
    state = import_spandrel().ModelLoader().load_from_state_dict(rrdb_state(2)).model.state_dict()
    assert "model.0.weight" in state
    checkpoint = tmp_path / "esrgan-old.safetensors"
    save_file({name: tensor.contiguous() for name, tensor in state.items()}, str(checkpoint))
    assert store.import_model(checkpoint, "old").family == "2x upscaler (ESRGAN)"


def test_a_pth_upscaler_that_would_run_code_is_refused_and_the_code_never_runs(tmp_path,
                                                                              store):
    marker = tmp_path / "marker"
    checkpoint = tmp_path / "evil_x4.pth"
    torch.save({"params_ema": {**rrdb_state(4), "evil": Payload(marker)}}, checkpoint)
    assert looks_like_upscaler(checkpoint, PICKLE)  # so it takes the upscaler's way in
    with pytest.raises(ModelError, match="contains Python objects other than tensors"):
        store.import_model(checkpoint)
    assert not marker.exists()
    assert store.upscalers() == [] and list(store.root.iterdir()) == []


def test_onnx_upscalers_install_as_a_lone_graph_or_an_amuse_folder(tmp_path, store,
                                                                   exported_graph):
    amuse = tmp_path / "RealESRGAN-amuse"
    amuse.mkdir()
    shutil.copy(exported_graph, amuse / "model.onnx")
    (amuse / "amuse_template.json").write_text("{}")
    lone = tmp_path / "upscaler.onnx"
    shutil.copy(exported_graph, lone)
    for source in (amuse, lone):
        assert detect_format(source) == ONNX_UPSCALER
        installed = store.import_model(source)
        assert installed.family == "4x upscaler (ONNX)"
    ours = load_upscaler(store.upscaler_path("upscaler"))
    theirs = load_upscaler(exported_graph.parent)
    source = picture(20, 28)
    assert np.array_equal(UpscalePipeline(ours)(UpscaleRequest(source)).images[0].pixels,
                          UpscalePipeline(theirs)(UpscaleRequest(source)).images[0].pixels)


def test_an_amuse_folder_with_code_is_refused(tmp_path, store, exported_graph):
    folder = tmp_path / "sneaky"
    folder.mkdir()
    shutil.copy(exported_graph, folder / "model.onnx")
    (folder / "hook.py").write_text("print('hello')\n")
    with pytest.raises(ModelError, match="never runs code"):
        store.import_model(folder)
    assert list(store.root.iterdir()) == []


def test_upscalers_are_named_removed_and_kept_apart(tmp_path, store):
    from safetensors.torch import save_file

    checkpoint = tmp_path / "x4.safetensors"
    save_file(rrdb_state(4), str(checkpoint))
    store.import_model(checkpoint, "sharp")
    with pytest.raises(ModelError, match="is an upscaler, not a model that makes pictures"):
        store.path_of("sharp")
    with pytest.raises(ModelError, match="No upscaler named 'other'"):
        store.upscaler_path("other")
    store.remove("sharp")
    assert store.upscalers() == []


def test_stable_diffusion_checkpoints_are_not_taken_for_upscalers(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "sd.safetensors"
    save_file({"model.diffusion_model.conv_first.weight": torch.zeros(1),
               "conv_first.weight": torch.zeros(1)}, str(path))
    assert not looks_like_upscaler(path, "safetensors")
    spandrel_unknown = tmp_path / "other.safetensors"
    save_file({"conv_first.weight": torch.zeros(2, 2)}, str(spandrel_unknown))
    store = ModelStore(tmp_path / "models")
    with pytest.raises(ModelError, match="not a network Easel can import as an upscaler"):
        store.import_model(spandrel_unknown)
    assert list(store.root.iterdir()) == []
