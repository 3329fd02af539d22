"""Decode time at 512×512 (latents 64×64, batch 1): the full SD 1.5 VAE decoder against the
tiny one (TAESD), on this machine, and what a live preview costs per step.

    .venv/bin/python tests/benchmarks/tiny_vae_decode.py \
        --full-decoder /tmp/h23/models/sd15-random/vae_decoder/model.onnx [--runs 5]

The full decoder is an installed model's ``vae_decoder/model.onnx`` (a real-size random-weight
import will do: the time does not depend on the weights). The tiny one is diffusers'
AutoencoderTiny with its default config (TAESD's architecture) and random weights, exported by
Easel's own importer into a scratch folder. Both run through engine.runtime.get_session with
the default options (every core), warmed up once, then timed interleaved, one of each per
round, so a change in the machine's load falls on both sides alike; medians are printed.

The preview per step is the tiny VAE's picture of the first latents (TinyVae.preview, the same
graph call) against the linear latent preview used without one (engine.images.preview_pixels
with the SD 1.x factors), which gives a 64×64 picture, not 512×512.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from engine.images import SD_LATENT_RGB_FACTORS, preview_pixels  # noqa: E402
from engine.manifest import write_manifest  # noqa: E402
from engine.runtime import get_session  # noqa: E402
from engine.tiny_vae import load_tiny_vae  # noqa: E402
from tests.benchmarks.machine import cpu_model  # noqa: E402

SD15_SCALING = 0.18215  # the full VAE takes the latents divided by it; the tiny one as they are


def make_tiny_vae(scratch: Path) -> Path:
    """A real-size random AutoencoderTiny imported as Easel imports TAESD."""
    import torch
    from diffusers import AutoencoderTiny

    from engine.export.tiny_vae import import_tiny_vae

    torch.manual_seed(0)
    AutoencoderTiny().save_pretrained(scratch / "taesd")
    installed = scratch / "installed"
    installed.mkdir()
    import_tiny_vae(scratch / "taesd", installed)
    write_manifest(installed)
    return installed


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full-decoder", type=Path, required=True,
                        help="an installed model's vae_decoder/model.onnx")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    arguments = parser.parse_args()

    latents = np.random.default_rng(0).standard_normal((1, 4, 64, 64)).astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="easel-tiny-vae-bench-") as scratch:
        started = time.perf_counter()
        tiny = load_tiny_vae(make_tiny_vae(Path(scratch)))
        made = time.perf_counter() - started
        full = get_session(arguments.full_decoder)
        scaled = latents / np.float32(SD15_SCALING)

        def full_decode() -> np.ndarray:
            sample = full.run({"latent_sample": scaled}, ["sample"])[0]
            return (np.clip(sample[0] / 2 + 0.5, 0, 1).transpose(1, 2, 0) * 255).round()

        def tiny_decode() -> np.ndarray:
            return tiny.preview(latents)  # the graph call and the uint8 conversion

        assert full_decode().shape == tiny_decode().shape == (512, 512, 3)  # warm-up too
        full_times, tiny_times = [], []
        for _ in range(arguments.runs):
            full_times.append(timed(full_decode))
            tiny_times.append(timed(tiny_decode))
        linear = [timed(lambda: preview_pixels(latents, SD_LATENT_RGB_FACTORS))
                  for _ in range(50)]

    results = {
        "cpu": cpu_model(), "runs": arguments.runs,
        "full_decode_s": statistics.median(full_times),
        "tiny_decode_s": statistics.median(tiny_times),
        "linear_preview_s": statistics.median(linear),
        "tiny_export_s": made,
    }
    results["speedup"] = results["full_decode_s"] / results["tiny_decode_s"]
    print(f"CPU: {results['cpu']}; 512×512, batch 1, {arguments.runs} interleaved runs, "
          f"medians")
    print(f"full SD 1.5 VAE decoder: {results['full_decode_s']:.3f} s  "
          f"(all: {', '.join(f'{t:.3f}' for t in full_times)})")
    print(f"tiny VAE (TAESD):        {results['tiny_decode_s']:.3f} s  "
          f"(all: {', '.join(f'{t:.3f}' for t in tiny_times)})")
    print(f"tiny / full: {results['tiny_decode_s'] / results['full_decode_s']:.3f} "
          f"({results['speedup']:.1f}× faster)")
    print(f"preview per step: tiny VAE {results['tiny_decode_s'] * 1000:.0f} ms (512×512), "
          f"linear {results['linear_preview_s'] * 1000:.2f} ms (64×64)")
    print(f"making and exporting the random TAESD: {made:.1f} s")
    if arguments.json:
        arguments.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
