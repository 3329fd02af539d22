"""Our ONNX pipeline makes the same pixels as diffusers' PyTorch pipeline.

Same tiny random weights (exported by our exporter), same initial latents, same per-step
noise; every pixel within 2/255, for each scheduler, with and without guidance, non-square.
"""

import numpy as np
import pytest
import torch

from engine.model import load_model
from engine.pipelines.text_to_image import TextToImagePipeline
from engine.request import TextToImageRequest

diffusers = pytest.importorskip("diffusers")

WIDTH, HEIGHT = 64, 48  # tiny VAE: factor 2 → 32×24 latents, non-square
PROMPT = "a photo of an astronaut riding a horse"
NEGATIVE = "blurry, low quality"

DIFFUSERS_SCHEDULERS = {
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_ancestral": ("EulerAncestralDiscreteScheduler", {}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++",
                                                 "solver_order": 2}),
    "dpmpp_2m_karras": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++",
                                                        "solver_order": 2,
                                                        "use_karras_sigmas": True}),
    "ddim": ("DDIMScheduler", {}),
}


@pytest.fixture(scope="module")
def models(tiny_sd1_diffusers, tiny_sd2_diffusers, installed_tiny_sd1, installed_tiny_sd2):
    return {
        "sd1": (tiny_sd1_diffusers, load_model(installed_tiny_sd1)),
        "sd2": (tiny_sd2_diffusers, load_model(installed_tiny_sd2)),
    }


def reference_pipeline(folder, scheduler_name):
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(
        folder, safety_checker=None, requires_safety_checker=False)
    class_name, options = DIFFUSERS_SCHEDULERS[scheduler_name]
    scheduler_class = getattr(diffusers, class_name)
    pipe.scheduler = scheduler_class.from_config(pipe.scheduler.config, **options)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run_diffusers(pipe, seed, guidance, steps, monkeypatch, output_type="np"):
    """Feed diffusers our initial latents and, for ancestral steps, our per-step noise."""
    rng = np.random.default_rng(seed)
    channels = pipe.unet.config.in_channels
    factor = pipe.vae_scale_factor
    latents = rng.standard_normal((1, channels, HEIGHT // factor, WIDTH // factor),
                                  dtype=np.float32)

    def our_noise(shape, generator=None, device=None, dtype=None, layout=None):
        return torch.from_numpy(rng.standard_normal(tuple(shape), dtype=np.float32))

    module = __import__(type(pipe.scheduler).__module__, fromlist=["randn_tensor"])
    if hasattr(module, "randn_tensor"):
        monkeypatch.setattr(module, "randn_tensor", our_noise)
    with torch.no_grad():
        output = pipe(PROMPT, negative_prompt=NEGATIVE, height=HEIGHT, width=WIDTH,
                      num_inference_steps=steps, guidance_scale=guidance,
                      latents=torch.from_numpy(latents), output_type=output_type)
    if output_type == "latent":
        return output.images.numpy()
    return (output.images[0] * 255).round().astype(np.uint8)


def run_ours(model, scheduler, seed, guidance, steps, monkeypatch=None):
    """Our pixels; with ``monkeypatch``, also the final latents handed to the VAE."""
    pipeline = TextToImagePipeline(model)
    final = {}
    if monkeypatch is not None:
        decode = pipeline.decode_latents

        def keep_latents(latents, cancel, notes=None):
            final["latents"] = latents
            return decode(latents, cancel, notes)

        monkeypatch.setattr(pipeline, "decode_latents", keep_latents)
    request = TextToImageRequest(PROMPT, NEGATIVE, width=WIDTH, height=HEIGHT, steps=steps,
                                 guidance=guidance, scheduler=scheduler, seed=seed)
    pixels = pipeline(request).images[0].pixels
    return (pixels, final["latents"]) if monkeypatch is not None else pixels


@pytest.mark.slow
@pytest.mark.parametrize("family", ["sd1", "sd2"])
@pytest.mark.parametrize("scheduler", list(DIFFUSERS_SCHEDULERS))
@pytest.mark.parametrize("guidance", [1.0, 7.5])
def test_pixels_match_diffusers(models, family, scheduler, guidance, monkeypatch):
    diffusers_folder, model = models[family]
    steps = 6
    ours, our_latents = run_ours(model, scheduler, 42, guidance, steps, monkeypatch)
    reference = reference_pipeline(diffusers_folder, scheduler)
    theirs = run_diffusers(reference, 42, guidance, steps, monkeypatch)
    assert ours.shape == theirs.shape == (HEIGHT, WIDTH, 3)
    difference = np.abs(ours.astype(int) - theirs.astype(int))
    assert difference.max() <= 2, f"max pixel difference {difference.max()}/255"
    # The tiny VAE flattens small errors, so the latents are compared too, much more tightly.
    their_latents = run_diffusers(reference, 42, guidance, steps, monkeypatch, "latent")
    np.testing.assert_allclose(our_latents, their_latents, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("family", ["sd1", "sd2"])
def test_outputs_depend_on_prompt_and_seed(models, family):
    _, model = models[family]
    pipeline = TextToImagePipeline(model)

    def image(prompt, seed):
        request = TextToImageRequest(prompt, width=WIDTH, height=HEIGHT, steps=3,
                                     guidance=7.5, scheduler="euler", seed=seed)
        return pipeline(request).images[0].pixels.astype(int)

    base = image(PROMPT, 1)
    assert np.array_equal(base, image(PROMPT, 1)), "same seed and settings, same image"
    assert np.abs(base - image(PROMPT, 2)).mean() > 1, "another seed, another image"
    assert np.abs(base - image("a bowl of soup", 1)).mean() > 0.1, "another prompt"
