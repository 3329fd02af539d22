"""Our numpy LCM scheduler against diffusers' LCMScheduler (torch CPU, float32), step by step.

Same method as tests/test_schedulers.py: a fake model runs through both schedulers from the
same latents; the per-step noise diffusers draws is our generator's, through a mirror.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

from engine.errors import BadRequest
from engine.schedulers import DISTILLED_SCHEDULER_NAMES, a1111_sampler_name, make_scheduler
from tests.test_schedulers import (
    SD15,
    SEED,
    SHAPE,
    denoise_diffusers,
    denoise_ours,
    draw_from,
    model_weights,
)

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

RTOL = ATOL = 1e-5
# The LCMScheduler config that LCM-Dreamshaper-v7 ships.
LCM_DREAMSHAPER = {
    "_class_name": "LCMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
    "beta_start": 0.00085, "clip_sample": False, "clip_sample_range": 1.0,
    "dynamic_thresholding_ratio": 0.995, "num_train_timesteps": 1000,
    "original_inference_steps": 50, "prediction_type": "epsilon", "rescale_betas_zero_snr": False,
    "sample_max_value": 1.0, "set_alpha_to_one": True, "steps_offset": 1,
    "thresholding": False, "timestep_scaling": 10.0, "timestep_spacing": "leading",
    "trained_betas": None,
}
CASES = {
    "dreamshaper": LCM_DREAMSHAPER,
    "defaults": {},
    "sd15_pndm": SD15,  # LCM-LoRA: the base model's own config, read as an LCM config
    "v_zero_snr": {**LCM_DREAMSHAPER, "prediction_type": "v_prediction",
                   "rescale_betas_zero_snr": True},
    "sample_clipped": {**LCM_DREAMSHAPER, "prediction_type": "sample", "clip_sample": True},
    "original_100": {**LCM_DREAMSHAPER, "original_inference_steps": 100,
                     "timestep_scaling": 5.0, "beta_schedule": "linear"},
}
STEP_COUNTS = (1, 2, 3, 4, 8, 50)


def sample_atol(reference: np.ndarray) -> float:
    """1e-5 of the sample's scale: the fake model is no denoiser, so over many steps LCM's
    division by sqrt(alpha_bar) grows some elements to ~100, and rounding grows with them."""
    return ATOL * max(1.0, float(np.abs(reference).max()))


def run_ours(config: dict, steps: int, weights: np.ndarray):
    scheduler = make_scheduler("lcm", config)
    scheduler.set_timesteps(steps)
    rng = np.random.default_rng(SEED)
    latents = rng.standard_normal(SHAPE, dtype=np.float32) * np.float32(scheduler.init_noise_sigma)
    return scheduler, denoise_ours(scheduler, latents, scheduler.timesteps, weights, rng), rng


def run_diffusers(config: dict, steps: int, weights: np.ndarray, monkeypatch):
    scheduler = diffusers.LCMScheduler.from_config(config)
    mirror = np.random.default_rng(SEED)
    monkeypatch.setattr(sys.modules[type(scheduler).__module__], "randn_tensor",
                        draw_from(mirror))
    scheduler.set_timesteps(steps)
    latents = torch.from_numpy(mirror.standard_normal(SHAPE, dtype=np.float32))
    latents = latents * scheduler.init_noise_sigma
    return scheduler, denoise_diffusers(scheduler, latents, scheduler.timesteps, weights), mirror


@pytest.mark.parametrize("steps", STEP_COUNTS)
@pytest.mark.parametrize("label", list(CASES))
def test_trajectory_matches_diffusers(label, steps, monkeypatch):
    config = CASES[label]
    weights = model_weights()
    ours, our_path, rng = run_ours(config, steps, weights)
    theirs, their_path, mirror = run_diffusers(config, steps, weights, monkeypatch)
    their_timesteps = theirs.timesteps.numpy()
    assert ours.timesteps.dtype == their_timesteps.dtype == np.int64
    np.testing.assert_array_equal(ours.timesteps, their_timesteps)
    assert ours.init_noise_sigma == theirs.init_noise_sigma
    # Equal but for torch's float32 sqrt rounding inside the zero-SNR rescaling.
    np.testing.assert_allclose(ours.alphas_cumprod, theirs.alphas_cumprod.numpy(), rtol=1e-5,
                               atol=0)
    for index, (mine, reference) in enumerate(zip(our_path, their_path, strict=True)):
        np.testing.assert_allclose(mine, reference, rtol=RTOL, atol=sample_atol(reference),
                                   err_msg=f"sample after step {index}")
    # Noise on every step but the last, in the same order: the generators end level.
    assert rng.bit_generator.state == mirror.bit_generator.state


def test_starting_partway_matches_diffusers(monkeypatch):
    """Image to image: noise a clean sample to the level of step 2 of 4, denoise from there."""
    begin, steps = 2, 4
    image, noise, weights = model_weights(seed=5), model_weights(seed=6), model_weights()
    ours = make_scheduler("lcm", LCM_DREAMSHAPER)
    ours.set_timesteps(steps)
    ours.set_begin_index(begin)
    latents = ours.add_noise(image, noise, ours.timesteps[begin])
    our_path = denoise_ours(ours, latents, ours.timesteps[begin:], weights,
                            np.random.default_rng(0))

    theirs = diffusers.LCMScheduler.from_config(LCM_DREAMSHAPER)
    monkeypatch.setattr(sys.modules[type(theirs).__module__], "randn_tensor",
                        draw_from(np.random.default_rng(0)))
    theirs.set_timesteps(steps)
    theirs.set_begin_index(begin)
    start = theirs.timesteps[begin : begin + 1]
    latents = theirs.add_noise(torch.from_numpy(image), torch.from_numpy(noise), start)
    their_path = denoise_diffusers(theirs, latents, theirs.timesteps[begin:], weights)
    for index, (mine, reference) in enumerate(zip(our_path, their_path, strict=True)):
        np.testing.assert_allclose(mine, reference, rtol=RTOL, atol=ATOL,
                                   err_msg=f"sample after step {index}")


def test_result_depends_on_the_model_output():
    finals = [run_ours(LCM_DREAMSHAPER, 4, model_weights(seed=seed))[1][-1] for seed in (1, 2)]
    assert np.abs(finals[0] - finals[1]).max() > 1e-2


def test_more_steps_than_the_distillation_schedule_are_refused():
    scheduler = make_scheduler("lcm", LCM_DREAMSHAPER)
    with pytest.raises(BadRequest, match="at most 50 steps"):
        scheduler.set_timesteps(51)
    with pytest.raises(BadRequest, match="at least 1"):
        scheduler.set_timesteps(0)
    with pytest.raises(BadRequest):
        make_scheduler("lcm", {"thresholding": True})


def test_lcm_is_named_apart_from_the_general_schedulers():
    assert DISTILLED_SCHEDULER_NAMES == ("lcm",)
    assert a1111_sampler_name("lcm") == "LCM"
    with pytest.raises(BadRequest, match="lcm"):
        make_scheduler("heun", SD15)
