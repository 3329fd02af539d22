"""Text-to-image speed on the CPU: Easel (ONNX Runtime) against diffusers (PyTorch eager, fp32).

Usage (after building and importing a real-size model, see tests/benchmarks/README.md)::

    EASEL_HOME=/tmp/easel-real .venv/bin/python tests/benchmarks/text_to_image_cpu.py \\
        --diffusers-folder /tmp/sd15-random --model sd15-random

Both sides make the same picture: same prompt, size, steps, guidance (7.5), the same initial
latents (drawn once with numpy and handed to both), and the same sampler, DPM++ 2M Karras
(``dpmpp_2m_karras`` here; ``DPMSolverMultistepScheduler(use_karras_sigmas=True,
algorithm_type="dpmsolver++")`` in diffusers, built from the model's own scheduler config).
Both use the same number of CPU threads. The script prints for each side the load time, one
untimed warm-up run, then the median of ``--runs`` timed runs (whole generation, and the
median time of one denoising step, i.e. one batch-2 UNet call plus the scheduler step),
the process's peak memory so far, and the ratios of the medians (Easel / diffusers: below 1
means Easel is faster). It also prints the largest pixel difference between the two pictures
as a sanity check that both ran the same job (random weights amplify tiny numeric
differences, so a few levels are expected, not 0).

Limits of this first version:
- both sides run in ONE process, Easel first; its sessions are released before diffusers
  loads, but the peak RSS printed after diffusers is the peak of the whole process;
- step times come from progress callbacks (the time between consecutive steps, so the first
  step, which also includes the prompt encoding, is left out);
- the machine may be shared; rerun and compare medians, not single runs;
- Easel's load uses the optimised-graph cache of ``EASEL_HOME`` when ``--providers`` asks for
  a cacheable provider list (``cpu``, the default here); the first load on a machine fills it.

This is a benchmark script, not a test; pytest does not collect ``tests/benchmarks``.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import statistics
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


@dataclass
class Timings:
    name: str
    load_s: float = 0.0
    warmup_s: float = 0.0
    runs_s: list[float] = field(default_factory=list)
    step_s: list[float] = field(default_factory=list)  # every step but each run's first
    peak_rss_gb: float = 0.0
    pixels: np.ndarray | None = None

    @property
    def median_run_s(self) -> float:
        return statistics.median(self.runs_s)

    @property
    def median_step_s(self) -> float:
        return statistics.median(self.step_s)


def peak_rss_gb() -> float:
    # ru_maxrss is in kilobytes on Linux (bytes on macOS).
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 1e9


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def initial_latents(arguments: argparse.Namespace) -> np.ndarray:
    shape = (1, 4, arguments.height // 8, arguments.width // 8)
    return np.random.default_rng(arguments.seed).standard_normal(shape, dtype=np.float32)


def step_durations(stamps: list[float]) -> list[float]:
    return [later - earlier for earlier, later in zip(stamps, stamps[1:], strict=False)]


def bench_easel(arguments: argparse.Namespace, latents: np.ndarray) -> Timings:
    from desktop import paths
    from desktop.model_store import ModelStore
    from engine.model import load_model
    from engine.pipelines.text_to_image import TextToImagePipeline
    from engine.request import TextToImageRequest
    from engine.runtime import RuntimeOptions, clear_sessions

    timings = Timings("Easel (ONNX Runtime)")
    folder = arguments.onnx_folder or ModelStore(paths.models_dir()).path_of(arguments.model)
    providers = tuple(name for name in arguments.providers.split(",") if name)
    options = RuntimeOptions(providers=providers, cpu_threads=arguments.threads,
                             optimized_cache=paths.optimized_graphs_dir())
    started = time.perf_counter()
    model = load_model(folder, options)
    for component in ("text_encoder", "unet", "vae_decoder"):
        getattr(model, component)  # opens the session
    timings.load_s = time.perf_counter() - started
    cached = model.unet.loaded_from != model.unet.path
    print(f"  Easel: loaded {folder} in {timings.load_s:.1f} s on "
          f"{model.unet.device.summary}; UNet from "
          f"{'the optimised-graph cache' if cached else 'the model folder'}", flush=True)
    pipeline = TextToImagePipeline(model)
    request = TextToImageRequest(
        arguments.prompt, width=arguments.width, height=arguments.height,
        steps=arguments.steps, guidance=arguments.guidance, scheduler="dpmpp_2m_karras",
        seed=arguments.seed, latents=latents)

    def run() -> tuple[float, list[float], np.ndarray]:
        stamps: list[float] = []
        begun = time.perf_counter()
        result = pipeline(request, on_progress=lambda _: stamps.append(time.perf_counter()))
        return time.perf_counter() - begun, step_durations(stamps), result.images[0].pixels

    measure(timings, "Easel", run, arguments.runs)
    clear_sessions()  # the model and pipeline hold no sessions themselves
    gc.collect()
    return timings


def bench_diffusers(arguments: argparse.Namespace, latents: np.ndarray) -> Timings:
    import torch
    import transformers
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    timings = Timings("diffusers (PyTorch eager fp32)")
    torch.set_num_threads(arguments.threads or cpu_count())
    started = time.perf_counter()
    with warnings.catch_warnings():  # newer diffusers prefer dtype= over torch_dtype=
        warnings.simplefilter("ignore", FutureWarning)
        pipe = StableDiffusionPipeline.from_pretrained(
            arguments.diffusers_folder, torch_dtype=torch.float32, safety_checker=None,
            requires_safety_checker=False, local_files_only=True)
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(
        pipe.scheduler.config, use_karras_sigmas=True, algorithm_type="dpmsolver++",
        solver_order=2)
    pipe.set_progress_bar_config(disable=True)
    timings.load_s = time.perf_counter() - started
    print(f"  diffusers: loaded in {timings.load_s:.1f} s with {torch.get_num_threads()} "
          f"threads (torch {torch.__version__})", flush=True)

    def run() -> tuple[float, list[float], np.ndarray]:
        stamps: list[float] = []

        def on_step_end(_pipe, _step, _timestep, callback_kwargs):
            stamps.append(time.perf_counter())
            return callback_kwargs

        begun = time.perf_counter()
        output = pipe(
            arguments.prompt, height=arguments.height, width=arguments.width,
            num_inference_steps=arguments.steps, guidance_scale=arguments.guidance,
            latents=torch.from_numpy(latents.copy()), output_type="np",
            callback_on_step_end=on_step_end)
        seconds = time.perf_counter() - begun
        pixels = np.round(output.images[0] * 255).clip(0, 255).astype(np.uint8)
        return seconds, step_durations(stamps), pixels

    measure(timings, "diffusers", run, arguments.runs)
    return timings


def measure(timings: Timings, label: str, run, runs: int) -> None:
    """One warm-up run, then ``runs`` timed runs, recorded in ``timings``."""
    timings.warmup_s, _, _ = run()
    print(f"  {label}: warm-up run {timings.warmup_s:.1f} s", flush=True)
    for number in range(runs):
        seconds, steps, timings.pixels = run()
        timings.runs_s.append(seconds)
        timings.step_s.extend(steps)
        print(f"  {label}: run {number + 1}: {seconds:.2f} s, "
              f"median step {statistics.median(steps):.3f} s", flush=True)
    timings.peak_rss_gb = peak_rss_gb()


def report(results: list[Timings], arguments: argparse.Namespace) -> None:
    print()
    print(f"{arguments.width}x{arguments.height}, {arguments.steps} steps, guidance "
          f"{arguments.guidance}, DPM++ 2M Karras, {arguments.threads or cpu_count()} threads, "
          f"{arguments.runs} timed runs each (medians)")
    print(f"{'':32} {'load s':>8} {'warm-up s':>10} {'run s':>8} {'step s':>8} "
          f"{'peak RSS GB':>12}")
    for timings in results:
        print(f"{timings.name:32} {timings.load_s:8.1f} {timings.warmup_s:10.2f} "
              f"{timings.median_run_s:8.2f} {timings.median_step_s:8.3f} "
              f"{timings.peak_rss_gb:12.2f}")
    if len(results) == 2:
        ours, theirs = results
        print(f"ratio Easel / diffusers: whole run {ours.median_run_s / theirs.median_run_s:.2f}, "
              f"one step {ours.median_step_s / theirs.median_step_s:.2f}")
        difference = np.abs(ours.pixels.astype(np.int16) - theirs.pixels.astype(np.int16))
        print(f"largest pixel difference between the two pictures: {difference.max()}/255 "
              f"(mean {difference.mean():.3f})")


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--diffusers-folder", type=Path,
                        help="the diffusers folder the model was imported from")
    parser.add_argument("--model", help="name of the imported model in EASEL_HOME")
    parser.add_argument("--onnx-folder", type=Path,
                        help="an installed Easel model folder (instead of --model)")
    parser.add_argument("--prompt", default="a test")
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--runs", type=int, default=3, help="timed runs per side (default 3)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: all cores)")
    parser.add_argument("--providers", default="cpu",
                        help="Easel's provider list (default cpu)")
    parser.add_argument("--skip-diffusers", action="store_true")
    parser.add_argument("--skip-easel", action="store_true")
    arguments = parser.parse_args(argv)
    if not arguments.skip_easel and not (arguments.model or arguments.onnx_folder):
        parser.error("give --model NAME (imported in EASEL_HOME) or --onnx-folder PATH")
    if not arguments.skip_diffusers and arguments.diffusers_folder is None:
        parser.error("give --diffusers-folder PATH (or --skip-diffusers)")
    if arguments.runs < 1 or arguments.steps < 3:
        parser.error("use at least 1 run and 3 steps")
    return arguments


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    latents = initial_latents(arguments)
    results = []
    if not arguments.skip_easel:
        results.append(bench_easel(arguments, latents))
    if not arguments.skip_diffusers:
        results.append(bench_diffusers(arguments, latents))
    report(results, arguments)
    return 0


if __name__ == "__main__":
    sys.exit(main())
