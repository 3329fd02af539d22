"""Image to image and variations beyond parity: seeds, sizes, progress, strength and steps,
and bad input refused in one sentence before any work."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.errors import BadRequest
from engine.manifest import write_manifest
from engine.model import load_model
from engine.pipelines.image_to_image import ImageToImagePipeline
from engine.request import ImageToImageRequest
from engine.runtime.binding import BoundCalls

SMALL = {"steps": 4, "scheduler": "euler_ancestral", "strength": 0.5}
REPO_STARTER = Path(__file__).resolve().parents[1] / "resources" / "models" / "starter"


def picture(height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def pipeline(installed_tiny_sd1):
    return ImageToImagePipeline(load_model(installed_tiny_sd1))


def changed_copy(source, destination, *, description=None, remove=()):
    """A model folder with its description changed or parts removed, manifest rewritten."""
    shutil.copytree(source, destination)
    if description:
        path = destination / "easel.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), **description}))
    for part in remove:
        shutil.rmtree(destination / part)
    write_manifest(destination)
    return load_model(destination)


def test_variations_each_have_their_own_seed_and_can_be_remade_alone(pipeline):
    source = picture()
    result = pipeline(ImageToImageRequest(source, count=3, seed=7, **SMALL))
    assert [image.parameters.seed for image in result.images] == [7, 8, 9]
    first, second, third = (image.pixels for image in result.images)
    assert not np.array_equal(first, second) and not np.array_equal(second, third)
    alone = pipeline(ImageToImageRequest(source, seed=8, **SMALL)).images[0]
    assert np.array_equal(alone.pixels, second)
    parameters = alone.parameters
    assert (parameters.operation, parameters.strength, parameters.steps) == (
        "image_to_image", 0.5, 4)
    assert (parameters.width, parameters.height) == (64, 48)


def test_any_picture_size_comes_back_at_its_own_size(pipeline):
    source = picture(45, 61)
    result = pipeline(ImageToImageRequest(Image.fromarray(source), "a cat", **SMALL))
    assert result.images[0].pixels.shape == (45, 61, 3)
    assert (result.images[0].parameters.width, result.images[0].parameters.height) == (61, 45)


def test_progress_counts_the_steps_that_run(pipeline):
    seen = []
    request = ImageToImageRequest(picture(), "a cat", steps=10, strength=0.3, count=2,
                                  scheduler="euler")
    pipeline(request, on_progress=seen.append)
    assert [(p.image, p.step, p.steps) for p in seen] == [
        (i, s, 3) for i in range(2) for s in range(1, 4)]


def test_explicit_noise_reproduces_the_seeded_image(pipeline):
    seeded = pipeline(ImageToImageRequest(picture(), seed=5, **SMALL)).images[0].pixels
    noise = np.random.default_rng(5).standard_normal((1, 4, 24, 32), dtype=np.float32)
    given = pipeline(ImageToImageRequest(picture(), seed=5, noise=noise, **SMALL))
    assert np.array_equal(given.images[0].pixels, seeded)


def test_without_any_prompt_guidance_is_skipped(pipeline, monkeypatch):
    batches = []
    call = BoundCalls.__call__

    def counting(self, feeds, cancel):  # every UNet call (engine.runtime.binding)
        batches.append(len(feeds["sample"]))
        return call(self, feeds, cancel)

    monkeypatch.setattr(BoundCalls, "__call__", counting)
    pipeline(ImageToImageRequest(picture(), guidance=7.5, **SMALL))
    pipeline(ImageToImageRequest(picture(), "a cat", guidance=7.5, **SMALL))
    assert batches == [1, 1, 2, 2]


def test_too_few_steps_for_the_strength(pipeline):
    with pytest.raises(BadRequest, match="use 10 steps or more"):
        pipeline(ImageToImageRequest(picture(), steps=5, strength=0.1))
    # Left to the model's default (25), a low strength gets enough steps for one to run.
    result = pipeline(ImageToImageRequest(picture(), strength=0.02, scheduler="euler"))
    assert result.images[0].parameters.steps == 50


@pytest.mark.parametrize(("changes", "message"), [
    ({"strength": 0}, "more than 0 and at most 1"),
    ({"strength": 1.5}, "more than 0 and at most 1"),
    ({"strength": float("nan")}, "more than 0 and at most 1"),
    ({"strength": 1e-9}, "too small to change the picture"),
    ({"image": np.zeros((8193, 8, 3), dtype=np.uint8)}, "up to 8192 pixels a side"),
    ({"image": Image.new("RGB", (9000, 10))}, "up to 8192 pixels a side"),
    ({"image": np.zeros((4, 64, 3), dtype=np.uint8)}, "at least 8 pixels"),
    ({"image": np.zeros((48, 64), dtype=np.uint8)}, "8-bit RGB"),
    ({"image": np.zeros((48, 64, 3), dtype=np.float32)}, "8-bit RGB"),
    ({"image": "photo.png"}, "pixels or a PIL image"),
    ({"count": 0}, "between 1 and"),
    ({"scheduler": "plms"}, "no scheduler called"),
    ({"noise": np.zeros((1, 4, 8, 8), dtype=np.float32)}, "shape"),
])
def test_bad_requests_are_refused_before_work(pipeline, changes, message, monkeypatch):
    monkeypatch.setattr(BoundCalls, "__call__", None)  # any UNet call would fail otherwise
    request = {"image": picture(), **SMALL, **changes}
    with pytest.raises(BadRequest, match=message):
        pipeline(ImageToImageRequest(**request))


def test_models_that_cannot_redraw_a_picture_are_refused(installed_tiny_sd1, tmp_path):
    no_encoder = changed_copy(installed_tiny_sd1, tmp_path / "no-encoder", remove=["vae_encoder"])
    with pytest.raises(BadRequest, match="no VAE encoder"):
        ImageToImagePipeline(no_encoder)(ImageToImageRequest(picture(), **SMALL))
    inpainting = changed_copy(installed_tiny_sd1, tmp_path / "inpainting",
                              description={"variant": "inpainting", "format": 2})
    with pytest.raises(BadRequest, match="inpaint with it instead"):
        ImageToImagePipeline(inpainting)(ImageToImageRequest(picture(), **SMALL))


def test_the_starter_model_redraws_a_picture():
    """A flow-matching model with 12 latent channels and a 16-pixel VAE grid."""
    model = load_model(REPO_STARTER)
    source = picture(128, 192)
    result = ImageToImagePipeline(model)(
        ImageToImageRequest(source, "a red circle", strength=0.5, steps=4))
    pixels = result.images[0].pixels
    assert pixels.shape == source.shape and not np.array_equal(pixels, source)
