"""Inpainting and outpainting beyond parity: masks in every form and size, feathering and
compositing, the canvas of outpainting, and bad input refused in one sentence."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from engine.errors import BadRequest
from engine.images import composite, extend_canvas, feathered, mask_pixels
from engine.model import load_model
from engine.pipelines.inpaint import InpaintPipeline
from engine.pipelines.outpaint import OutpaintPipeline
from engine.request import InpaintRequest, OutpaintRequest
from engine.runtime.binding import BoundCalls
from tests.test_image_to_image import REPO_STARTER, changed_copy, picture

SMALL = {"steps": 3, "scheduler": "euler", "prompt": "a cat"}


def box_mask(height: int = 48, width: int = 64) -> np.ndarray:
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[height // 4 : height // 2, width // 4 : width // 2] = 255
    return mask


@pytest.fixture(scope="module")
def model(installed_tiny_sd1):
    return load_model(installed_tiny_sd1)


@pytest.fixture(scope="module")
def pipeline(model):
    return InpaintPipeline(model)


def test_outside_the_mask_the_picture_is_kept_at_any_size(pipeline):
    source, mask = picture(45, 61), box_mask(45, 61)
    result = pipeline(InpaintRequest(source, mask, count=2, seed=3, **SMALL))
    for image in result.images:
        assert image.pixels.shape == source.shape
        assert np.array_equal(image.pixels[mask == 0], source[mask == 0])
        assert not np.array_equal(image.pixels[mask > 0], source[mask > 0])
    parameters = result.images[1].parameters
    assert (parameters.operation, parameters.seed, parameters.strength, parameters.feather) == (
        "inpaint", 4, 1.0, 4)


def test_a_mask_of_another_size_is_stretched_and_the_result_says_so(pipeline):
    source, small_mask = picture(), box_mask(24, 32)
    result = pipeline(InpaintRequest(source, small_mask, **SMALL))
    assert any("mask is 32×24 pixels and the picture 64×48" in warning
               for warning in result.warnings)
    keep = mask_pixels(small_mask, 64, 48, 8192)[0] == 0
    assert np.array_equal(result.images[0].pixels[keep], source[keep])


def test_masks_in_every_form_mean_the_same():
    mask = box_mask()
    expected, resized = mask_pixels(mask, 64, 48, 8192)
    assert resized is None and set(np.unique(expected)) == {0.0, 1.0}
    forms = [mask > 0, np.stack([mask] * 3, axis=-1), mask[..., np.newaxis],
             Image.fromarray(mask), Image.fromarray(mask).convert("RGB")]
    for form in forms:
        assert np.array_equal(mask_pixels(form, 64, 48, 8192)[0], expected)
    # diffusers binarizes at half of 255: 127 keeps, 128 repaints.
    grey = np.full((48, 64), 127, dtype=np.uint8)
    grey[0, 0] = 128
    assert mask_pixels(grey, 64, 48, 8192)[0].sum() == 1


def test_feathering_fades_in_inside_the_mask_only():
    mask = mask_pixels(box_mask(96, 128), 128, 96, 8192)[0]  # rows 24-47, columns 32-63
    weight = feathered(mask, 8)
    assert np.all(weight[mask == 0] == 0)
    assert weight[36, 48] == 1.0  # the middle, 12 pixels from every edge
    row = weight[36, 32:48]  # from the left edge inwards
    assert np.all(np.diff(row) >= 0) and 0 < row[0] < 0.3 and row[-1] == 1.0
    assert np.array_equal(feathered(mask, 0), mask)
    # The picture's border is not an edge of the mask: no fade along it.
    full = np.ones((32, 32), dtype=np.float32)
    assert np.all(feathered(full, 8) == 1.0)


def test_compositing_keeps_the_source_exactly_where_the_weight_is_zero():
    source, generated = picture(seed=1), picture(seed=2)
    weight = feathered(mask_pixels(box_mask(), 64, 48, 8192)[0], 4)
    result = composite(generated, source, weight)
    assert np.array_equal(result[weight == 0], source[weight == 0])
    assert np.array_equal(result[weight == 1], generated[weight == 1])
    between = (weight > 0) & (weight < 1)
    assert between.any()
    low = np.minimum(source, generated)[between]
    high = np.maximum(source, generated)[between]
    assert np.all((low <= result[between]) & (result[between] <= high))


def test_a_mask_thinner_than_the_latent_grid_is_reported(pipeline):
    mask = np.zeros((48, 64), dtype=np.uint8)
    mask[11, :] = 255  # one odd row: the tiny VAE's 2-pixel grid reads the even ones
    result = pipeline(InpaintRequest(picture(), mask, feather=0, **SMALL))
    assert any("thinner than the model's" in warning for warning in result.warnings)


@pytest.mark.parametrize(("changes", "message"), [
    ({"mask": np.zeros((48, 64), dtype=np.uint8)}, "mask is empty"),
    ({"mask": np.full((48, 64), 100, dtype=np.uint8)}, "mask is empty"),
    ({"mask": np.ones((48, 64), dtype=np.float32)}, "8-bit grey or RGB"),
    ({"mask": np.zeros((48, 64, 2), dtype=np.uint8)}, "8-bit grey or RGB"),
    ({"mask": None}, "pixels or a PIL image"),
    ({"mask": Image.new("L", (10, 9000))}, "up to 8192 pixels a side"),
    ({"feather": -1}, "feather"),
    ({"feather": 2.5}, "feather"),
    ({"strength": 0}, "more than 0 and at most 1"),
    ({"image": np.zeros((9000, 8, 3), dtype=np.uint8)}, "up to 8192 pixels a side"),
])
def test_bad_requests_are_refused_before_work(pipeline, changes, message, monkeypatch):
    monkeypatch.setattr(BoundCalls, "__call__", None)  # any UNet call would fail otherwise
    request = {"image": picture(), "mask": box_mask(), **SMALL, **changes}
    with pytest.raises(BadRequest, match=message):
        pipeline(InpaintRequest(**request))


def test_instruction_models_cannot_inpaint(installed_tiny_sd1, tmp_path):
    model = changed_copy(installed_tiny_sd1, tmp_path / "pix2pix",
                         description={"variant": "instruct-pix2pix", "format": 2})
    with pytest.raises(BadRequest, match="InstructPix2Pix model.*cannot repaint"):
        InpaintPipeline(model)(InpaintRequest(picture(), box_mask(), **SMALL))


def test_outpainting_keeps_the_picture_and_paints_the_border(model):
    source = picture(40, 56)
    request = OutpaintRequest(source, left=8, top=0, right=16, bottom=24, **SMALL)
    result = OutpaintPipeline(model)(request)
    pixels = result.images[0].pixels
    assert pixels.shape == (64, 80, 3)
    assert np.array_equal(pixels[0:40, 8:64], source)
    parameters = result.images[0].parameters
    assert (parameters.operation, parameters.extend) == ("outpaint", (8, 0, 16, 24))
    assert (parameters.width, parameters.height) == (80, 64)


def test_the_outpainting_canvas_starts_from_the_edge_colours():
    source = np.zeros((16, 16, 3), dtype=np.uint8)
    source[:, :, 0] = 200  # a red picture
    canvas, mask = extend_canvas(source, 8, 0, 0, 4)
    assert canvas.shape == (20, 24, 3) and mask.shape == (20, 24)
    assert np.array_equal(canvas[0:16, 8:24], source)
    assert np.all(canvas[:, :, 0][mask > 0] == 200) and np.all(canvas[:, :, 1:] == 0)
    assert mask[0:16, 8:24].max() == 0 and mask[16:, :].min() == 255


@pytest.mark.parametrize(("sides", "message"), [
    ({}, "at least one side"),
    ({"left": -8}, "0 or a multiple of 8 pixels"),
    ({"top": 1.5}, "0 or a multiple of 8 pixels"),
    ({"right": 5}, "0 or a multiple of 8 pixels"),  # the size rule (engine.size_rule)
    ({"right": 8200}, "up to 8192 pixels a side"),
])
def test_bad_outpainting_requests_are_refused(model, sides, message):
    with pytest.raises(BadRequest, match=message):
        OutpaintPipeline(model).check_inputs(OutpaintRequest(picture(), **sides, **SMALL))


def test_the_starter_model_inpaints_by_blending():
    """A flow-matching model (no inpainting UNet), 12 latent channels, a 16-pixel grid."""
    source, mask = picture(128, 192), box_mask(128, 192)
    result = InpaintPipeline(load_model(REPO_STARTER))(
        InpaintRequest(source, mask, "a red circle", steps=4))
    pixels = result.images[0].pixels
    assert np.array_equal(pixels[mask == 0], source[mask == 0])
    assert not np.array_equal(pixels[mask > 0], source[mask > 0])
