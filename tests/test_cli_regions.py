"""``easel regions`` and ``easel instruct`` end to end in a throwaway data folder: regions with
the built-in starter model (0.4 s a picture), instruct with a tiny random InstructPix2Pix
model installed beside it."""

import json

import numpy as np
import pytest
from PIL import Image

from desktop.cli import main
from desktop.library import Library
from tests import tiny_models_pix2pix
from tests.tiny_models_xl import installed_copy

MOON = "0,0,128,128:a moon on the left"
HORSE = "128,128,128,128:a horse on the right"


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("EASEL_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def easel_metadata(path) -> dict:
    with Image.open(path) as image:
        return json.loads(image.text["easel"])


def test_regions_saves_a_picture_with_its_operation(home, tmp_path, capsys):
    copy = tmp_path / "layout.png"
    assert main(["regions", "on a blue background", "--region", MOON, "--region", HORSE,
                 "--seed", "1", "-o", str(copy)]) == 0
    (made,) = capsys.readouterr().out.split()
    metadata = easel_metadata(made)
    assert metadata["operation"] == "regions" and metadata["seed"] == 1
    assert metadata["prompt"] == "on a blue background"
    # The boxes and their prompts travel in the PNG, so the picture can be made again.
    assert [region["prompt"] for region in metadata["regions"]] == [
        MOON.split(":", 1)[1], HORSE.split(":", 1)[1]]
    assert metadata["regions"][0]["box"] == [int(v) for v in MOON.split(":")[0].split(",")]
    pixels = np.asarray(Image.open(copy))
    assert pixels.shape == (256, 256, 3)
    with Library.open(home) as library:
        assert library.get(metadata["image_id"]).operation == "regions"


@pytest.mark.parametrize(("arguments", "sentence"), [
    (["regions", "on a blue background"], "Give at least one region"),
    (["regions", "x", "--region", "0,0,128:a moon"], "four whole numbers and a prompt"),
    (["regions", "x", "--region", "0,0,128,128 a moon"], "four whole numbers and a prompt"),
    (["regions", "a moon", "--region", "200,0,128,128:a horse"], "reaches outside the 256×256"),
    (["regions", "a moon", "--region", "0,0,0,128:a horse"], "has no area"),
    (["regions", "a moon"] + ["--region", MOON] * 9, "at most 8 regions"),
    (["regions", "a moon", "--region", MOON, "--width", "300"], "multiple of 64"),
    (["instruct", "SOURCE", "make it winter"], "it cannot edit a picture by instruction"),
])
def test_bad_input_is_one_sentence_and_saves_nothing(home, tmp_path, capsys, arguments,
                                                     sentence):
    source = tmp_path / "source.png"
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(source)
    arguments = [str(source) if a == "SOURCE" else a for a in arguments]
    assert main(arguments) == 1
    error = capsys.readouterr().err
    assert sentence in error and error.strip().count("\n") == 0
    with Library.open(home) as library:
        assert library.count() == 0


@pytest.mark.slow
def test_instruct_edits_a_library_picture_and_keeps_lineage(home, tmp_path, capsys):
    # Installed as the store keeps it; importing the diffusers folder would export it again.
    installed_copy(tiny_models_pix2pix.tiny_pix2pix_onnx(), home / "models" / "pix2pix")
    source = tmp_path / "source.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 60, 3), np.uint8)).save(
        source)
    with Library.open(home) as library:  # a library picture, so lineage shows
        source_id = library.import_file(source).id
    capsys.readouterr()
    assert main(["instruct", source_id[:8], "make it winter", "--model", "pix2pix",
                 "--image-guidance", "1.2", "--steps", "3", "--seed", "4"]) == 0
    (made,) = capsys.readouterr().out.split()
    metadata = easel_metadata(made)
    assert metadata["operation"] == "instruct_pix2pix" and metadata["prompt"] == "make it winter"
    assert metadata["source_image_id"] == source_id and metadata["image_guidance"] == 1.2
    with Image.open(made) as image:
        assert "Image CFG scale: 1.2" in image.text["parameters"]
    assert np.asarray(Image.open(made)).shape == (48, 60, 3)  # any size, cropped back
    with Library.open(home) as library:
        chain = library.lineage(metadata["image_id"])
    assert [entry.id for entry in chain] == [metadata["image_id"], source_id]
