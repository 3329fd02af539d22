"""One ``easel batch`` against one ``easel generate`` per job: what a batch saves per job.

Usage: ``python tests/benchmarks/batch_throughput.py [--jobs 12] [--steps 4] [--model NAME]
[--rounds 1] [--real-size [--real-size-home FOLDER]] [--json OUT]``

The same N jobs (prompts, steps, seeds; one picture each) are made two ways, each as the user
runs them, in subprocesses: (a) one ``easel batch FILE`` with N lines, (b) N ``easel
generate`` one after another. Each arm gets a fresh temporary data folder (``EASEL_HOME``: an
empty library, so nothing is skipped as already made), with the model linked in and the
optimised-graph cache shared and filled by an untimed warm-up first, so neither arm pays the
one-time graph optimisation. With ``--rounds`` above 1 the arms alternate which goes first.

Then what one ``easel generate`` costs before its first step, two ways:
- ``easel generate`` with 1 step and with 1 + ``--extra-steps`` (``--repeats`` of each, in
  turn; medians): the per-step time is the slope, and what remains of the 1-step run
  (process start, imports, model load, the prompt's encoding, the decode and the save) is the
  fixed cost of one run;
- in a fresh process: the time from launch to the command line's imports done, then
  ``load_model`` and the three sessions a picture needs (text encoder, UNet, VAE decoder),
  then two 1-step pictures: what the first costs more than the second is the sessions' first
  use, which a batch pays once too ("load and first use").

Prints the wall times, the time saved per job, the model load per job and the ratio of the two
(the target, issue 22: a batch saves at least the load time per job), and checks that both arms
made the same pixels. ``--model NAME`` is a model installed in ``EASEL_HOME`` (default: the
built-in starter model). ``--real-size`` makes a random-weight SD 1.5 with
``make_random_sd15.py`` and imports it (``--real-size-home FOLDER`` keeps it for the next run),
then uses it at 256x256: making and importing took 32 s and 91 s on 2 cores (7 GB of memory,
13 GB of disk; the export extra is needed), and the whole run with ``--jobs 4 --steps 2
--extra-steps 2 --repeats 1`` about 6 minutes.
This is a benchmark helper, not a test; pytest does not collect ``tests/benchmarks``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EASEL = Path(sys.executable).with_name("easel")
REAL_SIZE_NAME = "sd15-random"


# --- running easel ------------------------------------------------------------------------------

def easel(arguments: list[str], home: Path, cwd: Path | None = None) -> tuple[float, list[str]]:
    """Run one ``easel`` command with ``home`` as its data folder: (wall seconds, stdout
    lines)."""
    environment = {**os.environ, "EASEL_HOME": str(home)}
    started = time.perf_counter()
    done = subprocess.run([str(EASEL), *arguments], env=environment, cwd=cwd,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"easel {' '.join(arguments[:2])} failed:\n{done.stderr[-3000:]}")
    return seconds, done.stdout.split()


def fresh_home(scratch: Path, label: str, model: Path | None, cache: Path) -> Path:
    """An empty data folder with the model (when not built in) and the shared graph cache
    linked in."""
    home = Path(tempfile.mkdtemp(prefix=f"{label}-", dir=scratch))
    (home / "cache").mkdir()
    (home / "cache" / "optimized").symlink_to(cache, target_is_directory=True)
    if model is not None:
        (home / "models").mkdir()
        (home / "models" / model.name).symlink_to(model, target_is_directory=True)
    return home


def generate_arguments(job: dict, arguments: argparse.Namespace) -> list[str]:
    words = ["generate", job["prompt"], "--steps", str(job["steps"]), "--seed", str(job["seed"])]
    for option in ("model", "width", "height"):
        if option in job:
            words += [f"--{option}", str(job[option])]
    return words + ["--threads", str(arguments.threads)] if arguments.threads else words


def make_jobs(arguments: argparse.Namespace) -> list[dict]:
    """N different prompts the starter model knows every word of, seeds 1000 + i."""
    import numpy as np

    sys.path.insert(0, str(REPO))
    from engine.starter.scenes import caption, sample_scene

    rng = np.random.default_rng(0)
    jobs = []
    for index in range(arguments.jobs):
        job = {"prompt": caption(sample_scene(rng)), "steps": arguments.steps,
               "seed": 1000 + index}
        if arguments.model:
            job["model"] = arguments.model
        if arguments.size:
            job["width"] = job["height"] = arguments.size
        jobs.append(job)
    return jobs


def pixel_digests(paths: list[str]) -> list[str]:
    """The pictures' pixels, hashed and sorted: the arms may finish jobs in any order."""
    import numpy as np
    from PIL import Image

    digests = []
    for path in paths:
        with Image.open(path) as picture:
            digests.append(hashlib.sha256(np.asarray(picture.convert("RGB")).tobytes())
                           .hexdigest())
    return sorted(digests)


# --- the two arms -------------------------------------------------------------------------------

def batch_arm(jobs: list[dict], home: Path, arguments: argparse.Namespace) -> dict:
    file = home / "jobs.jsonl"
    file.write_text("".join(json.dumps(job) + "\n" for job in jobs), encoding="utf-8")
    extra = ["--threads", str(arguments.threads)] if arguments.threads else []
    seconds, paths = easel(["batch", str(file), *extra], home, cwd=home)
    return {"seconds": seconds, "pictures": pixel_digests(paths)}


def generate_arm(jobs: list[dict], home: Path, arguments: argparse.Namespace) -> dict:
    seconds, paths = 0.0, []
    for job in jobs:
        taken, printed = easel(generate_arguments(job, arguments), home)
        seconds += taken
        paths += printed
    return {"seconds": seconds, "pictures": pixel_digests(paths)}


# --- what one run costs before its first step ---------------------------------------------------

def fixed_cost(job: dict, home: Path, arguments: argparse.Namespace) -> dict:
    """The slope and intercept of ``easel generate``'s wall time over its step count."""
    short, long = dict(job, steps=1), dict(job, steps=1 + arguments.extra_steps)
    times: dict[str, list[float]] = {"short": [], "long": []}
    for _ in range(arguments.repeats):
        for label, run in (("short", short), ("long", long)):
            times[label].append(easel(generate_arguments(run, arguments), home)[0])
    one, more = statistics.median(times["short"]), statistics.median(times["long"])
    step = (more - one) / arguments.extra_steps
    return {"one_step_s": one, "more_steps": long["steps"], "more_steps_s": more,
            "step_s": step, "fixed_s": one - step}


def child_load(model_name: str | None, threads: int, size: int | None,
               launched: float) -> dict:
    """In a fresh process: the command line's imports, then the model and its sessions, then
    two 1-step pictures: what the first costs more than the second is the sessions' first use
    (ONNX Runtime's lazy work, weights paged in), which a batch also pays only once."""
    from desktop.cli import generate  # noqa: F401 (what ``easel generate`` imports)
    from desktop.cli.common import model_store, runtime_options
    from engine.model import load_model
    from engine.pipelines.text_to_image import TextToImagePipeline
    from engine.request import TextToImageRequest

    imports_done = time.time()
    store = model_store()
    name = model_name or store.default_model().name
    options = runtime_options(argparse.Namespace(providers=os.environ.get("EASEL_PROVIDERS", ""),
                                                 threads=threads))
    started = time.perf_counter()
    model = load_model(store.path_of(name), options, name)
    opened = time.perf_counter()
    sessions = {component: timed(lambda c=component: getattr(model, c))
                for component in ("text_encoder", "unet", "vae_decoder")}
    pipeline = TextToImagePipeline(model)
    request = TextToImageRequest("a red fox in the centre", steps=1, seed=1, width=size,
                                 height=size)
    first, second = (timed(lambda: pipeline(request)) for _ in range(2))
    load = opened - started + sum(sessions.values())
    return {"start_and_imports_s": imports_done - launched, "load_model_s": opened - started,
            "sessions_s": sessions, "load_s": load, "first_picture_s": first,
            "second_picture_s": second, "load_and_first_use_s": load + first - second}


def in_process_load(home: Path, arguments: argparse.Namespace) -> dict:
    reports = []
    for _ in range(arguments.repeats):
        command = [sys.executable, __file__, "--child-load", str(time.time()),
                   "--threads", str(arguments.threads)]
        if arguments.model:
            command += ["--model", arguments.model]
        if arguments.size:
            command += ["--size", str(arguments.size)]
        done = subprocess.run(command, env={**os.environ, "EASEL_HOME": str(home)},
                              capture_output=True, text=True, cwd=REPO)
        if done.returncode != 0:
            raise SystemExit(f"the load measurement failed:\n{done.stderr[-3000:]}")
        reports.append(json.loads(done.stdout.strip().splitlines()[-1]))
    median = {key: statistics.median(report[key] for report in reports)
              for key in ("start_and_imports_s", "load_model_s", "load_s", "first_picture_s",
                          "second_picture_s", "load_and_first_use_s")}
    median["sessions_s"] = {component: statistics.median(r["sessions_s"][component]
                                                         for r in reports)
                            for component in reports[0]["sessions_s"]}
    return median


def timed(work) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


# --- a real-size model --------------------------------------------------------------------------

def make_real_size(scratch: Path, home: Path | None) -> tuple[Path, dict]:
    """A random SD 1.5 imported into the data folder ``home`` (a scratch one when None), or
    found there from an earlier run: (its installed folder, timings)."""
    home = home or scratch / "real-size-home"
    installed = home / "models" / REAL_SIZE_NAME
    if installed.is_dir():
        return installed, {}
    diffusers = scratch / "sd15-diffusers"
    made = timed(lambda: subprocess.run(
        [sys.executable, str(REPO / "tests" / "benchmarks" / "make_random_sd15.py"),
         str(diffusers)], check=True))
    imported, _ = easel(["models", "import", str(diffusers), "--name", REAL_SIZE_NAME], home)
    subprocess.run(["rm", "-rf", str(diffusers)], check=True)
    return installed, {"make_s": made, "import_s": imported}


# --- the driver ---------------------------------------------------------------------------------

def installed_folder(name: str) -> Path | None:
    """The folder of the installed model ``name`` in the user's ``EASEL_HOME``; None for a
    built-in one, which every data folder has."""
    sys.path.insert(0, str(REPO))
    from desktop import paths
    from desktop.model_store import ModelStore

    built_in = paths.built_in_models_dir()
    folder = ModelStore(paths.models_dir(), built_in).path_of(name)
    return None if folder.parent.resolve() == built_in.resolve() else folder


def measure(arguments: argparse.Namespace, scratch: Path, model: Path | None) -> dict:
    jobs = make_jobs(arguments)
    cache = scratch / "optimized"
    cache.mkdir()
    warm = fresh_home(scratch, "warm-up", model, cache)
    warm_up = easel(generate_arguments(dict(jobs[0], steps=1), arguments), warm)[0]
    rounds = []
    for round_number in range(arguments.rounds):
        order = ("batch", "generate") if round_number % 2 == 0 else ("generate", "batch")
        arms = {}
        for arm in order:
            home = fresh_home(scratch, arm, model, cache)
            run = batch_arm if arm == "batch" else generate_arm
            arms[arm] = run(jobs, home, arguments)
            print(f"round {round_number + 1}: {arm}: {arms[arm]['seconds']:.1f} s", flush=True)
        if arms["batch"]["pictures"] != arms["generate"]["pictures"]:
            raise SystemExit("the two arms made different pictures from the same jobs")
        rounds.append({arm: arms[arm]["seconds"] for arm in arms})
    home = fresh_home(scratch, "fixed", model, cache)
    return {"jobs": len(jobs), "steps": arguments.steps, "warm_up_s": warm_up,
            "rounds": rounds,
            "batch_s": statistics.median(r["batch"] for r in rounds),
            "generate_s": statistics.median(r["generate"] for r in rounds),
            "fixed": fixed_cost(jobs[0], home, arguments),
            "load": in_process_load(home, arguments)}


def print_result(result: dict) -> None:
    jobs, batch, generate = result["jobs"], result["batch_s"], result["generate_s"]
    fixed, load = result["fixed"], result["load"]
    saved = (generate - batch) / jobs
    print(f"\n{jobs} jobs, {result['steps']} steps each, model {result['model']}"
          f"{' (' + result['made'] + ')' if result.get('made') else ''}; "
          f"medians of {len(result['rounds'])} round(s)")
    print(f"one easel batch:        {batch:.1f} s ({batch / jobs:.2f} s a job)")
    print(f"{jobs} x easel generate:   {generate:.1f} s ({generate / jobs:.2f} s a job)")
    print(f"batch / generate:       {batch / generate:.3f} ({generate / batch:.2f}x the "
          f"throughput); saved per job: {saved:.2f} s")
    print(f"one easel generate: 1 step {fixed['one_step_s']:.2f} s, {fixed['more_steps']} "
          f"steps {fixed['more_steps_s']:.2f} s: a step {fixed['step_s']:.3f} s, the rest "
          f"{fixed['fixed_s']:.2f} s (start, imports, load, encode, decode, save)")
    sessions = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in
                         load["sessions_s"].items())
    print(f"in a fresh process: start and imports {load['start_and_imports_s']:.2f} s, "
          f"load_model {load['load_model_s']:.2f} s, sessions {sessions}: model load "
          f"{load['load_s']:.2f} s")
    ratio = saved / load["load_s"]
    verdict = "met" if ratio >= 1 else "missed"
    print(f"two 1-step pictures in that process: {load['first_picture_s']:.2f} s, then "
          f"{load['second_picture_s']:.2f} s: load and first use "
          f"{load['load_and_first_use_s']:.2f} s")
    print(f"saved per job / model load per job: {ratio:.2f} (target at least 1: {verdict}); "
          f"/ load and first use: {saved / load['load_and_first_use_s']:.2f}; "
          f"/ fixed cost of one run: {saved / fixed['fixed_s']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=12)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--size", type=int, help="width and height (default: the model's)")
    parser.add_argument("--model", help="an installed model (EASEL_HOME); default: starter")
    parser.add_argument("--real-size", action="store_true",
                        help="make and import a random-weight SD 1.5 and use it")
    parser.add_argument("--real-size-home", type=Path, metavar="FOLDER",
                        help="with --real-size: the data folder to import it into and keep it "
                             "in, reused by the next run (default: a scratch folder)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each load measurement")
    parser.add_argument("--extra-steps", type=int, default=16)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child-load", type=float, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.child_load is not None:
        print(json.dumps(child_load(arguments.model, arguments.threads, arguments.size,
                                    arguments.child_load)))
        return
    if arguments.real_size and arguments.model:
        parser.error("--real-size makes its own model; leave out --model")
    with tempfile.TemporaryDirectory(prefix="batch-throughput-") as scratch:
        scratch_path, made = Path(scratch), None
        model = installed_folder(arguments.model) if arguments.model else None
        if arguments.real_size:
            print("making and importing a random-weight SD 1.5...", flush=True)
            model, made = make_real_size(scratch_path, arguments.real_size_home)
            arguments.model, arguments.size = REAL_SIZE_NAME, arguments.size or 256
        result = measure(arguments, scratch_path, model)
    result["model"] = arguments.model or "starter (built in)"
    if made:  # empty when an earlier run's model was used
        result["made"] = (f"made in {made['make_s']:.0f} s, imported in "
                          f"{made['import_s']:.0f} s")
    print_result(result)
    if arguments.json:
        arguments.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
