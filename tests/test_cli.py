"""The ``easel`` command end to end, on a tiny real model, in a throwaway data folder."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from desktop.cli import main

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("EASEL_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture(scope="module")
def home_with_model(tiny_sd1_diffusers, tmp_path_factory):
    """A data folder where `easel models import` installed the tiny model (done once)."""
    template = tmp_path_factory.mktemp("template") / "home"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EASEL_HOME", str(template))
        assert main(["models", "import", str(tiny_sd1_diffusers), "--name", "tiny"]) == 0
    return template


@pytest.fixture
def installed(home, home_with_model):
    shutil.copytree(home_with_model, home)
    return "tiny"


def generate(*extra):
    return main(["generate", "a red chair", "--model", "tiny", "--width", "64", "--height",
                 "48", "--steps", "3", *extra])


def test_import_list_generate_remove(installed, home, tmp_path, capsys):
    assert main(["models", "list"]) == 0
    assert "tiny" in capsys.readouterr().out
    assert (home / "models" / "tiny" / "manifest.json").is_file()

    assert generate("--seed", "7", "--count", "2", "-o", str(tmp_path / "out")) == 0
    saved = sorted((tmp_path / "out").iterdir())
    assert [path.name.rsplit("-", 1)[1] for path in saved] == ["7.png", "8.png"]
    with Image.open(saved[0]) as image:
        assert image.size == (64, 48)
        metadata = json.loads(image.text["easel"])
        assert "Seed: 7" in image.text["parameters"]
    assert metadata["seed"] == 7 and metadata["model"]["name"] == "tiny"
    assert "running on CPU" in capsys.readouterr().err

    assert main(["models", "remove", "tiny"]) == 0
    assert not (home / "models" / "tiny").exists()


def test_same_seed_same_image_and_seed_plus_i(installed, tmp_path):
    assert generate("--seed", "5", "--count", "2", "-o", str(tmp_path / "batch.png")) == 0
    assert generate("--seed", "6", "-o", str(tmp_path / "alone.png")) == 0
    second_of_batch = np.asarray(Image.open(tmp_path / "batch-6.png"))
    alone = np.asarray(Image.open(tmp_path / "alone.png"))
    assert np.array_equal(second_of_batch, alone)
    first = np.asarray(Image.open(tmp_path / "batch-5.png"))
    assert not np.array_equal(first, alone)


def test_an_onnx_folder_is_imported_as_it_is(installed, tiny_sd1_onnx, tmp_path):
    # Our own exports are optimum-layout ONNX folders: importing one again copies the graphs
    # (no export), and the copy makes the same picture as the model it came from.
    assert main(["models", "import", str(tiny_sd1_onnx), "--name", "copy"]) == 0
    assert generate("--seed", "3", "-o", str(tmp_path / "original.png")) == 0
    assert main(["generate", "a red chair", "--model", "copy", "--width", "64", "--height",
                 "48", "--steps", "3", "--seed", "3", "-o", str(tmp_path / "copy.png")]) == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "original.png")),
                          np.asarray(Image.open(tmp_path / "copy.png")))


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--width", "60"], "multiple of 8"),
        (["--steps", "0"], "at least 1"),
        (["--guidance", "-1"], "0 or more"),
        (["--count", "0"], "between 1 and"),
        (["-o", "picture.jpg"], "PNG"),
    ],
)
def test_bad_generation_input_is_one_sentence(installed, tmp_path, capsys, arguments,
                                              message):
    os.chdir(tmp_path)
    assert generate(*arguments) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("easel: error: ") and message in error
    assert len(error.splitlines()) == 1
    assert not list(tmp_path.glob("*.png"))


def test_existing_output_is_never_overwritten(installed, tmp_path, capsys):
    target = tmp_path / "keep.png"
    target.write_bytes(b"precious")
    assert generate("-o", str(target)) == 1
    assert "already exists" in capsys.readouterr().err
    assert target.read_bytes() == b"precious"


def test_a_long_prompt_is_read_whole_and_nothing_is_said(installed, tmp_path, capsys):
    # Stable Diffusion models read a long prompt in chunks of 75 tokens, as A1111 does (the
    # starter model's own cut is tested in test_prompt_truncation.py).
    prompt = " ".join(["a very detailed painting of a lighthouse"] * 20)
    code = main(["generate", prompt, "--model", "tiny", "--width", "64", "--height", "48",
                 "--steps", "1", "-o", str(tmp_path / "long.png")])
    assert code == 0
    error = capsys.readouterr().err
    assert "75 tokens" not in error and "left out" not in error


def test_unknown_model_and_non_model_folders(home, tmp_path, capsys):
    assert main(["generate", "x", "--model", "missing"]) == 1
    assert "No model named 'missing'" in capsys.readouterr().err
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("hello")
    assert main(["models", "import", str(tmp_path / "notes")]) == 1
    assert "not" in capsys.readouterr().err
    assert main(["models", "import", str(tmp_path / "nowhere")]) == 1
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "photo.safetensors").write_bytes(b"\xff\xd8\xff\xe0 not weights at all")
    assert main(["models", "import", str(tmp_path / "photo.safetensors")]) == 1
    error = capsys.readouterr().err
    assert "is not a model Easel can import" in error and error.count("\n") == 1
    assert not [p for p in (home / "models").iterdir()]


def test_duplicate_name_is_refused(installed, tiny_sd1_diffusers, capsys):
    assert main(["models", "import", str(tiny_sd1_diffusers), "--name", "tiny"]) == 1
    assert "already installed" in capsys.readouterr().err


def test_interrupted_import_leaves_nothing(home, tiny_sd1_diffusers, monkeypatch):
    from desktop.model_store import ModelStore

    store = ModelStore(home / "models")

    def stop_in_the_middle(stage, done, total):
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        store.import_model(tiny_sd1_diffusers, "half", stop_in_the_middle)
    assert list((home / "models").iterdir()) == []


def test_ctrl_c_cancels_generation_and_saves_nothing(installed, home, tmp_path):
    """A real SIGINT to a real `easel generate` process: exit 130, no file written."""
    output = tmp_path / "never.png"
    command = [sys.executable, "-m", "desktop.cli", "generate", "a horse", "--model", "tiny",
               "--width", "128", "--height", "128", "--steps", "2000", "-o", str(output)]
    process = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "EASEL_HOME": str(home)})
    # Wait until the model runs, then interrupt as a user pressing Ctrl+C would.
    deadline = time.monotonic() + 60
    line = ""
    while "running on" not in line and time.monotonic() < deadline:
        line = process.stderr.readline()
    time.sleep(1.0)
    process.send_signal(signal.SIGINT)
    try:
        # Generous: on a loaded 2-core machine the process gets a fraction of a core.
        _, rest = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        process.kill()
        _, rest = process.communicate()
        pytest.fail(f"easel did not stop within 120 s of Ctrl+C: {rest}")
    assert process.returncode == 130, rest
    assert "nothing was saved" in rest
    assert not output.exists()
    assert not list(tmp_path.glob("*.png"))


def test_gpu_that_cannot_start_is_said_not_hidden(installed, tmp_path, capsys):
    """This machine's onnxruntime-gpu lists CUDA, which then cannot load its libraries."""
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has no CUDA provider")
    assert generate("--providers", "cuda,cpu", "-o", str(tmp_path / "gpu.png")) == 0
    error = capsys.readouterr().err
    if "running on CUDA" in error:
        pytest.skip("CUDA really works here")
    assert "running on CPU" in error
    from engine.runtime.device import no_nvidia_gpu

    if no_nvidia_gpu():  # said plainly, with no advice to install CUDA
        assert "easel: No NVIDIA GPU was found; Easel uses the CPU.\n" in error
        assert "warning" not in error and "install" not in error
    else:
        assert "warning: The GPU was not used: CUDA could not start: " in error


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["safetensors", "ckpt"])
def test_a_single_file_checkpoint_makes_the_same_picture_as_its_folder(
        kind, installed, tmp_path, monkeypatch):
    import functools

    import torch

    from engine.export import pickle_convert, single_file
    from tests import tiny_checkpoints

    # The tiny checkpoint's architecture is not SD 1.5's: convert with the tiny configs.
    configs = tiny_checkpoints.write_configs_root(tmp_path / "configs")
    for module, function in ((single_file, "convert_single_file"),
                             (pickle_convert, "convert_pickle")):
        monkeypatch.setattr(module, function,
                            functools.partial(getattr(module, function), configs_root=configs))
    checkpoint = tiny_checkpoints.write_tiny_checkpoint("sd1", tmp_path / "tiny.safetensors")
    if kind == "ckpt":  # the same weights as a PyTorch pickle, named to mislead
        from safetensors.torch import load_file

        pickled = tmp_path / "tiny.safetensors.bin"
        torch.save({"state_dict": load_file(checkpoint)}, pickled)
        checkpoint = pickled
    assert main(["models", "import", str(checkpoint), "--name", "single"]) == 0
    assert generate("--seed", "4", "-o", str(tmp_path / "folder.png")) == 0
    assert main(["generate", "a red chair", "--model", "single", "--width", "64", "--height",
                 "48", "--steps", "3", "--seed", "4", "-o", str(tmp_path / "single.png")]) == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "folder.png")),
                          np.asarray(Image.open(tmp_path / "single.png")))


# --- `easel` with no command opens the window -----------------------------------------------


def test_no_command_without_a_screen_says_so_in_one_sentence(home, monkeypatch, capsys):
    monkeypatch.setattr(sys, "platform", "linux")
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(name, raising=False)
    assert main([]) == 1
    error = capsys.readouterr().err
    assert "no screen" in error and error.count("\n") == 1


def test_no_command_opens_the_window(home, monkeypatch):
    import desktop.app

    opened = []
    monkeypatch.setenv("DISPLAY", ":99")
    monkeypatch.setattr(desktop.app, "main",
                        lambda argv, picture=None: opened.append((argv, picture)) or 0)
    assert main([]) == 0
    assert opened == [([], None)]  # no picture: the window opens on its own
