"""Image to image: our ONNX pipeline makes the pixels of diffusers' StableDiffusionImg2ImgPipeline.

Same tiny random weights (exported by our exporter), same noise: diffusers is handed our
starting noise, our VAE encoder sample and our per-step noise, each where it would draw its
own. Every pixel within 2/255 and the final latents close, for several schedulers and
strengths, with and without guidance, non-square. The helpers here serve the inpainting
parity tests too.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from engine.model import load_model
from engine.pipelines.image_to_image import ImageToImagePipeline
from engine.request import ImageToImageRequest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

WIDTH, HEIGHT = 64, 48  # tiny VAE: factor 2 → 32×24 latents, non-square
PROMPT = "a photo of an astronaut riding a horse"
NEGATIVE = "blurry, low quality"
SEED = 42

DIFFUSERS_SCHEDULERS = {
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_ancestral": ("EulerAncestralDiscreteScheduler", {}),
    "dpmpp_2m_karras": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++",
                                                        "solver_order": 2,
                                                        "use_karras_sigmas": True}),
    "ddim": ("DDIMScheduler", {}),
}


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The tiny models run several times faster on one torch thread than on two that compete
    with ONNX Runtime's on a 2-core machine; the results are the same."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def smooth_picture(seed: int = 0) -> np.ndarray:
    """A smooth picture with some detail: what a VAE reconstructs well (pure noise it does not)."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    rng = np.random.default_rng(seed)
    red = 128 + 100 * np.sin(x / 9 + y / 13)
    green = 128 + 90 * np.cos(y / 7)
    blue = 128 + 60 * np.sin((x - y) / 5)
    picture = np.stack([red, green, blue], axis=-1) + rng.normal(0, 6, (HEIGHT, WIDTH, 3))
    return np.clip(picture, 0, 255).round().astype(np.uint8)


def with_scheduler(pipe, scheduler_name: str):
    class_name, options = DIFFUSERS_SCHEDULERS[scheduler_name]
    pipe.scheduler = getattr(diffusers, class_name).from_config(pipe.scheduler.config, **options)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def feed_noise(monkeypatch, pipe, pipeline_module: str, starting_noise: np.ndarray,
               encoder_noises: list[np.ndarray], rng: np.random.Generator) -> None:
    """Make diffusers draw our noise: the starting noise where the pipeline draws it, the VAE
    encoder samples in the order it encodes, and per-step noise from our generator, which has
    already made the draws before it."""
    queue = list(encoder_noises)

    def starting(shape, generator=None, device=None, dtype=None, layout=None):
        assert tuple(shape) == starting_noise.shape
        return torch.from_numpy(starting_noise.copy())

    def encoder_sample(shape, generator=None, device=None, dtype=None, layout=None):
        noise = queue.pop(0)
        assert tuple(shape) == noise.shape
        return torch.from_numpy(noise.copy())

    def per_step(shape, generator=None, device=None, dtype=None, layout=None):
        return torch.from_numpy(rng.standard_normal(tuple(shape), dtype=np.float32))

    monkeypatch.setattr(f"{pipeline_module}.randn_tensor", starting)
    monkeypatch.setattr("diffusers.models.autoencoders.vae.randn_tensor", encoder_sample)
    scheduler_module = __import__(type(pipe.scheduler).__module__, fromlist=["randn_tensor"])
    if hasattr(scheduler_module, "randn_tensor"):
        monkeypatch.setattr(scheduler_module, "randn_tensor", per_step)


def run_with_final_latents(pipe, **arguments) -> tuple[np.ndarray, np.ndarray]:
    """diffusers' uint8 picture and the latents it decoded, from one run."""
    final = {}

    def keep(pipe, step, timestep, tensors):
        final["latents"] = tensors["latents"].numpy().copy()
        return {}

    with torch.no_grad():
        output = pipe(**arguments, output_type="np", callback_on_step_end=keep)
    return (output.images[0] * 255).round().astype(np.uint8), final["latents"]


def capture_decoding(pipeline, monkeypatch) -> dict:
    """What our pipeline hands the VAE decoder and gets back, before any cropping or
    compositing: the point where it must equal diffusers."""
    seen = {}
    decode = pipeline.decode_latents

    def keep(latents, cancel, notes=None):
        seen["latents"] = latents
        seen["pixels"] = decode(latents, cancel, notes)
        return seen["pixels"]

    monkeypatch.setattr(pipeline, "decode_latents", keep)
    return seen


def assert_same_picture(ours: np.ndarray, theirs: np.ndarray, our_latents: np.ndarray,
                        their_latents: np.ndarray) -> None:
    assert ours.shape == theirs.shape == (HEIGHT, WIDTH, 3)
    difference = np.abs(ours.astype(int) - theirs.astype(int))
    assert difference.max() <= 2, f"max pixel difference {difference.max()}/255"
    # The tiny VAE flattens small errors, so the latents are compared too, much more tightly.
    np.testing.assert_allclose(our_latents, their_latents, rtol=1e-3, atol=1e-3)


@pytest.fixture(scope="module")
def models(tiny_sd1_diffusers, tiny_sd2_diffusers, installed_tiny_sd1, installed_tiny_sd2):
    return {
        "sd1": (tiny_sd1_diffusers, load_model(installed_tiny_sd1)),
        "sd2": (tiny_sd2_diffusers, load_model(installed_tiny_sd2)),
    }


def reference_img2img(folder, scheduler_name):
    pipe = diffusers.StableDiffusionImg2ImgPipeline.from_pretrained(
        folder, safety_checker=None, requires_safety_checker=False)
    return with_scheduler(pipe, scheduler_name)


@pytest.mark.slow
@pytest.mark.parametrize(("family", "scheduler", "guidance", "strength", "steps"), [
    ("sd1", "euler", 7.5, 0.6, 6),
    ("sd1", "euler_ancestral", 7.5, 0.75, 6),
    ("sd2", "dpmpp_2m_karras", 7.5, 0.5, 8),
    ("sd2", "ddim", 1.0, 1.0, 5),
])
def test_pixels_match_diffusers_img2img(models, family, scheduler, guidance, strength, steps,
                                        monkeypatch):
    diffusers_folder, model = models[family]
    picture = smooth_picture()
    pipeline = ImageToImagePipeline(model)
    seen = capture_decoding(pipeline, monkeypatch)
    request = ImageToImageRequest(picture, PROMPT, NEGATIVE, strength=strength, steps=steps,
                                  guidance=guidance, scheduler=scheduler, seed=SEED)
    ours = pipeline(request).images[0].pixels
    assert np.array_equal(ours, seen["pixels"])  # image to image composites nothing

    reference = reference_img2img(diffusers_folder, scheduler)
    rng = np.random.default_rng(SEED)
    shape = (1, 4, HEIGHT // 2, WIDTH // 2)
    starting = rng.standard_normal(shape, dtype=np.float32)  # our draws, in our order
    encoder = rng.standard_normal(shape, dtype=np.float32)
    feed_noise(monkeypatch, reference,
               "diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_img2img",
               starting, [encoder], rng)
    theirs, their_latents = run_with_final_latents(
        reference, prompt=PROMPT, negative_prompt=NEGATIVE, image=Image.fromarray(picture),
        strength=strength, num_inference_steps=steps, guidance_scale=guidance)
    assert_same_picture(ours, theirs, seen["latents"], their_latents)
