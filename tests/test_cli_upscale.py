"""``easel upscale`` end to end in a throwaway data folder: from a library id and from a file,
with an installed upscaler and with the Lanczos fallback, and bad input refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from desktop.cli import main
from desktop.library import Library
from engine.upscale import LANCZOS_NAME


def upscale(*argv: str) -> int:
    return main(["upscale", *argv])


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("EASEL_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def source(home, tmp_path, capsys):
    """A starter-model picture in the library (0.4 s), and its id."""
    assert main(["generate", "a red chair", "--seed", "7", "--width", "64", "--height", "64",
                 "-o", str(tmp_path / "source.png")]) == 0
    capsys.readouterr()
    with Image.open(tmp_path / "source.png") as image:
        return json.loads(image.text["easel"])["image_id"]


def easel_metadata(path) -> dict:
    with Image.open(path) as image:
        return json.loads(image.text["easel"])


def test_without_an_upscaler_lanczos_is_used_and_said(home, source, capsys):
    assert upscale(source[:8]) == 0
    captured = capsys.readouterr()
    (made,) = captured.out.split()
    assert "Lanczos resampling, which adds no detail" in captured.err
    metadata = easel_metadata(made)
    assert metadata["operation"] == "upscale" and metadata["source_image_id"] == source
    assert metadata["model"]["name"] == LANCZOS_NAME
    assert (metadata["width"], metadata["height"]) == (256, 256)
    assert (metadata["prompt"], metadata["seed"]) == ("a red chair", 7)  # the source's
    with Library.open(home) as library:
        assert [entry.id for entry in library.lineage(metadata["image_id"])][1] == source


def test_an_installed_upscaler_is_used_for_a_file(home, source, tmp_path, capsys):
    from desktop import paths
    from tests.test_upscale import _spandrel_or_skip, export_tiny

    _spandrel_or_skip()
    # Installed as the model store would (its import is tested in test_upscale_import.py).
    export_tiny(paths.models_dir() / "tiny_x4")
    assert main(["models", "list"]) == 0
    listed = [line for line in capsys.readouterr().out.splitlines() if "tiny_x4" in line]
    assert len(listed) == 1 and "upscaler" in listed[0]
    out = tmp_path / "big.png"
    assert upscale(str(tmp_path / "source.png"), "--scale", "2", "-o", str(out)) == 0
    captured = capsys.readouterr()
    assert captured.out.split() == [str(out)]
    assert "tiny_x4" in captured.err and "Lanczos" not in captured.err
    metadata = easel_metadata(out)
    assert metadata["model"] == {"name": "tiny_x4", "hash": metadata["model"]["hash"],
                                 "family": "upscaler"}
    with Image.open(out) as image:
        assert image.size == (128, 128)
    with Library.open(home) as library:  # the file carried its library id: lineage is kept
        assert library.get(metadata["image_id"]).source_id == source


def test_a_picture_from_elsewhere_is_upscaled_without_settings(home, tmp_path, capsys):
    outside = tmp_path / "photo.jpg"
    Image.fromarray(np.full((10, 12, 3), 90, np.uint8)).save(outside)
    assert upscale(str(outside), "--scale", "2") == 0
    metadata = easel_metadata(capsys.readouterr().out.split()[0])
    assert metadata["operation"] == "upscale" and "source_image_id" not in metadata
    assert (metadata["width"], metadata["height"], metadata["prompt"]) == (24, 20, "")


def test_too_large_results_and_non_pictures_are_refused_in_one_sentence(home, tmp_path,
                                                                       capsys):
    wide = tmp_path / "wide.png"
    Image.new("RGB", (2100, 8)).save(wide)
    text = tmp_path / "notes.png"
    text.write_text("not a picture")
    for argv, words in (([str(wide)], "8192 pixels a side"),
                        ([str(text)], "not an image Easel can read"),
                        (["0123abcd"], "neither a picture file nor a picture in the library")):
        assert upscale(*argv) == 1
        error = capsys.readouterr().err.strip().splitlines()[-1]
        assert words in error and error.startswith("easel: error: ")
    with Library.open(home) as library:
        assert library.count() == 0  # nothing half-made was saved
