"""DDIM (Song et al. 2020): deterministic jumps between training timesteps.

diffusers' DDIMScheduler. With eta > 0 each step adds noise drawn from the image's own
generator. eta is not part of a diffusers config (it is a ``step`` argument there); Easel
reads it from the config as "eta".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from engine.errors import BadRequest
from engine.schedulers.base import (
    BETA_SCHEDULE_DEFAULTS,
    TIMESTEP_SPACINGS,
    Scheduler,
    alphas_cumprod,
    as_f32,
    check_choice,
    check_steps,
    draw_noise,
    f32,
    refuse_options,
    spaced_timesteps,
)


class DDIMScheduler(Scheduler):
    name = "ddim"
    DEFAULTS: ClassVar[dict[str, Any]] = {
        **BETA_SCHEDULE_DEFAULTS,
        "clip_sample": True,
        "set_alpha_to_one": True,
        "steps_offset": 0,
        "prediction_type": "epsilon",
        "thresholding": False,
        "dynamic_thresholding_ratio": 0.995,
        "clip_sample_range": 1.0,
        "sample_max_value": 1.0,
        "timestep_spacing": "leading",
        "rescale_betas_zero_snr": False,
        "eta": 0.0,  # Easel's addition: diffusers takes it per step.
    }
    PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
    init_noise_sigma = 1.0

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        super().__init__(config)
        config = self.config
        refuse_options(config, ("thresholding",), self.name)
        check_choice(config, "prediction_type", self.PREDICTION_TYPES, self.name)
        check_choice(config, "timestep_spacing", TIMESTEP_SPACINGS, self.name)
        if not 0 <= config["eta"] <= 1:
            raise BadRequest(f"DDIM's eta must be between 0 and 1 (got {config['eta']}).")
        self.alphas_cumprod = alphas_cumprod(config)
        # The step after the last has no alpha_bar of its own: 1 (clean) or that of t = 0.
        self.final_alpha_cumprod = (f32(1.0) if config["set_alpha_to_one"]
                                    else self.alphas_cumprod[0])
        self.timesteps = np.arange(config["num_train_timesteps"] - 1, -1, -1, dtype=np.int64)

    def set_timesteps(self, num_inference_steps: int) -> None:
        steps = check_steps(num_inference_steps)
        num_train = self.config["num_train_timesteps"]
        if steps > num_train:
            raise BadRequest(f"DDIM can take at most {num_train} steps with this model "
                             f"(got {steps}).")
        self.timesteps = spaced_timesteps(self.config["timestep_spacing"], steps, num_train,
                                          self.config["steps_offset"],
                                          round_linspace=True).astype(np.int64)
        self.num_inference_steps = steps
        self._reset_position()

    def _alpha_bars(self, timestep: int) -> tuple[np.float32, np.float32]:
        """alpha_bar now and at the previous timestep, which DDIM takes to be one
        ``num_train // steps`` stride back whatever the spacing (as diffusers does)."""
        previous = timestep - self.config["num_train_timesteps"] // self.num_inference_steps
        alpha_bar_prev = (self.alphas_cumprod[previous] if previous >= 0
                          else self.final_alpha_cumprod)
        return self.alphas_cumprod[timestep], alpha_bar_prev

    def step(self, model_output: np.ndarray, timestep: float, sample: np.ndarray,
             rng: np.random.Generator | None = None) -> np.ndarray:
        self._require_timesteps()
        model_output, sample = as_f32(model_output), as_f32(sample)
        alpha_bar, alpha_bar_prev = self._alpha_bars(int(timestep))
        denoised, noise_pred = self._predictions(model_output, sample, alpha_bar)
        if self.config["clip_sample"]:
            limit = self.config["clip_sample_range"]
            denoised = np.clip(denoised, -limit, limit).astype(f32)
        std_dev = f32(self.config["eta"]) * np.sqrt(self._variance(alpha_bar, alpha_bar_prev))
        direction = np.sqrt(f32(1.0) - alpha_bar_prev - std_dev * std_dev) * noise_pred
        previous = np.sqrt(alpha_bar_prev) * denoised + direction
        if self.config["eta"] > 0:
            previous = previous + std_dev * draw_noise(rng, model_output.shape, self.name)
        return previous

    def _predictions(self, model_output: np.ndarray, sample: np.ndarray,
                     alpha_bar: np.float32) -> tuple[np.ndarray, np.ndarray]:
        """(predicted clean sample, predicted noise) from whatever the model predicts."""
        beta_bar = f32(1.0) - alpha_bar
        prediction = self.config["prediction_type"]
        if prediction == "epsilon":
            return (sample - np.sqrt(beta_bar) * model_output) / np.sqrt(alpha_bar), model_output
        if prediction == "sample":
            noise = (sample - np.sqrt(alpha_bar) * model_output) / np.sqrt(beta_bar)
            return model_output, noise
        return (np.sqrt(alpha_bar) * sample - np.sqrt(beta_bar) * model_output,
                np.sqrt(alpha_bar) * model_output + np.sqrt(beta_bar) * sample)

    @staticmethod
    def _variance(alpha_bar: np.float32, alpha_bar_prev: np.float32) -> np.float32:
        """Formula (16) of the DDIM paper, before eta."""
        return ((f32(1.0) - alpha_bar_prev) / (f32(1.0) - alpha_bar)
                * (f32(1.0) - alpha_bar / alpha_bar_prev))

    def add_noise(self, original: np.ndarray, noise: np.ndarray, timestep: float) -> np.ndarray:
        alpha_bar = self.alphas_cumprod[int(timestep)]
        return (np.sqrt(alpha_bar) * as_f32(original)
                + np.sqrt(f32(1.0) - alpha_bar) * as_f32(noise))
