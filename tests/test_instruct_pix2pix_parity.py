"""InstructPix2Pix: our ONNX pipeline makes the pixels of diffusers'
StableDiffusionInstructPix2PixPipeline on a tiny random 8-channel model
(tests/tiny_models_pix2pix.py) exported by our exporter.

Same noise (diffusers is handed our starting noise and per-step noise; the picture's latents
are the VAE's mode, so nothing else is drawn), every pixel within 2/255 and the final latents
close: three-way guidance with several schedulers and image guidances, and guidance off.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from engine.model import load_model
from engine.pipelines.instruct_pix2pix import InstructPix2PixPipeline
from engine.request import InstructPix2PixRequest
from tests import tiny_models_pix2pix
from tests.test_image_to_image_parity import (
    HEIGHT,
    NEGATIVE,
    PROMPT,
    SEED,
    WIDTH,
    assert_same_picture,
    capture_decoding,
    feed_noise,
    one_torch_thread,  # noqa: F401 (an autouse fixture, here too)
    run_with_final_latents,
    smooth_picture,
    with_scheduler,
)
from tests.tiny_models_xl import installed_copy

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

PIX2PIX_MODULE = "diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_instruct_pix2pix"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models") / "tiny-sd1-pix2pix"
    return load_model(installed_copy(tiny_models_pix2pix.tiny_pix2pix_onnx(), folder))


@pytest.mark.slow
@pytest.mark.parametrize(("scheduler", "guidance", "image_guidance", "steps"), [
    ("euler_ancestral", 7.5, 1.5, 6),  # the real model's scheduler, diffusers' defaults
    ("ddim", 5.0, 1.2, 5),
    ("dpmpp_2m_karras", 7.5, 2.0, 6),
    ("euler", 7.5, 0.8, 4),  # image guidance below 1: both guidances off, as diffusers
])
def test_pixels_match_diffusers_instruct_pix2pix(model, scheduler, guidance, image_guidance,
                                                 steps, monkeypatch):
    picture = smooth_picture()
    pipeline = InstructPix2PixPipeline(model)
    seen = capture_decoding(pipeline, monkeypatch)
    request = InstructPix2PixRequest(picture, PROMPT, guidance=guidance,
                                     image_guidance=image_guidance, negative_prompt=NEGATIVE,
                                     steps=steps, scheduler=scheduler, seed=SEED)
    result = pipeline(request)
    ours = result.images[0].pixels
    assert np.array_equal(ours, seen["pixels"])  # the picture's size already: no crop
    parameters = result.images[0].parameters
    assert parameters.operation == "instruct_pix2pix"
    assert parameters.image_guidance == image_guidance and parameters.prompt == PROMPT

    reference = diffusers.StableDiffusionInstructPix2PixPipeline.from_pretrained(
        tiny_models_pix2pix.tiny_pix2pix_diffusers(), safety_checker=None,
        requires_safety_checker=False)
    reference = with_scheduler(reference, scheduler)
    rng = np.random.default_rng(SEED)
    starting = rng.standard_normal((1, 4, HEIGHT // 2, WIDTH // 2), dtype=np.float32)
    feed_noise(monkeypatch, reference, PIX2PIX_MODULE, starting, [], rng)
    theirs, their_latents = run_with_final_latents(
        reference, prompt=PROMPT, negative_prompt=NEGATIVE, image=Image.fromarray(picture),
        num_inference_steps=steps, guidance_scale=guidance,
        image_guidance_scale=image_guidance)
    assert_same_picture(ours, theirs, seen["latents"], their_latents)
