"""Where the SD 1.5 UNet's matrix products lose time on the CPU (issue 23, part 3).

Usage (a real-size model imported into an Easel home, see tests/benchmarks/README.md)::

    UNET=$EASEL_HOME/cache/optimized/onnxruntime-*/*/unet-model-*/model.onnx
    python tests/benchmarks/unet_matmul_cpu.py gemm
    python tests/benchmarks/unet_matmul_cpu.py profile --unet $UNET --latent 32 64
    python tests/benchmarks/unet_matmul_cpu.py shapes --latent 32
    python tests/benchmarks/unet_matmul_cpu.py levers --unet $UNET --latent 32 \\
        --variants spinning denormal no-prepacking --diffusers-folder /tmp/sd15-random

``gemm`` prints the CPU model and the machine's fp32 GEMM rate (4096³) with torch, NumPy and
ONNX Runtime at the same thread count: the reference every other rate here is a share of.

``profile`` runs onnxruntime's profiler over batch-2 UNet calls of the given (Easel's cached,
optimised) graph with the engine's own session options, and sums kernel time by operator
class: convolutions, the projection and feed-forward MatMuls (a weight on the right), the
attention scores (Q·Kᵀ) and attention-times-values (softmax·V) batched MatMuls, softmax,
norms, transposes and NCHWc reorders, the rest. FLOPs are counted from the shapes the
profiler records, so each class gets its own FLOP rate. Profiling slows a call by about a
quarter, so rates here are lower bounds; the shares are what it is for.

``shapes`` builds a one-operator MatMul graph for each main MatMul shape of the UNet at a
latent size (weights as initializers, as in the model) and times it against NumPy and torch
on the same shape and threads: if ONNX Runtime is slower on the shape itself, that is its
limit (MLAS), not our graph.

``attention`` times one attention core (no projections) at each UNet level in three forms,
interleaved: our export's Reshape/Transpose/MatMul/Softmax/MatMul subgraph in ONNX Runtime,
one ``com.microsoft.MultiHeadAttention`` node (ONNX Runtime's CPU kernel runs flash attention)
and torch's ``scaled_dot_product_attention``.

``mha-graph --source unet/model.onnx --out FOLDER`` writes the model's UNet with each
attention core replaced by one MultiHeadAttention on the projected query, key and value
(weights hard-linked, not copied; the rewrite is the exporter's own,
engine.export.attention.attention_to_mha) and prints the largest output difference; ``levers
--variants mha --mha FOLDER/model.onnx`` times it against the baseline. A model exported
since that rewrite shipped has no attention core left to replace (0 replaced).

``levers`` compares the baseline session with variants in the same run: each side is a
worker process of its own holding one session, and the coordinator asks them for one call
in turn (never two at once), so a neighbour's load hits every side alike. Variants: spinning
(intra-op spinning on), threads-1, denormal (set_denormal_as_zero), no-prepacking, extended
(re-optimise from the model at ORT_ENABLE_EXTENDED, no NCHWc), fused (a graph already written
by engine.export.fusion.fuse_unet, given with --fused), mha (see above), torch (diffusers'
UNet, eager fp32, from --diffusers-folder). The load average is printed before and after
each comparison.

This is a benchmark script, not a test; pytest does not collect ``tests/benchmarks``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

THREADS = str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
              else os.cpu_count() or 1)
# BLAS reads its thread count when NumPy is imported: same threads as ONNX Runtime.
for _name in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS"):
    os.environ.setdefault(_name, THREADS)

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.benchmarks.machine import cpu_model  # noqa: E402

HEADS = 8  # every SD 1.x attention block
TEXT_TOKENS, TEXT_WIDTH = 77, 768
LEVEL_CHANNELS = (320, 640, 1280)  # the three UNet levels that carry attention


# --- small helpers -----------------------------------------------------------------------------

def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def median_seconds(call: Callable[[], object], repeats: int, warmups: int = 1) -> float:
    for _ in range(warmups):
        call()
    times = []
    for _ in range(repeats):
        begun = time.perf_counter()
        call()
        times.append(time.perf_counter() - begun)
    return statistics.median(times)


def one_matmul_session(a_shape: tuple[int, ...], weight: np.ndarray | None,
                       b_shape: tuple[int, ...], threads: int):
    """A one-node MatMul session; ``weight`` given: B is an initializer (prepacked by MLAS)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    inputs = [helper.make_tensor_value_info("a", TensorProto.FLOAT, list(a_shape))]
    initializers = []
    if weight is None:
        inputs.append(helper.make_tensor_value_info("b", TensorProto.FLOAT, list(b_shape)))
    else:
        initializers.append(numpy_helper.from_array(weight, "b"))
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "matmul",
                              inputs, [helper.make_tensor_value_info("c", TensorProto.FLOAT,
                                                                     None)], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


# --- gemm: the machine's reference rate --------------------------------------------------------

def gemm_rates(size: int = 4096, repeats: int = 5) -> dict[str, float]:
    """fp32 GEMM rate (FLOP/s) of NumPy, torch and ONNX Runtime at the same threads."""
    import torch

    threads = int(THREADS)
    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    flops = 2 * size**3
    session = one_matmul_session((size, size), None, (size, size), threads)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    return {
        "numpy": flops / median_seconds(lambda: a @ b, repeats),
        "torch": flops / median_seconds(lambda: torch.mm(ta, tb), repeats),
        "onnxruntime": flops / median_seconds(lambda: session.run(None, {"a": a, "b": b}),
                                              repeats),
    }


def command_gemm(arguments: argparse.Namespace) -> dict:
    print(f"CPU: {cpu_model()}, {THREADS} threads; load average {load_average()}")
    rates = gemm_rates(arguments.gemm_size)
    for name, rate in rates.items():
        print(f"  GEMM {arguments.gemm_size}^3 fp32, {name}: {rate / 1e9:.1f} GFLOP/s")
    print(f"  reference (best): {max(rates.values()) / 1e9:.1f} GFLOP/s; load average "
          f"{load_average()}")
    return {"cpu": cpu_model(), "threads": int(THREADS), "rates": rates}


# --- profile: time and FLOP rate by operator class ---------------------------------------------

def engine_session(unet: Path, *, profile_prefix: str | None = None,
                   config: dict[str, str] | None = None, threads: int = 0,
                   reoptimise: str | None = None):
    """A CPU session on ``unet`` with the engine's own options (plus ``config`` entries)."""
    import onnxruntime as ort

    from engine.runtime import RuntimeOptions, build_session_options

    cached = "cache" in unet.parts and "optimized" in unet.parts
    options = build_session_options(RuntimeOptions(cpu_threads=threads), ("cpu",),
                                    from_cache=cached and reoptimise is None)
    if reoptimise == "extended":
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    for key, value in (config or {}).items():
        options.add_session_config_entry(key, value)
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return ort.InferenceSession(str(unet), sess_options=options,
                                providers=["CPUExecutionProvider"])


def unet_feeds(session, latent: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Batch-2 UNet inputs (classifier-free guidance runs both halves in one call)."""
    rng = np.random.default_rng(seed)
    types = {node.name: node.type for node in session.get_inputs()}
    timestep_type = np.int64 if "int64" in types["timestep"] else np.float32
    return {"sample": rng.standard_normal((2, 4, latent, latent), dtype=np.float32),
            "timestep": np.full((2,), 500, timestep_type),
            "encoder_hidden_states": rng.standard_normal((2, TEXT_TOKENS, TEXT_WIDTH),
                                                         dtype=np.float32)}


_SCORES = re.compile(r"attn[12]/MatMul$")
_WEIGHTED = re.compile(r"attn[12]/MatMul_1$")


def operator_class(node_name: str, op_type: str) -> str:
    """The class a profiled node's time is summed into (names are the exporter's)."""
    name = node_name.removesuffix("_kernel_time")
    if op_type in ("MatMul", "FusedMatMul"):
        if _SCORES.search(name):
            return "attention Q·Kᵀ"
        if _WEIGHTED.search(name):
            return "attention softmax·V"
        return "MatMul projections/FF"
    if op_type in ("Attention", "MultiHeadAttention"):
        return "fused attention"
    if op_type in ("Conv", "FusedConv"):
        return "Conv"
    if op_type == "Gemm":
        return "Gemm (time embedding)"
    if op_type == "Softmax":
        return "Softmax"
    if op_type in ("LayerNormalization", "SkipLayerNormalization", "InstanceNormalization",
                   "GroupNorm"):
        return "norms"
    if op_type in ("Transpose", "ReorderInput", "ReorderOutput", "Reshape"):
        return "transposes/reorders"
    return "elementwise and other"


def node_flops(op_type: str, shapes: list[list[int]], output: list[int]) -> float:
    """Multiply-adds x2 of one profiled MatMul/Gemm/Conv from its recorded shapes."""
    # A weight (initializer) input is not in the recorded shapes: K comes from A, N from C.
    if op_type in ("MatMul", "FusedMatMul") and shapes and output:
        inner = shapes[0][-1]
        return 2.0 * float(np.prod(output)) * inner
    if op_type == "Gemm" and shapes and output:
        return 2.0 * float(np.prod(output)) * shapes[0][-1]
    if op_type in ("Conv", "FusedConv") and len(shapes) >= 2 and output:
        weight = shapes[1]  # [out channels, in channels / group, kh, kw]
        # NCHWc pads channels to the block; count the model's own output channels.
        spatial = float(np.prod(output[2:]))
        return 2.0 * output[0] * min(weight[0], output[1]) * spatial * float(np.prod(weight[1:]))
    return 0.0


def _shapes(entries: list[dict]) -> list[list[int]]:
    return [next(iter(entry.values())) for entry in entries]


def profile_unet(unet: Path, latent: int, calls: int) -> dict:
    """Kernel seconds and FLOPs per call by operator class, and the profiled call's wall time."""
    scratch = tempfile.mkdtemp(prefix="easel-matmul-profile-")
    session = engine_session(unet, profile_prefix=str(Path(scratch) / "unet"))
    feeds = unet_feeds(session, latent)
    for _ in range(calls + 1):
        session.run(None, feeds)
    profile_file = Path(session.end_profiling())
    events = json.loads(profile_file.read_text())
    profile_file.unlink()
    runs = [event for event in events if event.get("name") == "model_run"]
    first_end = runs[0]["ts"] + runs[0]["dur"]  # the first call warms up; not counted
    seconds: dict[str, float] = {}
    flops: dict[str, float] = {}
    shapes_seen: dict[str, dict[str, list]] = {}  # class -> shape -> [nodes, seconds]
    for event in events:
        if event.get("cat") != "Node" or not event["name"].endswith("_kernel_time"):
            continue
        if event["ts"] < first_end:
            continue
        args = event.get("args", {})
        op_type = args.get("op_name", "?")
        kind = operator_class(event["name"], op_type)
        seconds[kind] = seconds.get(kind, 0.0) + event["dur"] / 1e6 / calls
        inputs = _shapes(args.get("input_type_shape", []))
        outputs = _shapes(args.get("output_type_shape", []))
        flops[kind] = flops.get(kind, 0.0) + node_flops(
            op_type, inputs, outputs[0] if outputs else []) / calls
        if kind.startswith(("MatMul", "attention")):
            key = " x ".join(str(shape) for shape in inputs[:2])
            if len(inputs) == 1:  # a weight: name it by its output width
                key += f" x W[{inputs[0][-1]}, {outputs[0][-1]}]"
            seen = shapes_seen.setdefault(kind, {}).setdefault(key, [0, 0.0])
            seen[0] += 1
            seen[1] += event["dur"] / 1e6
    wall = statistics.median(run["dur"] / 1e6 for run in runs[1:])
    return {"latent": latent, "call_s": wall, "seconds": seconds, "flops": flops,
            "shapes": {kind: {key: (count // calls, seconds / count)
                              for key, (count, seconds) in seen.items()}
                       for kind, seen in shapes_seen.items()}}


def print_profile(result: dict, reference: float) -> None:
    total = sum(result["seconds"].values())
    print(f"latent {result['latent']} (batch 2): profiled call {result['call_s']:.3f} s, "
          f"kernels {total:.3f} s, {sum(result['flops'].values()) / 1e9:.1f} GFLOP counted")
    print(f"  {'class':26} {'s/call':>7} {'share':>6} {'GFLOP':>7} {'GFLOP/s':>8} {'of GEMM':>8}")
    for kind, seconds in sorted(result["seconds"].items(), key=lambda item: -item[1]):
        flops = result["flops"].get(kind, 0.0)
        rate = flops / seconds if seconds and flops else 0.0
        print(f"  {kind:26} {seconds:7.3f} {seconds / total:6.1%} {flops / 1e9:7.1f} "
              f"{rate / 1e9:8.1f} {rate / reference if rate else 0:8.0%}")
    for kind, seen in result["shapes"].items():
        print(f"  {kind} shapes (nodes per call x shape: ms per node in the graph):")
        for key, (count, seconds) in sorted(seen.items(), key=lambda item: -item[1][0])[:12]:
            print(f"    {count:3d} x {key}: {seconds * 1e3:.2f} ms")


def command_profile(arguments: argparse.Namespace) -> dict:
    gemm = command_gemm(arguments)
    reference = max(gemm["rates"].values())
    results = []
    for latent in arguments.latent:
        print(f"load average {load_average()}")
        result = profile_unet(arguments.unet, latent, arguments.calls)
        print_profile(result, reference)
        results.append(result)
    print(f"load average {load_average()}")
    return {"gemm": gemm, "profiles": results}


# --- shapes: one-operator MatMul graphs against NumPy and torch --------------------------------

def unet_matmul_shapes(latent: int) -> list[tuple[str, tuple, tuple, bool, int]]:
    """(label, A shape, B shape, B is a weight, count per call) for the UNet's main MatMuls.

    Counts are per batch-2 call of SD 1.5: each level has 2 down + 3 up transformer blocks;
    the middle block's one (at a quarter of level 3's tokens) is left out.
    """
    rows = []
    for level, channels in enumerate(LEVEL_CHANNELS):
        tokens = (latent >> level) ** 2
        head = channels // HEADS
        blocks = 5
        rows += [
            (f"L{level + 1} q/k/v/out proj", (2, tokens, channels), (channels, channels),
             True, 4 * blocks + 2 * blocks),  # attn1 q,k,v,out + attn2 q,out
            (f"L{level + 1} cross k/v proj", (2, TEXT_TOKENS, TEXT_WIDTH),
             (TEXT_WIDTH, channels), True, 2 * blocks),
            (f"L{level + 1} FF in (GEGLU)", (2, tokens, channels), (channels, 8 * channels),
             True, blocks),
            (f"L{level + 1} FF out", (2, tokens, 4 * channels), (4 * channels, channels),
             True, blocks),
            (f"L{level + 1} self Q·Kᵀ", (2, HEADS, tokens, head), (2, HEADS, head, tokens),
             False, blocks),
            (f"L{level + 1} self softmax·V", (2, HEADS, tokens, tokens), (2, HEADS, tokens, head),
             False, blocks),
            (f"L{level + 1} cross Q·Kᵀ", (2, HEADS, tokens, head),
             (2, HEADS, head, TEXT_TOKENS), False, blocks),
            (f"L{level + 1} cross softmax·V", (2, HEADS, tokens, TEXT_TOKENS),
             (2, HEADS, TEXT_TOKENS, head), False, blocks),
        ]
    return rows


def time_shape(a_shape: tuple, b_shape: tuple, is_weight: bool, repeats: int) -> dict[str, float]:
    """Seconds of one MatMul of these shapes in ONNX Runtime, NumPy and torch."""
    import torch

    rng = np.random.default_rng(0)
    a = rng.standard_normal(a_shape, dtype=np.float32)
    b = rng.standard_normal(b_shape, dtype=np.float32)
    session = one_matmul_session(a_shape, b if is_weight else None, b_shape, int(THREADS))
    feeds = {"a": a} if is_weight else {"a": a, "b": b}
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    times = {}
    # Interleaved rounds, so a neighbour's burst hits every library alike.
    samples: dict[str, list[float]] = {"onnxruntime": [], "numpy": [], "torch": []}
    calls = {"onnxruntime": lambda: session.run(None, feeds), "numpy": lambda: a @ b,
             "torch": lambda: torch.matmul(ta, tb)}
    for _ in range(3):
        for name, call in calls.items():
            samples[name].append(median_seconds(call, repeats))
            # OpenBLAS's idle threads spin for about 2^28 cycles after a call, and OpenMP's
            # briefly: let them sleep before the next library runs on the same cores.
            time.sleep(0.2)
    for name, values in samples.items():
        times[name] = min(values)
    return times


def command_shapes(arguments: argparse.Namespace) -> dict:
    import torch

    torch.set_num_threads(int(THREADS))
    gemm = command_gemm(arguments)
    reference = max(gemm["rates"].values())
    rows = []
    for latent in arguments.latent:
        print(f"latent {latent}: one-node MatMul, {THREADS} threads, GFLOP/s (share of the "
              f"{reference / 1e9:.0f} reference); ORT/best = ORT time over the faster library")
        print(f"  {'shape':24} {'A':>20} {'B':>20} {'n':>3} {'ORT':>7} {'NumPy':>7} "
              f"{'torch':>7} {'ORT/best':>8} {'ORT ms':>7}")
        for label, a_shape, b_shape, is_weight, count in unet_matmul_shapes(latent):
            flops = 2.0 * float(np.prod(a_shape)) * b_shape[-1]
            repeats = max(3, min(50, int(2e9 / flops)))
            times = time_shape(a_shape, b_shape, is_weight, repeats)
            best = min(times["numpy"], times["torch"])
            rates = {name: flops / seconds for name, seconds in times.items()}
            print(f"  {label:24} {str(a_shape):>20} {str(b_shape):>20} {count:3d} "
                  f"{rates['onnxruntime'] / 1e9:7.1f} {rates['numpy'] / 1e9:7.1f} "
                  f"{rates['torch'] / 1e9:7.1f} {times['onnxruntime'] / best:8.2f} "
                  f"{times['onnxruntime'] * 1e3:7.2f}", flush=True)
            rows.append({"latent": latent, "label": label, "a": a_shape, "b": b_shape,
                         "count": count, "flops": flops, "seconds": times})
        summed = {name: sum(row["count"] * row["seconds"][name] for row in rows
                            if row["latent"] == latent) for name in ("onnxruntime", "numpy",
                                                                     "torch")}
        print(f"  all of them once per UNet call: ORT {summed['onnxruntime']:.3f} s, NumPy "
              f"{summed['numpy']:.3f} s, torch {summed['torch']:.3f} s")
        best_each = sum(row["count"] * min(row["seconds"].values()) for row in rows
                        if row["latent"] == latent)
        print(f"  the best library per shape: {best_each:.3f} s; load average {load_average()}")
    return {"gemm": gemm, "rows": rows}


# --- attention: the unfused subgraph against ONNX Runtime's fused kernel and torch -------------

def attention_model(tokens: int, context: int, width: int, fused: bool):
    """One attention (no projections) on [2, tokens, width] queries and [2, context, width]
    keys and values: as our export writes it, or as one com.microsoft.MultiHeadAttention."""
    from onnx import TensorProto, helper, numpy_helper

    head = width // HEADS
    inputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [2, length, width])
              for name, length in (("q", tokens), ("k", context), ("v", context))]
    output = [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)]
    if fused:
        nodes = [helper.make_node("MultiHeadAttention", ["q", "k", "v"], ["out"],
                                  domain="com.microsoft", num_heads=HEADS)]
        initializers = []
    else:
        split = numpy_helper.from_array(np.array([0, -1, HEADS, head], np.int64), "split")
        merge = numpy_helper.from_array(np.array([0, -1, width], np.int64), "merge")
        scale = numpy_helper.from_array(np.array(head ** -0.5, np.float32), "scale")
        initializers = [split, merge, scale]
        nodes = [
            helper.make_node("Reshape", ["q", "split"], ["q4"]),
            helper.make_node("Transpose", ["q4"], ["qt"], perm=[0, 2, 1, 3]),
            helper.make_node("Reshape", ["k", "split"], ["k4"]),
            helper.make_node("Transpose", ["k4"], ["kt"], perm=[0, 2, 3, 1]),
            helper.make_node("Reshape", ["v", "split"], ["v4"]),
            helper.make_node("Transpose", ["v4"], ["vt"], perm=[0, 2, 1, 3]),
            helper.make_node("MatMul", ["qt", "kt"], ["scores"]),
            helper.make_node("Mul", ["scores", "scale"], ["scaled"]),
            helper.make_node("Softmax", ["scaled"], ["weights"], axis=-1),
            helper.make_node("MatMul", ["weights", "vt"], ["heads"]),
            helper.make_node("Transpose", ["heads"], ["merged"], perm=[0, 2, 1, 3]),
            helper.make_node("Reshape", ["merged", "merge"], ["out"]),
        ]
    graph = helper.make_graph(nodes, "attention", inputs, output, initializers)
    return helper.make_model(graph, ir_version=8, opset_imports=[
        helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])


def time_attention(tokens: int, context: int, width: int) -> tuple[dict[str, float], float]:
    """Best-of-rounds seconds of one attention in each form, and the fused/unfused difference."""
    import onnxruntime as ort
    import torch

    rng = np.random.default_rng(0)
    feeds = {name: rng.standard_normal((2, length, width), dtype=np.float32)
             for name, length in (("q", tokens), ("k", context), ("v", context))}
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(THREADS)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    unfused, fused = (ort.InferenceSession(
        attention_model(tokens, context, width, kind).SerializeToString(), options,
        providers=["CPUExecutionProvider"]) for kind in (False, True))
    tq, tk, tv = (torch.from_numpy(feeds[name]).view(2, -1, HEADS, width // HEADS)
                  .transpose(1, 2) for name in "qkv")
    calls = {"unfused": lambda: unfused.run(None, feeds),
             "mha": lambda: fused.run(None, feeds),
             "sdpa": lambda: torch.nn.functional.scaled_dot_product_attention(tq, tk, tv)}
    repeats = 3 if tokens >= 4096 else 10
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(3):  # interleaved rounds
        for name, call in calls.items():
            samples[name].append(median_seconds(call, repeats))
            time.sleep(0.2)
    difference = float(np.abs(fused.run(None, feeds)[0] - unfused.run(None, feeds)[0]).max())
    return {name: min(values) for name, values in samples.items()}, difference


def command_attention(arguments: argparse.Namespace) -> dict:
    """Per attention call: unfused ORT subgraph, ORT MultiHeadAttention, torch SDPA."""
    import torch

    torch.set_num_threads(int(THREADS))
    print(f"CPU: {cpu_model()}, {THREADS} threads; load average {load_average()}")
    print(f"  {'attention':30} {'unfused ORT ms':>14} {'MHA ORT ms':>10} {'torch SDPA ms':>13} "
          f"{'MHA/unfused':>11} {'max diff':>9}")
    rows = []
    for latent in arguments.latent:
        for level, width in enumerate(LEVEL_CHANNELS):
            tokens = (latent >> level) ** 2
            for label, context in (("self", tokens), ("cross", TEXT_TOKENS)):
                best, difference = time_attention(tokens, context, width)
                name = f"latent {latent} L{level + 1} {label} {tokens}x{context}"
                print(f"  {name:30} {best['unfused'] * 1e3:14.2f} {best['mha'] * 1e3:10.2f} "
                      f"{best['sdpa'] * 1e3:13.2f} {best['mha'] / best['unfused']:11.2f} "
                      f"{difference:9.1e}", flush=True)
                rows.append({"latent": latent, "level": level + 1, "kind": label,
                             "seconds": best, "max_difference": difference})
    print(f"load average {load_average()}")
    return {"rows": rows}


# --- mha-graph: the UNet with each attention core as one MultiHeadAttention -------------------

def command_mha_graph(arguments: argparse.Namespace) -> dict:
    """Write the MultiHeadAttention form of --source into --out (the weights hard-linked, so
    --out must be on the same file system), and check one batch-2 call against the original."""
    import onnx
    import onnxruntime as ort

    from engine.export.attention import attention_to_mha

    folder = arguments.out
    folder.mkdir(parents=True, exist_ok=True)
    model = onnx.load(str(arguments.source), load_external_data=False)
    replaced = attention_to_mha(model)
    for data in arguments.source.parent.glob("*.data"):
        link = folder / data.name
        if not link.exists():
            # onnxruntime refuses external data reached through a symbolic link outside the
            # model's folder; a hard link shares the bytes without a second 3.4 GB copy.
            os.link(data.resolve(), link)
    graph = folder / "model.onnx"
    onnx.save(model, str(graph))
    print(f"{replaced} attentions replaced; written to {graph}")
    outputs = []
    for path in (arguments.source, graph):
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(THREADS)
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        outputs.append(session.run(None, unet_feeds(session, arguments.latent[0]))[0])
        del session
    difference = float(np.abs(outputs[0] - outputs[1]).max())
    print(f"largest output difference against the original at latent {arguments.latent[0]}: "
          f"{difference:.2e} (output scale {float(np.abs(outputs[0]).max()):.2f})")
    return {"replaced": replaced, "max_difference": difference}


# --- levers: the baseline against variants, each in a worker process ---------------------------

VARIANT_CONFIG = {
    "baseline": {},
    "spinning": {"session.intra_op.allow_spinning": "1"},
    "denormal": {"session.set_denormal_as_zero": "1"},
    "no-prepacking": {"session.disable_prepacking": "1"},
}


def worker(arguments: argparse.Namespace) -> int:
    """Hold one session; answer each 'run' line on stdin with one call's seconds."""
    variant, latent = arguments.variant, arguments.latent[0]
    if variant == "torch":
        call = torch_unet_call(arguments.diffusers_folder, latent)
    else:
        unet = {"fused": arguments.fused, "mha": arguments.mha}.get(variant, arguments.unet)
        source = arguments.source if variant == "extended" else unet
        session = engine_session(
            source, config=VARIANT_CONFIG.get(variant, {}),
            threads=1 if variant == "threads-1" else 0,
            reoptimise="extended" if variant == "extended" else None)
        feeds = unet_feeds(session, latent)

        def call() -> None:
            session.run(None, feeds)

    call()  # the first call allocates and packs
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() != "run":
            break
        begun = time.perf_counter()
        call()
        print(f"{time.perf_counter() - begun:.6f}", flush=True)
    return 0


def torch_unet_call(folder: Path, latent: int) -> Callable[[], None]:
    """diffusers' UNet, eager fp32, one batch-2 call with the same inputs."""
    import torch
    from diffusers import UNet2DConditionModel

    torch.set_num_threads(int(THREADS))
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet",
                                                torch_dtype=torch.float32).eval()
    rng = np.random.default_rng(0)
    sample = torch.from_numpy(rng.standard_normal((2, 4, latent, latent), dtype=np.float32))
    states = torch.from_numpy(rng.standard_normal((2, TEXT_TOKENS, TEXT_WIDTH),
                                                  dtype=np.float32))
    timestep = torch.full((2,), 500.0)

    def call() -> None:
        with torch.no_grad():
            unet(sample, timestep, encoder_hidden_states=states)

    return call


def start_worker(arguments: argparse.Namespace, variant: str, latent: int) -> subprocess.Popen:
    command = [sys.executable, str(Path(__file__).resolve()), "worker", "--variant", variant,
               "--latent", str(latent), "--unet", str(arguments.unet)]
    for flag in ("source", "fused", "mha", "diffusers_folder"):
        if getattr(arguments, flag):
            command += [f"--{flag.replace('_', '-')}", str(getattr(arguments, flag))]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    if process.stdout.readline().strip() != "ready":
        raise SystemExit(f"The {variant} worker failed to start.")
    return process


def ask(process: subprocess.Popen) -> float:
    process.stdin.write("run\n")
    process.stdin.flush()
    return float(process.stdout.readline())


def compare(arguments: argparse.Namespace, variant: str, latent: int) -> dict:
    """Baseline and ``variant`` alternating, one call each per round; medians and ratio."""
    print(f"latent {latent}, baseline vs {variant}: load average {load_average()}", flush=True)
    # Started one after the other: two loads at once would share the cores.
    workers = {"baseline": start_worker(arguments, "baseline", latent)}
    workers[variant] = start_worker(arguments, variant, latent)
    times: dict[str, list[float]] = {name: [] for name in workers}
    try:
        for number in range(arguments.rounds):
            # Alternate which side goes first, so neither always follows the other.
            order = list(workers) if number % 2 == 0 else list(workers)[::-1]
            for name in order:
                times[name].append(ask(workers[name]))
    finally:
        for process in workers.values():
            process.stdin.close()
            process.wait()
    base, other = (statistics.median(times[name]) for name in ("baseline", variant))
    print(f"  baseline {base:.3f} s (min {min(times['baseline']):.3f}), {variant} {other:.3f} s "
          f"(min {min(times[variant]):.3f}): {variant} / baseline = {other / base:.3f}; "
          f"load average {load_average()}", flush=True)
    return {"latent": latent, "variant": variant, "times": times, "ratio": other / base}


def command_levers(arguments: argparse.Namespace) -> dict:
    print(f"CPU: {cpu_model()}, {THREADS} threads")
    return {"comparisons": [compare(arguments, variant, latent)
                            for latent in arguments.latent for variant in arguments.variants]}


# --- command line ------------------------------------------------------------------------------

def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("gemm", "profile", "shapes", "attention", "mha-graph",
                                            "levers", "worker"))
    parser.add_argument("--unet", type=Path, help="the UNet graph (Easel's cached optimised one)")
    parser.add_argument("--source", type=Path,
                        help="the model's own unet/model.onnx (for the extended variant)")
    parser.add_argument("--fused", type=Path, help="a graph written by fusion.fuse_unet")
    parser.add_argument("--mha", type=Path, help="a graph written by the mha-graph command")
    parser.add_argument("--out", type=Path, help="mha-graph: the folder to write")
    parser.add_argument("--diffusers-folder", type=Path, help="for the torch variant")
    parser.add_argument("--latent", type=int, nargs="+", default=[32])
    parser.add_argument("--calls", type=int, default=3, help="profiled calls (default 3)")
    parser.add_argument("--rounds", type=int, default=5, help="lever rounds (default 5)")
    parser.add_argument("--variants", nargs="+", default=["spinning"],
                        choices=[*VARIANT_CONFIG, "threads-1", "extended", "fused", "mha",
                                 "torch"])
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--gemm-size", type=int, default=4096)
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    arguments = parser.parse_args(argv)
    if arguments.command in ("profile", "levers") and arguments.unet is None:
        parser.error(f"{arguments.command} needs --unet PATH")
    if "torch" in arguments.variants and arguments.diffusers_folder is None \
            and arguments.command == "levers":
        parser.error("the torch variant needs --diffusers-folder PATH")
    return arguments


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    if arguments.command == "worker":
        return worker(arguments)
    command = {"gemm": command_gemm, "profile": command_profile, "shapes": command_shapes,
               "attention": command_attention, "mha-graph": command_mha_graph,
               "levers": command_levers}[arguments.command]
    result = command(arguments)
    if arguments.json:
        arguments.json.write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
