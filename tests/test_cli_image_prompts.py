"""``easel generate … --image-prompt PICTURE[:WEIGHT]`` and ``easel variations --mode
meaning``: the installed IP-Adapter and encoder found for the model, the picture steered by the
reference and recording it; and one sentence for what cannot work."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from desktop.cli import main
from tests import installed_homes, tiny_ip_adapters

pytest.importorskip("torch")
pytest.importorskip("diffusers")

SIZE = ["--width", "64", "--height", "48", "--steps", "2", "--seed", "3"]


@pytest.fixture(scope="module")
def home_with_adapter(tmp_path_factory):
    return installed_homes.home_with_ip_adapter(tmp_path_factory.mktemp("template") / "home")


@pytest.fixture
def home(home_with_adapter, tmp_path, monkeypatch):
    return installed_homes.copied_home(home_with_adapter, tmp_path / "home", monkeypatch)


@pytest.fixture
def reference(tmp_path):
    return installed_homes.save_reference(tmp_path / "reference.png")


def made(path) -> tuple[np.ndarray, dict, str]:
    with Image.open(path) as image:
        return np.asarray(image), json.loads(image.text["easel"]), image.text["parameters"]


def test_an_image_prompt_steers_and_is_recorded(home, reference, tmp_path, capsys):
    command = ["generate", "a red chair", "--model", "tiny", *SIZE]
    assert main([*command, "-o", str(tmp_path / "plain.png")]) == 0
    assert main([*command, "-o", str(tmp_path / "prompted.png"), "--image-prompt",
                 f"{reference}:0.8"]) == 0
    plain, _, _ = made(tmp_path / "plain.png")
    prompted, metadata, parameters = made(tmp_path / "prompted.png")
    assert np.abs(prompted.astype(int) - plain.astype(int)).mean() > 0.5
    (recorded,) = metadata["image_prompts"]
    assert (recorded["encoder"], recorded["weight"]) == ("clip-vision", 0.8)
    assert f"Model: {recorded['adapter']} [{recorded['hash']}], Weight: 0.8" in parameters
    from desktop.library import Library

    with Library.open(home) as library:
        kept = library.input_path(recorded["picture"])
        assert library.input_path("../../etc/passwd") is None  # metadata is anyone's to write
    assert np.array_equal(np.asarray(Image.open(kept)), np.asarray(Image.open(reference)))
    capsys.readouterr()
    assert main(["gallery", "show", metadata["image_id"][:12]]) == 0
    assert f"{recorded['adapter']} with clip-vision 0.8" in capsys.readouterr().out


def test_variations_that_keep_the_meaning_read_the_source_as_an_image_prompt(
        home, tmp_path, capsys):
    source = tmp_path / "source.png"
    assert main(["generate", "a red chair", "--model", "tiny", *SIZE, "-o", str(source)]) == 0
    capsys.readouterr()
    assert main(["variations", str(source), "--model", "tiny", "--mode", "meaning",
                 "--count", "2", "--steps", "2", "--seed", "5"]) == 0
    paths = capsys.readouterr().out.split()
    assert len(paths) == 2
    first, metadata, _ = made(paths[0])
    second, _, _ = made(paths[1])
    assert first.shape == (48, 64, 3), "the source's size"
    assert metadata["operation"] == "text_to_image" and metadata["seed"] == 5
    assert [prompt["weight"] for prompt in metadata["image_prompts"]] == [1.0]
    assert not np.array_equal(first, second)
    source_id = made(source)[1]["image_id"]
    assert metadata["source_image_id"] == source_id, "the variation's lineage"


def test_without_an_adapter_an_image_prompt_is_one_sentence(tmp_path, monkeypatch, reference,
                                                            home_with_adapter, capsys):
    installed_homes.copied_home(home_with_adapter, tmp_path / "bare", monkeypatch)
    for name in (installed_homes.ENCODER, tiny_ip_adapters.BASE_FILE.removesuffix(".safetensors")):
        assert main(["models", "remove", name]) == 0
    capsys.readouterr()
    assert main(["generate", "a red chair", "--model", "tiny", *SIZE, "--image-prompt",
                 str(reference)]) != 0
    assert "needs an IP-Adapter" in capsys.readouterr().err
    assert main(["generate", "a red chair", "--model", "tiny", *SIZE, "--ip-adapter",
                 "x"]) != 0
    assert "add an --image-prompt" in capsys.readouterr().err
