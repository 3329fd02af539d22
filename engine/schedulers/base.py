"""What every scheduler shares: the noise schedule, timestep spacing, sigma lists, the step counter.

Each scheduler follows its diffusers namesake step for step. diffusers computes its tables
with torch in float32 and its step coefficients as 0-d float32 tensors, so the helpers here
do the same sums in the same order and precision (float64 only where diffusers itself uses
numpy float64). What is left is rounding: torch's CPU float32 sqrt, log and exp are not
always correctly rounded (one unit in the last place off for about 15%, 7% and 1% of inputs),
numpy's sqrt and our float64-then-round log and exp are, so a trajectory agrees with
diffusers to about 1e-6 rather than bit for bit (flow Euler, which takes no roots, is exact).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from engine.errors import BadRequest

f32 = np.float32

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
TIMESTEP_SPACINGS = ("linspace", "leading", "trailing")
FINAL_SIGMAS_TYPES = ("zero", "sigma_min")


# --- Numbers computed the way torch computes them -----------------------------------------

# The training noise schedule every diffusers DDPM-family scheduler defaults to.
BETA_SCHEDULE_DEFAULTS: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "trained_betas": None,
}

def torch_linspace_f32(start: float, end: float, count: int) -> np.ndarray:
    """``torch.linspace(start, end, count, dtype=torch.float32)``, bit for bit.

    torch fills the first half forwards from ``start`` and the second half backwards from
    ``end``, each element one fused multiply-add in float32 (as its x86-64 Linux builds do);
    a float64 multiply-add rounded once to float32 is that same fused operation here, because
    the float32 operands' exact sum fits in float64.
    """
    first, last = f32(start), f32(end)
    if count == 1:
        return np.array([first], dtype=f32)
    step = f32((last - first) / f32(count - 1))
    index = np.arange(count, dtype=np.float64)
    forwards = index * np.float64(step) + np.float64(first)
    backwards = (count - 1 - index) * -np.float64(step) + np.float64(last)
    return np.where(index < count // 2, forwards, backwards).astype(f32)


def cumprod_f32(values: np.ndarray) -> np.ndarray:
    """``torch.cumprod`` of a float32 CPU tensor: accumulated in float64, stored in float32."""
    return np.cumprod(values.astype(np.float64)).astype(f32)


def log_f32(value: np.floating | float) -> np.float32:
    """``torch.log`` of a 0-d float32 tensor (correctly rounded); log(0) is -inf, no error."""
    with np.errstate(divide="ignore"):
        return f32(np.log(np.float64(value)))


def exp_f32(value: np.floating | float) -> np.float32:
    """``torch.exp`` of a 0-d float32 tensor, correctly rounded; overflow is inf."""
    with np.errstate(over="ignore"):
        return f32(np.exp(np.float64(value)))


# --- The training noise schedule ----------------------------------------------------------

def cosine_betas(count: int, max_beta: float = 0.999) -> np.ndarray:
    """The "squaredcos_cap_v2" (GLIDE cosine) schedule, in float64 like diffusers, then float32."""
    def alpha_bar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = [min(1 - alpha_bar((i + 1) / count) / alpha_bar(i / count), max_beta)
             for i in range(count)]
    return np.array(betas, dtype=f32)


def rescale_zero_terminal_snr(betas: np.ndarray) -> np.ndarray:
    """Shift and scale sqrt(alphas_cumprod) so the last timestep is pure noise (zero SNR)."""
    root = np.sqrt(cumprod_f32(f32(1.0) - betas))
    first, last = root[0], root[-1]
    root = (root - last) * (first / (first - last))
    alphas_bar = root * root
    alphas = np.concatenate([alphas_bar[:1], alphas_bar[1:] / alphas_bar[:-1]])
    return f32(1.0) - alphas


def training_betas(config: Mapping[str, Any]) -> np.ndarray:
    """The betas a model was trained with, from the config's schedule, as float32."""
    count = int(config["num_train_timesteps"])
    if config.get("trained_betas") is not None:
        return np.asarray(config["trained_betas"], dtype=f32)
    schedule = config["beta_schedule"]
    if schedule == "linear":
        return torch_linspace_f32(config["beta_start"], config["beta_end"], count)
    if schedule == "scaled_linear":
        roots = torch_linspace_f32(config["beta_start"] ** 0.5, config["beta_end"] ** 0.5, count)
        return roots * roots
    if schedule == "squaredcos_cap_v2":
        return cosine_betas(count)
    raise BadRequest(f"The beta schedule '{schedule}' is not supported; "
                     f"use one of {', '.join(BETA_SCHEDULES)}.")


def alphas_cumprod(config: Mapping[str, Any]) -> np.ndarray:
    """Cumulative product of (1 - beta) over the training timesteps, float32."""
    betas = training_betas(config)
    rescale = config.get("rescale_betas_zero_snr", False)
    if rescale:
        betas = rescale_zero_terminal_snr(betas)
    cumulative = cumprod_f32(f32(1.0) - betas)
    if rescale:
        # Nearly zero rather than zero so the first sigma stays finite (as diffusers does).
        cumulative[-1] = 2.0**-24
    return cumulative


def training_sigmas(cumulative: np.ndarray) -> np.ndarray:
    """sqrt((1 - alpha_bar) / alpha_bar) per training timestep, float32, ascending in t."""
    return np.sqrt((f32(1.0) - cumulative) / cumulative)


# --- Inference timesteps and sigmas -------------------------------------------------------

def spaced_timesteps(spacing: str, count: int, num_train: int, steps_offset: int,
                     round_linspace: bool) -> np.ndarray:
    """The ``count`` training timesteps to visit, descending, as float64 (caller casts).

    The three spacings of "Common Diffusion Noise Schedules and Sample Steps are Flawed",
    table 2. Euler keeps linspace's fractional values; DDIM rounds them.
    """
    if spacing == "linspace":
        values = np.linspace(0, num_train - 1, count)
        if round_linspace:
            values = values.round()
        return values[::-1].copy()
    if spacing == "leading":
        ratio = num_train // count
        return (np.arange(0, count) * ratio).round()[::-1] + steps_offset
    if spacing == "trailing":
        return np.arange(num_train, 0, -num_train / count).round() - 1
    raise BadRequest(f"The timestep spacing '{spacing}' is not supported; "
                     f"use one of {', '.join(TIMESTEP_SPACINGS)}.")


def interpolate_sigmas(timesteps: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    """Sigma at each (possibly fractional) timestep, linearly interpolated, float64."""
    return np.interp(timesteps, np.arange(0, len(sigmas)), sigmas)


def karras_sigmas(sigma_min: float, sigma_max: float, count: int) -> np.ndarray:
    """Karras et al. (2022) schedule: evenly spaced in sigma^(1/rho), rho = 7, float64."""
    rho = 7.0
    ramp = np.linspace(0, 1, count)
    min_inv_rho = sigma_min ** (1 / rho)
    max_inv_rho = sigma_max ** (1 / rho)
    return (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho


def exponential_sigmas(sigma_min: float, sigma_max: float, count: int) -> np.ndarray:
    """Evenly spaced in log sigma, float64."""
    return np.exp(np.linspace(math.log(sigma_max), math.log(sigma_min), count))


def sigma_to_timestep(sigma: np.ndarray | float, log_sigmas: np.ndarray) -> np.ndarray:
    """The fractional training timestep whose sigma is ``sigma`` (log-linear interpolation)."""
    log_sigma = np.log(np.maximum(sigma, 1e-10))
    distances = log_sigma - log_sigmas[:, np.newaxis]
    low = np.cumsum(distances >= 0, axis=0).argmax(axis=0).clip(max=log_sigmas.shape[0] - 2)
    high = low + 1
    weight = (log_sigmas[low] - log_sigma) / (log_sigmas[low] - log_sigmas[high])
    weight = np.clip(weight, 0, 1)
    return ((1 - weight) * low + weight * high).reshape(np.shape(sigma))


def final_sigma(final_sigmas_type: str, cumulative: np.ndarray) -> float | np.float32:
    """The sigma after the last step: zero (a clean image) or the smallest training sigma."""
    if final_sigmas_type == "zero":
        return 0
    if final_sigmas_type == "sigma_min":
        return np.sqrt((f32(1.0) - cumulative[0]) / cumulative[0])
    raise BadRequest(f"The final sigma type '{final_sigmas_type}' is not supported; "
                     f"use one of {', '.join(FINAL_SIGMAS_TYPES)}.")


def vp_alpha_sigma(sigma: np.float32) -> tuple[np.float32, np.float32]:
    """Variance-preserving (alpha_t, sigma_t) for a noise level sigma, as diffusers rounds them."""
    alpha = f32(1.0) / np.sqrt(sigma * sigma + f32(1.0))
    return alpha, sigma * alpha


# --- Configuration ------------------------------------------------------------------------

def resolve_config(defaults: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """diffusers' ``from_config``: the keys this scheduler knows, its own defaults for the rest.

    Keys meant for another scheduler class (SD 1.5 ships a PNDM config) are ignored.
    """
    return {key: config.get(key, default) for key, default in defaults.items()}


def check_choice(config: Mapping[str, Any], key: str, allowed: tuple[str, ...],
                 scheduler: str) -> None:
    if config[key] not in allowed:
        raise BadRequest(f"The {scheduler} scheduler does not support {key} "
                         f"'{config[key]}'; use one of {', '.join(allowed)}.")


def check_one_sigma_shape(config: Mapping[str, Any], scheduler: str) -> None:
    if config.get("use_karras_sigmas") and config.get("use_exponential_sigmas"):
        raise BadRequest(f"The {scheduler} scheduler can use Karras or exponential sigmas, "
                         f"not both.")


def refuse_options(config: Mapping[str, Any], options: tuple[str, ...], scheduler: str) -> None:
    """Refuse diffusers options we do not implement rather than silently ignoring them."""
    for option in options:
        if config.get(option):
            raise BadRequest(f"The {scheduler} scheduler in Easel does not support the "
                             f"'{option}' setting of this model's scheduler configuration.")


def check_steps(num_inference_steps: int) -> int:
    if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps,
                                                               int | np.integer):
        raise BadRequest(f"Steps must be a whole number (got {num_inference_steps!r}).")
    if num_inference_steps < 1:
        raise BadRequest(f"Steps must be at least 1 (got {num_inference_steps}).")
    return int(num_inference_steps)


def as_f32(array: np.ndarray) -> np.ndarray:
    return np.asarray(array, dtype=f32)


# --- The scheduler contract ---------------------------------------------------------------

class Scheduler:
    """The contract every scheduler keeps (diffusers' own, in numpy).

    Call ``set_timesteps`` first; then, for each value of ``timesteps`` in order,
    ``scale_model_input`` before the model and ``step`` after it. The position in the
    schedule is found from the first timestep seen, like diffusers; ``set_begin_index``
    starts partway instead (image to image).
    """

    name: ClassVar[str]
    # The keyword arguments of the diffusers class's __init__ with its defaults.
    DEFAULTS: ClassVar[dict[str, Any]]

    timesteps: np.ndarray
    init_noise_sigma: float

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        self.config = resolve_config(self.DEFAULTS, config or {})
        self.num_inference_steps: int | None = None
        self.step_index: int | None = None
        self.begin_index: int | None = None

    def set_timesteps(self, num_inference_steps: int) -> None:
        raise NotImplementedError

    def scale_model_input(self, sample: np.ndarray, timestep: float) -> np.ndarray:
        """Scale the sample the model sees; identity unless the scheduler works in sigma space."""
        return as_f32(sample)

    def step(self, model_output: np.ndarray, timestep: float, sample: np.ndarray,
             rng: np.random.Generator | None = None) -> np.ndarray:
        """The sample one step less noisy. ``rng`` gives the noise of stochastic samplers."""
        raise NotImplementedError

    def add_noise(self, original: np.ndarray, noise: np.ndarray, timestep: float) -> np.ndarray:
        """``original`` noised to the level of ``timestep`` (to start image to image there)."""
        raise NotImplementedError

    def set_begin_index(self, begin_index: int = 0) -> None:
        """Start at ``timesteps[begin_index]`` (call after ``set_timesteps``)."""
        self.begin_index = begin_index

    def _reset_position(self) -> None:
        self.step_index = None
        self.begin_index = None

    def _require_timesteps(self) -> None:
        if self.num_inference_steps is None:
            raise ValueError(f"Call set_timesteps before using the {self.name} scheduler.")

    def index_for_timestep(self, timestep: float) -> int:
        """Where ``timestep`` sits in the schedule.

        When a timestep appears twice the second is taken, as in diffusers, so a schedule
        entered partway does not skip a sigma.
        """
        matches = np.flatnonzero(self.timesteps == timestep)
        if len(matches) == 0:
            return self._index_of_unknown_timestep(timestep)
        return int(matches[1] if len(matches) > 1 else matches[0])

    def _index_of_unknown_timestep(self, timestep: float) -> int:
        raise ValueError(f"The timestep {timestep} is not in the {self.name} schedule.")

    def _start_index(self, timestep: float) -> int:
        """Where a run entered at ``timestep`` begins.

        The first timestep always means the start. diffusers' lookup would take the second
        copy when the schedule begins with a repeated timestep (DPM++ Karras on a cosine
        schedule), overrun the sigmas at the last step and fail; elsewhere the two agree.
        """
        if self.timesteps[0] == timestep:
            return 0
        return self.index_for_timestep(timestep)

    def _ensure_step_index(self, timestep: float) -> int:
        self._require_timesteps()
        if self.step_index is None:
            self.step_index = (self._start_index(timestep) if self.begin_index is None
                               else self.begin_index)
        return self.step_index

    def _noise_index(self, timestep: float) -> int:
        """The schedule position ``add_noise`` uses: diffusers' rule for img2img and inpainting."""
        self._require_timesteps()
        if self.begin_index is None:
            return self._start_index(timestep)
        return self.step_index if self.step_index is not None else self.begin_index


class SigmaScheduler(Scheduler):
    """Schedulers that step through a list of sigmas (Euler, Euler ancestral, DPM-Solver)."""

    sigmas: np.ndarray

    def add_noise(self, original: np.ndarray, noise: np.ndarray, timestep: float) -> np.ndarray:
        sigma = self.sigmas[self._noise_index(timestep)]
        return as_f32(original) + as_f32(noise) * sigma


def draw_noise(rng: np.random.Generator | None, shape: tuple[int, ...],
               scheduler: str) -> np.ndarray:
    """Per-step noise from the image's own generator, so a seed remakes the same image."""
    if rng is None:
        raise ValueError(f"The {scheduler} scheduler needs the image's random generator.")
    return rng.standard_normal(shape, dtype=f32)
