"""Text-to-image speed on an NVIDIA GPU: Easel (ONNX Runtime CUDA, fp16) against diffusers.

Usage: ``tests/benchmarks/gpu/device_run.sh`` runs this for each model on the device machine
(see tests/benchmarks/gpu/README.md); by hand, after building a model with
``python -m tests.benchmarks.gpu.models``::

    python tests/benchmarks/text_to_image_gpu.py --config sd15 \\
        --diffusers-folder M/diffusers --onnx-folder M/easel --cache M/cache \\
        --results results.json

Configurations (issue 20): ``sd15`` SD 1.5 at 512x512, 50 steps, guidance 7.5; ``turbo`` an SD
2.1-shaped turbo model at 512x512, 1 step, no guidance; ``sdxl`` SDXL at 1024x1024, 30 steps,
guidance 5. Guided models use DPM++ 2M Karras on both sides, the turbo model Euler as SD-Turbo
ships it. Both sides make the same picture from the same initial latents (drawn once with
numpy, handed to each side in a file), on the same card, one after the other.

Each side runs in a process of its own, so its GPU memory is its own:

- ``easel``: Easel's pipeline as the app runs it, ``RuntimeOptions(providers=("cuda",),
  precision="fp16", cuda_graph=True)``: fp16 graphs made once into the optimised-graph cache,
  IO binding, the UNet replaying CUDA graphs where the engine can (the engine falls back by
  itself and says why; recorded).
- ``diffusers``: ``StableDiffusionPipeline`` / ``StableDiffusionXLPipeline`` in float16,
  eager.
- ``easel-fp32``: Easel in fp32, one picture, to compare our fp16 picture with (mean and
  largest pixel difference out of 255); not timed against anything.
- ``diffusers-compile`` (``--torch-compile``): the UNet through ``torch.compile``
  (``--compile-mode``, default "reduce-overhead", fullgraph), when it runs there.
- ``easel-profile``: when a target is missed (or ``--profile always``), onnxruntime's profiler
  over a few UNet calls of Easel's own optimised graph, without CUDA graphs (a replay hides
  the nodes): time per operator type and, where the build records them, per GPU kernel.

Speed: model load (first load fills the optimised-graph cache: fp16 conversion and
optimisation), ``--warmups`` untimed pictures (CUDA graph capture, cuDNN's algorithm search,
torch's first calls), then ``--runs`` timed whole pictures (prompt encoding, denoising, VAE
decoding, pixels in host memory), and their median. The ratio is diffusers' median over
Easel's.

GPU memory: on both sides the most memory in use on the GPU while the process ran, less what
was in use before it started (NVML, sampled every 10 ms): this holds the CUDA context,
onnxruntime's arena and torch's cache alike. The torch side also reports
``torch.cuda.max_memory_allocated``, which counts only live tensors.

Targets (issue 20): SD 1.5 in at most 0.55 s; Easel at least 1.3x faster than diffusers eager
in the same run; the turbo picture in at most 35 ms.

``--dry-run`` runs every step on the CPU provider in fp32 (tiny models, 64x64, at most 3
steps): for checking the script here, not for numbers.

Results: one ``RESULT {json}`` line per configuration and a table on stdout; ``--results FILE``
keeps every configuration's record in one JSON file, rewritten after each side, so a run cut
short still leaves what it measured.

This is a benchmark script, not a test; pytest does not collect ``tests/benchmarks``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.benchmarks.machine import cpu_model  # noqa: E402
from tests.benchmarks.text_to_image_cpu import (  # noqa: E402
    step_durations,
    unet_inputs,
    vae_scale_factor,
)

TARGET_SPEED_UP = 1.3  # diffusers eager fp16 over Easel


@dataclass(frozen=True)
class Config:
    name: str
    label: str
    width: int
    height: int
    steps: int
    guidance: float
    scheduler: str  # Easel's name; the diffusers side builds its namesake
    runs: int
    max_seconds: float | None = None  # Easel's whole-picture target, where there is one
    is_sdxl: bool = False


CONFIGS: dict[str, Config] = {
    "sd15": Config("sd15", "SD 1.5", 512, 512, 50, 7.5, "dpmpp_2m_karras", runs=5,
                   max_seconds=0.55),
    "turbo": Config("turbo", "SD 2.1-shaped turbo", 512, 512, 1, 0.0, "euler", runs=20,
                    max_seconds=0.035),
    "sdxl": Config("sdxl", "SDXL", 1024, 1024, 30, 5.0, "dpmpp_2m_karras", runs=3,
                   is_sdxl=True),
}
SCHEDULER_NAMES = {"dpmpp_2m_karras": "DPM++ 2M Karras", "euler": "Euler"}
SIDES = ("easel", "diffusers", "easel-fp32", "diffusers-compile", "easel-profile")
SIDE_NAMES = {
    "easel": "Easel (ONNX Runtime)",
    "diffusers": "diffusers (PyTorch eager)",
    "easel-fp32": "Easel fp32 (picture only)",
    "diffusers-compile": "diffusers (torch.compile)",
    "easel-profile": "Easel UNet profile",
}
# Seconds a side takes at real size on an H100, loads included (guesses until measured):
# with less time left before --deadline an optional side is skipped, saying so.
ESTIMATED_S = {
    "easel": {"sd15": 120, "turbo": 100, "sdxl": 300},
    "diffusers": {"sd15": 40, "turbo": 30, "sdxl": 90},
    "easel-fp32": {"sd15": 60, "turbo": 60, "sdxl": 200},
    "diffusers-compile": {"sd15": 180, "turbo": 150, "sdxl": 400},
    "easel-profile": {"sd15": 60, "turbo": 60, "sdxl": 150},
}
OPTIONAL_SIDES = ("easel-fp32", "diffusers-compile", "easel-profile")


def effective_config(arguments: argparse.Namespace) -> Config:
    config = CONFIGS[arguments.config]
    if arguments.dry_run:
        # Tiny models are drawn at 64x64 (32x32 latents); three steps still exercise the
        # scheduler's multistep path.
        config = dataclasses.replace(config, width=64, height=64,
                                     steps=min(config.steps, 3), runs=2)
    if arguments.runs:
        config = dataclasses.replace(config, runs=arguments.runs)
    return config


# --- measuring, shared by the sides ----------------------------------------------------------

class GpuMemory:
    """The most memory in use on GPU 0 while this process runs, less what was in use when it
    started: NVML, sampled every 10 ms in a thread (both sides alike: the thread's brief
    holds of the GIL cost each the same). Started before anything touches CUDA."""

    def __init__(self, period_s: float = 0.01) -> None:
        self.how = ("NVML device memory in use, sampled every 10 ms, less the amount in use "
                    "before this process started")
        self.gpu_name: str | None = None
        self._peak = 0
        try:
            import pynvml

            pynvml.nvmlInit()
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            self.gpu_name = str(pynvml.nvmlDeviceGetName(self._handle))
            self._used = lambda: pynvml.nvmlDeviceGetMemoryInfo(self._handle).used
            self._baseline = self._used()
        except Exception as error:  # noqa: BLE001 - no NVML or no NVIDIA GPU: not measured
            self.how = f"not measured ({type(error).__name__}: no NVIDIA GPU or no pynvml)"
            self._used = None
            return
        self._thread = threading.Thread(target=self._sample, args=(period_s,), daemon=True)
        self._thread.start()

    def _sample(self, period_s: float) -> None:
        while True:  # a daemon thread: it ends with the process
            time.sleep(period_s)
            self._peak = max(self._peak, self._used() - self._baseline)

    def peak_mb(self) -> float | None:
        if self._used is None:
            return None
        self._peak = max(self._peak, self._used() - self._baseline)
        return round(self._peak / 2**20, 1)

    def record(self, result: dict) -> None:
        result["gpu_memory_peak_mb"] = self.peak_mb()
        result["gpu_memory_how"] = self.how
        if self.gpu_name:
            result["gpu"] = self.gpu_name


def measure(label: str, run: Callable[[], tuple[float, list[float], np.ndarray]],
            warmups: int, runs: int, result: dict) -> np.ndarray:
    """``warmups`` untimed pictures, then ``runs`` timed ones, recorded in ``result``; the
    last picture's pixels."""
    result["warmup_s"] = []
    for _ in range(warmups):
        seconds, _, pixels = run()
        result["warmup_s"].append(round(seconds, 4))
    if warmups:
        print(f"  {label}: warm-up "
              f"{', '.join(f'{seconds * 1e3:.0f}' for seconds in result['warmup_s'])} ms",
              flush=True)
    result["runs_s"], steps = [], []
    for _ in range(runs):
        seconds, step_s, pixels = run()
        result["runs_s"].append(round(seconds, 5))
        steps.extend(step_s)
    result["median_ms"] = round(statistics.median(result["runs_s"]) * 1e3, 2)
    result["min_ms"] = round(min(result["runs_s"]) * 1e3, 2)
    result["step_ms"] = round(statistics.median(steps) * 1e3, 3) if steps else None
    print(f"  {label}: median {result['median_ms']:.1f} ms over {runs} runs (fastest "
          f"{result['min_ms']:.1f}), step {result['step_ms']} ms", flush=True)
    return pixels


def sentence(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) < 600 else text[:600] + "..."


# --- the Easel sides -------------------------------------------------------------------------

def runtime_options(arguments: argparse.Namespace, precision: str, cuda_graph: bool,
                    cache: Path | None):
    """Easel's RuntimeOptions for this side; a clear stop when the engine lacks a setting."""
    from engine.runtime import RuntimeOptions

    fields = {field.name for field in dataclasses.fields(RuntimeOptions)}
    missing = [name for name in ("precision", "cuda_graph") if name not in fields]
    if missing:
        raise SystemExit(f"engine.runtime.RuntimeOptions has no {' or '.join(missing)} yet: "
                         f"the GPU benchmark needs the engine's fp16 and CUDA graph settings "
                         f"(issue 20) before it can measure anything.")
    return RuntimeOptions(providers=(arguments.provider,), precision=precision,
                          cuda_graph=cuda_graph, optimized_cache=cache)


def open_easel(arguments: argparse.Namespace, precision: str, cuda_graph: bool,
               cache: Path | None, result: dict, only_unet: bool = False):
    """The model with every session the picture needs opened, the load timed."""
    from engine.model import load_model

    options = runtime_options(arguments, precision, cuda_graph, cache)
    started = time.perf_counter()
    model = load_model(arguments.onnx_folder, options)
    components = ["text_encoder", "unet", "vae_decoder"]
    if model.description.text_encoders == 2:
        components.insert(1, "text_encoder_2")
    for component in ["unet"] if only_unet else components:
        getattr(model, component)  # opens the session (the first load converts and optimises)
    result["load_s"] = round(time.perf_counter() - started, 2)
    return model


def describe_sessions(model, result: dict) -> None:
    unet = model.unet
    result["provider"] = unet.device.in_use
    result["device"] = unet.device.summary
    result["precision"] = getattr(unet, "precision", None)
    result["cuda_graph"] = bool(getattr(unet, "cuda_graph", False))
    result["cuda_graph_stopped"] = getattr(model, "cuda_graph_stopped", None)
    result["notes"] = list(getattr(unet, "notes", ()))
    result["unet_graph"] = str(unet.loaded_from)
    result["provider_options"] = unet.ort_session.get_provider_options()


def side_easel(arguments: argparse.Namespace) -> dict:
    """Easel's pictures with the fast settings: fp16, CUDA graphs, the optimised-graph cache."""
    config = effective_config(arguments)
    graph = ", CUDA graph" if arguments.cuda_graph else ""
    return easel_pictures(arguments, f"Easel (ONNX Runtime {arguments.provider.upper()}, "
                                     f"{arguments.precision}{graph})", arguments.precision,
                          arguments.cuda_graph, arguments.cache, arguments.warmups, config.runs)


def side_easel_fp32(arguments: argparse.Namespace) -> dict:
    """One fp32 picture to hold our fp16 one against. No optimised-graph cache: SDXL's fp32
    graphs alone would take 14 GB more disk, for one picture."""
    return easel_pictures(arguments, "Easel fp32, the picture to compare", "fp32", False, None,
                          warmups=0, runs=1)


def easel_pictures(arguments: argparse.Namespace, name: str, precision: str, cuda_graph: bool,
                   cache: Path | None, warmups: int, runs: int) -> dict:
    memory = GpuMemory()
    from engine.pipelines.text_to_image import TextToImagePipeline
    from engine.request import TextToImageRequest

    config = effective_config(arguments)
    result: dict = {"name": name}
    model = open_easel(arguments, precision, cuda_graph, cache, result)
    print(f"  Easel: loaded in {result['load_s']:.1f} s on {model.unet.device.summary}",
          flush=True)
    pipeline = TextToImagePipeline(model)
    request = TextToImageRequest(
        arguments.prompt, width=config.width, height=config.height, steps=config.steps,
        guidance=config.guidance, scheduler=config.scheduler, seed=arguments.seed,
        latents=np.load(arguments.latents))
    warnings_seen: list[str] = []

    def run() -> tuple[float, list[float], np.ndarray]:
        stamps: list[float] = []
        begun = time.perf_counter()
        output = pipeline(request, on_progress=lambda _: stamps.append(time.perf_counter()))
        seconds = time.perf_counter() - begun
        warnings_seen[:] = output.warnings
        return seconds, step_durations(stamps), output.images[0].pixels

    pixels = measure("Easel", run, warmups, runs, result)
    np.save(arguments.pixels, pixels)
    describe_sessions(model, result)  # after the runs: a CUDA graph may have been given up
    result["warnings"] = warnings_seen
    memory.record(result)
    return result


def side_easel_profile(arguments: argparse.Namespace) -> dict:
    """Where the UNet's time goes: onnxruntime's profiler on Easel's own UNet graph."""
    import onnxruntime as ort

    from engine.runtime import build_session_options

    config = effective_config(arguments)
    result: dict = {"name": "Easel UNet profile"}
    model = open_easel(arguments, arguments.precision, False, arguments.cache, result,
                       only_unet=True)
    unet = model.unet
    options = runtime_options(arguments, arguments.precision, False, arguments.cache)
    providers = [name.replace("ExecutionProvider", "").lower()
                 for name in unet.ort_session.get_providers()]
    session_options = build_session_options(options, providers,
                                            from_cache=unet.loaded_from != unet.path)
    session_options.enable_profiling = True
    scratch = tempfile.mkdtemp(prefix="easel-profile-")
    session_options.profile_file_prefix = str(Path(scratch) / "unet")
    provider_options = unet.ort_session.get_provider_options()
    with_options = [(name, {key: value for key, value in provider_options.get(name, {}).items()
                            if key != "enable_cuda_graph"})
                    for name in unet.ort_session.get_providers()]
    try:
        session = ort.InferenceSession(str(unet.loaded_from), sess_options=session_options,
                                       providers=with_options)
    except Exception as error:  # noqa: BLE001 - an option the build will not take back
        result["provider_options_refused"] = sentence(error)
        session = ort.InferenceSession(str(unet.loaded_from), sess_options=session_options,
                                       providers=unet.ort_session.get_providers())
    latents = np.load(arguments.latents)
    feeds = unet_feeds(session, latents, batch=2 if config.guidance > 1 else 1)
    calls = arguments.profile_calls
    for _ in range(calls + 1):
        session.run(None, feeds)
    events = json.loads(Path(session.end_profiling()).read_text())
    result.update(profile_summary(events, calls))
    result["graph"] = str(unet.loaded_from)
    result["providers"] = unet.ort_session.get_providers()
    return result


def unet_feeds(session, latents: np.ndarray, batch: int) -> dict[str, np.ndarray]:
    """One UNet call's inputs at the request's latent size, typed as the graph takes them."""
    types = {"tensor(float)": np.float32, "tensor(float16)": np.float16,
             "tensor(int64)": np.int64, "tensor(int32)": np.int32}
    feeds = {}
    rng = np.random.default_rng(0)
    for node in session.get_inputs():
        kind = types.get(node.type, np.float32)
        if node.name == "sample":
            sample, _ = unet_inputs(latents.shape[2:], 8)
            value = sample[:batch]
        elif node.name == "timestep":
            shape = [] if not node.shape else [batch if not isinstance(node.shape[0], int)
                                               else node.shape[0]]
            value = np.full(shape, 500)
        elif node.name == "time_ids":
            height, width = (side * 8 for side in latents.shape[2:])
            value = np.tile([height, width, 0, 0, height, width], (batch, 1))
        else:  # encoder_hidden_states (batch, 77, width), text_embeds, timestep_cond ...
            shape = [batch] + [dim if isinstance(dim, int) else 77 for dim in node.shape[1:]]
            value = rng.standard_normal(shape)
        feeds[node.name] = np.ascontiguousarray(value, dtype=kind)
    return feeds


def profile_summary(events: list[dict], calls: int) -> dict:
    """Milliseconds per call by operator type (onnxruntime's node events) and by GPU kernel
    (its CUPTI kernel events, where this build records them); the first call is left out."""
    runs = [event for event in events if event.get("name") == "model_run"]
    first_end = runs[0]["ts"] + runs[0]["dur"] if runs else 0
    by_op: dict[str, float] = {}
    by_kernel: dict[str, float] = {}
    for event in events:
        if event.get("ts", 0) < first_end:
            continue
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            op = event.get("args", {}).get("op_name", "?")
            by_op[op] = by_op.get(op, 0.0) + event["dur"] / 1e3 / calls
        elif event.get("cat") == "Kernel":
            name = event.get("name", "?")[:80]
            by_kernel[name] = by_kernel.get(name, 0.0) + event["dur"] / 1e3 / calls
    call_ms = statistics.median(run["dur"] / 1e3 for run in runs[1:]) if len(runs) > 1 else None

    def top(table: dict[str, float]) -> list[list]:
        total = sum(table.values()) or 1.0
        return [[name, round(ms, 3), round(ms / total, 4)]
                for name, ms in sorted(table.items(), key=lambda item: -item[1])[:15]]

    return {"call_ms": call_ms, "calls": calls, "ops_ms": round(sum(by_op.values()), 3),
            "by_op_type": top(by_op), "kernels_ms": round(sum(by_kernel.values()), 3),
            "by_kernel": top(by_kernel),
            "note": "op times are onnxruntime's per-node wall times (on CUDA: launch, not GPU "
                    "time, unless kernels are listed); kernels are CUPTI GPU times"}


# --- the diffusers sides ---------------------------------------------------------------------

def side_diffusers(arguments: argparse.Namespace, compiled: bool = False) -> dict:
    memory = GpuMemory()
    import torch
    import transformers
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
    from diffusers.utils import logging as diffusers_logging

    for library in (diffusers_logging, transformers.utils.logging):
        library.set_verbosity_error()
        library.disable_progress_bar()
    config = effective_config(arguments)
    if arguments.dry_run:
        # On a busy 2-core machine torch's spinning threads make a tiny model's picture take
        # 15 s instead of 0.25 s; the dry run's times are not figures anyway.
        torch.set_num_threads(1)
    device = "cpu" if arguments.dry_run else "cuda"
    dtype = torch.float32 if arguments.dry_run else torch.float16
    result: dict = {"name": f"diffusers (PyTorch {'compiled' if compiled else 'eager'} "
                            f"{str(dtype).removeprefix('torch.').replace('float', 'fp')})",
                    "torch": torch.__version__}
    started = time.perf_counter()
    pipeline_class = StableDiffusionXLPipeline if config.is_sdxl else StableDiffusionPipeline
    extra = {} if config.is_sdxl else {"safety_checker": None, "requires_safety_checker": False}
    with warnings.catch_warnings():  # newer diffusers prefer dtype= over torch_dtype=
        warnings.simplefilter("ignore", FutureWarning)
        pipe = pipeline_class.from_pretrained(arguments.diffusers_folder, torch_dtype=dtype,
                                              local_files_only=True, **extra)
    pipe.scheduler = diffusers_scheduler(config.scheduler, pipe.scheduler.config)
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    if compiled:
        backend = "eager" if arguments.dry_run else "inductor"
        mode = None if arguments.dry_run else arguments.compile_mode
        pipe.unet = torch.compile(pipe.unet, mode=mode, fullgraph=True, backend=backend)
        result["compile"] = {"backend": backend, "mode": mode, "fullgraph": True}
    result["load_s"] = round(time.perf_counter() - started, 2)
    print(f"  diffusers: loaded in {result['load_s']:.1f} s (torch {torch.__version__}, "
          f"{device})", flush=True)
    latents = torch.from_numpy(np.load(arguments.latents)).to(device, dtype)

    def run() -> tuple[float, list[float], np.ndarray]:
        stamps: list[float] = []

        def on_step_end(_pipe, _step, _timestep, callback_kwargs):
            stamps.append(time.perf_counter())
            return callback_kwargs

        begun = time.perf_counter()
        with torch.inference_mode():
            output = pipe(arguments.prompt, height=config.height, width=config.width,
                          num_inference_steps=config.steps, guidance_scale=config.guidance,
                          latents=latents.clone(), output_type="np",
                          callback_on_step_end=on_step_end)
        seconds = time.perf_counter() - begun  # output_type="np" waited for the GPU
        pixels = np.round(output.images[0] * 255).clip(0, 255).astype(np.uint8)
        return seconds, step_durations(stamps), pixels

    pixels = measure("diffusers", run, arguments.warmups, config.runs, result)
    if compiled:
        result["compile_s"] = result["warmup_s"][0] if result["warmup_s"] else None
    np.save(arguments.pixels, pixels)
    if device == "cuda":
        result["torch_max_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        result["torch_max_reserved_mb"] = round(torch.cuda.max_memory_reserved() / 2**20, 1)
        result["gpu"] = torch.cuda.get_device_name()
    memory.record(result)
    return result


def side_diffusers_compile(arguments: argparse.Namespace) -> dict:
    return side_diffusers(arguments, compiled=True)


def diffusers_scheduler(name: str, config):
    """diffusers' namesake of Easel's scheduler ``name``, from the model's scheduler config."""
    from diffusers import DPMSolverMultistepScheduler, EulerDiscreteScheduler

    if name == "dpmpp_2m_karras":
        return DPMSolverMultistepScheduler.from_config(
            config, use_karras_sigmas=True, algorithm_type="dpmsolver++", solver_order=2)
    if name == "euler":
        return EulerDiscreteScheduler.from_config(config)
    raise SystemExit(f"No diffusers scheduler for {name!r} here.")


# --- the coordinator -------------------------------------------------------------------------

def run_side(side: str, arguments: argparse.Namespace, argv: list[str], scratch: Path,
             timeout: float | None) -> dict:
    """Run this script as ``--side side`` in a fresh process; its JSON result or an error."""
    output = scratch / f"{side}.json"
    output.unlink(missing_ok=True)
    command = [sys.executable, str(Path(__file__).resolve()), *argv, "--side", side,
               "--latents", str(scratch / "latents.npy"), "--result", str(output),
               "--pixels", str(scratch / f"{side}-pixels.npy")]
    print(f"{arguments.config} {side}:", flush=True)
    started = time.perf_counter()
    try:
        completed = subprocess.run(command, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"stopped after {timeout:.0f} s, the time left before the deadline"}
    if completed.returncode != 0 or not output.is_file():
        return {"error": f"the {side} process failed (exit status {completed.returncode}); "
                         f"its output above says why"}
    result = json.loads(output.read_text())
    result["process_s"] = round(time.perf_counter() - started, 1)
    return result


def pixel_difference(scratch: Path, one: str, other: str) -> dict | None:
    paths = [scratch / f"{side}-pixels.npy" for side in (one, other)]
    if not all(path.is_file() for path in paths):
        return None
    first, second = (np.load(path).astype(np.int16) for path in paths)
    if first.shape != second.shape:
        return None
    difference = np.abs(first - second)
    return {"mean": round(float(difference.mean()), 3), "max": int(difference.max())}


def judge(record: dict, config: Config, dry_run: bool) -> list[dict]:
    """The issue's targets for this configuration, each met or not (None: not measured)."""
    easel = record["sides"].get("easel", {})
    ours = easel.get("median_ms")
    targets = []
    if config.max_seconds is not None:
        targets.append({"target": f"Easel whole picture <= {config.max_seconds * 1e3:.0f} ms",
                        "value_ms": ours,
                        "met": None if ours is None else ours <= config.max_seconds * 1e3})
    speed_up = record.get("speed_up")
    targets.append({"target": f"Easel >= {TARGET_SPEED_UP}x faster than diffusers eager",
                    "value": speed_up,
                    "met": None if speed_up is None else speed_up >= TARGET_SPEED_UP})
    if dry_run:
        for target in targets:
            target["met"] = None
            target["note"] = "dry run on the CPU: not judged"
    return targets


def summarise(record: dict, config: Config, scratch: Path, dry_run: bool) -> None:
    """The figures derived from the sides: ratios, pixel differences, targets."""
    sides = record["sides"]
    ours = sides.get("easel", {}).get("median_ms")
    theirs = sides.get("diffusers", {}).get("median_ms")
    compiled = sides.get("diffusers-compile", {}).get("median_ms")
    record["speed_up"] = round(theirs / ours, 3) if ours and theirs else None
    record["speed_up_vs_compile"] = round(compiled / ours, 3) if ours and compiled else None
    for key, pair in (("fp16_vs_fp32", ("easel", "easel-fp32")),
                      ("easel_vs_diffusers", ("easel", "diffusers"))):
        found = pixel_difference(scratch, *pair)
        if found is not None:
            record[key] = found
    record.setdefault("fp16_vs_fp32", None)
    record.setdefault("easel_vs_diffusers", None)
    record["targets"] = judge(record, config, dry_run)


def save(results: Path | None, record: dict) -> None:
    """Put this configuration's record into the results file (atomically)."""
    if results is None:
        return
    data = json.loads(results.read_text()) if results.is_file() else {}
    configs = data.setdefault("configs", {})
    # What the device run noted about the model (its build) stays beside the measurements.
    model = configs.get(record["config"], {}).get("model")
    configs[record["config"]] = {**record, **({"model": model} if model else {})}
    partial = results.with_name(results.name + ".partial")
    partial.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(partial, results)


def new_record(arguments: argparse.Namespace, config: Config) -> dict:
    return {
        "config": config.name, "label": config.label, "width": config.width,
        "height": config.height, "steps": config.steps, "guidance": config.guidance,
        "scheduler": SCHEDULER_NAMES.get(config.scheduler, config.scheduler),
        "runs": config.runs, "warmups": arguments.warmups, "seed": arguments.seed,
        "prompt": arguments.prompt, "dry_run": arguments.dry_run,
        "provider": arguments.provider, "precision": arguments.precision,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu": cpu_model(), "sides": {}, "profile": None,
    }


def coordinate(arguments: argparse.Namespace, argv: list[str]) -> int:
    config = effective_config(arguments)
    scratch = arguments.scratch or Path(tempfile.mkdtemp(prefix="easel-gpu-bench-"))
    scratch.mkdir(parents=True, exist_ok=True)
    previous = {}
    if arguments.results and arguments.results.is_file():
        previous = json.loads(arguments.results.read_text()).get("configs", {})
    # A later call for more sides (torch.compile after the other models) adds to the record.
    record = previous.get(config.name) if arguments.keep else None
    if record is None:
        record = new_record(arguments, config)
        scale = vae_scale_factor(arguments.diffusers_folder)
        shape = (1, 4, config.height // scale, config.width // scale)
        latents = np.random.default_rng(arguments.seed).standard_normal(shape, dtype=np.float32)
        np.save(scratch / "latents.npy", latents)
    sides = [side for side in arguments.sides.split(",") if side]
    if arguments.torch_compile and "diffusers-compile" not in sides:
        sides.append("diffusers-compile")
    for side in sides:
        record["sides"][side] = run_timed_side(side, arguments, argv, scratch, config)
        summarise(record, config, scratch, arguments.dry_run)
        save(arguments.results, record)
    missed = any(target["met"] is False for target in record["targets"])
    if arguments.profile == "always" or (arguments.profile == "auto" and missed):
        record["profile"] = run_timed_side("easel-profile", arguments, argv, scratch, config)
        save(arguments.results, record)
    print("RESULT " + json.dumps(record, separators=(",", ":")), flush=True)
    print_record(record)
    return 0


def run_timed_side(side: str, arguments: argparse.Namespace, argv: list[str], scratch: Path,
                   config: Config) -> dict:
    left = None if arguments.deadline is None else arguments.deadline - time.time()
    if left is not None:
        needed = ESTIMATED_S[side][config.name] if side in OPTIONAL_SIDES else 20
        if left < needed:
            return {"skipped": f"{left:.0f} s were left before the deadline; this side "
                               f"needs about {needed} s"}
    return run_side(side, arguments, argv, scratch, left)


def print_record(record: dict) -> None:
    print()
    print(f"{record['config']}: {record['label']}, {record['width']}x{record['height']}, "
          f"{record['steps']} steps, guidance {record['guidance']}, {record['scheduler']}, "
          f"timed runs: {record['runs']} after {record['warmups']} warm-ups (medians)")
    print(f"  {'side':44} {'load s':>7} {'median ms':>10} {'min ms':>8} {'step ms':>8} "
          f"{'GPU MB':>8}")
    for side, result in record["sides"].items():
        name = result.get("name", SIDE_NAMES.get(side, side))
        if "median_ms" not in result:
            print(f"  {name:44} {result.get('error') or result.get('skipped')}")
            continue
        memory = result.get("gpu_memory_peak_mb")
        print(f"  {name:44} {result.get('load_s', float('nan')):7.1f} "
              f"{result['median_ms']:10.1f} {result['min_ms']:8.1f} "
              f"{result['step_ms'] if result['step_ms'] is not None else '-':>8} "
              f"{memory if memory is not None else '-':>8}")
    if record.get("speed_up"):
        extra = (f"; against torch.compile {record['speed_up_vs_compile']:.2f}x"
                 if record.get("speed_up_vs_compile") else "")
        print(f"  Easel is {record['speed_up']:.2f}x as fast as diffusers eager{extra}")
    for key, words in (("fp16_vs_fp32", "our fp16 picture against our fp32 picture"),
                       ("easel_vs_diffusers", "our picture against diffusers'")):
        if record.get(key):
            print(f"  {words}: mean {record[key]['mean']:.2f}/255, largest "
                  f"{record[key]['max']}/255")
    for target in record["targets"]:
        met = {True: "met", False: "MISSED", None: target.get("note", "not measured")}
        print(f"  target: {target['target']}: {met[target['met']]}")
    profile = record.get("profile") or {}
    if profile.get("by_op_type"):
        print(f"  profile (UNet call {profile.get('call_ms')} ms; by operator type):")
        for name, ms, share in profile["by_op_type"][:10]:
            print(f"    {name:40} {ms:9.3f} ms {share:7.1%}")
        for name, ms, share in profile.get("by_kernel", [])[:10]:
            print(f"    kernel {name:33} {ms:9.3f} ms {share:7.1%}")
    elif profile:
        print(f"  profile: {profile.get('error') or profile.get('skipped')}")


# --- command line ------------------------------------------------------------------------------

def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=tuple(CONFIGS), required=True)
    parser.add_argument("--diffusers-folder", type=Path, required=True)
    parser.add_argument("--onnx-folder", type=Path, required=True,
                        help="the Easel model folder exported from --diffusers-folder")
    parser.add_argument("--cache", type=Path, help="Easel's optimised-graph cache folder")
    parser.add_argument("--results", type=Path, help="the JSON file that keeps every record")
    parser.add_argument("--scratch", type=Path,
                        help="keeps latents and pixels between calls (default: a new one)")
    parser.add_argument("--keep", action="store_true",
                        help="add the sides to this configuration's record in --results "
                             "(its latents must be in --scratch)")
    parser.add_argument("--sides", default="easel,diffusers,easel-fp32",
                        help="comma-separated, in order (default easel,diffusers,easel-fp32)")
    parser.add_argument("--torch-compile", action="store_true",
                        help="also diffusers with torch.compile")
    parser.add_argument("--compile-mode", default="reduce-overhead")
    parser.add_argument("--profile", choices=("auto", "always", "never"), default="auto",
                        help="profile Easel's UNet: when a target is missed (auto)")
    parser.add_argument("--profile-calls", type=int, default=3)
    parser.add_argument("--warmups", type=int, default=2)
    parser.add_argument("--runs", type=int, default=0, help="timed runs (default: per model)")
    parser.add_argument("--prompt", default="a photograph of an astronaut riding a horse")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--deadline", type=float,
                        help="time.time() after which optional sides are skipped")
    parser.add_argument("--dry-run", action="store_true",
                        help="the CPU provider in fp32 and tiny sizes: checks the script")
    parser.add_argument("--precision", choices=("fp16", "fp32", "auto"),
                        help="Easel's timed side (default fp16; fp32 in a dry run)")
    parser.add_argument("--no-cuda-graph", action="store_true",
                        help="Easel's timed side without CUDA graphs")
    # Set by the coordinator when it runs one side in a process of its own.
    parser.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--latents", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--pixels", type=Path, help=argparse.SUPPRESS)
    arguments = parser.parse_args(argv)
    unknown = [side for side in arguments.sides.split(",") if side and side not in SIDES]
    if unknown:
        parser.error(f"unknown side {unknown[0]!r}: choose from {', '.join(SIDES)}")
    # The GPU run's settings, or the dry run's: the CPU provider computes in fp32 only.
    arguments.provider = "cpu" if arguments.dry_run else "cuda"
    arguments.precision = arguments.precision or ("fp32" if arguments.dry_run else "fp16")
    arguments.cuda_graph = not (arguments.dry_run or arguments.no_cuda_graph)
    return arguments


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    arguments = parse_arguments(argv)
    if arguments.side is None:
        return coordinate(arguments, argv)
    side = {"easel": side_easel, "diffusers": side_diffusers, "easel-fp32": side_easel_fp32,
            "diffusers-compile": side_diffusers_compile,
            "easel-profile": side_easel_profile}[arguments.side]
    arguments.result.write_text(json.dumps(side(arguments)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
