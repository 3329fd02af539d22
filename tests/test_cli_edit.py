"""``easel edit / variations / inpaint / outpaint`` end to end, with the built-in starter model
(0.4 s a picture), in a throwaway data folder."""

import json

import numpy as np
import pytest
from PIL import Image

from desktop.cli import main
from desktop.library import Library

PROMPT = "a dog on the left, on a green background"


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("EASEL_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def source(home, tmp_path, capsys):
    """A starter-model picture in the library, and a copy of it outside."""
    copy = tmp_path / "source.png"
    assert main(["generate", PROMPT, "--seed", "3", "-o", str(copy)]) == 0
    capsys.readouterr()
    return copy


def printed_paths(capsys) -> list[str]:
    return capsys.readouterr().out.split()


def easel_metadata(path) -> dict:
    with Image.open(path) as image:
        return json.loads(image.text["easel"])


def test_edit_records_the_operation_strength_and_source(home, source, capsys):
    source_id = easel_metadata(source)["image_id"]
    assert main(["edit", source_id[:8], "a horse on the left, on a green background",
                 "--strength", "0.7", "--seed", "2"]) == 0
    (made,) = printed_paths(capsys)
    metadata = easel_metadata(made)
    assert metadata["operation"] == "image_to_image" and metadata["strength"] == 0.7
    assert metadata["source_image_id"] == source_id
    with Image.open(made) as image:
        assert "Denoising strength: 0.7" in image.text["parameters"]
    with Library.open(home) as library:
        chain = library.lineage(metadata["image_id"])
    assert [entry.id for entry in chain] == [metadata["image_id"], source_id]


def test_variations_of_a_file_are_new_pictures_each_with_its_own_seed(home, source, capsys):
    assert main(["variations", str(source), "--count", "2", "--seed", "10"]) == 0
    paths = printed_paths(capsys)
    seeds = [easel_metadata(path)["seed"] for path in paths]
    assert seeds == [10, 11]
    first, second = (np.asarray(Image.open(path)) for path in paths)
    assert not np.array_equal(first, second)
    # The copy outside still carries its library id, so lineage is kept.
    assert easel_metadata(paths[0])["source_image_id"] == easel_metadata(source)["image_id"]


def test_inpaint_keeps_every_pixel_outside_the_mask(home, source, tmp_path, capsys):
    mask = np.zeros((256, 256), np.uint8)
    mask[:, 128:] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    assert main(["inpaint", str(source), "a moon on the right, on a green background",
                 "--mask", str(tmp_path / "mask.png"), "--seed", "1"]) == 0
    (made,) = printed_paths(capsys)
    before, after = np.asarray(Image.open(source)), np.asarray(Image.open(made))
    assert np.array_equal(before[:, :128], after[:, :128])
    assert np.abs(before[:, 160:].astype(int) - after[:, 160:]).mean() > 10  # a moon came
    assert easel_metadata(made)["operation"] == "inpaint"


def test_outpaint_grows_the_canvas_and_keeps_the_picture(home, source, capsys):
    assert main(["outpaint", str(source), PROMPT, "--right", "64", "--seed", "1"]) == 0
    (made,) = printed_paths(capsys)
    after = np.asarray(Image.open(made))
    assert after.shape == (256, 320, 3)
    assert np.array_equal(after[:, :200], np.asarray(Image.open(source))[:, :200])


@pytest.mark.parametrize(("arguments", "sentence"), [
    (["edit", "no-such-picture", "x"], "neither a picture file nor a picture in the library"),
    (["inpaint", "SOURCE", "--mask", "NOT_AN_IMAGE"], "is not an image Easel can read"),
    (["outpaint", "SOURCE"], "Say how far to extend the picture"),
    (["edit", "SOURCE", "--strength", "1.5"], "strength"),
])
def test_bad_input_is_one_sentence_and_saves_nothing(home, source, tmp_path, capsys,
                                                     arguments, sentence):
    (tmp_path / "not-an-image.png").write_text("hello")
    arguments = [str(source) if a == "SOURCE" else str(tmp_path / "not-an-image.png")
                 if a == "NOT_AN_IMAGE" else a for a in arguments]
    assert main(arguments) == 1
    error = capsys.readouterr().err
    assert sentence in error and error.strip().count("\n") == 0
    with Library.open(home) as library:
        assert library.count() == 1  # only the source
