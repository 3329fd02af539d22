"""InstructPix2Pix (engine.pipelines.instruct_pix2pix) beyond parity: any picture size, seeds per
image, guidance off runs one UNet sample, the other pipelines refuse the model and it refuses
bad input in one sentence before any work."""

from __future__ import annotations

import numpy as np
import pytest

from engine.errors import BadRequest
from engine.model import load_model
from engine.pipelines.image_to_image import ImageToImagePipeline
from engine.pipelines.instruct_pix2pix import InstructPix2PixPipeline
from engine.pipelines.text_to_image import TextToImagePipeline
from engine.request import ImageToImageRequest, InstructPix2PixRequest, TextToImageRequest
from engine.runtime.binding import BoundCalls
from tests import tiny_models_pix2pix
from tests.tiny_models_xl import installed_copy

PICTURE = np.random.default_rng(1).integers(0, 255, (37, 50, 3), np.uint8)  # off the grid


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models") / "tiny-sd1-pix2pix"
    return load_model(installed_copy(tiny_models_pix2pix.tiny_pix2pix_onnx(), folder))


@pytest.mark.slow
def test_any_size_and_each_image_its_own_seed(model):
    pipeline = InstructPix2PixPipeline(model)
    request = InstructPix2PixRequest(PICTURE, "make it winter", steps=3, seed=7, count=2)
    first, second = pipeline(request).images
    assert first.pixels.shape == PICTURE.shape and first.parameters.seed == 7
    assert second.parameters.seed == 8 and not np.array_equal(first.pixels, second.pixels)
    again = pipeline(InstructPix2PixRequest(PICTURE, "make it winter", steps=3, seed=8))
    assert np.array_equal(again.images[0].pixels, second.pixels)


@pytest.mark.slow
def test_three_samples_a_step_with_guidance_one_without(model, monkeypatch):
    batches = []
    call = BoundCalls.__call__

    def counting(self, feeds, cancel):  # every UNet call (engine.runtime.binding)
        batches.append(feeds["sample"].shape[:2])
        return call(self, feeds, cancel)

    monkeypatch.setattr(BoundCalls, "__call__", counting)
    pipeline = InstructPix2PixPipeline(model)
    pipeline(InstructPix2PixRequest(PICTURE, "make it winter", guidance=7.5, steps=2))
    pipeline(InstructPix2PixRequest(PICTURE, "make it winter", guidance=7.5,
                                    image_guidance=0.5, steps=2))
    assert batches == [(3, 8)] * 2 + [(1, 8)] * 2


@pytest.mark.slow
@pytest.mark.parametrize(("changes", "sentence"), [
    ({"instruction": "  "}, "Say how to change the picture"),
    ({"image_guidance": -1}, "image guidance must be a number of 0 or more"),
    ({"image_guidance": float("nan")}, "image guidance"),
    ({"steps": 0}, "Steps must be at least 1"),
    ({"image": np.zeros((4, 4), np.uint8)}, "8-bit RGB pixels"),
])
def test_bad_input_is_refused_in_one_sentence(model, changes, sentence):
    request = InstructPix2PixRequest(**{"image": PICTURE, "instruction": "make it winter",
                                        **changes})
    with pytest.raises(BadRequest, match=sentence) as refused:
        InstructPix2PixPipeline(model).check_inputs(request)
    assert "\n" not in str(refused.value)


@pytest.mark.slow
def test_other_pipelines_refuse_the_model_and_it_refuses_other_models(model,
                                                                      installed_tiny_sd1):
    with pytest.raises(BadRequest, match="is an InstructPix2Pix model"):
        TextToImagePipeline(model).check_inputs(TextToImageRequest("a horse"))
    with pytest.raises(BadRequest, match="is an InstructPix2Pix model"):
        ImageToImagePipeline(model).check_inputs(ImageToImageRequest(PICTURE, "a horse"))
    plain = InstructPix2PixPipeline(load_model(installed_tiny_sd1))
    with pytest.raises(BadRequest, match="cannot edit a picture by instruction"):
        plain.check_inputs(InstructPix2PixRequest(PICTURE, "make it winter"))
