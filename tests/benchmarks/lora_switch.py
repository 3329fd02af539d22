"""LoRA switching on a real-size model: switch time, peak memory, a repeated set's cost.

Usage: ``python tests/benchmarks/lora_switch.py MODEL_FOLDER [--rank 16] [--locon] [--json OUT]``

MODEL_FOLDER is an installed model exported by this version of Easel (it needs the
``weights_map.json`` files), e.g. the random SD 1.5 of README's real-size check, steps 1-2.
Two random LoRA files (kohya naming, float16, ``--rank``) are written to a scratch folder,
each changing every attention layer of the UNet (query, key, value, output of self- and
cross-attention) and of the text encoder, as a style LoRA does.

Each side runs in its own process, since peak memory (``ru_maxrss``) is per process:

- plain: the text encoder and UNet loaded (from the optimised-graph cache, as the app loads
  them), one text-encoder call and one batch-2 UNet call at 64x64 latents (512x512 pixels);
- lora: the same, then LoRA set A (time to switch: checks, merge, both sessions made), one
  UNet call, set A again (the second request's cost), set B (a second switch), one UNet call.

Prints the switch times, the repeated set's cost, each process's peak memory and their ratio
(targets: a switch at most 15 s, peak memory at most 1.5x, a repeated set costs nothing).
This is a benchmark helper, not a test; pytest does not collect ``tests/benchmarks``.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
UNET_ATTENTION = re.compile(r"attn[12]\.(to_q|to_k|to_v|to_out\.0)\.weight$")
TEXT_ATTENTION = re.compile(r"self_attn\.(q_proj|k_proj|v_proj|out_proj)\.weight$")


def write_lora(model: Path, path: Path, rank: int, seed: int, locon: bool = False) -> int:
    """A random kohya-named LoRA on every attention layer (and with ``locon`` one 3x3
    convolution, which sends the UNet through the slower path: see engine.runtime.sessions,
    _create_with_overrides); returns its layer count."""
    rng = np.random.default_rng(seed)
    tensors: dict[str, np.ndarray] = {}
    if locon:
        base = "lora_unet_down_blocks_0_resnets_0_conv1"
        tensors[f"{base}.lora_down.weight"] = (
            rng.standard_normal((rank, 320, 3, 3)) / 54).astype(np.float16)
        tensors[f"{base}.lora_up.weight"] = (
            rng.standard_normal((320, rank, 1, 1)) * 0.01).astype(np.float16)
        tensors[f"{base}.alpha"] = np.array(rank, dtype=np.float16)
    for component, prefix, pattern in (("unet", "lora_unet_", UNET_ATTENTION),
                                       ("text_encoder", "lora_te_", TEXT_ATTENTION)):
        weights = json.loads((model / component / "weights_map.json").read_text())["weights"]
        for name, entry in weights.items():
            if not pattern.search(name):
                continue
            out, inputs = entry["shape"][:2]
            base = prefix + name.removesuffix(".weight").replace(".", "_")
            tensors[f"{base}.lora_down.weight"] = (
                rng.standard_normal((rank, inputs)) / np.sqrt(inputs)).astype(np.float16)
            tensors[f"{base}.lora_up.weight"] = (
                rng.standard_normal((out, rank)) * 0.01).astype(np.float16)
            tensors[f"{base}.alpha"] = np.array(rank, dtype=np.float16)
    _save_safetensors(tensors, path)
    return len(tensors) // 3


def _save_safetensors(tensors: dict[str, np.ndarray], path: Path) -> None:
    header, offset = {}, 0
    for name, array in tensors.items():
        header[name] = {"dtype": "F16", "shape": list(array.shape),
                        "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with path.open("wb") as file:
        file.write(struct.pack("<Q", len(text)) + text)
        for array in tensors.values():
            file.write(np.ascontiguousarray(array).tobytes())


# --- one side, in its own process ---------------------------------------------------------------

def child(side: str, model_folder: Path, cache: Path, loras: list[str]) -> dict:
    sys.path.insert(0, str(REPO))
    from engine.model import load_model
    from engine.runtime import RuntimeOptions

    model = load_model(model_folder, RuntimeOptions(optimized_cache=cache))
    report: dict = {}
    started = time.perf_counter()
    encode(model)
    denoise(model)
    report["plain_load_and_call_s"] = time.perf_counter() - started
    report["plain_unet_call_s"] = timed(lambda: denoise(model))
    if side == "lora":
        first, second = (Path(path) for path in loras)
        report["switch_s"], report["switch_parts_s"] = switch(model, first)
        report["unet_call_s"] = timed(lambda: denoise(model))
        report["same_set_again_s"], _ = switch(model, first)
        report["second_switch_s"], _ = switch(model, second)
        denoise(model)
    report["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return report


def switch(model, lora: Path) -> tuple[float, dict[str, float]]:
    """Seconds from asking for a LoRA set to both its sessions being ready, and its parts:
    the checks, then each session (its merge included)."""
    parts = {"checks": timed(lambda: model.use_loras([(lora, 1.0)])),
             # made (or found) here, not at the next call
             "text_encoder": timed(lambda: model.text_encoder),
             "unet": timed(lambda: model.unet)}
    return sum(parts.values()), parts


def encode(model) -> None:
    ids = np.full((1, 77), 49407, dtype=np.int32)
    ids[0, :3] = (49406, 320, 1125)
    model.text_encoder.run({"input_ids": ids})


def denoise(model) -> None:
    config = json.loads((model.folder / "unet" / "config.json").read_text())
    unet = model.unet
    rng = np.random.default_rng(0)
    context = (2, 77, config["cross_attention_dim"])
    unet.run({"sample": rng.standard_normal((2, config["in_channels"], 64, 64),
                                            dtype=np.float32),
              "timestep": np.array([999, 999], dtype=unet.input_type("timestep")),
              "encoder_hidden_states": rng.standard_normal(context, dtype=np.float32)})


def timed(work) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


# --- the driver ---------------------------------------------------------------------------------

def run_side(side: str, model: Path, cache: Path, loras: list[Path]) -> dict:
    command = [sys.executable, __file__, "--child", side, str(model), "--cache", str(cache),
               "--loras", ",".join(map(str, loras))]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the {side} side failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--locon", action="store_true",
                        help="add a 3x3 LoCon convolution (SD 1.5's first one: 320 channels)")
    parser.add_argument("--child", choices=("plain", "lora"))
    parser.add_argument("--cache", type=Path)
    parser.add_argument("--loras", default="")
    arguments = parser.parse_args()
    if arguments.child:
        print(json.dumps(child(arguments.child, arguments.model, arguments.cache,
                               arguments.loras.split(","))))
        return
    with tempfile.TemporaryDirectory(prefix="lora-switch-") as scratch:
        scratch_path = Path(scratch)
        loras = [scratch_path / "a.safetensors", scratch_path / "b.safetensors"]
        layers = [write_lora(arguments.model, path, arguments.rank, seed, arguments.locon)
                  for seed, path in enumerate(loras)]
        lora_mb = loras[0].stat().st_size / 1e6
        cache = scratch_path / "optimized"
        run_side("plain", arguments.model, cache, loras)  # fills the optimised-graph cache
        plain = run_side("plain", arguments.model, cache, loras)
        lora = run_side("lora", arguments.model, cache, loras)
    result = {"rank": arguments.rank, "layers": layers[0],
              "lora_file_mb": lora_mb, "plain": plain, "lora": lora,
              "peak_ratio": lora["peak_rss_mb"] / plain["peak_rss_mb"]}
    print(f"LoRA: rank {arguments.rank}, {layers[0]} layers (UNet and text encoder),"
          f" {lora_mb:.0f} MB")
    print(f"switch to a new set:  {lora['switch_s']:.1f} s, then {lora['second_switch_s']:.1f} s"
          f" (target at most 15 s)")
    print(f"the same set again:   {lora['same_set_again_s'] * 1000:.1f} ms")
    parts = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in
                      lora["switch_parts_s"].items())
    print(f"  first switch: {parts}")
    print(f"UNet call (batch 2, 64x64): {lora['unet_call_s']:.1f} s with the LoRA, "
          f"{lora['plain_unet_call_s']:.1f} s without")
    print(f"peak memory: {plain['peak_rss_mb']:.0f} MB without, {lora['peak_rss_mb']:.0f} MB "
          f"with two switches: {result['peak_ratio']:.2f}x (target at most 1.5x)")
    if arguments.json:
        arguments.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
