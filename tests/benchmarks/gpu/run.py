"""The device run: each model built (or its background build waited for), then benchmarked.

``device_run.sh`` starts this; see README.md beside it. The order is the issue's: SD 1.5 first,
the turbo model, SDXL last (it may not fit the time). The headline numbers of every model come
first (Easel and diffusers), then a second pass makes our fp32 pictures (the fp16 picture is
compared with them) and profiles where a target was missed, then ``torch.compile`` runs for
the models named in ``--compile``. Until ``--deadline-s`` seconds have gone, each step starts
only if about enough time is left for it; everything measured so far is in
``OUT/results.json`` after every side (text_to_image_gpu.py), so a run cut short keeps it.

Writes ``OUT/results.json`` (the machine, then one record per model) and ``OUT/results.txt``
(the table printed last).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.benchmarks.gpu import models  # noqa: E402
from tests.benchmarks.machine import cpu_model  # noqa: E402

BENCHMARK = REPO / "tests" / "benchmarks" / "text_to_image_gpu.py"
ORDER = ("sd15", "turbo", "sdxl")
# Seconds a model's benchmark needs at least (Easel's first load converts and optimises the
# graphs; guesses until measured): with less left it is skipped, saying so.
LEAST_S = {"sd15": 90, "turbo": 80, "sdxl": 240}
VERSIONS = ("onnxruntime-gpu", "onnxruntime", "torch", "diffusers", "transformers", "numpy")


def machine() -> dict:
    """What the numbers were measured on."""
    info: dict = {"cpu": cpu_model(), "cpus": os.cpu_count()}
    smi = shutil.which("nvidia-smi")
    if smi:
        fields = "name,memory.total,driver_version,clocks.max.sm,power.limit"
        line = subprocess.run([smi, f"--query-gpu={fields}", "--format=csv,noheader"],
                              capture_output=True, text=True).stdout.strip().splitlines()
        if line:
            info["gpu"] = dict(zip(fields.split(","), (part.strip() for part in
                                                        line[0].split(",")), strict=False))
    for name in VERSIONS:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            info[name] = importlib.metadata.version(name)
    return info


def update(results: Path, change) -> None:
    data = json.loads(results.read_text()) if results.is_file() else {}
    change(data)
    partial = results.with_name(results.name + ".partial")
    partial.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(partial, results)


def benchmark(name: str, folders: models.ModelFolders, arguments: argparse.Namespace,
              results: Path, deadline: float | None, sides: str, profile: str,
              keep: bool) -> int:
    """One call of text_to_image_gpu.py for model ``name``; its exit status."""
    command = [sys.executable, str(BENCHMARK), "--config", name,
               "--diffusers-folder", str(folders.diffusers), "--onnx-folder", str(folders.easel),
               "--cache", str(folders.cache), "--results", str(results),
               "--scratch", str(arguments.work / "bench" / name), "--sides", sides]
    if keep:
        command.append("--keep")
    if arguments.dry_run:
        command += ["--dry-run", "--warmups", "1"]
        # Every model's profile is exercised, though no target is judged on the CPU.
        profile = "always" if profile == "auto" else profile
    command += ["--profile", profile]
    if deadline is not None:
        command += ["--deadline", f"{deadline:.0f}"]
    return subprocess.run(command, cwd=REPO).returncode


def skip(results: Path, name: str, reason: str) -> None:
    print(f"{name}: skipped: {reason}", flush=True)

    def note(data: dict) -> None:
        data.setdefault("configs", {}).setdefault(name, {"config": name})["skipped"] = reason

    update(results, note)


def phases(arguments: argparse.Namespace) -> list[tuple[str, str]]:
    """(sides, profile) of each pass over the models. By default the headline numbers of
    every model come first (Easel and diffusers), then our fp32 pictures with a profile
    where a target was missed; ``--sides`` makes it one pass of those."""
    if arguments.sides:
        return [(arguments.sides, "auto")]
    return [("easel,diffusers", "never"), ("easel-fp32", "auto")]


def run(arguments: argparse.Namespace) -> int:
    started = time.time()
    deadline = started + arguments.deadline_s if arguments.deadline_s else None
    scale = "tiny" if arguments.dry_run else "real"
    arguments.out.mkdir(parents=True, exist_ok=True)
    results = arguments.out / "results.json"
    if arguments.fresh:
        results.unlink(missing_ok=True)
    update(results, lambda data: data.update(
        machine=machine(), dry_run=arguments.dry_run,
        started=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")))
    names = [name for name in ORDER if name in arguments.configs.split(",")]
    models.place(names, scale, arguments.work)  # a background build placed them already
    measured = []
    for number, (sides, profile) in enumerate(phases(arguments)):
        for name in names if number == 0 else measured:
            if number == 0:
                left = None if deadline is None else deadline - time.time()
                if left is not None and left < LEAST_S[name]:
                    skip(results, name, f"{left:.0f} s were left; it needs about "
                                        f"{LEAST_S[name]} s")
                    continue
                try:
                    folders = ready_model(name, scale, arguments.work, results)
                except models.BuildFailed as error:
                    skip(results, name, str(error))
                    continue
                measured.append(name)
            else:
                folders = models.ModelFolders(models.model_root(arguments.work, name, scale))
            status = benchmark(name, folders, arguments, results, deadline, sides, profile,
                               keep=number > 0)
            if status:
                update(results, lambda data, name=name, status=status: data["configs"][
                    name].update(error=f"the benchmark stopped with exit status {status}"))
    for name in [name for name in arguments.compile.split(",") if name in measured]:
        folders = models.ModelFolders(models.model_root(arguments.work, name, scale))
        benchmark(name, folders, arguments, results, deadline, "diffusers-compile", "never",
                  keep=True)
    table = summary_table(json.loads(results.read_text()))
    (arguments.out / "results.txt").write_text(table + "\n")
    print(table, flush=True)
    print(f"device run: {time.time() - started:.0f} s; results in {results}", flush=True)
    return 0


def ready_model(name: str, scale: str, work: Path, results: Path) -> models.ModelFolders:
    """The model's folders once built (waiting for a background build), noted in results."""
    waited = time.time()
    folders = models.ensure(name, scale, work)
    # A build still going (install_parts.sh starts them all at once) shares the CPU, on other
    # cores: said beside the numbers, which a rerun can confirm.
    building = [other for other in ORDER if other != name and models.is_building(
        models.model_root(work, other, scale))]
    build = {**models.build_times(folders), "waited_s": round(time.time() - waited, 1),
             "folder": str(folders.root.resolve()), "others_building": building}
    update(results, lambda data: data.setdefault("configs", {}).update(
        {name: {"config": name, "model": build}}))
    return folders


def summary_table(data: dict) -> str:
    """One line per model: the numbers the issue asks for."""
    gpu = data.get("machine", {}).get("gpu", {}).get("name", data.get("machine", {}).get("cpu"))
    lines = [f"Easel against diffusers on {gpu}, {data.get('started', '')}"
             f"{' (DRY RUN on the CPU: not numbers to quote)' if data.get('dry_run') else ''}",
             f"{'model':7} {'Easel ms':>9} {'diffusers':>10} {'speed-up':>9} {'compiled':>9} "
             f"{'Easel MB':>9} {'diff. MB':>9} {'fp16-fp32':>10}  targets"]
    for name, record in data.get("configs", {}).items():
        sides = record.get("sides", {})
        if not sides:
            lines.append(f"{name:7} {record.get('skipped') or record.get('error', '-')}")
            continue

        def value(side: str, key: str, sides: dict = sides) -> str:
            found = sides.get(side, {}).get(key)
            return "-" if found is None else f"{found:.1f}"

        speed_up = record.get("speed_up")
        pixels = record.get("fp16_vs_fp32")
        difference = f"{pixels['mean']:.2f}/{pixels['max']}" if pixels else "-"
        targets = ", ".join({True: "met", False: "MISSED", None: "-"}[target["met"]]
                            for target in record.get("targets", []))
        lines.append(
            f"{name:7} {value('easel', 'median_ms'):>9} {value('diffusers', 'median_ms'):>10} "
            f"{f'{speed_up:.2f}x' if speed_up else '-':>9} "
            f"{value('diffusers-compile', 'median_ms'):>9} "
            f"{value('easel', 'gpu_memory_peak_mb'):>9} "
            f"{value('diffusers', 'gpu_memory_peak_mb'):>9} "
            f"{difference:>10}  {targets}")
    lines.append("ms: median whole picture; MB: GPU memory peak (NVML, this process); "
                 "fp16-fp32: mean/largest pixel difference out of 255; targets: time, speed-up")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="models and scratch")
    parser.add_argument("--out", type=Path, required=True, help="results.json, results.txt")
    parser.add_argument("--configs", default=",".join(ORDER))
    parser.add_argument("--compile", default="sd15",
                        help="models to run torch.compile for at the end (default sd15)")
    parser.add_argument("--sides", help="the benchmark's sides (default: its own)")
    parser.add_argument("--deadline-s", type=float, default=0,
                        help="seconds from now after which nothing new starts (0: none)")
    parser.add_argument("--fresh", action="store_true", help="start a new results.json")
    parser.add_argument("--dry-run", action="store_true")
    arguments = parser.parse_args(argv)
    arguments.work = arguments.work.resolve()
    return run(arguments)


if __name__ == "__main__":
    sys.exit(main())
