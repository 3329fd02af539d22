"""The few-step ("turbo") settings of our schedulers follow diffusers step by step.

SD-Turbo and SDXL-Turbo ship Euler / Euler ancestral configs with "trailing" timestep spacing
and run 1 to 4 steps; trailing starts at the last training timestep (999), where linspace and
leading do not. Same method as tests/test_schedulers.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.test_schedulers import TABLE_RTOL, model_weights, run_diffusers, run_ours

pytest.importorskip("diffusers")
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

_TURBO = {"beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
          "clip_sample": False, "interpolation_type": "linear", "num_train_timesteps": 1000,
          "prediction_type": "epsilon", "sample_max_value": 1.0, "set_alpha_to_one": False,
          "skip_prk_steps": True, "steps_offset": 1, "timestep_spacing": "trailing",
          "trained_betas": None, "use_karras_sigmas": False}
SD_TURBO = {**_TURBO, "_class_name": "EulerDiscreteScheduler"}  # as stabilityai/sd-turbo
SDXL_TURBO = {**_TURBO, "_class_name": "EulerAncestralDiscreteScheduler"}  # as sdxl-turbo
CASES = [("euler", SD_TURBO), ("euler_ancestral", SDXL_TURBO), ("euler", SDXL_TURBO),
         ("euler_ancestral", SD_TURBO), ("dpmpp_2m", SD_TURBO), ("ddim", SD_TURBO)]


@pytest.mark.parametrize("steps", [1, 2, 3, 4])
@pytest.mark.parametrize(("name", "config"), CASES,
                         ids=[f"{name}-{config['_class_name']}" for name, config in CASES])
def test_trailing_few_step_trajectory_matches_diffusers(name, config, steps, monkeypatch):
    weights = model_weights()
    ours, our_path, rng = run_ours(name, config, steps, weights)
    theirs, their_path, mirror = run_diffusers(name, config, steps, weights, monkeypatch)
    their_timesteps = theirs.timesteps.numpy()
    assert ours.timesteps.dtype == their_timesteps.dtype
    np.testing.assert_array_equal(ours.timesteps, their_timesteps)
    assert ours.timesteps[0] == 999  # trailing: the first step is at pure noise
    assert ours.init_noise_sigma == pytest.approx(float(theirs.init_noise_sigma), rel=TABLE_RTOL)
    for index, (mine, reference) in enumerate(zip(our_path, their_path, strict=True)):
        np.testing.assert_allclose(mine, reference, rtol=1e-5, atol=1e-5,
                                   err_msg=f"sample after step {index}")
    assert rng.bit_generator.state == mirror.bit_generator.state
