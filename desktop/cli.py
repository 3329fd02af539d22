"""The ``easel`` command: import models, make pictures, list and remove models.

Every failure the user can cause ends in one sentence on stderr and a non-zero exit; nothing
is left half-written (models are built aside and moved in, images are written atomically).
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from desktop import paths
from desktop.image_files import new_image_id, save_png
from desktop.model_store import ModelStore
from engine.errors import BadRequest, Cancelled, EaselError
from engine.model import load_model
from engine.pipelines.text_to_image import TextToImagePipeline
from engine.request import GenerationResult, Progress, TextToImageRequest
from engine.runtime import CancelToken, RuntimeOptions
from engine.schedulers import DISTILLED_SCHEDULER_NAMES, SCHEDULER_NAMES

EXIT_ERROR = 1
EXIT_CANCELLED = 130


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    arguments = parser.parse_args(argv)
    if not hasattr(arguments, "run"):
        parser.print_help()
        return 0
    try:
        return arguments.run(arguments)
    except Cancelled:
        _say("Cancelled; nothing was saved.")
        return EXIT_CANCELLED
    except KeyboardInterrupt:
        _say("Interrupted; nothing was saved.")
        return EXIT_CANCELLED
    except EaselError as error:
        _say(f"error: {error}")
        return EXIT_ERROR


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="easel", description="Easel: make pictures from text on your own machine.")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    generate = commands.add_parser("generate", help="make pictures from a prompt")
    generate.add_argument("prompt", help="what the picture should show")
    generate.add_argument("--model", "-m",
                          help="name of an installed model (default: the only one installed, "
                               "or the built-in starter model when none is)")
    generate.add_argument("--negative-prompt", "-n", default="", help="what to avoid")
    generate.add_argument("--steps", type=int, help="denoising steps (model default if unset)")
    generate.add_argument("--guidance", "--cfg", type=float,
                          help="how closely to follow the prompt (model default if unset)")
    generate.add_argument("--scheduler", choices=SCHEDULER_NAMES + DISTILLED_SCHEDULER_NAMES,
                          help="sampling method (lcm only for LCM models)")
    generate.add_argument("--seed", type=int, help="random seed; image i uses seed + i")
    generate.add_argument("--width", type=int, help="width in pixels, a multiple of 8")
    generate.add_argument("--height", type=int, help="height in pixels, a multiple of 8")
    generate.add_argument("--count", type=int, default=1, help="number of images")
    generate.add_argument("--output", "-o", type=Path,
                          help="a .png file name or a folder (default: Easel's images folder)")
    _add_runtime_arguments(generate)
    generate.set_defaults(run=_generate)

    models = commands.add_parser("models", help="import, list and remove models")
    model_commands = models.add_subparsers(title="model commands", metavar="COMMAND")
    importing = model_commands.add_parser("import", help="import a model folder")
    importing.add_argument("source", type=Path,
                           help="a Stable Diffusion 1.x, 2.x or XL model: a diffusers or ONNX "
                                "(optimum, Amuse) folder, a single-file .safetensors "
                                "checkpoint, or a .ckpt/.pt/.bin file (read as plain tensors "
                                "only)")
    importing.add_argument("--family", choices=("sd1", "sd2", "sdxl"),
                           help="the model family, checked against a checkpoint file")
    importing.add_argument("--prediction", choices=("epsilon", "v_prediction"),
                           help="what an SD 2.x checkpoint predicts (its file cannot tell)")
    importing.add_argument("--few-step", choices=("auto", "none", "turbo", "lcm"),
                           default="auto",
                           help="a few-step distilled model (default: detected from its configs)")
    importing.add_argument("--name", help="name to install it under (default: folder name)")
    importing.set_defaults(run=_import_model)
    listing = model_commands.add_parser("list", help="list installed models")
    listing.set_defaults(run=_list_models)
    removing = model_commands.add_parser("remove", help="remove an installed model")
    removing.add_argument("name")
    removing.set_defaults(run=_remove_model)
    models.set_defaults(run=lambda _: models.print_help() or 0)
    return parser


def _add_runtime_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--providers", default=os.environ.get("EASEL_PROVIDERS", ""),
        help="comma-separated provider order, e.g. cuda,cpu (default: the best available; "
             "env EASEL_PROVIDERS)")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads for inference (default: all cores)")


def _runtime_options(arguments: argparse.Namespace) -> RuntimeOptions:
    providers = tuple(name.strip().lower() for name in arguments.providers.split(",")
                      if name.strip())
    if arguments.threads < 0:
        raise BadRequest("--threads must be 0 (all cores) or more.")
    return RuntimeOptions(providers=providers, cpu_threads=arguments.threads,
                          optimized_cache=paths.optimized_graphs_dir())


def _store() -> ModelStore:
    return ModelStore(paths.models_dir(), paths.built_in_models_dir())


def _generate(arguments: argparse.Namespace) -> int:
    store = _store()
    name = arguments.model or store.default_model().name
    model = load_model(store.path_of(name), _runtime_options(arguments), name)
    seed = arguments.seed if arguments.seed is not None else secrets.randbelow(2**32)
    request = TextToImageRequest(
        prompt=arguments.prompt, negative_prompt=arguments.negative_prompt,
        width=arguments.width, height=arguments.height, steps=arguments.steps,
        guidance=arguments.guidance, scheduler=arguments.scheduler, seed=seed,
        count=arguments.count)
    pipeline = TextToImagePipeline(model)
    pipeline.check_inputs(request)  # bad input fails before anything loads or runs
    targets = _output_paths(arguments.output, seed, arguments.count)

    device = model.unet.device  # loads the UNet now, so the device is known before waiting
    _say(f"running on {device.summary}")
    if device.reason:
        _say(f"warning: {device.reason}")
    result = _run_cancellable(lambda cancel: pipeline(request, _progress_printer(), cancel))
    for warning in result.warnings:
        _say(f"warning: {warning}")
    for image, target in zip(result.images, targets, strict=True):
        save_png(image.pixels, target, image.parameters, new_image_id())
        print(target)
    return 0


def _output_paths(output: Path | None, seed: int, count: int) -> list[Path]:
    """Where each image goes; refuses to overwrite anything, before any work is done."""
    seeds = [seed + index for index in range(count)]
    if output is not None and output.suffix:
        if output.suffix.lower() != ".png":
            raise BadRequest("Easel writes PNG files: give an output name ending in .png, "
                             "or a folder.")
        folder = output.parent
        names = [output.name] if count == 1 else [f"{output.stem}-{s}.png" for s in seeds]
    else:
        folder = output if output is not None else paths.images_dir()
        stamp = time.strftime("%Y%m%d-%H%M%S")
        names = [f"{stamp}-{s}.png" for s in seeds]
    if folder.exists() and not folder.is_dir():
        raise BadRequest(f"'{folder}' is a file, not a folder.")
    folder.mkdir(parents=True, exist_ok=True)
    targets = [folder / name for name in names]
    for target in targets:
        if target.exists():
            raise BadRequest(f"'{target}' already exists; choose another output name.")
    return targets


def _run_cancellable(job) -> GenerationResult:
    """Run in a worker thread so Ctrl+C can cancel even inside a long ONNX Runtime call."""
    cancel = CancelToken()
    outcome: dict = {}
    # Waited on instead of Thread.join: on Python 3.11 a Ctrl+C during join() can make a later
    # join() return while the thread still runs, and a worker still inside ONNX Runtime when
    # the interpreter exits aborts the process.
    finished = threading.Event()

    def work() -> None:
        try:
            outcome["result"] = job(cancel)
        except BaseException as error:  # handed to the main thread, re-raised there
            outcome["error"] = error
        finally:
            finished.set()

    threading.Thread(target=work, name="easel-generate", daemon=True).start()
    try:
        while not finished.wait(0.1):
            pass
    except KeyboardInterrupt:
        cancel.cancel()
        finished.wait()
        raise Cancelled("Cancelled.") from None
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def _progress_printer():
    if not sys.stderr.isatty():
        return None
    started = time.monotonic()

    def show(progress: Progress) -> None:
        elapsed = time.monotonic() - started
        print(f"\rimage {progress.image + 1}/{progress.images}  "
              f"step {progress.step}/{progress.steps}  {elapsed:.1f} s", end="",
              file=sys.stderr, flush=True)
        if progress.step == progress.steps and progress.image + 1 == progress.images:
            print(file=sys.stderr)

    return show


def _import_model(arguments: argparse.Namespace) -> int:
    store = _store()

    def progress(stage: str, done: int, total: int) -> None:
        _say(f"[{done}/{total}] {stage}")

    distillation = None if arguments.few_step == "none" else arguments.few_step
    model = store.import_model(arguments.source, arguments.name, progress,
                               family=arguments.family, prediction=arguments.prediction,
                               distillation=distillation)
    print(f"Installed '{model.name}' ({model.family}, {_size(model.size_bytes)}).")
    return 0


def _list_models(arguments: argparse.Namespace) -> int:
    models = _store().list()
    if not models:
        print("No models installed. Add one with: easel models import FOLDER")
        return 0
    width = max(len(model.name) for model in models)
    for model in models:
        where = "  (built in)" if model.built_in else ""
        print(f"{model.name:<{width}}  {model.family:<7}  {model.prediction_type:<12}  "
              f"{_size(model.size_bytes)}{where}")
    return 0


def _remove_model(arguments: argparse.Namespace) -> int:
    _store().remove(arguments.name)
    print(f"Removed '{arguments.name}'.")
    return 0


def _size(size_bytes: int) -> str:
    if size_bytes < 1000:
        return f"{size_bytes} bytes"
    for unit in ("KB", "MB", "GB"):
        size_bytes /= 1000
        if size_bytes < 1000 or unit == "GB":
            break
    return f"{size_bytes:.1f} {unit}"


def _say(message: str) -> None:
    print(f"easel: {message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
