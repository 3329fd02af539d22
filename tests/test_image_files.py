"""PNG files carry their parameters twice (A1111 text and Easel JSON) and are written whole."""

import json

import numpy as np
import pytest
from PIL import Image

from desktop.image_files import a1111_parameters, save_png
from engine.request import GenerationParameters

PARAMETERS = GenerationParameters(
    prompt="a red chair, studio light", negative_prompt="blurry", width=64, height=48,
    steps=20, guidance=7.5, scheduler="euler_ancestral", seed=1234, model_name="tiny sd",
    model_hash="0123456789", model_family="sd1")


def test_png_carries_a1111_and_easel_metadata(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    path = save_png(pixels, tmp_path / "out.png", PARAMETERS, "abc123")
    with Image.open(path) as image:
        assert np.array_equal(np.asarray(image), pixels)
        text = image.text
        assert not image.getexif()
    lines = text["parameters"].splitlines()
    assert lines[0] == "a red chair, studio light"
    assert lines[1] == "Negative prompt: blurry"
    fields = dict(part.split(": ", 1) for part in lines[2].split(", "))
    assert fields["Steps"] == "20" and fields["Seed"] == "1234" and fields["Size"] == "64x48"
    assert fields["Sampler"] == "Euler a" and fields["CFG scale"] == "7.5"
    assert fields["Model hash"] == "0123456789" and fields["Model"] == "tiny sd"
    ours = json.loads(text["easel"])
    assert ours["image_id"] == "abc123" and ours["seed"] == 1234
    assert ours["generator"] == PARAMETERS.generator
    assert ours["model"] == {"name": "tiny sd", "hash": "0123456789", "family": "sd1"}
    assert "/" not in json.dumps(ours)  # no paths of the user's machine


def test_values_that_would_break_the_a1111_parser_are_quoted():
    from dataclasses import replace

    text = a1111_parameters(replace(PARAMETERS, model_name="my, model"))
    assert 'Model: "my, model"' in text


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    pixels = np.zeros((8, 8, 3), dtype=np.uint8)

    def broken_replace(*_):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", broken_replace)
    with pytest.raises(OSError):
        save_png(pixels, tmp_path / "out.png", PARAMETERS)
    assert list(tmp_path.iterdir()) == []


def test_the_rng_field_names_a_torch_generator_and_reads_back():
    from dataclasses import replace

    from desktop.app.parameters import image_generator
    from desktop.library.metadata import from_a1111

    assert "RNG:" not in a1111_parameters(PARAMETERS)  # numpy: A1111 has no such generator
    for generator in ("torch-cpu", "torch-cuda"):
        text = a1111_parameters(replace(PARAMETERS, generator=generator))
        parsed = from_a1111(text).parameters
        assert image_generator(parsed) == generator, text


def test_no_norm_emphasis_is_written_as_a1111_does():
    from dataclasses import replace

    assert "Emphasis" not in a1111_parameters(PARAMETERS)  # the default writes nothing
    assert "Emphasis: No norm" in a1111_parameters(replace(PARAMETERS, emphasis="none"))


def test_emphasis_is_recorded_and_reused(tmp_path):
    from dataclasses import replace

    from desktop.app.parameters import Form, form_from_image
    from desktop.image_files import read_parameters
    from desktop.library.metadata import from_a1111

    pixels = np.zeros((48, 64, 3), np.uint8)
    path = save_png(pixels, tmp_path / "none.png", replace(PARAMETERS, emphasis="none"), "x")
    assert read_parameters(path).emphasis == "none"
    with Image.open(path) as image:
        ours = json.loads(image.text["easel"])
        theirs = from_a1111(image.text["parameters"]).parameters
    form = Form(seed=1)
    assert form_from_image(form, "p", "", "m", 1, 64, 48, ours).emphasis == "none"
    assert form_from_image(form, "p", "", "m", 1, 64, 48, theirs).emphasis == "none"
    plain = from_a1111(a1111_parameters(PARAMETERS)).parameters
    assert form_from_image(replace(form, emphasis="none"), "p", "", "m", 1, 64, 48,
                           plain).emphasis == "original"


def test_embeddings_are_written_as_a1111_does_and_read_back(tmp_path):
    from dataclasses import replace

    from desktop.image_files import easel_metadata, picture_embeddings, read_parameters
    from desktop.library.metadata import from_a1111

    used = (("inkstyle", "0123456789ab"), ("bad: name, 2", "ba5eba11c0de"))
    path = save_png(np.zeros((48, 64, 3), np.uint8), tmp_path / "ti.png",
                    replace(PARAMETERS, embeddings=used), "x")
    with Image.open(path) as image:
        text, ours = image.text["parameters"], json.loads(image.text["easel"])
    # Quoted as A1111 quotes a value with ':' or ','; its names lose both, as A1111's do.
    assert 'TI hashes: "inkstyle: 0123456789ab, bad name 2: ba5eba11c0de"' in text
    assert ours["embeddings"] == [{"name": "inkstyle", "hash": "0123456789ab"},
                                  {"name": "bad: name, 2", "hash": "ba5eba11c0de"}]
    assert read_parameters(path).embeddings == used
    assert picture_embeddings(ours) == used  # Easel's own record first, names whole
    theirs = from_a1111(text).parameters  # as a picture from A1111 is read
    assert picture_embeddings(theirs) == (("inkstyle", "0123456789ab"),
                                          ("bad name 2", "ba5eba11c0de"))
    assert "TI hashes" not in a1111_parameters(PARAMETERS)
    assert "embeddings" not in easel_metadata(PARAMETERS, "x")
