"""``easel models pack``: installed models copied into a folder a Ray cluster's workers read,
whole or not at all (desktop.model_pack)."""

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from desktop import model_pack
from desktop.cli import main
from desktop.model_pack import PackError, pack_models
from desktop.model_store import ModelStore
from desktop.paths import built_in_models_dir
from engine.errors import ModelError
from engine.manifest import write_manifest
from engine.model import load_model
from engine.pipelines.text_to_image import TextToImagePipeline
from engine.request import TextToImageRequest
from engine.runtime import RuntimeOptions

CPU = RuntimeOptions(providers=("cpu",))


@pytest.fixture
def store(tmp_path) -> ModelStore:
    return ModelStore(tmp_path / "models", built_in_models_dir())


@pytest.fixture
def own_copy(store) -> Path:
    """A user-installed model (a copy of the starter model with its own manifest)."""
    folder = store.root / "mine"
    shutil.copytree(store.path_of("starter"), folder)
    write_manifest(folder)
    return folder


def _everything_in(folder: Path) -> list[str]:
    return sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*"))


def _picture(folder: Path) -> np.ndarray:
    pipeline = TextToImagePipeline(load_model(folder, CPU, "starter"))
    request = TextToImageRequest("a red fox in the centre", seed=5, steps=2)
    return pipeline(request).images[0].pixels


def test_the_packed_starter_model_makes_the_same_picture(store, tmp_path):
    said = []
    packed = pack_models(store, ["starter"], tmp_path / "shared",
                         lambda stage, done, total: said.append((stage, done, total)))
    assert [(model.name, model.copied) for model in packed] == [("starter", True)]
    assert packed[0].folder == tmp_path / "shared" / "starter"
    assert packed[0].size_bytes > 1_000_000
    assert said[-1][1] == said[-1][2]  # the last report is the whole model, checked
    assert np.array_equal(_picture(packed[0].folder), _picture(store.path_of("starter")))
    assert [path.name for path in (tmp_path / "shared").iterdir()] == ["starter"]


def test_a_second_pack_keeps_what_is_there_and_packs_the_rest(store, own_copy, tmp_path):
    shared = tmp_path / "shared"
    first = pack_models(store, ["starter"], shared)[0]
    unet = first.folder / "unet" / "model.onnx"
    before = unet.stat()
    again = pack_models(store, ["starter", "mine", "starter"], shared)
    assert [(model.name, model.copied) for model in again] == [("starter", False),
                                                               ("mine", True)]
    after = unet.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert sorted(path.name for path in shared.iterdir()) == ["mine", "starter"]
    load_model(shared / "mine", CPU)  # the user's model passes the engine's check too


def test_a_different_model_under_the_name_is_refused_and_left_alone(store, own_copy,
                                                                   tmp_path):
    shared = tmp_path / "shared"
    shutil.copytree(own_copy, shared / "starter")
    (shared / "starter" / "training.json").write_text("{}")
    write_manifest(shared / "starter")  # a whole model, but not the same one
    (shared / "mine").mkdir()
    (shared / "mine" / "notes.txt").write_text("not a model")
    before = _everything_in(shared)
    for name in ("starter", "mine"):
        with pytest.raises(PackError, match=f"already holds something other than the model "
                                            f"'{name}'"):
            pack_models(store, [name], shared)
    assert _everything_in(shared) == before


def test_a_damaged_copy_already_there_is_said(store, tmp_path):
    shared = tmp_path / "shared"
    packed = pack_models(store, ["starter"], shared)[0]
    (packed.folder / "unet" / "model.onnx").write_bytes(b"broken")
    with pytest.raises(PackError, match="holds a damaged copy of the model 'starter'"):
        pack_models(store, ["starter"], shared)


def test_unknown_and_damaged_models_are_refused_before_any_copying(store, own_copy,
                                                                  tmp_path):
    shared = tmp_path / "shared"
    with pytest.raises(ModelError, match="No model named 'nowhere' is installed"):
        pack_models(store, ["starter", "nowhere"], shared)
    with open(own_copy / "unet" / "model.onnx", "ab") as graph:
        graph.write(b"\0")
    with pytest.raises(ModelError, match="'mine' is damaged: unet/model.onnx has the wrong"):
        pack_models(store, ["starter", "mine"], shared)
    assert list(shared.iterdir()) == []  # the starter model named first was not copied


def test_a_damaged_file_that_keeps_its_size_is_caught_in_the_copy(store, own_copy,
                                                                  tmp_path):
    graph = own_copy / "vae_decoder" / "model.onnx"
    times = graph.stat()
    data = bytearray(graph.read_bytes())
    data[-1] ^= 0xFF
    graph.write_bytes(bytes(data))
    os.utime(graph, ns=(times.st_atime_ns, times.st_mtime_ns))  # bit rot changes no date
    with pytest.raises(PackError, match="'mine' is damaged"):
        pack_models(store, ["mine"], tmp_path / "shared")
    assert list((tmp_path / "shared").iterdir()) == []


def test_a_folder_that_is_a_file_or_cannot_be_written(store, tmp_path, monkeypatch):
    notes = tmp_path / "notes.txt"
    notes.write_text("x")
    with pytest.raises(PackError, match="is a file, not a folder"):
        pack_models(store, ["starter"], notes)
    with pytest.raises(PackError, match="a file is in the way"):
        pack_models(store, ["starter"], notes / "shared")

    def read_only(*_, **__):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(model_pack.tempfile, "mkdtemp", read_only)
    with pytest.raises(PackError, match="cannot write in .*read-only"):
        pack_models(store, ["starter"], tmp_path / "shared")


def test_a_disk_too_small_is_said_before_copying(store, tmp_path, monkeypatch):
    monkeypatch.setattr(model_pack.shutil, "disk_usage",
                        lambda _: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(PackError, match="has 0.00 GB free and the models need 0.03 GB"):
        pack_models(store, ["starter"], tmp_path / "shared")
    assert list((tmp_path / "shared").iterdir()) == []


def test_a_disk_that_fills_up_midway_leaves_nothing(store, tmp_path, monkeypatch):
    copied = []
    real_copy = shutil.copyfile

    def fills_up(source, target, **options):
        if len(copied) == 3:
            Path(target).write_bytes(b"half")  # a partly written file, as a full disk leaves
            raise OSError(errno.ENOSPC, "No space left on device")
        copied.append(source)
        return real_copy(source, target, **options)

    monkeypatch.setattr(model_pack.shutil, "copyfile", fills_up)
    with pytest.raises(PackError, match="became full while packing 'starter'"):
        pack_models(store, ["starter"], tmp_path / "shared")
    assert len(copied) == 3
    assert list((tmp_path / "shared").iterdir()) == []


def test_a_killed_packs_leftover_is_cleared(store, tmp_path):
    shared = tmp_path / "shared"
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    leftover = shared / f".packing-{model_pack._HOST}-{gone.stdout.strip()}-abc"
    (leftover / "unet").mkdir(parents=True)
    elsewhere = shared / ".packing-another_computer-1-abc"  # maybe still packing there
    elsewhere.mkdir()
    pack_models(store, ["starter"], shared)
    assert sorted(path.name for path in shared.iterdir()) == [elsewhere.name, "starter"]


def test_the_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EASEL_HOME", str(tmp_path / "home"))
    shared = tmp_path / "shared"
    assert main(["models", "pack", "starter", "--to", str(shared)]) == 0
    out = capsys.readouterr().out
    assert f"'starter': packed in {shared / 'starter'}" in out
    assert f"--ray-models {shared}" in out
    assert main(["models", "pack", "starter", "--to", str(shared)]) == 0
    assert "'starter': already there" in capsys.readouterr().out
    assert main(["models", "pack", "nowhere", "--to", str(shared)]) == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert error == ["easel: error: No model named 'nowhere' is installed (installed: "
                     "starter); add one with: easel models import FOLDER."]
    manifest = json.loads((shared / "starter" / "manifest.json").read_text())
    assert "unet/model.onnx" in manifest["files"]
