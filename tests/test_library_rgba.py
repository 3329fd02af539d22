"""Transparent pictures in the library (cut-outs: RGBA) and masks (grey): written whole with
their metadata, read back exactly, thumbnailed over a checkerboard, flattened on white where
RGB is expected, exported with their alpha; RGB pictures as before."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from desktop.image_files import pixels_image, save_png
from desktop.library import Library
from desktop.library.images import (
    CHECKER_GREYS,
    flattened,
    load_pixels,
    on_checkerboard,
    open_image,
)
from desktop.library.pngs import read_png
from engine.request import GenerationParameters

PARAMETERS = GenerationParameters(
    prompt="a red chair", negative_prompt="", width=32, height=32, steps=4, guidance=7.5,
    scheduler="euler", seed=5, model_name="tiny", model_hash="0123", model_family="sd1",
    operation="remove_background")


def cut_out(size: int = 32) -> np.ndarray:
    """Random colours; a soft-edged opaque square in the middle, the rest fully transparent."""
    rgba = np.random.default_rng(1).integers(0, 256, (size, size, 4), dtype=np.uint8)
    rgba[..., 3] = 0
    rgba[8:24, 8:24, 3] = 255
    rgba[7, 8:24, 3] = 128
    return rgba


@pytest.fixture
def library(tmp_path):
    with Library.open(tmp_path / "home") as opened:
        yield opened


def test_a_cut_out_is_written_as_rgba_with_its_metadata_and_read_back_exactly(library):
    entry = library.add_generated(cut_out(), PARAMETERS, source_id="ab" * 16)
    with Image.open(entry.path) as image:
        assert image.mode == "RGBA"
        assert np.array_equal(np.asarray(image), cut_out())
        metadata = json.loads(image.text["easel"])
        assert "Seed: 5" in image.text["parameters"]
    assert metadata["operation"] == "remove_background"
    assert metadata["source_image_id"] == "ab" * 16 and metadata["image_id"] == entry.id
    assert read_png(entry.path).image_id == entry.id  # a rebuild finds it
    with open_image(entry.path) as image:
        assert load_pixels(image, "x").mode == "RGBA"  # the alpha kept for who wants it
    report = library.rebuild()
    assert report.unreadable == [] and library.get(entry.id).width == 32


def test_a_mask_is_written_as_grey(library):
    mask = cut_out()[..., 3]
    entry = library.add_generated(mask, PARAMETERS)
    with Image.open(entry.path) as image:
        assert image.mode == "L" and np.array_equal(np.asarray(image), mask)


def test_other_shapes_are_refused_before_anything_is_written(library):
    with pytest.raises(ValueError, match="not RGB, RGBA or grey"):
        library.add_generated(np.zeros((8, 8, 2), np.uint8), PARAMETERS)
    assert library.count() == 0


def test_a_copy_outside_is_rgba_too(tmp_path):
    path = save_png(cut_out(), tmp_path / "copy.png", PARAMETERS)
    with Image.open(path) as image:
        assert image.mode == "RGBA" and np.array_equal(np.asarray(image), cut_out())
        assert "easel" in image.text


def test_where_rgb_is_expected_a_cut_out_lies_on_white():
    flat = np.asarray(flattened(pixels_image(cut_out())))
    assert flat.shape == (32, 32, 3)
    assert (flat[0:7] == 255).all()  # transparent: white, not the hidden colours
    assert np.array_equal(flat[8:24, 8:24], cut_out()[8:24, 8:24, :3])  # opaque: exact
    rgb = np.random.default_rng(2).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    assert np.array_equal(np.asarray(flattened(Image.fromarray(rgb))), rgb)


def test_a_cut_out_is_thumbnailed_over_a_checkerboard(library):
    rgba = np.zeros((64, 64, 4), np.uint8)  # transparent, black hidden under it
    rgba[32:, 32:] = (200, 30, 30, 255)  # an opaque red square at the bottom right
    entry = library.add_generated(rgba, replace(PARAMETERS, width=64, height=64))
    with Image.open(library.thumbnails.get(entry.id, entry.path, size=64)) as image:
        thumbnail = np.asarray(image.convert("RGB")).astype(int)
    light, white = CHECKER_GREYS
    # The transparent squares: white and light grey, alternating (JPEG: near enough).
    assert np.abs(thumbnail[2:6, 2:6] - white).mean() < 8
    assert np.abs(thumbnail[2:6, 10:14] - light).mean() < 8
    assert np.abs(thumbnail[10:14, 10:14] - white).mean() < 8
    # The opaque square is the picture itself, not the board.
    assert np.abs(thumbnail[40:60, 40:60] - (200, 30, 30)).mean() < 8


def test_an_rgb_picture_is_thumbnailed_and_flattened_as_before():
    rgb = np.random.default_rng(3).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    image = Image.fromarray(rgb)
    assert on_checkerboard(image).tobytes() == image.tobytes()
    assert flattened(image).tobytes() == image.tobytes()


def test_export_keeps_the_alpha_with_or_without_metadata(library, tmp_path):
    entry = library.add_generated(cut_out(), PARAMETERS)
    [whole] = library.export([entry.id], tmp_path / "out")
    assert whole.read_bytes() == entry.path.read_bytes()
    [bare] = library.export([entry.id], tmp_path / "out", strip_metadata=True)
    with Image.open(bare) as image:
        assert image.mode == "RGBA" and np.array_equal(np.asarray(image), cut_out())
        assert not image.text and "exif" not in image.info


def test_a_transparent_source_is_read_on_white_never_its_hidden_pixels(tmp_path):
    """An RGBA picture from elsewhere may keep anything under its transparency: the command
    line's and the window's source readers lay it on white instead."""
    from desktop.app.editing import _decoded
    from desktop.source_pictures import open_picture

    pixels = np.zeros((8, 8, 4), np.uint8)
    pixels[..., 0] = 255  # red everywhere, hidden where alpha is 0
    pixels[:4, :, 3] = 255
    path = tmp_path / "cut.png"
    Image.fromarray(pixels, "RGBA").save(path)
    read = np.asarray(open_picture(path, "RGB"))
    assert (read[:4] == (255, 0, 0)).all() and (read[4:] == 255).all()
    with Image.open(path) as image:
        decoded = _decoded(image, "cut.png", None, None)
    assert (decoded.pixels[4:] == 255).all()
