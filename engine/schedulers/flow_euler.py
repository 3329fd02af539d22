"""Flow-matching Euler (SD3-style models): straight Euler steps along the predicted velocity.

diffusers' FlowMatchEulerDiscreteScheduler. The model predicts velocity = noise - image and
the sample at sigma is (1 - sigma) * image + sigma * noise, so one step is x += dt * velocity.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from engine.errors import BadRequest
from engine.schedulers.base import (
    SigmaScheduler,
    as_f32,
    check_choice,
    check_one_sigma_shape,
    check_steps,
    draw_noise,
    exponential_sigmas,
    f32,
    karras_sigmas,
    refuse_options,
)


def shifted(sigmas: np.ndarray, shift: float) -> np.ndarray:
    """Spend more steps at high noise: sigma -> shift*sigma / (1 + (shift - 1)*sigma)."""
    return shift * sigmas / (1 + (shift - 1) * sigmas)


class FlowEulerScheduler(SigmaScheduler):
    name = "flow_euler"
    DEFAULTS: ClassVar[dict[str, Any]] = {
        "num_train_timesteps": 1000,
        "shift": 1.0,
        "use_dynamic_shifting": False,
        "base_shift": 0.5,
        "max_shift": 1.15,
        "base_image_seq_len": 256,
        "max_image_seq_len": 4096,
        "invert_sigmas": False,
        "shift_terminal": None,
        "use_karras_sigmas": False,
        "use_exponential_sigmas": False,
        "use_beta_sigmas": False,
        "time_shift_type": "exponential",
        "stochastic_sampling": False,
    }
    # The flow sample is already unit scale: the pipeline does not scale the initial noise.
    init_noise_sigma = 1.0

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        super().__init__(config)
        config = self.config
        refuse_options(config, ("invert_sigmas", "use_beta_sigmas"), self.name)
        check_one_sigma_shape(config, self.name)
        check_choice(config, "time_shift_type", ("exponential", "linear"), self.name)
        count = config["num_train_timesteps"]
        # The training schedule, in float32 as diffusers builds it; only its two ends are used.
        sigmas = np.linspace(1, count, count, dtype=f32)[::-1] / f32(count)
        if not config["use_dynamic_shifting"]:
            sigmas = shifted(sigmas, config["shift"]).astype(f32)
        self.sigmas = sigmas
        self.sigma_min, self.sigma_max = float(sigmas[-1]), float(sigmas[0])
        self.timesteps = sigmas * f32(count)

    def image_shift(self, image_seq_len: int) -> float:
        """``mu`` for dynamic shifting: log-shift grows linearly with the latent token count."""
        config = self.config
        slope = ((config["max_shift"] - config["base_shift"])
                 / (config["max_image_seq_len"] - config["base_image_seq_len"]))
        return image_seq_len * slope + config["base_shift"] - slope * config["base_image_seq_len"]

    def set_timesteps(self, num_inference_steps: int, *, mu: float | None = None) -> None:
        """``mu`` (see ``image_shift``) is needed when the config shifts by image size."""
        steps = check_steps(num_inference_steps)
        config = self.config
        count = config["num_train_timesteps"]
        sigmas = np.linspace(self.sigma_max * count, self.sigma_min * count, steps) / count
        sigmas = self._shift_schedule(sigmas, mu)
        if config["shift_terminal"]:
            sigmas = self._stretch_to_terminal(sigmas)
        if config["use_karras_sigmas"]:
            sigmas = karras_sigmas(float(sigmas[-1]), float(sigmas[0]), steps)
        elif config["use_exponential_sigmas"]:
            sigmas = exponential_sigmas(float(sigmas[-1]), float(sigmas[0]), steps)
        sigmas = sigmas.astype(f32)
        self.timesteps = sigmas * f32(count)
        self.sigmas = np.concatenate([sigmas, [f32(0.0)]])
        self.num_inference_steps = steps
        self._reset_position()

    def _shift_schedule(self, sigmas: np.ndarray, mu: float | None) -> np.ndarray:
        config = self.config
        if not config["use_dynamic_shifting"]:
            return shifted(sigmas, config["shift"])
        if mu is None:
            raise BadRequest("This model shifts its noise schedule by image size, "
                             "so the flow scheduler needs that size (mu) to set its steps.")
        if config["time_shift_type"] == "exponential":
            return math.exp(mu) / (math.exp(mu) + (1 / sigmas - 1))
        return mu / (mu + (1 / sigmas - 1))

    def _stretch_to_terminal(self, sigmas: np.ndarray) -> np.ndarray:
        """Rescale so the last sigma lands on ``shift_terminal`` instead of near zero."""
        one_minus = 1 - sigmas
        if one_minus[-1] == 0:
            # A single step sits at sigma 1, which cannot be stretched (diffusers gets NaN).
            raise BadRequest("This model's noise schedule needs at least 2 steps.")
        scale = one_minus[-1] / (1 - self.config["shift_terminal"])
        return 1 - one_minus / scale

    def step(self, model_output: np.ndarray, timestep: float, sample: np.ndarray,
             rng: np.random.Generator | None = None) -> np.ndarray:
        index = self._ensure_step_index(timestep)
        model_output, sample = as_f32(model_output), as_f32(sample)
        sigma, sigma_next = self.sigmas[index], self.sigmas[index + 1]
        if self.config["stochastic_sampling"]:
            # Jump to the predicted image, then re-noise to the next level with fresh noise.
            denoised = sample - sigma * model_output
            noise = draw_noise(rng, sample.shape, self.name)
            previous = (f32(1.0) - sigma_next) * denoised + sigma_next * noise
        else:
            previous = sample + (sigma_next - sigma) * model_output
        self.step_index = index + 1
        return previous

    def add_noise(self, original: np.ndarray, noise: np.ndarray, timestep: float) -> np.ndarray:
        sigma = self.sigmas[self._noise_index(timestep)]
        return sigma * as_f32(noise) + (f32(1.0) - sigma) * as_f32(original)
