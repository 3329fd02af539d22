"""Inpainting: our ONNX pipeline makes the pixels of diffusers' StableDiffusionInpaintPipeline,
for both kinds of model it runs, compared before our final compositing:

- an inpainting model (a tiny 9-channel UNet, tests/tiny_models_inpaint.py);
- an ordinary model (the tiny SD 1.x / 2.x ones) by masked latent blending.

Same weights through our exporter, same noise (diffusers is handed our starting noise, VAE
encoder samples and per-step noise), every pixel within 2/255 and the final latents close.
After compositing, everything outside the mask is the source picture exactly.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from engine.model import load_model
from engine.pipelines.inpaint import InpaintPipeline
from engine.request import InpaintRequest
from tests import tiny_models_inpaint
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
from tests.tiny_models import tiny_diffusers
from tests.tiny_models_xl import installed_copy

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

INPAINT_MODULE = "diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_inpaint"


def disc_and_bar_mask() -> np.ndarray:
    """A disc and a bar, off the latent grid: uint8, 255 = repaint."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    disc = (x - 21) ** 2 + (y - 19) ** 2 < 11**2
    bar = (x >= 37) & (x < 58) & (y >= 29) & (y < 42)
    return np.where(disc | bar, 255, 0).astype(np.uint8)


@pytest.fixture(scope="module")
def models(tmp_path_factory, installed_tiny_sd1, installed_tiny_sd2):
    folder = tmp_path_factory.mktemp("models") / "tiny-sd1-inpainting"
    inpainting = installed_copy(tiny_models_inpaint.tiny_inpaint_onnx(), folder)
    return {
        "sd1-inpainting": (tiny_models_inpaint.tiny_inpaint_diffusers(), load_model(inpainting)),
        "sd1": (tiny_diffusers("sd1"), load_model(installed_tiny_sd1)),
        "sd2": (tiny_diffusers("sd2"), load_model(installed_tiny_sd2)),
    }


def reference_inpaint(folder, scheduler_name):
    pipe = diffusers.StableDiffusionInpaintPipeline.from_pretrained(
        folder, safety_checker=None, requires_safety_checker=False)
    return with_scheduler(pipe, scheduler_name)


def run_both(models, family, scheduler, guidance, strength, steps, monkeypatch, feather=0):
    """(ours before compositing, ours after, diffusers', our latents, diffusers' latents)."""
    diffusers_folder, model = models[family]
    picture, mask = smooth_picture(), disc_and_bar_mask()
    pipeline = InpaintPipeline(model)
    seen = capture_decoding(pipeline, monkeypatch)
    request = InpaintRequest(picture, mask, PROMPT, NEGATIVE, strength=strength, steps=steps,
                             guidance=guidance, scheduler=scheduler, seed=SEED, feather=feather)
    result = pipeline(request)

    reference = reference_inpaint(diffusers_folder, scheduler)
    rng = np.random.default_rng(SEED)
    shape = (1, 4, HEIGHT // 2, WIDTH // 2)
    # Our draws in our order: starting noise, the picture's VAE sample when it is used (by
    # blending, or to start below full strength), the masked picture's (inpainting UNets).
    starting = rng.standard_normal(shape, dtype=np.float32)
    inpainting_unet = model.description.variant == "inpainting"
    picture_sample = None
    if not inpainting_unet or strength < 1:
        picture_sample = rng.standard_normal(shape, dtype=np.float32)
    masked_sample = rng.standard_normal(shape, dtype=np.float32) if inpainting_unet else (
        np.zeros(shape, dtype=np.float32))  # diffusers encodes it even when it goes unused
    # diffusers encodes the picture (when it uses it) before the masked picture.
    encoder_noises = [sample for sample in (picture_sample, masked_sample) if sample is not None]
    feed_noise(monkeypatch, reference, INPAINT_MODULE, starting, encoder_noises, rng)
    theirs, their_latents = run_with_final_latents(
        reference, prompt=PROMPT, negative_prompt=NEGATIVE, image=Image.fromarray(picture),
        mask_image=Image.fromarray(mask), height=HEIGHT, width=WIDTH, strength=strength,
        num_inference_steps=steps, guidance_scale=guidance)
    return seen["pixels"], result.images[0].pixels, theirs, seen["latents"], their_latents


@pytest.mark.slow
@pytest.mark.parametrize(("family", "scheduler", "guidance", "strength", "steps"), [
    # An inpainting model (9-channel UNet).
    ("sd1-inpainting", "euler_ancestral", 7.5, 1.0, 6),
    ("sd1-inpainting", "ddim", 7.5, 0.7, 6),
    # Masked latent blending with ordinary models.
    ("sd1", "euler", 7.5, 1.0, 6),
    ("sd1", "euler_ancestral", 1.0, 0.8, 6),
    ("sd2", "dpmpp_2m_karras", 7.5, 1.0, 6),
])
def test_pixels_match_diffusers_inpaint(models, family, scheduler, guidance, strength, steps,
                                        monkeypatch):
    ours, _, theirs, our_latents, their_latents = run_both(
        models, family, scheduler, guidance, strength, steps, monkeypatch)
    assert_same_picture(ours, theirs, our_latents, their_latents)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["sd1-inpainting", "sd1"])
def test_outside_the_mask_the_result_is_the_source_exactly(models, family, monkeypatch):
    before, after, _, _, _ = run_both(models, family, "euler", 7.5, 1.0, 3, monkeypatch,
                                      feather=4)
    picture, keep = smooth_picture(), disc_and_bar_mask() == 0
    assert np.array_equal(after[keep], picture[keep])
    # Deep inside the mask the result is the model's picture; in between it fades.
    deep_inside = np.zeros_like(keep)
    deep_inside[16:23, 18:25] = True  # 7 pixels or more inside the disc
    assert np.array_equal(after[deep_inside], before[deep_inside])
    assert not np.array_equal(before[keep], picture[keep])  # compositing did something
