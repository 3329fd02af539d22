"""Text-to-image speed on the CPU: Easel (ONNX Runtime) against diffusers (PyTorch eager, fp32).

Usage (after building and importing a real-size model, see tests/benchmarks/README.md)::

    EASEL_HOME=/tmp/easel-real .venv/bin/python tests/benchmarks/text_to_image_cpu.py \\
        --diffusers-folder /tmp/sd15-random --model sd15-random

Both sides make the same picture: same prompt, size, steps, guidance (7.5), the same initial
latents (drawn once with numpy, saved to a file both sides read), and the same sampler,
DPM++ 2M Karras (``dpmpp_2m_karras`` here; ``DPMSolverMultistepScheduler(use_karras_sigmas=
True, algorithm_type="dpmsolver++")`` in diffusers, built from the model's scheduler config).

The script runs itself in separate processes, one after the other so they never share the
cores: a GEMM probe, Easel, diffusers, the GEMM probe again, and (when a target is missed) an
Easel profile.
Each side's peak memory is therefore its own process's (``ru_maxrss``). Each side reports as
JSON: load time, one untimed warm-up generation, ``--runs`` timed generations (whole run, and
every denoising step but each run's first, from progress callbacks), then ``--unet-calls``
direct batch-2 UNet calls at the request's latent size (the UNet's share of one step, without
the scheduler). The diffusers process also counts the UNet's FLOPs for that call with
``torch.utils.flop_counter.FlopCounterMode`` (multiply-adds of convolutions and matrix
products, counted twice; elementwise work and norms are not counted).

The GEMM probe times a square fp32 matrix product (``--gemm-size``, default 4096) with
torch, NumPy and ONNX Runtime (a one-node MatMul graph), at the same thread count, before and
after the two sides; the best of these six medians is "the machine's GEMM rate". The UNet's
FLOP rate on each side is its FLOPs over its median UNet call, printed as a share of that rate.

Targets (issue 4): Easel at least 1.3x faster than diffusers (ratio of medians <= 0.77), and a
UNet step at >= 80% of the GEMM rate. When either is missed the script profiles Easel's UNet
(onnxruntime's profiler, 3 calls) and prints its time per operator type, with the FLOP rate of
the convolutions and the matrix products.

Threads: ``--threads 0`` (the default) gives Easel every core this process may use and leaves
torch at its own default (which this script prints); the GEMM probe uses Easel's count.
The machine may be shared: check it is idle first, rerun, and compare medians.

This is a benchmark script, not a test; pytest does not collect ``tests/benchmarks``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

TARGET_SPEED_UP = 1.3  # diffusers' time over Easel's
TARGET_GEMM_SHARE = 0.80  # UNet FLOP rate over the machine's GEMM rate
SIDES = ("gemm", "easel", "diffusers", "easel-profile")


# --- helpers shared by the sides ---------------------------------------------------------------

def peak_rss_gb() -> float:
    """This process's peak resident memory (``ru_maxrss`` is kB on Linux, bytes on macOS)."""
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 1e9


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def step_durations(stamps: list[float]) -> list[float]:
    return [later - earlier for earlier, later in zip(stamps, stamps[1:], strict=False)]


def timed(call: Callable[[], object], repeats: int) -> list[float]:
    """Wall times of ``repeats`` calls of ``call``."""
    times = []
    for _ in range(repeats):
        begun = time.perf_counter()
        call()
        times.append(time.perf_counter() - begun)
    return times


def unet_inputs(latent_side: tuple[int, int], width: int, seed: int = 0
                ) -> tuple[np.ndarray, np.ndarray]:
    """A batch-2 latent sample (guidance runs both halves in one call) and text states."""
    rng = np.random.default_rng(seed)
    sample = rng.standard_normal((2, 4, *latent_side), dtype=np.float32)
    states = rng.standard_normal((2, 77, width), dtype=np.float32)
    return sample, states


def generations(label: str, run: Callable[[], tuple[float, list[float], np.ndarray]],
                runs: int, result: dict) -> np.ndarray:
    """One warm-up run, then ``runs`` timed runs, recorded in ``result``; the last picture."""
    result["warmup_s"], _, _ = run()
    print(f"  {label}: warm-up run {result['warmup_s']:.1f} s", flush=True)
    result["runs_s"], result["step_s"] = [], []
    pixels = None
    for number in range(runs):
        seconds, steps, pixels = run()
        result["runs_s"].append(seconds)
        result["step_s"].extend(steps)
        print(f"  {label}: run {number + 1}: {seconds:.2f} s, median step "
              f"{statistics.median(steps):.3f} s", flush=True)
    return pixels


# --- the sides, each in its own process --------------------------------------------------------

def side_gemm(arguments: argparse.Namespace) -> dict:
    """fp32 GEMM rates of torch, NumPy and ONNX Runtime on this machine, same threads."""
    threads = arguments.threads or cpu_count()
    size = arguments.gemm_size
    flops = 2 * size**3
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    rates = {}

    rates["numpy"] = flops / statistics.median(timed(lambda: a @ b, 1 + arguments.gemm_repeats)[1:])

    import torch

    torch.set_num_threads(threads)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    with torch.no_grad():
        rates["torch"] = flops / statistics.median(
            timed(lambda: torch.mm(ta, tb), 1 + arguments.gemm_repeats)[1:])

    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])], "gemm",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, [size, size]) for name in "ab"],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [size, size])])
    # An IR version every onnxruntime of the last years reads (onnx writes its newest).
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    rates["onnxruntime"] = flops / statistics.median(
        timed(lambda: session.run(None, {"a": a, "b": b}), 1 + arguments.gemm_repeats)[1:])
    for name, rate in rates.items():
        print(f"  GEMM {size}^3 fp32, {threads} threads, {name}: {rate / 1e9:.1f} GFLOP/s",
              flush=True)
    return {"threads": threads, "size": size, "rates": rates, "peak_rss_gb": peak_rss_gb()}


def open_easel(arguments: argparse.Namespace):
    from desktop import paths
    from desktop.model_store import ModelStore
    from engine.model import load_model
    from engine.runtime import RuntimeOptions

    folder = arguments.onnx_folder or ModelStore(paths.models_dir()).path_of(arguments.model)
    providers = tuple(name for name in arguments.providers.split(",") if name)
    options = RuntimeOptions(providers=providers, cpu_threads=arguments.threads,
                             optimized_cache=paths.optimized_graphs_dir())
    return folder, options, load_model(folder, options)


def side_easel(arguments: argparse.Namespace) -> dict:
    from engine.pipelines.text_to_image import TextToImagePipeline
    from engine.request import TextToImageRequest

    result: dict = {"name": "Easel (ONNX Runtime)"}
    latents = np.load(arguments.latents)
    started = time.perf_counter()
    folder, options, model = open_easel(arguments)
    for component in ("text_encoder", "unet", "vae_decoder"):
        getattr(model, component)  # opens the session
    result["load_s"] = time.perf_counter() - started
    cached = model.unet.loaded_from != model.unet.path
    result["threads"] = options.thread_count
    print(f"  Easel: loaded {folder} in {result['load_s']:.1f} s on "
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
        output = pipeline(request, on_progress=lambda _: stamps.append(time.perf_counter()))
        return time.perf_counter() - begun, step_durations(stamps), output.images[0].pixels

    pixels = generations("Easel", run, arguments.runs, result)
    np.save(arguments.pixels, pixels)

    unet = model.unet
    sample, states = unet_inputs(latents.shape[2:], _text_width(unet))
    feeds = {"sample": sample, "timestep": np.full((2,), 500, unet.input_type("timestep")),
             "encoder_hidden_states": states}
    unet.run(feeds)  # the first call after the runs is not special, but stay symmetric
    result["unet_call_s"] = timed(lambda: unet.run(feeds), arguments.unet_calls)
    print(f"  Easel: UNet call median {statistics.median(result['unet_call_s']):.3f} s",
          flush=True)
    result["peak_rss_gb"] = peak_rss_gb()
    return result


def _text_width(unet) -> int:
    for node in unet._inner.get_inputs():  # the engine's Session hides shapes it never needs
        if node.name == "encoder_hidden_states":
            return int(node.shape[2])
    raise SystemExit("The UNet has no encoder_hidden_states input.")


def side_diffusers(arguments: argparse.Namespace) -> dict:
    import torch
    import transformers
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline
    from diffusers.utils import logging as diffusers_logging
    from torch.utils.flop_counter import FlopCounterMode

    diffusers_logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    result: dict = {"name": "diffusers (PyTorch eager fp32)"}
    latents = np.load(arguments.latents)
    if arguments.threads:
        torch.set_num_threads(arguments.threads)
    result["threads"] = torch.get_num_threads()
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
    result["load_s"] = time.perf_counter() - started
    print(f"  diffusers: loaded in {result['load_s']:.1f} s with {result['threads']} "
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

    pixels = generations("diffusers", run, arguments.runs, result)
    np.save(arguments.pixels, pixels)

    sample, states = unet_inputs(latents.shape[2:], pipe.unet.config.cross_attention_dim)
    sample, states = torch.from_numpy(sample), torch.from_numpy(states)
    timestep = torch.full((2,), 500, dtype=torch.float32)
    with torch.no_grad():
        def call() -> None:
            pipe.unet(sample, timestep, encoder_hidden_states=states)

        call()
        result["unet_call_s"] = timed(call, arguments.unet_calls)
        counter = FlopCounterMode(display=False)
        with counter:
            call()
    result["unet_flops"] = counter.get_total_flops()
    result["unet_flops_by_op"] = {str(op).split(".")[1] if "." in str(op) else str(op): count
                                  for op, count in counter.get_flop_counts()["Global"].items()}
    print(f"  diffusers: UNet call median {statistics.median(result['unet_call_s']):.3f} s; "
          f"{result['unet_flops'] / 1e9:.1f} GFLOP per call", flush=True)
    result["peak_rss_gb"] = peak_rss_gb()
    return result


def side_easel_profile(arguments: argparse.Namespace) -> dict:
    """Where Easel's UNet call spends its time: onnxruntime's profiler, by operator type."""
    import onnxruntime as ort

    from engine.runtime import build_session_options

    latents = np.load(arguments.latents)
    _, options, model = open_easel(arguments)
    unet = model.unet  # opens it, filling the optimised-graph cache if needed
    cached = unet.loaded_from != unet.path
    session_options = build_session_options(options, ("cpu",), from_cache=cached)
    session_options.enable_profiling = True
    scratch = tempfile.mkdtemp(prefix="easel-profile-")
    session_options.profile_file_prefix = str(Path(scratch) / "unet")
    session = ort.InferenceSession(str(unet.loaded_from), sess_options=session_options,
                                   providers=["CPUExecutionProvider"])
    sample, states = unet_inputs(latents.shape[2:], _text_width(unet))
    feeds = {"sample": sample, "timestep": np.full((2,), 500, unet.input_type("timestep")),
             "encoder_hidden_states": states}
    calls = 3
    for _ in range(calls + 1):
        session.run(None, feeds)
    events = json.loads(Path(session.end_profiling()).read_text())
    by_type: dict[str, float] = {}
    run_events = [event for event in events if event.get("name") == "model_run"]
    # The first call allocates and warms up; count only the kernels of the later ones.
    first_end = run_events[0]["ts"] + run_events[0]["dur"] if run_events else 0
    for event in events:
        if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time"):
            continue
        if event["ts"] < first_end:
            continue
        op_type = event.get("args", {}).get("op_name", "?")
        by_type[op_type] = by_type.get(op_type, 0.0) + event["dur"] / 1e6 / calls
    wall = statistics.median(run["dur"] / 1e6 for run in run_events[1:]) if run_events else 0
    return {"seconds_by_op_type": by_type, "call_s": wall, "graph": str(unet.loaded_from)}


# --- the coordinator ---------------------------------------------------------------------------

def run_side(side: str, arguments: argparse.Namespace, argv: list[str], scratch: Path,
             extra_env: dict[str, str] | None = None) -> dict:
    """Run this script as ``--side side`` in a fresh process; its JSON result."""
    output = scratch / f"{side}.json"
    command = [sys.executable, str(Path(__file__).resolve()), *argv, "--side", side,
               "--latents", str(scratch / "latents.npy"), "--result", str(output),
               "--pixels", str(scratch / f"{side}-pixels.npy")]
    print(f"{side}:", flush=True)
    completed = subprocess.run(command, env={**os.environ, **(extra_env or {})})
    if completed.returncode != 0:
        raise SystemExit(f"The {side} process failed (exit status {completed.returncode}).")
    return json.loads(output.read_text())


def coordinate(arguments: argparse.Namespace, argv: list[str]) -> int:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if load > 0.5:
        # Another job on the same cores slows both sides, but not always alike.
        print(f"warning: load average {load:.1f} before starting; the machine is not idle",
              flush=True)
    scratch = Path(tempfile.mkdtemp(prefix="easel-bench-"))
    try:
        return _coordinate(arguments, argv, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _coordinate(arguments: argparse.Namespace, argv: list[str], scratch: Path) -> int:
    scale = vae_scale_factor(arguments.diffusers_folder)
    shape = (1, 4, arguments.height // scale, arguments.width // scale)
    latents = np.random.default_rng(arguments.seed).standard_normal(shape, dtype=np.float32)
    np.save(scratch / "latents.npy", latents)
    threads = str(arguments.threads or cpu_count())
    blas_threads = {"OPENBLAS_NUM_THREADS": threads, "MKL_NUM_THREADS": threads,
                    "OMP_NUM_THREADS": threads}
    gemm = run_side("gemm", arguments, argv, scratch, blas_threads)
    results = {}
    if not arguments.skip_easel:
        results["easel"] = run_side("easel", arguments, argv, scratch)
    if not arguments.skip_diffusers:
        results["diffusers"] = run_side("diffusers", arguments, argv, scratch)
    # Probed again after the sides: on a shared machine a neighbour may have come or gone.
    after = run_side("gemm", arguments, argv, scratch, blas_threads)
    gemm["rates_after"] = after["rates"]
    missed = report(arguments, gemm, results, scratch)
    if "easel" in results and (arguments.profile or (missed and not arguments.no_profile)):
        profile = run_side("easel-profile", arguments, argv, scratch)
        report_profile(profile, results.get("diffusers"), gemm)
    if arguments.json:
        arguments.json.write_text(json.dumps({"gemm": gemm, **results}, indent=1))
    return 0


def gemm_reference(gemm: dict) -> float:
    """The machine's GEMM rate: the best library, before or after the sides ran."""
    return max(*gemm["rates"].values(), *gemm.get("rates_after", {}).values())


def vae_scale_factor(diffusers_folder: Path | None) -> int:
    """8 for every real Stable Diffusion; the tiny test models downsample less."""
    config = diffusers_folder / "vae" / "config.json" if diffusers_folder else None
    if config is None or not config.is_file():
        return 8
    return 2 ** (len(json.loads(config.read_text())["block_out_channels"]) - 1)


def report(arguments: argparse.Namespace, gemm: dict, results: dict, scratch: Path) -> bool:
    """Print the table and the ratios; True when a target was missed."""
    print()
    print(f"{arguments.width}x{arguments.height}, {arguments.steps} steps, guidance "
          f"{arguments.guidance}, DPM++ 2M Karras, {arguments.runs} timed runs and "
          f"{arguments.unet_calls} UNet calls each (medians), each side in its own process")
    best_gemm = gemm_reference(gemm)
    for key, when in (("rates", "before"), ("rates_after", "after")):
        rates = ", ".join(f"{name} {rate / 1e9:.1f}" for name, rate in gemm[key].items())
        print(f"GEMM rate {when} ({gemm['size']}^3 fp32, {gemm['threads']} threads): {rates} "
              f"GFLOP/s")
    print(f"GEMM reference (the best of these): {best_gemm / 1e9:.1f} GFLOP/s")
    flops = results.get("diffusers", {}).get("unet_flops")
    print(f"{'':32} {'threads':>7} {'load s':>7} {'warm-up s':>9} {'run s':>7} {'step s':>7} "
          f"{'UNet s':>7} {'GFLOP/s':>8} {'of GEMM':>8} {'peak RSS GB':>11}")
    for result in results.values():
        unet_s = statistics.median(result["unet_call_s"])
        rate = flops / unet_s if flops else float("nan")
        print(f"{result['name']:32} {result['threads']:7d} {result['load_s']:7.1f} "
              f"{result['warmup_s']:9.2f} {statistics.median(result['runs_s']):7.2f} "
              f"{statistics.median(result['step_s']):7.3f} {unet_s:7.3f} {rate / 1e9:8.1f} "
              f"{rate / best_gemm:8.0%} {result['peak_rss_gb']:11.2f}")
    if flops:
        scale = vae_scale_factor(arguments.diffusers_folder)
        print(f"UNet FLOPs per batch-2 call at {arguments.height // scale}x"
              f"{arguments.width // scale} latents (torch FlopCounterMode): "
              f"{flops / 1e9:.1f} GFLOP")
    missed = False
    if "easel" in results:
        ours = results["easel"]
        if flops:
            share = flops / statistics.median(ours["unet_call_s"]) / best_gemm
            missed |= share < TARGET_GEMM_SHARE
            print(f"target: Easel's UNet at >= {TARGET_GEMM_SHARE:.0%} of the GEMM rate: "
                  f"{share:.0%} -> {'met' if share >= TARGET_GEMM_SHARE else 'MISSED'}")
    if len(results) == 2:
        ours, theirs = results["easel"], results["diffusers"]
        ratio = statistics.median(ours["runs_s"]) / statistics.median(theirs["runs_s"])
        step = statistics.median(ours["step_s"]) / statistics.median(theirs["step_s"])
        unet = statistics.median(ours["unet_call_s"]) / statistics.median(theirs["unet_call_s"])
        missed |= 1 / ratio < TARGET_SPEED_UP
        print(f"ratio Easel / diffusers: whole run {ratio:.3f} ({1 / ratio:.2f}x faster), "
              f"one step {step:.3f}, one UNet call {unet:.3f}")
        print(f"target: >= {TARGET_SPEED_UP}x faster than diffusers: {1 / ratio:.2f}x -> "
              f"{'met' if 1 / ratio >= TARGET_SPEED_UP else 'MISSED'}")
        pixels = [np.load(scratch / f"{side}-pixels.npy").astype(np.int16)
                  for side in ("easel", "diffusers")]
        difference = np.abs(pixels[0] - pixels[1])
        print(f"largest pixel difference between the two pictures: {difference.max()}/255 "
              f"(mean {difference.mean():.3f})")
    return missed


def report_profile(profile: dict, diffusers: dict | None, gemm: dict) -> None:
    by_type = profile["seconds_by_op_type"]
    total = sum(by_type.values())
    print()
    print(f"Easel UNet profile (onnxruntime profiler, median call {profile['call_s']:.3f} s, "
          f"kernels {total:.3f} s):")
    for op_type, seconds in sorted(by_type.items(), key=lambda item: -item[1])[:12]:
        print(f"  {op_type:28} {seconds:7.3f} s  {seconds / total:6.1%}")
    if diffusers is None:
        return
    # torch's counter names aten ops; onnxruntime's profile names graph operators.
    counted = diffusers["unet_flops_by_op"]
    conv_flops = sum(count for op, count in counted.items() if "conv" in op)
    matmul_flops = diffusers["unet_flops"] - conv_flops
    conv_s = sum(seconds for op, seconds in by_type.items() if "Conv" in op)
    matmul_s = sum(seconds for op, seconds in by_type.items()
                   if any(key in op for key in ("MatMul", "Gemm", "Attention")))
    best = gemm_reference(gemm)
    for label, flops, seconds in (("convolutions", conv_flops, conv_s),
                                  ("matrix products and attention", matmul_flops, matmul_s)):
        if seconds:
            print(f"  {label}: {flops / 1e9:.1f} GFLOP in {seconds:.3f} s = "
                  f"{flops / seconds / 1e9:.1f} GFLOP/s ({flops / seconds / best:.0%} of GEMM)")
    rest = total - conv_s - matmul_s
    print(f"  everything else (norms, elementwise, reshapes): {rest:.3f} s "
          f"({rest / total:.0%} of kernel time)")


# --- command line ------------------------------------------------------------------------------

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
    parser.add_argument("--unet-calls", type=int, default=5,
                        help="timed direct UNet calls per side (default 5)")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads (0: all cores for Easel, torch's default for diffusers)")
    parser.add_argument("--providers", default="cpu", help="Easel's provider list (default cpu)")
    parser.add_argument("--gemm-size", type=int, default=4096)
    parser.add_argument("--gemm-repeats", type=int, default=5)
    parser.add_argument("--skip-diffusers", action="store_true")
    parser.add_argument("--skip-easel", action="store_true")
    parser.add_argument("--profile", action="store_true", help="profile Easel's UNet anyway")
    parser.add_argument("--no-profile", action="store_true", help="never profile")
    parser.add_argument("--json", type=Path, help="also write every result to this file")
    # Set by the coordinator when it runs one side in a process of its own.
    parser.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--latents", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--pixels", type=Path, help=argparse.SUPPRESS)
    arguments = parser.parse_args(argv)
    if not arguments.skip_easel and not (arguments.model or arguments.onnx_folder):
        parser.error("give --model NAME (imported in EASEL_HOME) or --onnx-folder PATH")
    if not arguments.skip_diffusers and arguments.diffusers_folder is None:
        parser.error("give --diffusers-folder PATH (or --skip-diffusers)")
    if arguments.runs < 1 or arguments.steps < 3 or arguments.unet_calls < 1:
        parser.error("use at least 1 run, 1 UNet call and 3 steps")
    if arguments.width % 8 or arguments.height % 8:
        parser.error("width and height must be multiples of 8")
    return arguments


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    arguments = parse_arguments(argv)
    if arguments.side is None:
        return coordinate(arguments, argv)
    side = {"gemm": side_gemm, "easel": side_easel, "diffusers": side_diffusers,
            "easel-profile": side_easel_profile}[arguments.side]
    arguments.result.write_text(json.dumps(side(arguments)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
