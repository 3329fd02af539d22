"""What one ControlNet costs in text to image on a real-size model: time per step, memory.

Usage: ``python tests/benchmarks/controlnet_cost.py MODEL_FOLDER [--steps 6] [--size 512]
[--controlnet FOLDER] [--json OUT]``

MODEL_FOLDER is an installed SD 1.x model, e.g. the random SD 1.5 of README's real-size
check, steps 1-2. Unless ``--controlnet`` names an installed ControlNet, a real-size random
one is made in a scratch folder: diffusers' ``ControlNetModel.from_unet`` on a UNet built from
``resources/configs/sd15/unet/config.json`` (SD 1.5's ControlNet architecture, 361M
parameters), its zero convolutions given small random values (all-zero residuals would leave
the picture unchanged; see tests/tiny_controlnets.py), exported with
``engine.export.controlnet.export_controlnet`` and described as a canny ControlNet.

The script runs itself in separate processes, one after the other, each on an optimised-graph
cache in the scratch folder (``RuntimeOptions(optimized_cache=...)``, as the app loads):

- prepare: the first use of everything on an empty cache: the plain UNet's optimising load,
  the UNet variant that takes residuals (``engine.control.unet_variant``: the graph edit, then
  its optimising load), the ControlNet's, the text encoder's and the VAE decoder's;
- plain: text to image at ``--size`` (guidance 7.5, euler), one 1-step warm-up, then one run
  of ``--steps`` steps timed from progress callbacks (every step but the first);
- control: the same with one ``Control`` (a canny picture of a synthetic picture), then
  ``--calls`` direct ``ControlNet.residuals`` calls (batch 2, the ControlNet alone), then
  ``--calls`` pairs, one after the other, of a UNet call with zero residuals (a plain step's
  UNet work) and a ControlNet call followed by a UNet call: a ratio that other work on a
  shared machine disturbs alike, unlike two processes minutes apart.

Each process reports its own peak memory (``ru_maxrss``) and the graphs it had loaded.
Prints the median step each way, their ratio (target, issue 18: at most 1.6), the ControlNet
call alone, the variant's first-use cost and each side's peak memory.
This is a benchmark helper, not a test; pytest does not collect ``tests/benchmarks``.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

TARGET_RATIO = 1.6  # a step with one ControlNet over a plain step
ZERO_CONV_SCALE = 0.1  # as tests/tiny_controlnets.py, over the square root of the fan-in
PROMPT = "a lighthouse on a cliff at dusk"


# --- the random ControlNet ---------------------------------------------------------------------

def make_controlnet(folder: Path) -> None:
    """A real-size random SD 1.5 ControlNet, installed in ``folder`` as the app installs one."""
    import torch
    from diffusers import ControlNetModel, UNet2DConditionModel

    from engine.control.description import ControlNetDescription
    from engine.export.controlnet import export_controlnet
    from engine.manifest import write_manifest
    from tests.benchmarks.make_random_sd15 import read_config

    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(read_config("unet/config.json"))
    controlnet = ControlNetModel.from_unet(unet)  # SD 1.5's conditioning embedding, /8
    del unet
    generator = torch.Generator().manual_seed(1)
    zero_convolutions = [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block,
                         controlnet.controlnet_cond_embedding.conv_out]
    with torch.no_grad():
        for convolution in zero_convolutions:
            fan_in = math.prod(convolution.weight.shape[1:])
            for parameter in convolution.parameters():
                parameter.copy_(torch.randn(parameter.shape, generator=generator)
                                * ZERO_CONV_SCALE / math.sqrt(fan_in))
    export_controlnet(controlnet.eval(), folder)
    ControlNetDescription("sd1", "canny", len(controlnet.controlnet_down_blocks),
                          "random").save(folder)
    write_manifest(folder)


def synthetic_picture(size: int) -> np.ndarray:
    """Discs and bars on a gradient: plenty of edges for canny, no file needed."""
    y, x = np.mgrid[0:size, 0:size] / size
    grey = 80 * x + 40 * y
    for cx, cy, radius in ((0.3, 0.35, 0.18), (0.7, 0.6, 0.22), (0.45, 0.8, 0.1)):
        grey = np.where((x - cx) ** 2 + (y - cy) ** 2 < radius**2, 220 - 60 * x, grey)
    grey = np.where((np.floor(x * 12) % 3 == 0) & (y > 0.85), 30, grey)
    return np.repeat(grey[..., None], 3, axis=2).clip(0, 255).astype(np.uint8)


# --- the sides, each in its own process ----------------------------------------------------------

def side_prepare(arguments: argparse.Namespace) -> dict:
    """Every graph's first use on an empty cache; one UNet loaded at a time."""
    from engine.control.controlnet import ControlNet
    from engine.control.unet_variant import control_unet_path
    from engine.runtime import clear_sessions

    model, options = open_model(arguments)
    report = {"text_encoder_first_load_s": timed(lambda: model.text_encoder),
              "vae_decoder_first_load_s": timed(lambda: model.vae_decoder),
              "unet_first_load_s": timed(lambda: model.unet)}
    clear_sessions()
    report["variant_edit_s"] = timed(
        lambda: control_unet_path(model.folder, model.hash, options.optimized_cache))
    report["variant_first_load_s"] = timed(lambda: model.control_unet)
    clear_sessions()
    report["controlnet_first_load_s"] = timed(
        lambda: ControlNet(arguments.controlnet, options).session)
    report["peak_rss_gb"] = peak_rss_gb()
    return report


def side_generate(arguments: argparse.Namespace) -> dict:
    from engine.control.control import Control
    from engine.control.controlnet import ControlNet
    from engine.control.pictures import canny_edges, prepare_control_picture
    from engine.pipelines.text_to_image import TextToImagePipeline
    from engine.request import TextToImageRequest
    from engine.runtime import CancelToken

    model, options = open_model(arguments)
    size = arguments.size
    edges = canny_edges(synthetic_picture(size))
    controls = (Control(arguments.controlnet, edges),) if arguments.child == "control" else ()
    report: dict = {"loads_s": {"text_encoder": timed(lambda: model.text_encoder),
                                "vae_decoder": timed(lambda: model.vae_decoder)}}
    if controls:
        report["loads_s"]["unet_variant"] = timed(lambda: model.control_unet)
        report["loads_s"]["controlnet"] = timed(
            lambda: ControlNet(arguments.controlnet, options).session)
    else:
        report["loads_s"]["unet"] = timed(lambda: model.unet)
    report["rss_gb"] = {"loaded": rss_gb()}
    pipeline = TextToImagePipeline(model)

    def generate(steps: int) -> list[float]:
        stamps: list[float] = []
        request = TextToImageRequest(PROMPT, width=size, height=size, steps=steps,
                                     guidance=7.5, scheduler="euler", seed=1,
                                     controls=controls)
        pipeline(request, on_progress=lambda _: stamps.append(time.perf_counter()))
        return [later - earlier for earlier, later in zip(stamps, stamps[1:], strict=False)]

    report["warmup_s"] = timed(lambda: generate(1))
    report["rss_gb"]["after_warmup"] = rss_gb()
    report["step_s"] = generate(arguments.steps)
    report["rss_gb"]["after_run"] = rss_gb()
    report["rss_gb"]["peak_of_generation"] = peak_rss_gb()
    print(f"  {arguments.child}: steps {', '.join(f'{s:.2f}' for s in report['step_s'])} s",
          file=sys.stderr, flush=True)
    if controls:
        controlnet = ControlNet(arguments.controlnet, options)
        picture, _ = prepare_control_picture(edges, size, size)
        rng = np.random.default_rng(0)
        feeds = {"sample": rng.standard_normal((2, 4, size // 8, size // 8), dtype=np.float32),
                 "timestep": np.full((2,), 500, np.float32),
                 "encoder_hidden_states": rng.standard_normal((2, 77, 768), dtype=np.float32)}
        cancel = CancelToken()
        controlnet.residuals(feeds, picture, cancel)
        report["controlnet_call_s"] = [timed(lambda: controlnet.residuals(feeds, picture,
                                                                          cancel))
                                       for _ in range(arguments.calls)]
        report["paired_s"] = paired_calls(model.control_unet, controlnet, feeds, picture,
                                          cancel, arguments.calls)
    report["loaded_graphs"] = loaded_graphs()
    report["peak_rss_gb"] = peak_rss_gb()
    return report


def paired_calls(unet, controlnet, feeds: dict, picture: np.ndarray, cancel,
                 pairs: int) -> dict[str, list[float]]:
    """A plain step's UNet call (the variant with zero residuals: the plain UNet's work and
    13 additions) and a controlled one (ControlNet, then the variant), one after the other,
    ``pairs`` times: a ratio that work elsewhere on the machine disturbs alike."""
    names = controlnet.residual_names
    unet_feeds = {**feeds, "timestep": feeds["timestep"].astype(unet.input_type("timestep"))}
    zeros = dict(zip(names, [np.zeros_like(residual) for residual in
                             controlnet.residuals(feeds, picture, cancel)], strict=True))

    def plain() -> None:
        unet.run({**unet_feeds, **zeros}, ["out_sample"], cancel)

    def controlled() -> None:
        residuals = controlnet.residuals(feeds, picture, cancel)
        unet.run({**unet_feeds, **dict(zip(names, residuals, strict=True))}, ["out_sample"],
                 cancel)

    plain()
    times: dict[str, list[float]] = {"plain": [], "controlled": []}
    for _ in range(pairs):
        times["plain"].append(timed(plain))
        times["controlled"].append(timed(controlled))
    return times


def open_model(arguments: argparse.Namespace):
    from engine.model import load_model
    from engine.runtime import RuntimeOptions

    options = RuntimeOptions(optimized_cache=arguments.cache)
    return load_model(arguments.model, options), options


def loaded_graphs() -> list[str]:
    """The graph files the engine holds sessions for (the plain UNet beside the variant would
    double the UNet's memory)."""
    from engine.runtime import sessions

    return sorted(str(key[0]) for key in sessions._sessions)


def peak_rss_gb() -> float:
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is kB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 1e9


def rss_gb() -> float | None:
    """This process's resident memory now (Linux), to tell weights from working memory."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    kilobytes = next(line.split()[1] for line in status.splitlines()
                     if line.startswith("VmRSS:"))
    return int(kilobytes) * 1024 / 1e9


def timed(work) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


# --- the driver ----------------------------------------------------------------------------------

def run_side(side: str, arguments: argparse.Namespace, cache: Path, controlnet: Path) -> dict:
    command = [sys.executable, __file__, str(arguments.model), "--child", side,
               "--cache", str(cache), "--controlnet", str(controlnet),
               "--steps", str(arguments.steps), "--size", str(arguments.size),
               "--calls", str(arguments.calls)]
    print(f"{side}...", flush=True)
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the {side} side failed (its messages are above)")
    return json.loads(done.stdout.strip().splitlines()[-1])


def summary(prepare: dict, plain: dict, control: dict, made: float | None) -> dict:
    plain_step = statistics.median(plain["step_s"])
    control_step = statistics.median(control["step_s"])
    fastest = min(control["step_s"]) / min(plain["step_s"])
    return {"plain_step_s": plain_step, "control_step_s": control_step,
            "ratio": control_step / plain_step, "ratio_of_fastest": fastest,
            "controlnet_call_s": statistics.median(control["controlnet_call_s"]),
            "paired_ratio": statistics.median(control["paired_s"]["controlled"])
            / statistics.median(control["paired_s"]["plain"]),
            "controlnet_made_s": made, "prepare": prepare, "plain": plain, "control": control}


def print_summary(result: dict, arguments: argparse.Namespace) -> None:
    prepare, plain, control = result["prepare"], result["plain"], result["control"]
    size = arguments.size
    print(f"text to image {size}x{size}, guidance 7.5, euler, median of {len(plain['step_s'])}"
          f" steps after a 1-step warm-up")
    print(f"  plain step:          {result['plain_step_s']:.2f} s")
    print(f"  with one ControlNet: {result['control_step_s']:.2f} s: "
          f"{result['ratio']:.2f}x (target at most {TARGET_RATIO}x, "
          f"{'met' if result['ratio'] <= TARGET_RATIO else 'missed'})")
    print(f"  fastest steps: {min(plain['step_s']):.2f} s and {min(control['step_s']):.2f} s: "
          f"{result['ratio_of_fastest']:.2f}x (less disturbed by other work on the machine)")
    print(f"  ControlNet call alone (batch 2, median): {result['controlnet_call_s']:.2f} s "
          f"({result['controlnet_call_s'] / result['plain_step_s']:.0%} of a plain step)")
    paired = control["paired_s"]
    print(f"  alternating in one process ({len(paired['plain'])} pairs): UNet call "
          f"{statistics.median(paired['plain']):.2f} s, ControlNet then UNet "
          f"{statistics.median(paired['controlled']):.2f} s: {result['paired_ratio']:.2f}x")
    print(f"first use: variant graph edit {prepare['variant_edit_s']:.1f} s, its first "
          f"(optimising) load {prepare['variant_first_load_s']:.1f} s; plain UNet's first "
          f"load {prepare['unet_first_load_s']:.1f} s, ControlNet's "
          f"{prepare['controlnet_first_load_s']:.1f} s")
    loads = control["loads_s"]
    print(f"from the cache: UNet {plain['loads_s']['unet']:.1f} s, variant "
          f"{loads['unet_variant']:.1f} s, ControlNet {loads['controlnet']:.1f} s")
    extra = control["peak_rss_gb"] - plain["peak_rss_gb"]
    held = ", ".join(f"{Path(path).parent.name}/{Path(path).name}"
                     for path in control["loaded_graphs"])
    for name, side in (("plain", plain), ("with the ControlNet", control)):
        phases = ", ".join(f"{phase.replace('_', ' ')} {gb:.2f}" for phase, gb
                           in side["rss_gb"].items() if gb is not None)
        print(f"memory {name} (GB): {phases}")
    print(f"peak memory: plain {plain['peak_rss_gb']:.2f} GB, with the ControlNet "
          f"{control['peak_rss_gb']:.2f} GB (+{extra:.2f} GB); graphs held with the "
          f"ControlNet: {held}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--controlnet", type=Path, help="an installed SD 1.x ControlNet")
    parser.add_argument("--steps", type=int, default=6, help="timed: all but the first")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--calls", type=int, default=3, help="direct ControlNet calls")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", choices=("prepare", "plain", "control"))
    parser.add_argument("--cache", type=Path)
    arguments = parser.parse_args()
    if arguments.child:
        side = side_prepare if arguments.child == "prepare" else side_generate
        print(json.dumps(side(arguments)))
        return
    with tempfile.TemporaryDirectory(prefix="controlnet-cost-") as scratch:
        scratch_path = Path(scratch)
        controlnet, made = arguments.controlnet, None
        if controlnet is None:
            controlnet = scratch_path / "controlnet"
            print("making a random ControlNet...", flush=True)
            made = timed(lambda: make_controlnet_in_process(controlnet))
        cache = scratch_path / "optimized"
        prepare = run_side("prepare", arguments, cache, controlnet)
        plain = run_side("plain", arguments, cache, controlnet)
        control = run_side("control", arguments, cache, controlnet)
    result = summary(prepare, plain, control, made)
    print_summary(result, arguments)
    if arguments.json:
        arguments.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


def make_controlnet_in_process(folder: Path) -> None:
    """torch's memory goes with the process that made the ControlNet."""
    code = ("import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); "
            "from tests.benchmarks.controlnet_cost import make_controlnet; "
            "make_controlnet(Path(sys.argv[2]))")
    subprocess.run([sys.executable, "-c", code, str(REPO), str(folder)], check=True)


if __name__ == "__main__":
    main()
