"""Inpainting and outpainting a picture larger than the model draws (issue 14, item 4): the
starter repaints at its largest native side and enlarges, never filling the masked part with
copies of its subject, and outside the mask the picture stays exactly the source's."""

from __future__ import annotations

import numpy as np
import pytest

from desktop.app.editing import Sides
from engine.images import composite, extend_canvas, feathered
from engine.model import load_model
from engine.pipelines.inpaint import InpaintPipeline
from engine.pipelines.native_size import enlarge, shrink, shrink_mask
from engine.pipelines.outpaint import OutpaintPipeline
from engine.pipelines.text_to_image import TextToImagePipeline
from engine.request import GeneratedImage, InpaintRequest, OutpaintRequest, TextToImageRequest
from engine.runtime import RuntimeOptions
from tests.app_windows import BUILT_IN, real_engine, studio_window
from tests.test_image_to_image import picture
from tests.test_image_to_image_parity import capture_decoding

CPU = RuntimeOptions(providers=("cpu",))
MOON_LEFT = "a moon on the left, on a black background"
MOON_RIGHT = "a moon on the right, on a black background"
NOTE = ("'starter' draws at most 256 pixels a side, so the repainted part was drawn at "
        "{} and enlarged to {}.")
WAIT_MS = 120_000


@pytest.fixture(scope="module")
def starter():
    return load_model(BUILT_IN / "starter", CPU, "starter")


@pytest.fixture(scope="module")
def moon_image(starter) -> GeneratedImage:
    """A 256 px starter picture of a moon on the left."""
    return TextToImagePipeline(starter)(TextToImageRequest(MOON_LEFT, seed=0)).images[0]


@pytest.fixture(scope="module")
def moon(moon_image) -> np.ndarray:
    return moon_image.pixels


def right_half(side: int) -> np.ndarray:
    mask = np.zeros((side, side), dtype=np.uint8)
    mask[:, side // 2:] = 255
    return mask


def test_inpainting_half_a_512_picture_repaints_its_256_scene_once(starter, moon):
    large = TextToImagePipeline(starter)(TextToImageRequest(
        MOON_LEFT, width=512, height=512, seed=0)).images[0].pixels
    assert np.array_equal(large, enlarge(moon, 512, 512))  # the 256 picture, enlarged
    pipeline = InpaintPipeline(starter)
    small = pipeline(InpaintRequest(moon, right_half(256), MOON_RIGHT, feather=0, seed=5))
    result = pipeline(InpaintRequest(large, right_half(512), MOON_RIGHT, feather=0, seed=5))
    image = result.images[0]
    # The left half is the source's exactly; the right half is the 256 run's moon, enlarged
    # pixel for pixel: one moon, where the 512 canvas drew two (a 64 px scene to the UNet).
    assert np.array_equal(image.pixels[:, :256], large[:, :256])
    assert np.array_equal(image.pixels, enlarge(small.images[0].pixels, 512, 512))
    assert not np.array_equal(image.pixels[:, 256:], large[:, 256:])  # something was painted
    parameters = image.parameters
    assert (parameters.width, parameters.height, parameters.base_size) == (512, 512, (256, 256))
    assert (parameters.scale, parameters.upscaler, parameters.operation) == (
        2.0, "nearest", "inpaint")
    assert NOTE.format("256 × 256", "512 × 512") in result.warnings
    assert small.warnings == () and small.images[0].parameters.base_size is None


def test_the_feathered_edge_is_composited_at_full_size(starter, moon, monkeypatch):
    large = enlarge(moon, 512, 512)
    pipeline = InpaintPipeline(starter)
    small = pipeline(InpaintRequest(moon, right_half(256), MOON_RIGHT, feather=0, seed=5))
    decoded = capture_decoding(pipeline, monkeypatch)
    mask = right_half(512)
    pixels = pipeline(InpaintRequest(large, mask, MOON_RIGHT, seed=5)).images[0].pixels
    assert decoded["pixels"].shape == (256, 256, 3)  # drawn at the native size
    # The 256 repainting enlarged, over the source through the full-size feathered mask.
    weight = feathered((mask >= 128).astype(np.float32), 4)
    expected = composite(enlarge(small.images[0].pixels, 512, 512), large, weight)
    assert np.array_equal(pixels, expected)
    assert np.array_equal(pixels[weight == 0], large[weight == 0])


def test_outpainting_past_the_native_side_paints_the_border_at_the_native_size(
        starter, moon, monkeypatch):
    outpaint = OutpaintPipeline(starter)
    decoded = capture_decoding(outpaint.inpaint, monkeypatch)
    result = outpaint(OutpaintRequest(moon, right=256, prompt=MOON_RIGHT, feather=0, seed=5))
    image = result.images[0]
    assert image.pixels.shape == (256, 512, 3)
    assert decoded["pixels"].shape == (128, 256, 3)  # one scene, not a 64 x 32 px one
    assert np.array_equal(image.pixels[:, :256], moon)
    # The border is the extended canvas repainted at 256 x 128, enlarged 2x.
    canvas, mask = extend_canvas(moon, 0, 0, 256, 0)
    small = InpaintPipeline(starter)(InpaintRequest(
        shrink(canvas, 256, 128), shrink_mask(mask, 256, 128) > 0, MOON_RIGHT, feather=0, seed=5))
    assert np.array_equal(image.pixels, enlarge(small.images[0].pixels, 512, 256))
    parameters = image.parameters
    assert (parameters.operation, parameters.extend, parameters.base_size, parameters.scale) == (
        "outpaint", (0, 0, 256, 0), (256, 128), 2.0)
    assert NOTE.format("256 × 128", "512 × 256") in result.warnings


def test_the_mask_shrinks_to_every_pixel_that_holds_any_of_it():
    mask = np.zeros((512, 640), dtype=np.float32)
    mask[100, 301] = 1  # one pixel: its shrunk pixel is repainted
    mask[:, 600:] = 1  # a border that is not a whole number of shrunk pixels
    shrunk = shrink_mask(mask, 256, 192)
    assert shrunk.shape == (192, 256) and shrunk.dtype == np.float32
    assert shrunk[37, 120] == 1 and shrunk[:, 240:].all() and not shrunk[:, :239].sum() > 1
    assert shrink_mask(mask, 640, 512) is mask


def test_a_model_without_a_native_side_still_inpaints_at_full_size(installed_tiny_sd1,
                                                                   monkeypatch):
    pipeline = InpaintPipeline(load_model(installed_tiny_sd1))
    assert pipeline.description.largest_native_side is None
    decoded = capture_decoding(pipeline, monkeypatch)
    # Small: the tiny test VAE halves each side only, so its attention runs over a quarter of
    # the pixels, and at 288 x 320 that alone took 18 GB.
    source, mask = picture(96, 128), np.zeros((96, 128), dtype=np.uint8)
    mask[:, 64:] = 255
    result = pipeline(InpaintRequest(source, mask, "a cat", steps=2, seed=1))
    assert decoded["pixels"].shape == (96, 128, 3)
    assert result.images[0].parameters.base_size is None and result.warnings == ()


def test_the_window_outpaints_a_starter_picture_at_its_native_size(qtbot, tmp_path,
                                                                   moon_image):
    moon = moon_image.pixels
    with studio_window(qtbot, tmp_path, real_engine) as window:
        studio = window.studio
        studio.prompt.update(prompt=MOON_RIGHT, seed=5, seed_locked=True)
        studio.library.add_generated(moon, moon_image.parameters)
        studio.gallery.refresh()
        with qtbot.waitSignal(studio.source_changed, timeout=WAIT_MS):
            studio.use_as_source(studio.gallery.entry(0))
        messages: list[str] = []
        studio.message.connect(messages.append)
        with qtbot.waitSignal(studio.generated, timeout=WAIT_MS) as done:
            studio.outpaint(Sides(right=256))
        outcome = done.args[0]
        entry = outcome.entries[0]
        assert (entry.width, entry.height) == (512, 256)
        assert entry.parameters["operation"] == "outpaint"
        assert entry.parameters["base_size"] == [256, 128]
        assert np.array_equal(outcome.pixels[0][:, :256], moon)
        assert any(NOTE.format("256 × 128", "512 × 256") in message for message in messages)
