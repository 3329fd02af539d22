"""Our numpy schedulers against their diffusers namesakes (torch CPU, float32), step by step.

Each trajectory starts from the same latents and runs a fake model (a fixed nonlinear function
of the sample and the timestep) through both. Every intermediate sample must agree within
rtol = atol = 1e-5 (atol no less than 4 float32 ulps of that step's largest value);
timesteps must be equal (values and dtype); sigmas and init_noise_sigma within rtol 1e-6
(torch's float32 sqrt is not always correctly rounded, numpy's is).
Stochastic samplers draw their noise from our generator; diffusers is made to draw the very
same arrays, in the same order, from a mirror generator, and both generators must end in the
same state.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

from engine.errors import BadRequest
from engine.schedulers import SCHEDULER_NAMES, a1111_sampler_name, make_scheduler

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

# diffusers passes torch tensors to np.array; numpy 2 warns about it, nothing we can act on.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

RTOL = ATOL = 1e-5
# Tables (sigmas, init_noise_sigma) differ only by torch's float32 sqrt rounding (<= 1 ulp).
TABLE_RTOL = 1e-6
# Cancellation in a step keeps the rounding of its largest terms: see sample_tolerance.
FLOAT32_ULPS = 4
SHAPE = (1, 4, 8, 8)
SEED = 1234
STEP_COUNTS = (1, 2, 10, 25)

# The scheduler_config.json of Stable Diffusion 1.5, which is a PNDM config.
SD15 = {"_class_name": "PNDMScheduler", "beta_start": 0.00085, "beta_end": 0.012,
        "beta_schedule": "scaled_linear", "clip_sample": False, "num_train_timesteps": 1000,
        "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1,
        "trained_betas": None}
# The same without clip_sample, so DDIM falls back to its own default (clipping on).
SD15_NO_CLIP_KEY = {key: value for key, value in SD15.items() if key != "clip_sample"}
# Stable Diffusion 2.x (768, v-prediction) ships a DDIM config.
SD2_V = {**SD15, "_class_name": "DDIMScheduler", "prediction_type": "v_prediction"}
SD2_V_LEADING = {**SD2_V, "timestep_spacing": "leading"}
SD2_V_TRAILING = {**SD2_V, "timestep_spacing": "trailing"}
ZERO_SNR = {**SD2_V_TRAILING, "rescale_betas_zero_snr": True}
DEFAULTS: dict = {}  # every key from the target class's defaults (linear betas)
EULER_KARRAS = {**SD15, "_class_name": "EulerDiscreteScheduler", "use_karras_sigmas": True}
COSINE_SIGMA_MIN = {"beta_schedule": "squaredcos_cap_v2", "final_sigmas_type": "sigma_min",
                    "timestep_spacing": "trailing"}
DPM_HEUN_CLIPPED = {"beta_schedule": "squaredcos_cap_v2", "solver_type": "heun",
                    "lambda_min_clipped": -5.1}
DDIM_ETA = {**SD15, "eta": 0.5}

FLOW = {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000}
FLOW_SHIFT_1 = {**FLOW, "shift": 1.0}
FLOW_SHIFT_3 = {**FLOW, "shift": 3.0}
FLOW_DYNAMIC = {**FLOW, "use_dynamic_shifting": True, "shift_terminal": 0.02}
FLOW_STOCHASTIC = {**FLOW_SHIFT_3, "stochastic_sampling": True}

CASES = {
    "euler": [SD15, SD2_V_LEADING, SD2_V_TRAILING, ZERO_SNR, DEFAULTS, EULER_KARRAS,
              COSINE_SIGMA_MIN],
    "euler_ancestral": [SD15, SD2_V_LEADING, SD2_V_TRAILING, ZERO_SNR, DEFAULTS],
    "dpmpp_2m": [SD15, SD2_V_LEADING, SD2_V_TRAILING, ZERO_SNR, DEFAULTS, COSINE_SIGMA_MIN,
                 DPM_HEUN_CLIPPED],
    "dpmpp_2m_karras": [SD15, SD2_V_LEADING, SD2_V_TRAILING, ZERO_SNR, DEFAULTS,
                        COSINE_SIGMA_MIN, DPM_HEUN_CLIPPED],
    "ddim": [SD15, SD15_NO_CLIP_KEY, SD2_V_LEADING, SD2_V_TRAILING, ZERO_SNR, DEFAULTS,
             DDIM_ETA],
    "flow_euler": [FLOW_SHIFT_1, FLOW_SHIFT_3, FLOW_DYNAMIC, FLOW_STOCHASTIC],
}
CONFIG_LABELS = {id(config): label for label, config in [
    ("sd15", SD15), ("sd15_no_clip_key", SD15_NO_CLIP_KEY), ("sd2v_leading", SD2_V_LEADING),
    ("sd2v_trailing", SD2_V_TRAILING), ("zero_snr", ZERO_SNR), ("defaults", DEFAULTS),
    ("euler_karras", EULER_KARRAS), ("cosine_sigma_min", COSINE_SIGMA_MIN),
    ("heun_clipped", DPM_HEUN_CLIPPED), ("eta", DDIM_ETA), ("shift1", FLOW_SHIFT_1),
    ("shift3", FLOW_SHIFT_3), ("dynamic", FLOW_DYNAMIC), ("stochastic", FLOW_STOCHASTIC)]}
MU = 0.8  # the dynamic-shift parameter handed to both flow schedulers
# Cases diffusers itself cannot run: one step of a schedule stretched to shift_terminal.
NOT_IN_DIFFUSERS = {("flow_euler", id(FLOW_DYNAMIC), 1)}

TRAJECTORIES = [
    pytest.param(name, config, steps, id=f"{name}-{CONFIG_LABELS[id(config)]}-{steps}")
    for name in SCHEDULER_NAMES for config in CASES[name] for steps in STEP_COUNTS
    if (name, id(config), steps) not in NOT_IN_DIFFUSERS
]


def sample_tolerance(config: dict, reference: np.ndarray) -> dict:
    """rtol = atol = 1e-5, widened to a few float32 ulps of the step's largest value.

    A multistep update sums terms as large as the largest sample value; where they cancel, an
    element keeps their rounding error (a 22.23 among values of 3.4e4 differed by 3e-4, a
    tenth of one ulp at 3.4e4, and which way it rounds depends on the CPU's SIMD kernels in
    numpy and torch). A wrong coefficient would move every element by far more than that.
    With zero terminal SNR the first step starts at sigma 4096 (or divides by
    sqrt(alpha_bar) = 1/4096), so a single float32 rounding difference in a table (torch's
    sqrt) becomes 4096 x 2^-24 x |x| in the sample: diffusers' own float32 result is no more
    precise than that.
    """
    rounding = FLOAT32_ULPS * np.finfo(np.float32).eps * float(np.abs(reference).max())
    if config.get("rescale_betas_zero_snr"):
        return {"rtol": RTOL, "atol": max(2e-3, rounding)}
    return {"rtol": RTOL, "atol": max(ATOL, rounding)}


def table_rtol(config: dict) -> float:
    """Zero-SNR rescaling takes 1 - alpha_bar of numbers near 1, which turns a one-ulp sqrt
    difference into a few parts in a million of a small sigma."""
    return 1e-5 if config.get("rescale_betas_zero_snr") else TABLE_RTOL


def reference_scheduler(name: str, config: dict):
    """The diffusers scheduler our ``name`` stands for, built the way a pipeline builds it."""
    dpm = {"algorithm_type": "dpmsolver++", "solver_order": 2}
    recipes = {
        "euler": (diffusers.EulerDiscreteScheduler, {}),
        "euler_ancestral": (diffusers.EulerAncestralDiscreteScheduler, {}),
        "dpmpp_2m": (diffusers.DPMSolverMultistepScheduler, {**dpm, "use_karras_sigmas": False}),
        "dpmpp_2m_karras": (diffusers.DPMSolverMultistepScheduler,
                            {**dpm, "use_karras_sigmas": True}),
        "ddim": (diffusers.DDIMScheduler, {}),
        "flow_euler": (diffusers.FlowMatchEulerDiscreteScheduler, {}),
    }
    scheduler_class, overrides = recipes[name]
    known = {key: value for key, value in config.items() if key != "eta"}  # a step argument
    return scheduler_class.from_config({**known, **overrides})


def fake_model(sample: np.ndarray, timestep, weights: np.ndarray) -> np.ndarray:
    """A stand-in UNet: nonlinear in the sample, varying with the timestep."""
    phase = np.float32(np.cos(float(timestep) / 300.0))
    return (np.float32(0.8) * np.tanh(sample) + phase * weights).astype(np.float32)


def model_weights(seed: int = 99) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(SHAPE, dtype=np.float32)


def set_steps(scheduler, steps: int, config: dict) -> None:
    if config.get("use_dynamic_shifting"):
        scheduler.set_timesteps(steps, mu=MU)
    else:
        scheduler.set_timesteps(steps)


def denoise_ours(scheduler, latents: np.ndarray, timesteps, weights: np.ndarray,
                 rng: np.random.Generator) -> list[np.ndarray]:
    """The pipeline's loop with our scheduler: every sample, the first included."""
    trajectory = [latents]
    for timestep in timesteps:
        model_input = scheduler.scale_model_input(latents, timestep)
        output = fake_model(model_input, timestep, weights)
        latents = scheduler.step(output, timestep, latents, rng)
        assert latents.dtype == np.float32
        trajectory.append(latents)
    return trajectory


def run_ours(name: str, config: dict, steps: int, weights: np.ndarray):
    scheduler = make_scheduler(name, config)
    set_steps(scheduler, steps, config)
    rng = np.random.default_rng(SEED)
    latents = rng.standard_normal(SHAPE, dtype=np.float32) * np.float32(scheduler.init_noise_sigma)
    return scheduler, denoise_ours(scheduler, latents, scheduler.timesteps, weights, rng), rng


def draw_from(mirror: np.random.Generator):
    """A replacement for diffusers' randn_tensor that hands out our generator's noise."""
    def randn_tensor(shape, generator=None, device=None, dtype=None, layout=None):
        return torch.from_numpy(mirror.standard_normal(tuple(shape), dtype=np.float32))
    return randn_tensor


def run_diffusers(name: str, config: dict, steps: int, weights: np.ndarray, monkeypatch):
    scheduler = reference_scheduler(name, config)
    mirror = np.random.default_rng(SEED)
    monkeypatch.setattr(sys.modules[type(scheduler).__module__], "randn_tensor",
                        draw_from(mirror))
    if config.get("use_dynamic_shifting"):
        scheduler.set_timesteps(steps, mu=MU)
    else:
        scheduler.set_timesteps(steps)
    if len(scheduler.timesteps) > 1 and scheduler.timesteps[0] == scheduler.timesteps[1]:
        # diffusers would start at the second copy of a repeated first timestep and overrun
        # its sigmas at the last step; we start at the first (see Scheduler._start_index).
        scheduler.set_begin_index(0)
    start = getattr(scheduler, "init_noise_sigma", 1.0)  # the flow scheduler has none
    latents = torch.from_numpy(mirror.standard_normal(SHAPE, dtype=np.float32)) * start
    step_options = {"eta": config["eta"]} if "eta" in config else {}
    trajectory = denoise_diffusers(scheduler, latents, scheduler.timesteps, weights, step_options)
    return scheduler, trajectory, mirror


def denoise_diffusers(scheduler, latents, timesteps, weights: np.ndarray,
                      step_options: dict | None = None) -> list[np.ndarray]:
    """The diffusers pipelines' loop (SD3's flow pipeline does not scale the model input)."""
    trajectory = [latents.numpy()]
    for timestep in timesteps:
        model_input = (scheduler.scale_model_input(latents, timestep)
                       if hasattr(scheduler, "scale_model_input") else latents)
        output = torch.from_numpy(fake_model(model_input.numpy(), timestep, weights))
        latents = scheduler.step(output, timestep, latents, **(step_options or {})).prev_sample
        trajectory.append(latents.numpy())
    return trajectory


@pytest.mark.parametrize(("name", "config", "steps"), TRAJECTORIES)
def test_trajectory_matches_diffusers(name, config, steps, monkeypatch):
    weights = model_weights()
    ours, our_path, rng = run_ours(name, config, steps, weights)
    theirs, their_path, mirror = run_diffusers(name, config, steps, weights, monkeypatch)

    their_timesteps = theirs.timesteps.numpy()
    assert ours.timesteps.dtype == their_timesteps.dtype
    if their_timesteps.dtype == np.int64:
        np.testing.assert_array_equal(ours.timesteps, their_timesteps)
    else:  # fractional timesteps derived from sigmas inherit the sqrt rounding
        np.testing.assert_allclose(ours.timesteps, their_timesteps, rtol=TABLE_RTOL, atol=0)
    their_start = float(getattr(theirs, "init_noise_sigma", 1.0))  # flow has none: 1
    assert ours.init_noise_sigma == pytest.approx(their_start, rel=TABLE_RTOL)
    if hasattr(ours, "sigmas"):
        np.testing.assert_allclose(ours.sigmas, theirs.sigmas.numpy(), rtol=table_rtol(config),
                                   atol=0)
    assert len(our_path) == len(their_path)
    for index, (mine, reference) in enumerate(zip(our_path, their_path, strict=True)):
        np.testing.assert_allclose(mine, reference, **sample_tolerance(config, reference),
                                   err_msg=f"sample after step {index}")
    # Same draws in the same order: stochastic or not, the generators end level.
    assert rng.bit_generator.state == mirror.bit_generator.state


@pytest.mark.parametrize("name", SCHEDULER_NAMES)
def test_starting_partway_matches_diffusers(name, monkeypatch):
    """Image to image: noise a clean sample to the level of step 4 of 10, denoise from there."""
    config = FLOW_SHIFT_3 if name == "flow_euler" else SD15
    begin, steps = 4, 10
    image = model_weights(seed=5)
    noise = model_weights(seed=6)
    weights = model_weights()

    ours = make_scheduler(name, config)
    ours.set_timesteps(steps)
    ours.set_begin_index(begin)
    latents = ours.add_noise(image, noise, ours.timesteps[begin])
    our_path = denoise_ours(ours, latents, ours.timesteps[begin:], weights,
                            np.random.default_rng(0))

    theirs = reference_scheduler(name, config)
    monkeypatch.setattr(sys.modules[type(theirs).__module__], "randn_tensor",
                        draw_from(np.random.default_rng(0)))
    theirs.set_timesteps(steps)
    if hasattr(theirs, "set_begin_index"):  # DDIM finds its place from the timestep alone
        theirs.set_begin_index(begin)
    start = theirs.timesteps[begin : begin + 1]
    image, noise = torch.from_numpy(image), torch.from_numpy(noise)
    if name == "flow_euler":  # diffusers calls it scale_noise there, arguments reordered
        latents = theirs.scale_noise(image, start, noise)
    else:
        latents = theirs.add_noise(image, noise, start)
    their_path = denoise_diffusers(theirs, latents, theirs.timesteps[begin:], weights)

    for index, (mine, reference) in enumerate(zip(our_path, their_path, strict=True)):
        np.testing.assert_allclose(mine, reference, **sample_tolerance({}, reference),
                                   err_msg=f"sample after step {index}")


@pytest.mark.parametrize("name", SCHEDULER_NAMES)
def test_result_depends_on_the_model_output(name):
    """A scheduler that ignored the model (or returned a constant) would pass nothing above."""
    config = FLOW_SHIFT_3 if name == "flow_euler" else SD15
    finals = []
    for weights in (model_weights(seed=1), model_weights(seed=2)):
        _, path, _ = run_ours(name, config, 10, weights)
        finals.append(path[-1])
    assert np.abs(finals[0] - finals[1]).max() > 1e-2


def test_unknown_scheduler_is_refused_with_the_valid_names():
    with pytest.raises(BadRequest) as error:
        make_scheduler("heun", SD15)
    message = str(error.value)
    assert "heun" in message
    assert all(name in message for name in SCHEDULER_NAMES)
    with pytest.raises(BadRequest):
        a1111_sampler_name("heun")


@pytest.mark.parametrize("name", SCHEDULER_NAMES)
@pytest.mark.parametrize("steps", [0, -3])
def test_fewer_than_one_step_is_refused(name, steps):
    scheduler = make_scheduler(name, FLOW if name == "flow_euler" else SD15)
    with pytest.raises(BadRequest, match="at least 1"):
        scheduler.set_timesteps(steps)


def test_ddim_cannot_take_more_steps_than_the_model_was_trained_with():
    with pytest.raises(BadRequest, match="at most 1000 steps"):
        make_scheduler("ddim", SD15).set_timesteps(1001)


def test_names_and_automatic1111_names():
    assert SCHEDULER_NAMES == ("euler", "euler_ancestral", "dpmpp_2m", "dpmpp_2m_karras",
                               "ddim", "flow_euler")
    assert [a1111_sampler_name(name) for name in SCHEDULER_NAMES] == [
        "Euler", "Euler a", "DPM++ 2M", "DPM++ 2M Karras", "DDIM", "Euler"]


def test_the_name_fixes_the_dpm_solver_settings():
    """A model's own DPM config (say third order, SDE) still gives DPM++ 2M by that name."""
    config = {**SD15, "_class_name": "DPMSolverMultistepScheduler", "solver_order": 3,
              "algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": True}
    plain = make_scheduler("dpmpp_2m", config)
    assert plain.config["solver_order"] == 2
    assert plain.config["algorithm_type"] == "dpmsolver++"
    assert not plain.config["use_karras_sigmas"]
    assert make_scheduler("dpmpp_2m_karras", SD15).config["use_karras_sigmas"]


@pytest.mark.parametrize(("name", "config"), [
    ("ddim", {"thresholding": True}),
    ("dpmpp_2m", {"variance_type": "learned_range"}),
    ("euler", {"use_beta_sigmas": True}),
    ("euler", {"prediction_type": "flow"}),
    ("euler_ancestral", {"beta_schedule": "sigmoid"}),
    ("ddim", {"timestep_spacing": "uniform"}),
])
def test_unsupported_settings_are_refused_not_ignored(name, config):
    with pytest.raises(BadRequest):
        make_scheduler(name, config).set_timesteps(10)


def test_one_step_of_a_stretched_flow_schedule_is_refused():
    scheduler = make_scheduler("flow_euler", {**FLOW_SHIFT_3, "shift_terminal": 0.02})
    with pytest.raises(BadRequest, match="at least 2 steps"):
        scheduler.set_timesteps(1)


def test_dynamic_shifting_needs_the_image_size():
    scheduler = make_scheduler("flow_euler", FLOW_DYNAMIC)
    with pytest.raises(BadRequest, match="image size"):
        scheduler.set_timesteps(10)
    # mu runs linearly from base_shift at 256 latent tokens to max_shift at 4096.
    assert scheduler.image_shift(256) == pytest.approx(0.5)
    assert scheduler.image_shift(4096) == pytest.approx(1.15)
    scheduler.set_timesteps(10, mu=scheduler.image_shift(4096))
    assert len(scheduler.timesteps) == 10


def test_ancestral_noise_comes_from_the_generator():
    """Different seeds give different images; the same seed the same image."""
    def final(seed):
        scheduler = make_scheduler("euler_ancestral", SD15)
        scheduler.set_timesteps(5)
        rng = np.random.default_rng(seed)
        latents = rng.standard_normal(SHAPE, dtype=np.float32)
        for timestep in scheduler.timesteps:
            output = fake_model(scheduler.scale_model_input(latents, timestep), timestep,
                                model_weights())
            latents = scheduler.step(output, timestep, latents, rng)
        return latents

    np.testing.assert_array_equal(final(7), final(7))
    assert np.abs(final(7) - final(8)).max() > 1e-2
