"""The seam after repainting half a starter picture (issue 14, item 7): ours or the model's?

The starter model (flow matching, no inpainting UNet) repaints by masked latent blending. Here
our pipeline is run beside diffusers' own loop for that case (StableDiffusion3InpaintPipeline
with an ordinary transformer: FlowMatchEulerDiscreteScheduler steps, the kept part put back
after each step by ``scale_noise`` at the next timestep) on the same graphs and noise. They
agree to the pixel, at the default guidance and at 7 where the repainted background comes out
visibly darker; and the final compositing is that picture over the source through the
feathered mask, exactly. So a darker repainted half is the model's answer to guidance under
blending, not our blending or compositing. Nothing here depends on the starter's weights.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine.images import composite, feathered, to_pixels, to_sample
from engine.model import load_model
from engine.pipelines.image_to_image import SourceLatents
from engine.pipelines.inpaint import InpaintPipeline
from engine.pipelines.text_to_image import TextToImagePipeline
from engine.request import InpaintRequest, TextToImageRequest
from engine.runtime import CancelToken
from tests.test_image_to_image import REPO_STARTER
from tests.test_image_to_image_parity import capture_decoding

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

PICTURE_PROMPT = "a dog on the left, on a green background"
PROMPT = "on a green background"  # the same background for the repainted half
SEED = 100


@pytest.fixture(scope="module")
def starter():
    return load_model(REPO_STARTER)


@pytest.fixture(scope="module")
def half_masked(starter) -> tuple[np.ndarray, np.ndarray]:
    """A starter picture and a mask of its right half."""
    pixels = TextToImagePipeline(starter)(TextToImageRequest(PICTURE_PROMPT, seed=0))
    picture = pixels.images[0].pixels
    mask = np.zeros(picture.shape[:2], dtype=np.uint8)
    mask[:, picture.shape[1] // 2:] = 255
    return picture, mask


def diffusers_blending(model, picture: np.ndarray, mask: np.ndarray,
                       guidance: float) -> np.ndarray:
    """diffusers' masked-blending loop for a flow model, around our graphs: decoded pixels."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    description, cancel = model.description, CancelToken()
    helper = InpaintPipeline(model)  # text encoding only: the same for both sides
    embeddings, _ = helper.encode_prompt(PROMPT, "", True, cancel)
    conditioning = helper.prepare_conditioning(embeddings, guidance, picture.shape[1],
                                               picture.shape[0])
    factor = description.vae_scale_factor
    shape = (1, description.latent_channels, picture.shape[0] // factor,
             picture.shape[1] // factor)
    rng = np.random.default_rng(SEED)  # the seed's draws in their order: noise, VAE sample
    noise = torch.from_numpy(rng.standard_normal(shape, dtype=np.float32))
    image = torch.from_numpy(SourceLatents(model, to_sample(picture), cancel).sample(rng))
    keep = torch.from_numpy((mask[::factor, ::factor] < 128).astype(np.float32))
    config = json.loads((REPO_STARTER / "scheduler" / "scheduler_config.json").read_text())
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(config)
    scheduler.set_timesteps(description.default_steps)
    timesteps, latents = scheduler.timesteps, noise.clone()
    for i, timestep in enumerate(timesteps):
        feeds = {"sample": torch.cat([latents] * 2).numpy(),
                 "timestep": np.full((2,), timestep.item(),
                                     dtype=model.unet.input_type("timestep")),
                 **conditioning}
        (prediction,) = model.unet.run(feeds, ["out_sample"], cancel)
        negative, positive = torch.from_numpy(prediction).chunk(2)
        guided = negative + guidance * (positive - negative)
        latents = scheduler.step(guided, timestep, latents).prev_sample
        known = image
        if i < len(timesteps) - 1:
            known = scheduler.scale_noise(image, torch.tensor([timesteps[i + 1]]), noise)
        latents = keep * known + (1 - keep) * latents
    scaled = latents.numpy() / np.float32(description.latent_scaling_factor)
    (decoded,) = model.vae_decoder.run({"latent_sample": scaled}, ["sample"], cancel)
    return to_pixels(decoded)


@pytest.mark.parametrize("guidance", [2.0, 7.0])
def test_repainting_half_a_starter_picture_is_diffusers_blending_composited(
        starter, half_masked, guidance, monkeypatch):
    picture, mask = half_masked
    pipeline = InpaintPipeline(starter)
    decoded = capture_decoding(pipeline, monkeypatch)
    result = pipeline(InpaintRequest(picture, mask, PROMPT, guidance=guidance, seed=SEED))
    reference = diffusers_blending(starter, picture, mask, guidance)
    ours = decoded["pixels"]
    assert np.abs(ours.astype(int) - reference.astype(int)).max() <= 1
    # The compositing: that picture over the source through the feathered mask, nothing else.
    expected = composite(reference, picture, feathered((mask >= 128).astype(np.float32), 4))
    pixels = result.images[0].pixels
    assert np.abs(pixels.astype(int) - expected.astype(int)).max() <= 1
    half = picture.shape[1] // 2
    assert np.array_equal(pixels[:, :half], picture[:, :half])
