"""Euler: first-order ODE steps in sigma space (diffusers' EulerDiscreteScheduler, no churn)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from engine.schedulers.base import (
    BETA_SCHEDULE_DEFAULTS,
    FINAL_SIGMAS_TYPES,
    TIMESTEP_SPACINGS,
    SigmaScheduler,
    alphas_cumprod,
    as_f32,
    check_choice,
    check_one_sigma_shape,
    check_steps,
    exponential_sigmas,
    f32,
    final_sigma,
    interpolate_sigmas,
    karras_sigmas,
    refuse_options,
    sigma_to_timestep,
    spaced_timesteps,
    training_sigmas,
)


def v_prediction_to_sample(model_output: np.ndarray, sample: np.ndarray,
                           sigma: np.float32) -> np.ndarray:
    """The clean sample predicted by a v-prediction model at noise level sigma."""
    return (model_output * (-sigma / np.sqrt(sigma * sigma + f32(1.0)))
            + sample / (sigma * sigma + f32(1.0)))


class SigmaSpaceScheduler(SigmaScheduler):
    """What Euler and Euler ancestral share: k-diffusion's sigma-space view of a DDPM model."""

    PREDICTION_TYPES: ClassVar[tuple[str, ...]]

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        super().__init__(config)
        check_choice(self.config, "prediction_type", self.PREDICTION_TYPES, self.name)
        check_choice(self.config, "timestep_spacing", TIMESTEP_SPACINGS, self.name)
        self.alphas_cumprod = alphas_cumprod(self.config)
        self.training_sigmas = training_sigmas(self.alphas_cumprod)
        # Before set_timesteps diffusers holds every training sigma, descending, then zero.
        self.sigmas = np.concatenate([self.training_sigmas[::-1], [f32(0.0)]]).astype(f32)
        self.timesteps = np.arange(self.config["num_train_timesteps"] - 1, -1, -1, dtype=f32)

    @property
    def init_noise_sigma(self) -> float:
        """Initial noise scale: sqrt(sigma_max^2 + 1), though diffusers leaves out the "+1"
        for linspace and trailing spacing; kept so the initial latents are the same."""
        largest = self.sigmas.max()
        if self.config["timestep_spacing"] in ("linspace", "trailing"):
            return float(largest)
        return float(np.sqrt(largest * largest + f32(1.0)))

    def _spaced_schedule(self, steps: int) -> tuple[np.ndarray, np.ndarray]:
        """(timesteps as float32, their interpolated sigmas as float64)."""
        config = self.config
        timesteps = spaced_timesteps(config["timestep_spacing"], steps,
                                     config["num_train_timesteps"], config["steps_offset"],
                                     round_linspace=False).astype(f32)
        return timesteps, interpolate_sigmas(timesteps, self.training_sigmas)

    def scale_model_input(self, sample: np.ndarray, timestep: float) -> np.ndarray:
        """The model was trained on unit-variance inputs: divide by sqrt(sigma^2 + 1)."""
        sigma = self.sigmas[self._ensure_step_index(timestep)]
        return as_f32(sample) / np.sqrt(sigma * sigma + f32(1.0))


class EulerScheduler(SigmaSpaceScheduler):
    name = "euler"
    DEFAULTS: ClassVar[dict[str, Any]] = {
        **BETA_SCHEDULE_DEFAULTS,
        "prediction_type": "epsilon",
        "interpolation_type": "linear",
        "use_karras_sigmas": False,
        "use_exponential_sigmas": False,
        "use_beta_sigmas": False,
        "sigma_min": None,
        "sigma_max": None,
        "timestep_spacing": "linspace",
        "timestep_type": "discrete",
        "steps_offset": 0,
        "rescale_betas_zero_snr": False,
        "final_sigmas_type": "zero",
    }
    PREDICTION_TYPES = ("epsilon", "v_prediction", "sample", "original_sample")

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        super().__init__(config)
        config = self.config
        refuse_options(config, ("use_beta_sigmas",), self.name)
        check_one_sigma_shape(config, self.name)
        check_choice(config, "interpolation_type", ("linear",), self.name)
        check_choice(config, "timestep_type", ("discrete",), self.name)
        check_choice(config, "final_sigmas_type", FINAL_SIGMAS_TYPES, self.name)

    def set_timesteps(self, num_inference_steps: int) -> None:
        steps = check_steps(num_inference_steps)
        config = self.config
        timesteps, sigmas = self._spaced_schedule(steps)
        if config["use_karras_sigmas"] or config["use_exponential_sigmas"]:
            sigmas = self._reshaped_sigmas(sigmas, steps)
            timesteps = sigma_to_timestep(sigmas, np.log(self.training_sigmas))
        last = final_sigma(config["final_sigmas_type"], self.alphas_cumprod)
        self.sigmas = np.concatenate([sigmas, [last]]).astype(f32)
        self.timesteps = timesteps.astype(f32)
        self.num_inference_steps = steps
        self._reset_position()

    def _reshaped_sigmas(self, sigmas: np.ndarray, steps: int) -> np.ndarray:
        # Euler's sigma range is that of the spaced schedule unless the config pins it.
        low = self.config["sigma_min"]
        high = self.config["sigma_max"]
        low = float(sigmas[-1]) if low is None else low
        high = float(sigmas[0]) if high is None else high
        if self.config["use_karras_sigmas"]:
            return karras_sigmas(low, high, steps)
        return exponential_sigmas(low, high, steps)

    def step(self, model_output: np.ndarray, timestep: float, sample: np.ndarray,
             rng: np.random.Generator | None = None) -> np.ndarray:
        index = self._ensure_step_index(timestep)
        model_output, sample = as_f32(model_output), as_f32(sample)
        sigma = self.sigmas[index]
        prediction = self.config["prediction_type"]
        if prediction == "epsilon":
            denoised = sample - sigma * model_output
        elif prediction == "v_prediction":
            denoised = v_prediction_to_sample(model_output, sample, sigma)
        else:
            denoised = model_output
        derivative = (sample - denoised) / sigma
        previous = sample + derivative * (self.sigmas[index + 1] - sigma)
        self.step_index = index + 1
        return previous
