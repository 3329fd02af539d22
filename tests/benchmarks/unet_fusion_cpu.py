"""Does onnxruntime's SD fusion make our UNet faster on the CPU? Fused against unfused, one run.

Usage (after importing a real-size model, see tests/benchmarks/README.md)::

    .venv/bin/python tests/benchmarks/unet_fusion_cpu.py \\
        /tmp/easel-real/models/sd15-random/unet/model.onnx

Writes the fused graph (``engine.export.fusion.fuse_unet``, CPU fusions: attention, LayerNorm,
GELU, SkipLayerNorm) to a scratch folder, opens both graphs with the engine's own session
options (all cores, ORT_ENABLE_ALL, spinning off), and times one batch-2 UNet call at the
given latent size, alternating the two sessions so a neighbour's load hits both alike. Prints
each side's median, the ratio, and the largest output difference. The scratch folder (a second
copy of the weights, 3.4 GB for SD 1.5) is removed at the end unless ``--keep`` names a folder;
a fused graph already in that folder is reused.

This is a benchmark script, not a test; pytest does not collect ``tests/benchmarks``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def unet_feeds(session, latent_size: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Batch-2 inputs (classifier-free guidance) for a UNet session."""
    rng = np.random.default_rng(seed)
    inputs = {node.name: node for node in session.get_inputs()}
    width = inputs["encoder_hidden_states"].shape[2]
    timestep_type = np.float32 if "float" in inputs["timestep"].type else np.int64
    return {
        "sample": rng.standard_normal((2, 4, latent_size, latent_size), dtype=np.float32),
        "timestep": np.full((2,), 500, dtype=timestep_type),
        "encoder_hidden_states": rng.standard_normal((2, 77, width), dtype=np.float32),
    }


def open_session(path: Path, threads: int):
    import onnxruntime as ort

    from engine.runtime import RuntimeOptions, build_session_options

    options = build_session_options(RuntimeOptions(providers=("cpu",), cpu_threads=threads))
    return ort.InferenceSession(str(path), sess_options=options,
                                providers=["CPUExecutionProvider"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("unet", type=Path, help="an exported UNet model.onnx")
    parser.add_argument("--latent-size", type=int, default=32, help="latent side (32 = 256 px)")
    parser.add_argument("--runs", type=int, default=5, help="timed calls per graph (default 5)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: all cores)")
    parser.add_argument("--keep", type=Path,
                        help="keep the fused graph in this folder (reused if there)")
    arguments = parser.parse_args(argv)

    from engine.export.fusion import fuse_unet

    scratch = Path(tempfile.mkdtemp(prefix="easel-fused-", dir=arguments.unet.parent.parent))
    folder = arguments.keep or scratch
    folder.mkdir(parents=True, exist_ok=True)
    try:
        if (folder / "model.onnx").is_file():
            print(f"using the fused graph already in {folder}", flush=True)
        else:
            started = time.perf_counter()
            result = fuse_unet(arguments.unet, folder / "model.onnx", "cpu")
            print(f"fused in {time.perf_counter() - started:.0f} s: {result.fused}; heads "
                  f"{sorted(set(result.heads.values()))}", flush=True)
        sessions = {}
        for name, path in (("unfused", arguments.unet), ("fused", folder / "model.onnx")):
            started = time.perf_counter()
            sessions[name] = open_session(path, arguments.threads)
            print(f"{name}: session in {time.perf_counter() - started:.0f} s", flush=True)
        feeds = unet_feeds(sessions["unfused"], arguments.latent_size)
        outputs = {name: session.run(None, feeds)[0] for name, session in sessions.items()}
        times: dict[str, list[float]] = {name: [] for name in sessions}
        for _ in range(arguments.runs):
            for name, session in sessions.items():
                begun = time.perf_counter()
                session.run(None, feeds)
                times[name].append(time.perf_counter() - begun)
        for name, values in times.items():
            print(f"{name:8} median {statistics.median(values):.3f} s  "
                  f"({', '.join(f'{value:.2f}' for value in values)})")
        ratio = statistics.median(times["fused"]) / statistics.median(times["unfused"])
        difference = np.abs(outputs["fused"] - outputs["unfused"]).max()
        print(f"fused / unfused: {ratio:.3f}; largest output difference {difference:.2e} "
              f"(output scale {np.abs(outputs['unfused']).max():.2f})")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
