"""DPM++ 2M: the second-order multistep DPM-Solver++ (Lu et al. 2022) on data predictions.

diffusers' DPMSolverMultistepScheduler with algorithm_type "dpmsolver++" and solver_order 2,
whatever the model's config says about those two; the Karras sigma schedule is the
``use_karras_sigmas`` option ("DPM++ 2M Karras").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from engine.errors import BadRequest
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
    exp_f32,
    exponential_sigmas,
    f32,
    final_sigma,
    interpolate_sigmas,
    karras_sigmas,
    log_f32,
    refuse_options,
    sigma_to_timestep,
    training_sigmas,
    vp_alpha_sigma,
)

# Older solver names diffusers still accepts and maps onto midpoint.
SOLVER_TYPE_ALIASES = {"logrho": "midpoint", "bh1": "midpoint", "bh2": "midpoint"}


def dpm_timesteps(spacing: str, steps: int, num_train: int, last_timestep: int,
                  steps_offset: int) -> np.ndarray:
    """DPM-Solver's own spacing: it places ``steps + 1`` points and drops the final one,
    so it differs from the shared spacing in ``base`` for linspace and leading."""
    if spacing == "linspace":
        points = np.linspace(0, last_timestep - 1, steps + 1).round()
        return points[::-1][:-1].astype(np.int64)
    if spacing == "leading":
        ratio = last_timestep // (steps + 1)
        points = (np.arange(0, steps + 1) * ratio).round()
        return points[::-1][:-1].astype(np.int64) + steps_offset
    if spacing == "trailing":
        ratio = num_train / steps
        return np.arange(last_timestep, 0, -ratio).round().astype(np.int64) - 1
    raise BadRequest(f"The timestep spacing '{spacing}' is not supported; "
                     f"use one of {', '.join(TIMESTEP_SPACINGS)}.")


def log_snr(sigma: np.float32) -> tuple[np.float32, np.float32, np.float32]:
    """(alpha_t, sigma_t, lambda_t = log(alpha_t / sigma_t)) for a noise level sigma.

    A final sigma of zero gives lambda = +inf, which the first-order update handles.
    """
    alpha, scaled_sigma = vp_alpha_sigma(sigma)
    return alpha, scaled_sigma, log_f32(alpha) - log_f32(scaled_sigma)


class DPMPP2MScheduler(SigmaScheduler):
    name = "dpmpp_2m"
    DEFAULTS: ClassVar[dict[str, Any]] = {
        **BETA_SCHEDULE_DEFAULTS,
        "solver_order": 2,
        "prediction_type": "epsilon",
        "thresholding": False,
        "dynamic_thresholding_ratio": 0.995,
        "sample_max_value": 1.0,
        "algorithm_type": "dpmsolver++",
        "solver_type": "midpoint",
        "lower_order_final": True,
        "euler_at_final": False,
        "use_karras_sigmas": False,
        "use_exponential_sigmas": False,
        "use_beta_sigmas": False,
        "use_lu_lambdas": False,
        "use_flow_sigmas": False,
        "flow_shift": 1.0,
        "final_sigmas_type": "zero",
        "lambda_min_clipped": -float("inf"),
        "variance_type": None,
        "timestep_spacing": "linspace",
        "steps_offset": 0,
        "rescale_betas_zero_snr": False,
        "use_dynamic_shifting": False,
        "time_shift_type": "exponential",
    }
    PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
    UNSUPPORTED = ("thresholding", "variance_type", "use_beta_sigmas", "use_lu_lambdas",
                   "use_flow_sigmas", "use_dynamic_shifting")
    init_noise_sigma = 1.0

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        super().__init__(config)
        config = self.config
        # The name promises DPM++ 2M, so these two are not the model config's to choose.
        config["algorithm_type"], config["solver_order"] = "dpmsolver++", 2
        config["solver_type"] = SOLVER_TYPE_ALIASES.get(config["solver_type"],
                                                        config["solver_type"])
        refuse_options(config, self.UNSUPPORTED, self.name)
        check_one_sigma_shape(config, self.name)
        check_choice(config, "prediction_type", self.PREDICTION_TYPES, self.name)
        check_choice(config, "solver_type", ("midpoint", "heun"), self.name)
        check_choice(config, "timestep_spacing", TIMESTEP_SPACINGS, self.name)
        check_choice(config, "final_sigmas_type", FINAL_SIGMAS_TYPES, self.name)
        self.alphas_cumprod = alphas_cumprod(config)
        self.sigmas = training_sigmas(self.alphas_cumprod)
        self.timesteps = np.arange(config["num_train_timesteps"] - 1, -1, -1, dtype=np.int64)
        self.model_outputs: list[np.ndarray | None] = [None, None]
        self.lower_order_nums = 0

    def _last_timestep(self) -> int:
        # lambda_min_clipped cuts off the noisiest timesteps (for the cosine schedule).
        cumulative = self.alphas_cumprod
        lambdas = np.log(np.sqrt(cumulative)) - np.log(np.sqrt(f32(1.0) - cumulative))
        clipped = np.searchsorted(lambdas[::-1], self.config["lambda_min_clipped"])
        return int(self.config["num_train_timesteps"] - clipped)

    def set_timesteps(self, num_inference_steps: int) -> None:
        steps = check_steps(num_inference_steps)
        config = self.config
        timesteps = dpm_timesteps(config["timestep_spacing"], steps,
                                  config["num_train_timesteps"], self._last_timestep(),
                                  config["steps_offset"])
        train = training_sigmas(self.alphas_cumprod)
        if config["use_karras_sigmas"] or config["use_exponential_sigmas"]:
            sigmas, timesteps = self._reshaped_schedule(train, steps)
        else:
            sigmas = interpolate_sigmas(timesteps, train)
        last = final_sigma(config["final_sigmas_type"], self.alphas_cumprod)
        self.sigmas = np.concatenate([sigmas, [last]]).astype(f32)
        self.timesteps = timesteps
        self.num_inference_steps = len(timesteps)
        self.model_outputs = [None, None]
        self.lower_order_nums = 0
        self._reset_position()

    def _reshaped_schedule(self, train: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray]:
        """Karras or exponential sigmas over the full training range, and their timesteps."""
        low, high = float(train[0]), float(train[-1])
        if self.config["use_karras_sigmas"]:
            sigmas = karras_sigmas(low, high, steps)
            timesteps = sigma_to_timestep(sigmas, np.log(train))
            if self.config["beta_schedule"] != "squaredcos_cap_v2":
                timesteps = timesteps.round()
        else:
            sigmas = exponential_sigmas(low, high, steps)
            timesteps = sigma_to_timestep(sigmas, np.log(train))
        # Truncated, not rounded, where not rounded above: torch's int64 cast.
        return sigmas, timesteps.astype(np.int64)

    def _index_of_unknown_timestep(self, timestep: float) -> int:
        # A timestep outside the schedule means its end, as in diffusers.
        return len(self.timesteps) - 1

    def step(self, model_output: np.ndarray, timestep: float, sample: np.ndarray,
             rng: np.random.Generator | None = None) -> np.ndarray:
        index = self._ensure_step_index(timestep)
        sample = as_f32(sample)
        denoised = self._data_prediction(as_f32(model_output), sample, self.sigmas[index])
        self.model_outputs = [self.model_outputs[1], denoised]
        # Infinities are part of the arithmetic, as in torch: a final sigma of zero has
        # lambda = +inf, and Karras' last sigma equals a "sigma_min" final sigma (h = 0).
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            if self.lower_order_nums < 1 or self._first_order_final(index):
                previous = self._first_order_update(denoised, sample, index)
            else:
                previous = self._second_order_update(sample, index)
        self.lower_order_nums = min(self.lower_order_nums + 1, 2)
        self.step_index = index + 1
        return previous

    def _first_order_final(self, index: int) -> bool:
        """Whether the last step falls back to first order, which is more stable for few
        steps and exact for a final sigma of zero."""
        config = self.config
        count = len(self.timesteps)
        return index == count - 1 and (
            config["euler_at_final"]
            or (config["lower_order_final"] and count < 15)
            or config["final_sigmas_type"] == "zero")

    def _data_prediction(self, model_output: np.ndarray, sample: np.ndarray,
                         sigma: np.float32) -> np.ndarray:
        """DPM-Solver++ integrates the model's prediction of the clean sample."""
        prediction = self.config["prediction_type"]
        if prediction == "sample":
            return model_output
        alpha_t, sigma_t = vp_alpha_sigma(sigma)
        if prediction == "epsilon":
            return (sample - sigma_t * model_output) / alpha_t
        return alpha_t * sample - sigma_t * model_output

    def _first_order_update(self, denoised: np.ndarray, sample: np.ndarray,
                            index: int) -> np.ndarray:
        alpha_t, sigma_t, lambda_t = log_snr(self.sigmas[index + 1])
        _, sigma_s, lambda_s = log_snr(self.sigmas[index])
        h = lambda_t - lambda_s
        return (sigma_t / sigma_s) * sample - (alpha_t * (exp_f32(-h) - f32(1.0))) * denoised

    def _second_order_update(self, sample: np.ndarray, index: int) -> np.ndarray:
        alpha_t, sigma_t, lambda_t = log_snr(self.sigmas[index + 1])
        _, sigma_s0, lambda_s0 = log_snr(self.sigmas[index])
        _, _, lambda_s1 = log_snr(self.sigmas[index - 1])
        previous_denoised, denoised = self.model_outputs
        h, h_0 = lambda_t - lambda_s0, lambda_s0 - lambda_s1
        r0 = h_0 / h
        d1 = (f32(1.0) / r0) * (denoised - previous_denoised)
        decay = alpha_t * (exp_f32(-h) - f32(1.0))
        result = (sigma_t / sigma_s0) * sample - decay * denoised
        if self.config["solver_type"] == "midpoint":
            return result - (f32(0.5) * decay) * d1
        return result + (alpha_t * ((exp_f32(-h) - f32(1.0)) / h + f32(1.0))) * d1

    def add_noise(self, original: np.ndarray, noise: np.ndarray, timestep: float) -> np.ndarray:
        alpha_t, sigma_t = vp_alpha_sigma(self.sigmas[self._noise_index(timestep)])
        return alpha_t * as_f32(original) + sigma_t * as_f32(noise)
