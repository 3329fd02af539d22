"""Does an int8 UNet pay on the CPU? Issue 23 part 4, measured, nothing shipped.

ONNX Runtime's dynamic quantisation (``quantize_dynamic``: the MatMuls' weights stored as int8
per output channel, activations quantised at run time, VNNI on this CPU) is applied to a copy
of an installed model's UNet; convolutions stay fp32. Then, each figure from this one run:

1. speed: batch-2 UNet calls at the given latent sizes, fp32 and int8 sessions alternating
   (the engine's own session options), medians;
2. quality on the real-size model: the same picture (seed, prompt, 256×256, 10 steps) from
   both, largest and mean pixel difference and PSNR;
3. quality on the starter model (``--starter``): its own evaluation
   (engine.starter.evaluate: held-out prompts judged against reference renderings), shipped
   fp32 against an int8 copy.

The bar (issue 23): ship an opt-in "fast, lower quality" int8 UNet only if it is at least 1.5×
faster at a quality the evaluation cannot tell apart.

    .venv/bin/python tests/benchmarks/unet_int8_cpu.py --model /tmp/e23/models/sd15-random \\
        --scratch /tmp/int8 --starter

Needs the export extra; about 10 minutes on 2 cores; the scratch folder (hard links and a new
UNet, about 1 GB for SD 1.5) is removed at the end unless --keep.
This is a benchmark script, not a test; pytest does not collect ``tests/benchmarks``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.benchmarks.machine import cpu_model  # noqa: E402

STARTER = REPO / "resources" / "models" / "starter"


def int8_copy(folder: Path, destination: Path) -> Path:
    """``folder`` with its UNet's MatMuls quantised to int8; every other file hard-linked."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from engine.manifest import write_manifest

    for path in folder.rglob("*"):
        target = destination / path.relative_to(folder)
        if path.is_dir() or path.parent.name == "unet" or path.name == "manifest.json":
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(path, target)
    (destination / "unet").mkdir(parents=True, exist_ok=True)
    large = (folder / "unet" / "model.onnx.data").exists()
    source = folder / "unet" / "model.onnx"
    source = source if large else folded(source, destination.parent)
    quantize_dynamic(source, destination / "unet" / "model.onnx",
                     op_types_to_quantize=["MatMul"], per_channel=True,
                     weight_type=QuantType.QInt8, use_external_data_format=large)
    write_manifest(destination)
    return destination


def folded(graph: Path, scratch: Path) -> Path:
    """``graph`` after ONNX Runtime's basic optimisations (constant folding): the starter's
    export reaches its MatMul weights through Constant and Transpose nodes, and the quantiser
    only quantises a MatMul whose weight is an initializer (SD's exports have that already)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(scratch / "folded.onnx")
    ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
    return scratch / "folded.onnx"


def unet_feeds(graph: Path, latent: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Batch-2 inputs for the UNet ``graph``, shaped by its declared inputs."""
    import onnx

    rng = np.random.default_rng(seed)
    feeds = {}
    for node in onnx.load(str(graph), load_external_data=False).graph.input:
        dims = [dim.dim_value for dim in node.type.tensor_type.shape.dim]
        if node.name == "sample":
            feeds[node.name] = rng.standard_normal((2, dims[1], latent, latent),
                                                   dtype=np.float32)
        elif node.name == "timestep":
            kind = np.int64 if node.type.tensor_type.elem_type == onnx.TensorProto.INT64 \
                else np.float32
            feeds[node.name] = np.full((2,), 500, kind)
        elif node.name == "encoder_hidden_states":
            tokens = dims[1] or 77  # the starter reads 24 tokens; SD 77
            feeds[node.name] = rng.standard_normal((2, tokens, dims[2]), dtype=np.float32)
    return feeds


def speed(fp32: Path, int8: Path, latents: list[int], rounds: int) -> dict:
    """Median seconds of one batch-2 UNet call per latent size, the two alternating."""
    from engine.runtime import RuntimeOptions, open_session

    options = RuntimeOptions(providers=("cpu",))
    sessions = {"fp32": open_session(fp32, options), "int8": open_session(int8, options)}
    results = {}
    for latent in latents:
        feeds = unet_feeds(fp32, latent)
        times: dict[str, list[float]] = {"fp32": [], "int8": []}
        for side in ("fp32", "int8"):  # warm-up
            sessions[side].run(feeds, ["out_sample"])
        for _ in range(rounds):
            for side, session in sessions.items():
                start = time.perf_counter()
                session.run(feeds, ["out_sample"])
                times[side].append(time.perf_counter() - start)
        fp32_s, int8_s = (statistics.median(times[side]) for side in ("fp32", "int8"))
        results[latent] = {"fp32_s": fp32_s, "int8_s": int8_s, "speed_up": fp32_s / int8_s,
                           "runs": times}
        print(f"latent {latent} ({latent * 8}×{latent * 8}): fp32 {fp32_s:.3f} s, int8 "
              f"{int8_s:.3f} s: {fp32_s / int8_s:.2f}× ({os.getloadavg()[0]:.2f} load)")
    return results


def picture_difference(fp32: Path, int8: Path, size: int, steps: int) -> dict:
    """The same request through both models: how far apart the pictures are."""
    from engine.model import load_model
    from engine.pipelines.text_to_image import TextToImagePipeline
    from engine.request import TextToImageRequest
    from engine.runtime import CancelToken, RuntimeOptions

    # Words the starter knows too, so the script runs on it.
    request = TextToImageRequest("a red car on the left, on a blue background", width=size,
                                 height=size, steps=steps, seed=1)
    pictures = []
    for folder in (fp32, int8):
        model = load_model(folder, RuntimeOptions(providers=("cpu",)))
        pictures.append(TextToImagePipeline(model)(request, None, CancelToken())
                        .images[0].pixels.astype(np.float64))
        model.close()
    difference = np.abs(pictures[0] - pictures[1])
    mse = float((difference ** 2).mean())
    psnr = float("inf") if mse == 0 else 10 * np.log10(255 ** 2 / mse)
    found = {"max": float(difference.max()), "mean": float(difference.mean()), "psnr_db": psnr}
    print(f"same picture, fp32 against int8 ({size}×{size}, {steps} steps): largest "
          f"difference {found['max']:.0f}/255, mean {found['mean']:.2f}, PSNR {psnr:.1f} dB")
    return found


def starter_evaluation(scratch: Path, count: int) -> dict:
    from engine.starter.evaluate import evaluate

    int8 = int8_copy(STARTER, scratch / "starter-int8")
    figures = {"fp32": evaluate(STARTER, count), "int8": evaluate(int8, count)}
    for key in ("one_object", "position", "left_right_both", "top_bottom_both", "colour",
                "seconds_per_image"):
        print(f"starter {key}: fp32 {figures['fp32'][key]:.3f}, int8 {figures['int8'][key]:.3f}")
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="an installed model folder")
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/int8"))
    parser.add_argument("--latents", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--starter", action="store_true", help="also the starter's evaluation")
    parser.add_argument("--starter-count", type=int, default=100)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--json", type=Path)
    arguments = parser.parse_args()
    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores; load {os.getloadavg()[0]:.2f}")
    arguments.scratch.mkdir(parents=True, exist_ok=False)
    try:
        start = time.perf_counter()
        int8 = int8_copy(arguments.model, arguments.scratch / "model-int8")
        print(f"quantised the UNet in {time.perf_counter() - start:.1f} s; int8 UNet "
              f"{sum(p.stat().st_size for p in (int8 / 'unet').iterdir()) / 1e9:.2f} GB")
        results = {"speed": speed(arguments.model / "unet" / "model.onnx",
                                  int8 / "unet" / "model.onnx", arguments.latents,
                                  arguments.rounds),
                   "picture": picture_difference(arguments.model, int8, 256, 10)}
        if arguments.starter:
            results["starter"] = starter_evaluation(arguments.scratch, arguments.starter_count)
        if arguments.json:
            arguments.json.write_text(json.dumps(results, indent=1, default=str))
    finally:
        if not arguments.keep:
            shutil.rmtree(arguments.scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
