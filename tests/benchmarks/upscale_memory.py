"""Upscaling memory benchmark: a 1024x1024 picture to 4096x4096 with a real-size Real-ESRGAN
x4plus network (RRDBNet, 23 blocks, 64 features; random weights: the speed and memory of a
network do not depend on its weight values), run in tiles by the engine.

The network is exported by our own exporter, then the upscale runs in a process of its own,
so its peak memory (resident set size) is the engine's alone: no torch, no exporter. It must
stay under ``--bound-gib``; the script exits 1 when it does not.

    .venv/bin/python tests/benchmarks/upscale_memory.py [--size 1024] [--tile 256]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# onnxruntime's session and arena for 256 px tiles of this network (about 1.3 GiB: 0.65 at
# load), one row of tiles in float32 at the output's width (about 70 MB at 4096 px) and the
# 4096x4096 result (50 MB). Measured 2.26 GiB on the first run and 2.13 GiB once finished rows
# were normalised in chunks; a first guess of 2.0 was low.
DEFAULT_BOUND_GIB = 2.5


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024, help="input side in pixels")
    parser.add_argument("--tile", type=int, default=256, help="tile side in input pixels")
    parser.add_argument("--blocks", type=int, default=23, help="RRDB blocks (x4plus: 23)")
    parser.add_argument("--features", type=int, default=64, help="features (x4plus: 64)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: all)")
    parser.add_argument("--bound-gib", type=float, default=DEFAULT_BOUND_GIB)
    parser.add_argument("--run", type=Path, help=argparse.SUPPRESS)  # the measuring child
    arguments = parser.parse_args()
    if arguments.run is not None:
        return _measure(arguments.run, arguments.size, arguments.tile, arguments.threads)
    with tempfile.TemporaryDirectory(prefix="easel-upscale-bench-") as scratch:
        folder = Path(scratch) / "x4plus-random"
        started = time.perf_counter()
        _export(folder, arguments.blocks, arguments.features)
        print(f"exported RRDBNet ({arguments.blocks} blocks, {arguments.features} features) "
              f"in {time.perf_counter() - started:.1f} s", flush=True)
        child = subprocess.run(
            [sys.executable, __file__, "--run", str(folder), "--size", str(arguments.size),
             "--tile", str(arguments.tile), "--threads", str(arguments.threads)],
            capture_output=True, text=True, check=False)
    if child.returncode != 0:
        print(child.stderr, file=sys.stderr)
        return child.returncode
    report = json.loads(child.stdout.strip().splitlines()[-1])
    peak_gib = report["peak_rss_bytes"] / 2**30
    side = arguments.size
    print(f"upscaled {side}x{side} -> {report['width']}x{report['height']} in "
          f"{report['tiles']} tiles of {arguments.tile} px: {report['seconds']:.1f} s "
          f"({report['seconds'] / report['tiles']:.2f} s a tile, {report['threads']} threads)")
    print(f"peak memory of the upscaling process: {peak_gib:.2f} GiB "
          f"(bound {arguments.bound_gib:.2f} GiB; session loaded at "
          f"{report['loaded_rss_bytes'] / 2**30:.2f} GiB)")
    if peak_gib > arguments.bound_gib:
        print("OVER THE BOUND", file=sys.stderr)
        return 1
    return 0


def _export(folder: Path, blocks: int, features: int) -> None:
    import torch
    from safetensors.torch import save_file

    from engine.export.upscaler import import_upscaler

    generator = torch.Generator().manual_seed(0)
    state: dict = {}

    def conv(name: str, out: int, into: int) -> None:
        state[f"{name}.weight"] = torch.randn(out, into, 3, 3, generator=generator) * 0.02
        state[f"{name}.bias"] = torch.zeros(out)

    growth = 32
    conv("conv_first", features, 3)
    for block in range(blocks):
        for dense in (1, 2, 3):
            for layer in range(1, 6):
                conv(f"body.{block}.rdb{dense}.conv{layer}",
                     features if layer == 5 else growth, features + (layer - 1) * growth)
    for name in ("conv_body", "conv_up1", "conv_up2", "conv_hr"):
        conv(name, features, features)
    conv("conv_last", 3, features)
    checkpoint = folder.parent / "x4plus-random.safetensors"
    save_file(state, str(checkpoint))
    import_upscaler(checkpoint, folder)


def _measure(folder: Path, side: int, tile: int, threads: int) -> int:
    import numpy as np

    from engine.manifest import write_manifest
    from engine.runtime import RuntimeOptions
    from engine.upscale import UpscalePipeline, UpscaleRequest, load_upscaler

    write_manifest(folder)
    upscaler = load_upscaler(folder, RuntimeOptions(cpu_threads=threads))
    rng = np.random.default_rng(0)
    picture = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
    upscaler.session  # noqa: B018 (load the session before timing)
    loaded = _peak_rss()
    tiles = []
    started = time.perf_counter()
    result = UpscalePipeline(upscaler)(UpscaleRequest(picture, scale=4, tile=tile),
                                       progress=lambda done, total: tiles.append(done))
    seconds = time.perf_counter() - started
    height, width = result.images[0].pixels.shape[:2]
    print(json.dumps({"seconds": seconds, "tiles": len(tiles), "width": width,
                      "height": height, "peak_rss_bytes": _peak_rss(),
                      "loaded_rss_bytes": loaded,
                      "threads": upscaler.runtime.thread_count}))
    return 0


def _peak_rss() -> int:
    # Linux reports kilobytes, macOS bytes.
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


if __name__ == "__main__":
    sys.exit(main())
