"""What an image prompt (IP-Adapter) costs on a real-size model: time per UNet call, the
encoding once per request, the first use, memory.

Usage: ``python tests/benchmarks/image_prompt_cost.py MODEL_FOLDER [--store FOLDER]
[--vit h|l] [--pairs 5] [--calls 2] [--size 512] [--generate] [--json OUT]``

MODEL_FOLDER is an installed SD 1.x model, e.g. the random SD 1.5 of README's real-size
check, steps 1-2. A real-size random IP-Adapter for SD 1.5 and a real-size random CLIP vision
encoder are imported through the model store (``ModelStore.import_model``, as
``easel models import`` does) into ``--store`` (by default a scratch folder deleted at the
end; a store that already has them is reused):

- the adapter: h94's ``ip-adapter_sd15.safetensors`` layout and sizes (the "base" adapter:
  ImageProjection 1024 -> 4 tokens × 768, and ``to_k_ip`` / ``to_v_ip`` for the UNet's 16
  cross-attentions, 22M parameters), random values from tests/tiny_ip_adapters.py;
- the encoder: transformers' ``CLIPVisionModelWithProjection`` from a config, random init:
  ViT-H/14 as h94's ``models/image_encoder/`` (width 1280, 32 layers, projection 1024, 632M
  parameters), or with ``--vit l`` a ViT-L/14 (width 1024, 24 layers) with projection 1024.

The script runs itself in separate processes, one after the other, each on an optimised-graph
cache in the scratch folder (``RuntimeOptions(optimized_cache=...)``, as the app loads):

- prepare: the first use of everything on an empty cache: the plain UNet's optimising load,
  the UNet that reads image tokens (``engine.image_prompt.unet_edit``: the graph edit, then
  its optimising load), the encoder's and the image projection's;
- plain: the plain UNet from the cache, one warm-up call, then ``--calls`` batch-2 calls at
  ``--size`` (64×64 latents at 512): this side's peak memory;
- image_prompt: ``ImagePromptGuide`` for one reference picture (the encoder and projection
  loaded, the picture encoded), ``--calls`` more guides (what each request pays: reading,
  encoding and projecting the picture and the "no picture" half), then the guide's UNet
  (``guide.unet``, fed ``guide.feeds(2)``) like the plain side; its peak memory and the graphs
  it holds. With ``--generate``, then one 1-step text to image with the image prompt, to show
  the graphs a generation holds (the plain UNet beside the edited one would be waste);
- alternate: ``--pairs`` pairs of a plain and an image-prompt call in one process, the order
  swapped every pair: a ratio that other work on a shared machine disturbs alike, unlike two
  processes minutes apart. One UNet is held at a time (both would need 16 GB at 512×512):
  each turn loads it from the cache, makes an untimed call, times one and releases it.

Prints the ratio of the medians (target, issue 18: an image prompt adds at most 10% to a
step: 1.10), the encoding per request, the first-use costs and each side's peak memory.
This is a benchmark helper, not a test; pytest does not collect ``tests/benchmarks``.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
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

TARGET_RATIO = 1.10  # a UNet call with an image prompt over a plain one
WEIGHT = 0.8
PROMPT = "a lighthouse on a cliff at dusk"
ADAPTER_NAME = "ip-adapter-sd15-random"
# SD 1.5's cross-attentions' inner widths in diffusers' order (down blocks, up blocks, mid
# block), which the original files number 1, 3, ..., 31.
SD15_LAYER_WIDTHS = (320, 320, 640, 640, 1280, 1280, 1280, 1280, 1280, 640, 640, 640,
                     320, 320, 320, 1280)
ENCODERS = {  # CLIPVisionConfig of each, projection 1024 as the SD 1.5 adapters read
    "h": {"hidden_size": 1280, "intermediate_size": 5120, "num_attention_heads": 16,
          "num_hidden_layers": 32, "projection_dim": 1024, "image_size": 224,
          "patch_size": 14, "hidden_act": "gelu", "layer_norm_eps": 1e-5},
    "l": {"hidden_size": 1024, "intermediate_size": 4096, "num_attention_heads": 16,
          "num_hidden_layers": 24, "projection_dim": 1024, "image_size": 224,
          "patch_size": 14, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5},
}


def encoder_name(vit: str) -> str:
    return f"image-encoder-vit-{vit}-random"


# --- the random adapter and encoder, imported through the model store ---------------------------

def side_make(arguments: argparse.Namespace) -> dict:
    """Write both in h94's layout under the store's scratch, import what the store lacks."""
    from desktop.model_store import ModelStore

    store = ModelStore(arguments.store)
    have = {model.name: model.path for model in store.installed()}
    report: dict = {}
    hub = Path(tempfile.mkdtemp(prefix="ip-hub-", dir=arguments.store.parent))
    try:
        if ADAPTER_NAME not in have:
            source = hub / "ip-adapter_sd15.safetensors"
            report["adapter_written_s"] = timed(lambda: write_adapter(source))
            report["adapter_import_s"] = timed(
                lambda: store.import_model(source, ADAPTER_NAME))
        name = encoder_name(arguments.vit)
        if name not in have:
            source = hub / "image_encoder"
            report["encoder_written_s"] = timed(lambda: write_encoder(source, arguments.vit))
            report["encoder_import_s"] = timed(
                lambda: store.import_model(source / "model.safetensors", name))
    finally:
        shutil.rmtree(hub, ignore_errors=True)
    report["peak_rss_gb"] = peak_rss_gb()
    return report


def write_adapter(path: Path) -> None:
    from safetensors.torch import save_file

    from tests.tiny_ip_adapters import adapter_state

    state = adapter_state("base", 0, encoder=ENCODERS["h"], cross_attention_dim=768,
                          layer_widths=SD15_LAYER_WIDTHS)
    save_file(state, str(path))


def write_encoder(folder: Path, vit: str) -> None:
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**ENCODERS[vit])).eval()
    encoder.save_pretrained(folder)


def synthetic_picture(size: int) -> np.ndarray:
    """Discs on a colour gradient: a reference picture without a file."""
    y, x = np.mgrid[0:size, 0:size] / size
    picture = np.stack([200 * x + 30, 160 * y + 40, 120 * (1 - x) + 60], axis=2)
    for cx, cy, radius in ((0.3, 0.35, 0.18), (0.7, 0.6, 0.22)):
        picture[(x - cx) ** 2 + (y - cy) ** 2 < radius**2] = (230, 200, 60)
    return picture.clip(0, 255).astype(np.uint8)


# --- the sides, each in its own process ----------------------------------------------------------

def side_prepare(arguments: argparse.Namespace) -> dict:
    """Every graph's first use on an empty cache; one UNet loaded at a time."""
    from engine.image_prompt.description import ENCODER_FILE, PROJECTION_FILE
    from engine.image_prompt.sessions import IPAdapter
    from engine.image_prompt.unet_edit import ip_unet_path
    from engine.runtime import clear_sessions, get_session

    model, options = open_model(arguments)
    adapter = IPAdapter(arguments.adapter, options)
    report = {"unet_first_load_s": timed(lambda: model.unet)}
    clear_sessions()
    path = None

    def edit() -> None:
        nonlocal path
        path = ip_unet_path(model.folder, model.hash, adapter.folder, adapter.hash,
                            options.optimized_cache)

    report["ip_unet_edit_s"] = timed(edit)
    report["ip_unet_first_load_s"] = timed(
        lambda: get_session(path, model.runtime, model.overrides_for("unet")))
    clear_sessions()
    report["encoder_first_load_s"] = timed(
        lambda: get_session(arguments.encoder / ENCODER_FILE, options))
    report["projection_first_load_s"] = timed(
        lambda: get_session(arguments.adapter / PROJECTION_FILE, options))
    report["ip_unet_folder_mb"] = folder_mb(path.parent, own_files_only=True)
    report["peak_rss_gb"] = peak_rss_gb()
    return report


def side_plain(arguments: argparse.Namespace) -> dict:
    from engine.runtime import CancelToken

    model, _ = open_model(arguments)
    report: dict = {"unet_load_s": timed(lambda: model.unet), "rss_gb": {"loaded": rss_gb()}}
    unet, feeds, cancel = model.unet, unet_feeds(model.unet, arguments.size), CancelToken()
    report["warmup_call_s"] = timed(lambda: unet.run(feeds, ["out_sample"], cancel))
    report["call_s"] = [timed(lambda: unet.run(feeds, ["out_sample"], cancel))
                        for _ in range(arguments.calls)]
    report["rss_gb"]["after_calls"] = rss_gb()
    report["loaded_graphs"] = loaded_graphs()
    report["peak_rss_gb"] = peak_rss_gb()
    return report


def side_image_prompt(arguments: argparse.Namespace) -> dict:
    from engine.image_prompt.guide import ImagePromptGuide
    from engine.runtime import CancelToken

    model, _ = open_model(arguments)
    guide = None

    def make_guide() -> None:
        nonlocal guide
        guide = ImagePromptGuide(model, [image_prompt(arguments)], use_guidance=True)

    report: dict = {"first_guide_s": timed(make_guide), "rss_gb": {"encoder_loaded": rss_gb()}}
    report["guide_s"] = [timed(make_guide) for _ in range(arguments.calls)]
    report["ip_unet_load_s"] = timed(lambda: guide.unet)
    report["rss_gb"]["unet_loaded"] = rss_gb()
    unet, cancel = guide.unet, CancelToken()
    feeds = {**unet_feeds(unet, arguments.size), **guide.feeds(2, unet)}
    report["ip_tokens_shape"] = list(feeds["ip_tokens"].shape)
    report["warmup_call_s"] = timed(lambda: unet.run(feeds, ["out_sample"], cancel))
    report["call_s"] = [timed(lambda: unet.run(feeds, ["out_sample"], cancel))
                        for _ in range(arguments.calls)]
    report["rss_gb"]["after_calls"] = rss_gb()
    report["loaded_graphs"] = loaded_graphs()
    report["peak_rss_gb"] = peak_rss_gb()
    if arguments.generate:
        report["generation"] = one_generation(model, arguments)
    return report


def one_generation(model, arguments: argparse.Namespace) -> dict:
    """One 1-step text to image with the image prompt: which graphs a generation holds."""
    from engine.pipelines.text_to_image import TextToImagePipeline
    from engine.request import TextToImageRequest

    size = arguments.size
    request = TextToImageRequest(PROMPT, width=size, height=size, steps=1, guidance=7.5,
                                 scheduler="euler", seed=1,
                                 image_prompts=(image_prompt(arguments),))
    took = timed(lambda: TextToImagePipeline(model)(request))
    return {"s": took, "loaded_graphs": loaded_graphs(), "peak_rss_gb": peak_rss_gb()}


def side_alternate(arguments: argparse.Namespace) -> dict:
    """Plain and image-prompt UNet calls in turn, the order swapped every pair. One UNet is
    held at a time (each holds its weights and about 5 GB of working memory at 512×512, so
    both together would need 16 GB): every turn loads it from the cache, makes one untimed
    call (its memory grows to its working size) and one timed call, and releases it."""
    from engine.image_prompt.guide import ImagePromptGuide
    from engine.runtime import CancelToken, release_sessions

    model, _ = open_model(arguments)
    guide = ImagePromptGuide(model, [image_prompt(arguments)], use_guidance=True)
    ip_inputs = guide.feeds(2, guide.unet)
    for folder in (arguments.encoder, arguments.adapter, guide.unet.path.parent):
        release_sessions(folder)  # the tokens are made; one UNet at a time from here
    sessions = {"plain": lambda: model.unet, "image_prompt": lambda: guide.unet}
    cancel = CancelToken()

    def turn(name: str) -> tuple[float, float]:
        load_s = timed(sessions[name])
        unet = sessions[name]()
        feeds = unet_feeds(unet, arguments.size)
        if name == "image_prompt":
            feeds.update(ip_inputs)
        unet.run(feeds, ["out_sample"], cancel)
        call_s = timed(lambda: unet.run(feeds, ["out_sample"], cancel))
        release_sessions(unet.path.parent)
        return load_s, call_s

    times: dict[str, list[float]] = {"plain": [], "image_prompt": []}
    loads: dict[str, list[float]] = {"plain": [], "image_prompt": []}
    for pair in range(arguments.pairs):
        order = ("plain", "image_prompt") if pair % 2 == 0 else ("image_prompt", "plain")
        for name in order:
            load_s, call_s = turn(name)
            loads[name].append(load_s)
            times[name].append(call_s)
        print(f"  pair {pair + 1}: plain {times['plain'][-1]:.2f} s, image prompt "
              f"{times['image_prompt'][-1]:.2f} s", file=sys.stderr, flush=True)
    return {"pairs_s": times, "loads_s": loads, "peak_rss_gb": peak_rss_gb()}


def image_prompt(arguments: argparse.Namespace):
    from engine.image_prompt.prompt import ImagePrompt

    return ImagePrompt(arguments.adapter, arguments.encoder, synthetic_picture(512), WEIGHT)


def unet_feeds(unet, size: int) -> dict[str, np.ndarray]:
    """A guided step's batch-2 UNet inputs at ``size`` (the same numbers on every side)."""
    rng = np.random.default_rng(0)
    latent = size // 8
    return {"sample": rng.standard_normal((2, 4, latent, latent), dtype=np.float32),
            "timestep": np.full((2,), 500, unet.input_type("timestep")),
            "encoder_hidden_states": rng.standard_normal((2, 77, 768), dtype=np.float32)}


def open_model(arguments: argparse.Namespace):
    from engine.model import load_model
    from engine.runtime import RuntimeOptions

    options = RuntimeOptions(optimized_cache=arguments.cache)
    return load_model(arguments.model, options), options


def loaded_graphs() -> list[str]:
    """The graph files the engine holds sessions for."""
    from engine.runtime import sessions

    return sorted(str(key[0]) for key in sessions._sessions)


def folder_mb(folder: Path, own_files_only: bool = False) -> float:
    """The folder's size; with ``own_files_only``, files hard-linked from elsewhere left out."""
    files = [path for path in Path(folder).rglob("*") if path.is_file()]
    if own_files_only:
        files = [path for path in files if path.stat().st_nlink == 1]
    return sum(path.stat().st_size for path in files) / 1e6


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

SIDES = {"make": side_make, "prepare": side_prepare, "plain": side_plain,
         "image_prompt": side_image_prompt, "alternate": side_alternate}


def run_side(side: str, arguments: argparse.Namespace, cache: Path) -> dict:
    command = [sys.executable, __file__, str(arguments.model), "--child", side,
               "--cache", str(cache), "--store", str(arguments.store),
               "--vit", arguments.vit, "--size", str(arguments.size),
               "--calls", str(arguments.calls), "--pairs", str(arguments.pairs)]
    if arguments.generate:
        command.append("--generate")
    print(f"{side}...", flush=True)
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the {side} side failed (its messages are above)")
    return json.loads(done.stdout.strip().splitlines()[-1])


def summary(sides: dict[str, dict]) -> dict:
    pairs = sides["alternate"]["pairs_s"]
    plain, ip = statistics.median(pairs["plain"]), statistics.median(pairs["image_prompt"])
    ratio = ip / plain
    return {"plain_call_s": plain, "image_prompt_call_s": ip, "ratio": ratio,
            "ratio_of_fastest": min(pairs["image_prompt"]) / min(pairs["plain"]),
            "pair_ratios": [b / a for a, b in zip(pairs["plain"], pairs["image_prompt"],
                                                  strict=True)],
            "target": TARGET_RATIO, "target_met": ratio <= TARGET_RATIO,
            "encode_per_request_s": statistics.median(sides["image_prompt"]["guide_s"]),
            **sides}


def print_summary(result: dict, arguments: argparse.Namespace) -> None:
    prepare, plain, ip = result["prepare"], result["plain"], result["image_prompt"]
    size, pairs = arguments.size, result["alternate"]["pairs_s"]
    vit = "ViT-H/14" if arguments.vit == "h" else "ViT-L/14"
    print(f"batch-2 UNet calls at {size}x{size} ({size // 8}x{size // 8} latents), one "
          f"reference picture ({ip['ip_tokens_shape'][1]} image tokens), encoder {vit}")
    print(f"  alternating in one process ({len(pairs['plain'])} pairs, median): plain "
          f"{result['plain_call_s']:.2f} s, with the image prompt "
          f"{result['image_prompt_call_s']:.2f} s: {result['ratio']:.3f}x (target at most "
          f"{TARGET_RATIO}x, {'met' if result['target_met'] else 'missed'}); per pair "
          f"{', '.join(f'{r:.3f}' for r in result['pair_ratios'])}")
    print(f"  fastest calls: plain {min(pairs['plain']):.2f} s, with the image prompt "
          f"{min(pairs['image_prompt']):.2f} s: {result['ratio_of_fastest']:.3f}x (less "
          f"disturbed by other work on the machine)")
    print(f"  each side in its own process (median of {arguments.calls}): plain "
          f"{statistics.median(plain['call_s']):.2f} s, with the image prompt "
          f"{statistics.median(ip['call_s']):.2f} s")
    print(f"once per request: reading, encoding and projecting the picture "
          f"{result['encode_per_request_s']:.2f} s (median of {arguments.calls}; the first, "
          f"with the encoder and projection loaded from the cache, {ip['first_guide_s']:.2f} s)")
    print(f"first use: UNet graph edit {prepare['ip_unet_edit_s']:.2f} s "
          f"({prepare['ip_unet_folder_mb']:.0f} MB written, the UNet's weights hard-linked), "
          f"its first (optimising) load {prepare['ip_unet_first_load_s']:.1f} s; plain UNet's "
          f"first load {prepare['unet_first_load_s']:.1f} s; encoder "
          f"{prepare['encoder_first_load_s']:.1f} s, projection "
          f"{prepare['projection_first_load_s']:.2f} s")
    print(f"from the cache: UNet {plain['unet_load_s']:.1f} s, UNet with image tokens "
          f"{ip['ip_unet_load_s']:.1f} s")
    for name, side in (("plain", plain), ("with the image prompt", ip)):
        phases = ", ".join(f"{phase.replace('_', ' ')} {gb:.2f}" for phase, gb
                           in side["rss_gb"].items() if gb is not None)
        print(f"memory {name} (GB): {phases}")
    held = ", ".join(short(path) for path in ip["loaded_graphs"])
    print(f"peak memory: plain {plain['peak_rss_gb']:.2f} GB, with the image prompt "
          f"{ip['peak_rss_gb']:.2f} GB (+{ip['peak_rss_gb'] - plain['peak_rss_gb']:.2f} GB; "
          f"graphs held: {held}); alternating, one UNet at a time "
          f"{result['alternate']['peak_rss_gb']:.2f} GB")
    if "generation" in ip:
        generation = ip["generation"]
        print(f"a 1-step text to image with the image prompt: {generation['s']:.1f} s, graphs "
              f"held after it: {', '.join(short(p) for p in generation['loaded_graphs'])}")


def short(path: str) -> str:
    return "/".join(Path(path).parts[-3:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--store", type=Path,
                        help="the model store for the random adapter and encoder (reused)")
    parser.add_argument("--vit", choices=("h", "l"), default="h", help="the encoder's size")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--calls", type=int, default=2, help="timed calls on each side")
    parser.add_argument("--pairs", type=int, default=5, help="alternating pairs")
    parser.add_argument("--generate", action="store_true",
                        help="also one 1-step generation with the image prompt")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", choices=tuple(SIDES))
    parser.add_argument("--cache", type=Path)
    arguments = parser.parse_args()
    if arguments.child:
        arguments.adapter = arguments.store / ADAPTER_NAME
        arguments.encoder = arguments.store / encoder_name(arguments.vit)
        print(json.dumps(SIDES[arguments.child](arguments)))
        return
    with tempfile.TemporaryDirectory(prefix="image-prompt-cost-") as scratch:
        scratch_path = Path(scratch)
        arguments.store = (arguments.store or scratch_path / "models").resolve()
        cache = scratch_path / "optimized"
        sides = {side: run_side(side, arguments, cache) for side in SIDES}
    result = summary(sides)
    print_summary(result, arguments)
    if arguments.json:
        arguments.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
