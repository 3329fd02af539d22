"""Few-step models: our export and pipeline make diffusers' pixels for turbo and LCM models.

An SD-Turbo-like model (the tiny SD 2.x UNet with SD-Turbo's Euler ancestral "trailing"
config) against StableDiffusionPipeline, and an LCM model (a UNet with a guidance-embedding
input, LCMScheduler) against LatentConsistencyModelPipeline: same weights through our
exporter, same initial latents and per-step noise, pixels within 2/255, final latents close.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine.description import ModelDescription
from engine.model import load_model
from engine.pipelines.text_to_image import guidance_scale_embedding
from engine.request import TextToImageRequest
from tests import tiny_models_xl
from tests.test_sdxl_parity import (
    HEIGHT,
    PROMPT,
    WIDTH,
    assert_same_picture,
    one_torch_thread,  # noqa: F401 (an autouse fixture, here too)
    run_diffusers,
    run_ours,
    with_scheduler,
)

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """variant -> (diffusers folder, our installed model)."""
    found = {}
    for variant in ("sd-turbo", "lcm"):
        source = tiny_models_xl.tiny_diffusers(variant)
        folder = tmp_path_factory.mktemp("models") / variant
        tiny_models_xl.installed_copy(tiny_models_xl.tiny_onnx(variant), folder)
        found[variant] = (source, load_model(folder))
    return found


@pytest.mark.slow
@pytest.mark.parametrize("steps", [1, 2, 4])
def test_turbo_pixels_match_diffusers(models, steps, monkeypatch):
    source, model = models["sd-turbo"]
    # The model's own defaults: guidance off, Euler ancestral with trailing spacing.
    request = TextToImageRequest(PROMPT, width=WIDTH, height=HEIGHT, steps=steps, seed=7)
    ours, our_latents = run_ours(model, request, monkeypatch)
    pipe = with_scheduler(diffusers.StableDiffusionPipeline.from_pretrained(
        source, safety_checker=None, requires_safety_checker=False), None)
    assert type(pipe.scheduler).__name__ == "EulerAncestralDiscreteScheduler"
    call = {"prompt": PROMPT, "num_inference_steps": steps, "guidance_scale": 0.0}
    theirs = run_diffusers(pipe, 7, monkeypatch, **call)
    their_latents = run_diffusers(pipe, 7, monkeypatch, "latent", **call)
    assert_same_picture(ours, theirs, our_latents, their_latents)


@pytest.mark.slow
@pytest.mark.parametrize(("steps", "guidance"), [(1, 8.0), (2, 8.0), (4, 8.0), (4, 1.0)])
def test_lcm_pixels_match_diffusers(models, steps, guidance, monkeypatch):
    source, model = models["lcm"]
    request = TextToImageRequest(PROMPT, width=WIDTH, height=HEIGHT, steps=steps,
                                 guidance=guidance, seed=3)
    ours, our_latents = run_ours(model, request, monkeypatch)
    pipe = with_scheduler(diffusers.LatentConsistencyModelPipeline.from_pretrained(
        source, safety_checker=None, requires_safety_checker=False), None)
    call = {"prompt": PROMPT, "num_inference_steps": steps, "guidance_scale": guidance}
    theirs = run_diffusers(pipe, 3, monkeypatch, **call)
    their_latents = run_diffusers(pipe, 3, monkeypatch, "latent", **call)
    assert_same_picture(ours, theirs, our_latents, their_latents)


def test_lcm_guidance_changes_the_picture_without_a_second_pass(models, monkeypatch):
    """LCM's guidance goes into the UNet's embedding, and guidance > 1 adds no CFG pass."""
    from engine.pipelines.text_to_image import TextToImagePipeline
    from engine.runtime.binding import BoundCalls

    _, model = models["lcm"]
    pipeline = TextToImagePipeline(model)
    batches = []
    call = BoundCalls.__call__

    def counting(self, feeds, cancel):  # every UNet call (engine.runtime.binding)
        batches.append(len(feeds["sample"]))
        assert self.constants["timestep_cond"].shape == (len(feeds["sample"]), 32)
        return call(self, feeds, cancel)

    monkeypatch.setattr(BoundCalls, "__call__", counting)

    def image(guidance):
        request = TextToImageRequest(PROMPT, width=WIDTH, height=HEIGHT, steps=2,
                                     guidance=guidance, seed=3)
        return pipeline(request).images[0].pixels.astype(int)

    assert np.abs(image(8.0) - image(2.0)).mean() > 0.1
    assert batches == [1, 1, 1, 1]


@pytest.mark.parametrize("dim", [32, 256, 7])
@pytest.mark.parametrize("guidance", [1.0, 1.5, 8.0, 8.5, 0.0])
def test_guidance_embedding_matches_diffusers(guidance, dim):
    from diffusers import LatentConsistencyModelPipeline

    expected = LatentConsistencyModelPipeline.get_guidance_scale_embedding(
        None, torch.tensor(guidance - 1).repeat(1), embedding_dim=dim)
    actual = guidance_scale_embedding(guidance, dim)
    assert actual.dtype == np.float32 and actual.shape == (1, dim)
    # torch's vectorised float32 exp is not always correctly rounded; one unit in the last
    # place of a frequency becomes a few of the angle (up to 7500 radians), and sin and cos
    # differ by as much. Four units of the largest angle bound it.
    largest_angle = np.float32(abs(guidance - 1) * 1000)
    atol = 4 * float(np.spacing(largest_angle)) + 1e-6
    np.testing.assert_allclose(actual, expected.numpy(), rtol=0, atol=atol)


def test_few_step_descriptions_come_from_the_configs(models):
    turbo = ModelDescription.load(models["sd-turbo"][1].folder)
    assert (turbo.distillation, turbo.default_steps, turbo.default_guidance,
            turbo.default_scheduler) == ("turbo", 1, 0.0, "euler_ancestral")
    lcm = ModelDescription.load(models["lcm"][1].folder)
    assert (lcm.distillation, lcm.default_steps, lcm.default_guidance,
            lcm.default_scheduler, lcm.guidance_embedding_dim) == ("lcm", 4, 8.0, "lcm", 32)
    assert json.loads(lcm.to_json())["format"] == 2


def test_the_importer_can_be_told_what_the_configs_cannot_say(tiny_sd1_diffusers):
    from engine.export.source import check_diffusers_folder, describe

    source = check_diffusers_folder(tiny_sd1_diffusers)
    assert describe(source).distillation is None
    turbo = describe(source, "turbo")
    assert (turbo.default_steps, turbo.default_guidance, turbo.default_scheduler) == (
        1, 0.0, "euler")
    # An LCM-LoRA merged into an ordinary UNet: LCM steps, no guidance embedding to feed.
    merged = describe(source, "lcm")
    assert (merged.default_scheduler, merged.default_guidance,
            merged.guidance_embedding_dim) == ("lcm", 1.0, 0)
    with pytest.raises(ValueError):
        describe(source, "lightning")
    sd_turbo = check_diffusers_folder(tiny_models_xl.tiny_diffusers("sd-turbo"))
    assert describe(sd_turbo, None).default_steps == 25


def test_sdxl_turbo_is_an_sdxl_with_turbo_defaults(tmp_path):
    """SDXL-Turbo ships SDXL's folder with a trailing Euler ancestral scheduler config."""
    import shutil

    from engine.export.source import check_diffusers_folder, describe

    folder = tmp_path / "sdxl-turbo"
    shutil.copytree(tiny_models_xl.tiny_diffusers("sdxl"), folder)
    config = folder / "scheduler" / "scheduler_config.json"
    config.write_text(json.dumps(tiny_models_xl.TURBO_SCHEDULER))
    description = describe(check_diffusers_folder(folder))
    assert (description.family, description.distillation, description.default_steps,
            description.default_guidance, description.default_scheduler) == (
        "sdxl", "turbo", 1, 0.0, "euler_ancestral")
