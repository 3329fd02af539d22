"""``easel generate --hires-scale`` end to end through easel's own main(), on the built-in
starter model (no import needed), in a throwaway data folder."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from desktop.cli import main
from desktop.library import Library
from engine.upscale import LANCZOS_NAME

SMALL = ["--width", "64", "--height", "64", "--steps", "4", "--seed", "3"]


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("EASEL_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def generate(*argv: str) -> int:
    return main(["generate", "a red chair", *SMALL, *argv])


def png_text(path) -> dict:
    with Image.open(path) as image:
        return {"size": image.size, "easel": json.loads(image.text["easel"]),
                "parameters": image.text["parameters"]}


def test_hires_fix_with_the_lanczos_fallback_is_saved_and_said(home, tmp_path, capsys):
    out = tmp_path / "big.png"
    assert generate("--hires-scale", "2", "--hires-strength", "0.5", "-o", str(out)) == 0
    captured = capsys.readouterr()
    assert captured.out.split() == [str(out)]
    assert "enlarged by Lanczos resampling" in captured.err
    png = png_text(out)
    assert png["size"] == (128, 128)
    easel = png["easel"]
    assert (easel["operation"], easel["scale"], easel["upscaler"], easel["base_size"],
            easel["strength"], easel["seed"]) == ("hires_fix", 2.0, LANCZOS_NAME, [64, 64], 0.5,
                                                  3)
    assert "Size: 64x64" in png["parameters"]
    assert "Denoising strength: 0.5, Hires upscale: 2, Hires upscaler: Lanczos" in (
        png["parameters"])
    with Library.open(home) as library:
        entry = library.get(easel["image_id"])
        assert (entry.operation, entry.width, entry.height) == ("hires_fix", 128, 128)


def test_an_installed_upscaler_is_chosen_by_name(home, tmp_path, capsys):
    from desktop import paths
    from tests.test_hires_fix import tiny_upscaler

    tiny_upscaler(paths.models_dir() / "tiny_x4")
    tiny_upscaler(paths.models_dir() / "other_x2", scale=2)
    # With two installed, the command cannot guess.
    assert generate("--hires-scale", "2") == 1
    assert "choose one with --upscaler" in capsys.readouterr().err
    out = tmp_path / "big.png"
    assert generate("--hires-scale", "2", "--upscaler", "tiny_x4", "-o", str(out)) == 0
    captured = capsys.readouterr()
    assert "tiny_x4" in captured.err and "Lanczos" not in captured.err
    easel = png_text(out)["easel"]
    assert (easel["upscaler"], easel["width"], easel["height"]) == ("tiny_x4", 128, 128)


@pytest.mark.parametrize(("arguments", "words"), [
    (["--hires-scale", "5"], "The hires scale must be more than 1 and at most 4 (got 5)."),
    (["--hires-scale", "0.5"], "The hires scale must be more than 1 and at most 4 (got 0.5)."),
    (["--hires-scale", "2", "--hires-strength", "1.5"], "The strength must be more than 0"),
    (["--hires-strength", "0.3"], "--hires-strength and --upscaler belong to a hires fix; "
                                  "add --hires-scale."),
    (["--upscaler", "x"], "add --hires-scale."),
    (["--hires-scale", "2", "--upscaler", "missing"], "missing"),
])
def test_bad_hires_input_is_one_sentence_and_nothing_is_saved(home, capsys, arguments, words):
    assert generate(*arguments) == 1
    err = capsys.readouterr().err
    assert words in err and err.count("error:") == 1
    with Library.open(home) as library:
        assert library.count() == 0
