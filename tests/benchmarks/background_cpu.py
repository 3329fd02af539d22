"""Background removal on the CPU: seconds per picture and peak memory for a 1024x1024
picture cut out with a real-size IS-Net-shaped segmenter (random weights: the speed and
memory of a network do not depend on its weight values), with and without refine, and for
the flood fill.

The network is an approximation of IS-Net (DIS, rembg's isnet-general-use.onnx), not IS-Net
itself: the same input (1x3x1024x1024, "input_image") and outputs (six 1x1x1024x1024 maps,
the first the mask), a U-shaped encoder-decoder of plain 3x3 convolutions with about the same
parameter count (IS-Net: about 44 M); its multiply-adds are counted and printed, so the time
can be scaled to another network's. Exported with torch here; each measurement then runs in a
process of its own through ``engine.background.cut_out`` (no torch), so its peak resident
set size (VmHWM; ru_maxrss where there is no /proc) is the engine's alone.

    .venv/bin/python tests/benchmarks/background_cpu.py [--repeats 2] [--sides 1024,4096]
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

# (channels, side in pixels) of the encoder stages after a stride-2 stem at 512.
STAGES = ((64, 512), (128, 256), (256, 128), (512, 64), (512, 32), (512, 16))


def _export(graph: Path) -> tuple[int, int]:
    """The IS-Net-shaped graph written to ``graph``; (parameters, multiply-adds)."""
    import torch
    from torch import nn

    def block(inputs: int, outputs: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(inputs, outputs, 3, padding=1), nn.BatchNorm2d(outputs),
                             nn.ReLU(inplace=True))

    class IsNetShaped(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 64, 3, stride=2, padding=1)
            widths = [channels for channels, _ in STAGES]
            self.down = nn.ModuleList()
            previous = 64
            for width in widths:
                self.down.append(nn.Sequential(block(previous, width), block(width, width)))
                previous = width
            self.bottom = nn.Sequential(block(512, 512), block(512, 512))
            self.up = nn.ModuleList()
            for index in range(len(widths) - 1, -1, -1):
                out = widths[index - 1] if index else 64
                self.up.append(nn.Sequential(block(previous + widths[index], widths[index]),
                                             block(widths[index], out)))
                previous = out
            self.sides = nn.ModuleList(nn.Conv2d(c, 1, 3, padding=1)
                                       for c in (64, 64, 64, 128, 256, 512))

        def forward(self, picture):
            x = self.stem(picture)
            skips = []
            for index, stage in enumerate(self.down):
                x = stage(x if index == 0 else nn.functional.max_pool2d(x, 2))
                skips.append(x)
            x = self.bottom(x)
            decoded = []
            for stage, skip in zip(self.up, reversed(skips), strict=True):
                if x.shape[-1] != skip.shape[-1]:
                    x = nn.functional.interpolate(x, size=skip.shape[-2:], mode="bilinear")
                x = stage(torch.cat([x, skip], 1))
                decoded.append(x)
            maps = [decoded[-1], decoded[-1], decoded[-2], decoded[-3], decoded[-4],
                    decoded[-5]]
            return tuple(torch.sigmoid(nn.functional.interpolate(
                side(m), size=(1024, 1024), mode="bilinear"))
                for side, m in zip(self.sides, maps, strict=True))

    torch.manual_seed(0)
    model = IsNetShaped().eval()
    macs = _count_macs(model, torch)
    torch.onnx.export(model, (torch.rand(1, 3, 1024, 1024),), str(graph), dynamo=False,
                      opset_version=17, input_names=["input_image"],
                      output_names=[f"d{index}" for index in range(6)])
    return sum(p.numel() for p in model.parameters()), macs


def _count_macs(model, torch) -> int:
    total = 0

    def count(module, _inputs, output) -> None:
        nonlocal total
        kernel = module.weight[0].numel()  # in_channels/groups x k x k
        total += output.numel() * kernel

    hooks = [m.register_forward_hook(count) for m in model.modules()
             if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        model(torch.rand(1, 3, 1024, 1024))
    for hook in hooks:
        hook.remove()
    return total


def _picture(side: int):
    """A subject (a disc of coloured ramps) on near-white, built in uint8 so that making it
    does not dominate the child's peak memory."""
    import numpy as np

    ramp = np.arange(side, dtype=np.float32) - side / 2
    subject = ramp[np.newaxis, :] ** 2 + ramp[:, np.newaxis] ** 2 < (side / 3) ** 2
    steps = np.arange(side, dtype=np.int64)
    picture = np.full((side, side, 3), 245, np.uint8)
    for channel, (row, column) in enumerate(((0, 200), (180, 0), (160, 160))):
        values = (steps[:, np.newaxis] % row if row else 0) + \
            (steps[np.newaxis, :] % column if column else 0)
        picture[..., channel] = np.where(subject, np.asarray(values, np.uint8) // 2, 245)
    return picture


def _measure(folder: str, side: int, refine: bool, repeats: int) -> None:
    """In the child: time ``cut_out`` (the first run loads the session) and print JSON."""
    from engine.background import cut_out

    picture = _picture(side)
    segmenter = None if folder == "flood" else Path(folder)
    started = time.perf_counter()
    cut_out(picture, segmenter, refine)
    first = time.perf_counter() - started
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        cut_out(picture, segmenter, refine)
        times.append(time.perf_counter() - started)
    peak = _peak_rss()
    print(json.dumps({"first_s": first, "seconds": min(times) if times else first,
                      "peak_rss_bytes": peak}))


def _peak_rss() -> int:
    """This process's peak resident set size in bytes: VmHWM, which starts afresh at exec
    (ru_maxrss is carried over from the parent that forked it: the exporter's torch)."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _child(folder: str, side: int, refine: bool, repeats: int) -> dict:
    child = subprocess.run([sys.executable, __file__, "--run", folder, "--side", str(side),
                            "--repeats", str(repeats)] + (["--refine"] if refine else []),
                           capture_output=True, text=True, check=False)
    if child.returncode != 0:
        raise SystemExit(child.stderr)
    return json.loads(child.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2, help="timed runs after the first")
    parser.add_argument("--sides", default="1024,4096", help="picture sides to measure")
    parser.add_argument("--run", help=argparse.SUPPRESS)  # the measuring child
    parser.add_argument("--side", type=int, default=1024, help=argparse.SUPPRESS)
    parser.add_argument("--refine", action="store_true", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.run is not None:
        _measure(arguments.run, arguments.side, arguments.refine, arguments.repeats)
        return 0
    from desktop.model_store import ModelStore

    with tempfile.TemporaryDirectory(prefix="easel-background-bench-") as scratch:
        graph = Path(scratch) / "isnet-general-use.onnx"
        started = time.perf_counter()
        parameters, macs = _export(graph)
        print(f"IS-Net-shaped graph: {parameters / 1e6:.1f} M parameters, "
              f"{macs / 1e9:.1f} G multiply-adds at 1024x1024; exported in "
              f"{time.perf_counter() - started:.0f} s", flush=True)
        folder = ModelStore(Path(scratch) / "models").import_model(graph, kind="segmenter").path
        print("what                         picture   first s   per picture s   peak RSS MiB")
        for side in (int(text) for text in arguments.sides.split(",")):
            for label, target, refine in (("segmenter", str(folder), False),
                                          ("segmenter + refine", str(folder), True),
                                          ("flood fill", "flood", False)):
                report = _child(target, side, refine, arguments.repeats)
                print(f"{label:28s} {side:>5d}²   {report['first_s']:7.2f}   "
                      f"{report['seconds']:13.2f}   {report['peak_rss_bytes'] / 2**20:12.0f}",
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
