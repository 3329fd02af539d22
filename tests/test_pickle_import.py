"""Pickle checkpoints are read only by torch.load(weights_only=True) in another process: a file
that would run code is refused and the code never runs; a plain state dict converts to the
same weights as its .safetensors twin."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from engine.errors import ModelError
from tests import tiny_checkpoints
from tests.tiny_checkpoints import assert_same_weights, load_component

torch = pytest.importorskip("torch")
os.environ["HF_HUB_OFFLINE"] = "1"  # nothing here may reach the network


class Payload:
    """Unpickling this creates ``marker``: what a hostile checkpoint's code would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


@pytest.fixture(scope="module")
def configs_root(tmp_path_factory) -> Path:
    return tiny_checkpoints.write_configs_root(tmp_path_factory.mktemp("configs") / "configs")


def convert(checkpoint: Path, tmp_path: Path, configs_root: Path, **options):
    from engine.export.pickle_convert import convert_pickle

    destination = tmp_path / "converted"
    destination.mkdir(exist_ok=True)
    scratch = tmp_path / "scratch"
    scratch.mkdir(exist_ok=True)
    return convert_pickle(checkpoint, destination, configs_root=configs_root, scratch=scratch,
                          **options)


def refusal(checkpoint: Path, tmp_path: Path, configs_root: Path) -> str:
    with pytest.raises(ModelError) as refused:
        convert(checkpoint, tmp_path, configs_root)
    assert list((tmp_path / "converted").iterdir()) == []
    assert list((tmp_path / "scratch").iterdir()) == []  # the intermediate file is gone too
    sentence = str(refused.value)
    assert sentence.endswith(".") and "\n" not in sentence
    return sentence


def hostile_files(tmp_path: Path, marker: Path) -> dict[str, Path]:
    """The payload hidden in the ways a shared checkpoint could carry it."""
    weights = {"model.diffusion_model.out.2.weight": torch.zeros(4, 32, 3, 3)}
    files = {"zip.ckpt": {"state_dict": {**weights, "evil": Payload(marker)}},
             "top.pt": Payload(marker)}
    paths = {}
    for name, content in files.items():
        torch.save(content, tmp_path / name)
        paths[name] = tmp_path / name
    legacy = tmp_path / "legacy.pth"
    torch.save({"state_dict": weights, "step": Payload(marker)}, legacy,
               _use_new_zipfile_serialization=False)
    plain = tmp_path / "plain.bin"
    plain.write_bytes(pickle.dumps({"state_dict": Payload(marker)}, protocol=2))
    framed = tmp_path / "framed.bin"  # protocol 4, as pickle.dump writes by default
    framed.write_bytes(pickle.dumps({"state_dict": Payload(marker)}, protocol=4))
    return {**paths, "legacy.pth": legacy, "plain.bin": plain, "framed.bin": framed}


def test_the_payload_really_runs_when_unpickled_unsafely(tmp_path):
    """The control: the crafted file does create its marker when loaded without protection."""
    marker = tmp_path / "control-marker"
    path = hostile_files(tmp_path, marker)["zip.ckpt"]
    script = f"import torch; torch.load({str(path)!r}, weights_only=False)"
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, timeout=120)
    assert marker.exists()


@pytest.mark.slow
def test_pickles_with_code_are_refused_and_the_code_never_runs(tmp_path, configs_root):
    from engine.export.formats import detect_format

    marker = tmp_path / "marker"
    for name, path in hostile_files(tmp_path, marker).items():
        assert detect_format(path) == "pickle", name
        sentence = refusal(path, tmp_path, configs_root)
        assert sentence.startswith(f"'{name}' ")
        if name != "framed.bin":
            assert "contains Python objects other than tensors, so Easel will not load it" \
                   in sentence, name
        else:  # not torch.save's format at all, yet unpickled by nothing but the safe loader
            assert "is damaged or is not a PyTorch checkpoint" in sentence
        assert not marker.exists(), name


@pytest.mark.slow
def test_a_torch_save_state_dict_converts_to_the_same_weights(tmp_path, configs_root):
    components = tiny_checkpoints.tiny_components("sd1")
    state = tiny_checkpoints.ldm_checkpoint("sd1", components)
    checkpoint = tmp_path / "model.ckpt"
    # As the original training code saved it: the weights under "state_dict", beside counters.
    torch.save({"state_dict": state, "global_step": 470000, "epoch": 6}, checkpoint)
    result = convert(checkpoint, tmp_path, configs_root)
    assert (result.family, result.prediction) == ("sd1", "epsilon")
    assert list((tmp_path / "scratch").iterdir()) == []
    for component, original in components.items():
        assert_same_weights(load_component(tmp_path / "converted", component), original)


def test_a_bare_legacy_state_dict_converts(tmp_path, configs_root):
    state = tiny_checkpoints.ldm_checkpoint("sd2", tiny_checkpoints.tiny_components("sd2"))
    checkpoint = tmp_path / "model.bin"
    torch.save(state, checkpoint, _use_new_zipfile_serialization=False)
    result = convert(checkpoint, tmp_path, configs_root, prediction="v_prediction")
    assert (result.family, result.prediction) == ("sd2", "v_prediction")


@pytest.mark.slow
def test_damaged_and_empty_pickles_are_refused(tmp_path, configs_root):
    damaged = tmp_path / "damaged.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(10)}}, damaged)
    damaged.write_bytes(damaged.read_bytes()[:200])
    assert "is damaged or is not a PyTorch checkpoint" in refusal(damaged, tmp_path,
                                                                  configs_root)
    plain = tmp_path / "plain.pkl"  # pickle.dump's framing, which torch.save never writes
    plain.write_bytes(pickle.dumps({"w": 1.0}, protocol=4))
    assert "is damaged or is not a PyTorch checkpoint" in refusal(plain, tmp_path, configs_root)
    counters = tmp_path / "counters.ckpt"
    torch.save({"global_step": 3}, counters)
    assert "holds no table of named weights" in refusal(counters, tmp_path, configs_root)


def test_the_loader_ignores_an_environment_that_asks_for_unsafe_loading(tmp_path,
                                                                         monkeypatch):
    from engine.export.pickle_convert import pickle_to_safetensors

    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))  # ignored: the loader runs isolated
    (tmp_path / "torch.py").write_text("raise SystemExit(42)\n")
    marker = tmp_path / "marker"
    path = hostile_files(tmp_path, marker)["zip.ckpt"]
    with pytest.raises(ModelError, match="other than tensors"):
        pickle_to_safetensors(path, tmp_path / "out.safetensors")
    assert not marker.exists()
