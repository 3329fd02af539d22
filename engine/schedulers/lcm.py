"""LCM: the multistep sampler of Latent Consistency Models (Luo et al. 2023).

diffusers' LCMScheduler. A consistency model maps any noisy sample straight to a clean one, so
each step predicts the clean sample, then (except on the last step) noises it again down to the
next timestep with fresh noise from the image's own generator. It only makes sense for models
distilled for it (LCM, LCM-LoRA), in 1 to 8 steps.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from engine.errors import BadRequest
from engine.schedulers.base import (
    Scheduler,
    as_f32,
    check_choice,
    check_steps,
    cumprod_f32,
    draw_noise,
    f32,
    refuse_options,
    rescale_zero_terminal_snr,
    training_betas,
)

# The data's standard deviation in the consistency boundary condition (the paper's sigma_data).
SIGMA_DATA = 0.5


class LCMScheduler(Scheduler):
    name = "lcm"
    DEFAULTS: ClassVar[dict[str, Any]] = {
        "num_train_timesteps": 1000,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "trained_betas": None,
        "original_inference_steps": 50,
        "clip_sample": False,
        "clip_sample_range": 1.0,
        "set_alpha_to_one": True,
        "steps_offset": 0,
        "prediction_type": "epsilon",
        "thresholding": False,
        "dynamic_thresholding_ratio": 0.995,
        "sample_max_value": 1.0,
        "timestep_spacing": "leading",
        "timestep_scaling": 10.0,
        "rescale_betas_zero_snr": False,
    }
    PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
    init_noise_sigma = 1.0

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        super().__init__(config)
        config = self.config
        refuse_options(config, ("thresholding",), self.name)
        check_choice(config, "prediction_type", self.PREDICTION_TYPES, self.name)
        betas = training_betas(config)
        if config["rescale_betas_zero_snr"]:
            # Unlike Euler's, diffusers' LCM keeps the exact zero at the last timestep.
            betas = rescale_zero_terminal_snr(betas)
        self.alphas_cumprod = cumprod_f32(f32(1.0) - betas)
        self.timesteps = np.arange(config["num_train_timesteps"] - 1, -1, -1, dtype=np.int64)

    def set_timesteps(self, num_inference_steps: int) -> None:
        """Evenly spaced picks from the schedule the model was distilled on.

        Distillation ran on ``original_inference_steps`` timesteps (k - 1, 2k - 1, ... with
        k = num_train // original); inference takes ``steps`` of them, evenly by index from
        the noisiest. ``timestep_spacing`` and ``steps_offset`` play no part, as in diffusers.
        """
        steps = check_steps(num_inference_steps)
        num_train = self.config["num_train_timesteps"]
        original = self.config["original_inference_steps"]
        if original > num_train:
            raise BadRequest(f"This model's LCM settings are damaged: {original} distillation "
                             f"steps for {num_train} training timesteps.")
        if steps > original:
            raise BadRequest(f"The LCM scheduler can take at most {original} steps with this "
                             f"model (got {steps}).")
        stride = num_train // original
        distilled = (np.arange(1, original + 1) * stride - 1)[::-1]
        picks = np.floor(np.linspace(0, len(distilled), num=steps, endpoint=False))
        self.timesteps = distilled[picks.astype(np.int64)].astype(np.int64)
        self.num_inference_steps = steps
        self._reset_position()

    def boundary_scalings(self, timestep: int) -> tuple[np.float32, np.float32]:
        """(c_skip, c_out): how much of the sample and of the prediction the consistency
        function keeps, so that it is the identity at t = 0."""
        scaled = f32(timestep) * f32(self.config["timestep_scaling"])
        spread = scaled * scaled + f32(SIGMA_DATA**2)
        return f32(SIGMA_DATA**2) / spread, scaled / np.sqrt(spread)

    def step(self, model_output: np.ndarray, timestep: float, sample: np.ndarray,
             rng: np.random.Generator | None = None) -> np.ndarray:
        index = self._ensure_step_index(timestep)
        model_output, sample = as_f32(model_output), as_f32(sample)
        timestep = int(timestep)
        alpha_bar = self.alphas_cumprod[timestep]
        denoised = self._clean_sample(model_output, sample, alpha_bar)
        if self.config["clip_sample"]:
            limit = self.config["clip_sample_range"]
            denoised = np.clip(denoised, -limit, limit).astype(f32)
        c_skip, c_out = self.boundary_scalings(timestep)
        denoised = c_out * denoised + c_skip * sample
        self.step_index = index + 1
        if index == self.num_inference_steps - 1:
            return denoised  # the last step keeps the clean prediction, and draws no noise
        alpha_bar_next = self.alphas_cumprod[int(self.timesteps[index + 1])]
        noise = draw_noise(rng, model_output.shape, self.name)
        return np.sqrt(alpha_bar_next) * denoised + np.sqrt(f32(1.0) - alpha_bar_next) * noise

    def _clean_sample(self, model_output: np.ndarray, sample: np.ndarray,
                      alpha_bar: np.float32) -> np.ndarray:
        """The clean sample the model predicts, whatever it was trained to predict."""
        beta_bar = f32(1.0) - alpha_bar
        prediction = self.config["prediction_type"]
        if prediction == "epsilon":
            return (sample - np.sqrt(beta_bar) * model_output) / np.sqrt(alpha_bar)
        if prediction == "sample":
            return model_output
        return np.sqrt(alpha_bar) * sample - np.sqrt(beta_bar) * model_output

    def add_noise(self, original: np.ndarray, noise: np.ndarray, timestep: float) -> np.ndarray:
        alpha_bar = self.alphas_cumprod[int(timestep)]
        return (np.sqrt(alpha_bar) * as_f32(original)
                + np.sqrt(f32(1.0) - alpha_bar) * as_f32(noise))
