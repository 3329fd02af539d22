"""Euler ancestral: Euler steps to a lower sigma plus fresh noise back up to the target sigma.

diffusers' EulerAncestralDiscreteScheduler. Each step draws its noise from the image's own
generator, after the initial latents, so a seed always remakes the same image.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from engine.schedulers.base import BETA_SCHEDULE_DEFAULTS, as_f32, check_steps, draw_noise, f32
from engine.schedulers.euler import SigmaSpaceScheduler, v_prediction_to_sample


def ancestral_sigmas(sigma_from: np.float32,
                     sigma_to: np.float32) -> tuple[np.float32, np.float32]:
    """Split a step from ``sigma_from`` to ``sigma_to`` into a deterministic step down to
    ``sigma_down`` and fresh noise of size ``sigma_up`` (k-diffusion's eta = 1)."""
    from_2, to_2 = sigma_from * sigma_from, sigma_to * sigma_to
    sigma_up = np.sqrt(to_2 * (from_2 - to_2) / from_2)
    sigma_down = np.sqrt(to_2 - sigma_up * sigma_up)
    return sigma_down, sigma_up


class EulerAncestralScheduler(SigmaSpaceScheduler):
    name = "euler_ancestral"
    DEFAULTS: ClassVar[dict[str, Any]] = {
        **BETA_SCHEDULE_DEFAULTS,
        "prediction_type": "epsilon",
        "timestep_spacing": "linspace",
        "steps_offset": 0,
        "rescale_betas_zero_snr": False,
    }
    PREDICTION_TYPES = ("epsilon", "v_prediction")

    def set_timesteps(self, num_inference_steps: int) -> None:
        steps = check_steps(num_inference_steps)
        timesteps, sigmas = self._spaced_schedule(steps)
        self.sigmas = np.concatenate([sigmas, [0.0]]).astype(f32)
        self.timesteps = timesteps
        self.num_inference_steps = steps
        self._reset_position()

    def step(self, model_output: np.ndarray, timestep: float, sample: np.ndarray,
             rng: np.random.Generator | None = None) -> np.ndarray:
        index = self._ensure_step_index(timestep)
        model_output, sample = as_f32(model_output), as_f32(sample)
        sigma = self.sigmas[index]
        if self.config["prediction_type"] == "epsilon":
            denoised = sample - sigma * model_output
        else:
            denoised = v_prediction_to_sample(model_output, sample, sigma)
        sigma_down, sigma_up = ancestral_sigmas(sigma, self.sigmas[index + 1])
        derivative = (sample - denoised) / sigma
        previous = sample + derivative * (sigma_down - sigma)
        # Drawn on every step, the last one too (where sigma_up is 0), as diffusers does, so
        # anything drawn after the loop comes from the same place in the stream.
        noise = draw_noise(rng, model_output.shape, self.name)
        previous = previous + noise * sigma_up
        self.step_index = index + 1
        return previous
