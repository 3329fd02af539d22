"""What the ``easel`` commands share: runtime options, the model store and library, output
names that never overwrite, cancellable runs, progress and one-sentence messages."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from desktop import paths
from desktop import settings as settings_file
from desktop.content_filter.screening import screen
from desktop.decoding import add_fast_decode_argument
from desktop.library import Library
from desktop.model_prepare import command_line_runtime
from desktop.model_store import ModelStore
from engine.errors import BadRequest, Cancelled
from engine.noise import GENERATOR_NAMES, NUMPY
from engine.request import GenerationResult, Progress
from engine.runtime import CancelToken, DeviceReport, RuntimeOptions
from engine.schedulers import DISTILLED_SCHEDULER_NAMES, SCHEDULER_NAMES
from engine.size_rule import RULE, RULE_SENTENCE

# The size rule, as every command's help says it (``engine.size_rule`` words it once): in full
# at the first option it concerns, and in the description of a command that takes sides.
_T = TypeVar("_T")

WIDTH_HELP = f"width in pixels (default: the model's); {RULE}"
HEIGHT_HELP = "height in pixels (default: the model's), by the same rule as the width"
OUTPAINT_DESCRIPTION = f"Extend a picture past its edges. {RULE_SENTENCE}"


def side_help(side: str) -> str:
    """The help of an outpaint side: ``side`` is "left", "top", "right", "bottom" or "all"."""
    where = "on every side" if side == "all" else f"on the {side}"
    return f"pixels to add {where}, 0 (the default) or a multiple of the model's pixel multiple"


def add_runtime_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--providers", default=os.environ.get("EASEL_PROVIDERS", ""),
        help="comma-separated provider order, e.g. cuda,cpu (default: the best available; "
             "env EASEL_PROVIDERS)")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads for inference (default: all cores)")
    parser.add_argument("--precision", choices=("auto", "fp16", "fp32"), default="auto",
                        help="how the UNet, text encoders and VAE decoder compute: auto "
                             "(default) is fp16 on a GPU and fp32 on the CPU; fp32 on a GPU "
                             "for a model that draws black pictures in fp16")


def add_emphasis_argument(parser: argparse.ArgumentParser) -> None:
    """``--emphasis``: how A1111's (words:1.3) weights act on CLIP models."""
    from engine.prompt_emphasis import EMPHASES

    parser.add_argument("--emphasis", choices=EMPHASES, default="original",
                        help="how (words:1.3) weights act: original (as AUTOMATIC1111: "
                             "weighted, then rescaled to the prompt's mean) or none (weighted "
                             "only, A1111's 'No norm')")


def add_lora_argument(parser: argparse.ArgumentParser) -> None:
    """``--lora NAME[:WEIGHT]``, repeatable; ``<lora:NAME:WEIGHT>`` in the prompt does the
    same."""
    parser.add_argument("--lora", action="append", default=[], metavar="NAME[:WEIGHT]",
                        help="an installed LoRA to make the pictures with, and its weight "
                             "(default 1; 0 leaves the model as it is); repeat for several, "
                             "or write <lora:NAME:WEIGHT> in the prompt")


def lora_options(store: ModelStore, prompt: str | None,
                 arguments: argparse.Namespace) -> tuple[tuple[str, float], ...]:
    """The request's LoRAs, from the prompt's tags and ``--lora``, resolved to their files."""
    from desktop.model_kinds.lora import prompt_loras
    from engine.lora import parse_lora_option

    named = [parse_lora_option(text) for text in arguments.lora]
    return prompt_loras(store, prompt or "", named)


def add_control_arguments(parser: argparse.ArgumentParser) -> None:
    """``--control TYPE[=CONTROLNET]:PICTURE[:WEIGHT[:START:END]]``, repeatable, and
    ``--guess-mode``: ControlNets steering the picture (engine.control)."""
    from engine.control.pictures import parse_control_option

    def control(text: str):
        try:
            return parse_control_option(text)
        except BadRequest as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    parser.add_argument("--control", action="append", default=[], type=control,
                        metavar="TYPE[=CONTROLNET]:PICTURE[:WEIGHT[:START:END]]",
                        help="steer the picture by a control picture made from PICTURE "
                             "(types: canny, scribble, picture = used as it is, ...); "
                             "repeatable")
    parser.add_argument("--guess-mode", action="store_true",
                        help="let the controls steer without the prompt's help (A1111's "
                             "'ControlNet is more important')")


def control_options(store: ModelStore, family: str, arguments: argparse.Namespace) -> tuple:
    """The request's controls, every picture read and made before any work."""
    from desktop.controls import make_controls

    if arguments.guess_mode and not arguments.control:
        raise BadRequest("--guess-mode changes how controls steer; add a --control.")
    return make_controls(store, family, arguments.control, arguments.guess_mode)


def add_image_prompt_arguments(parser: argparse.ArgumentParser) -> None:
    """``--image-prompt PICTURE[:WEIGHT]``, repeatable, and ``--ip-adapter NAME``: reference
    pictures whose look and subject carry over (engine.image_prompt)."""
    parser.add_argument("--image-prompt", action="append", default=[], type=_image_prompt,
                        metavar="PICTURE[:WEIGHT]",
                        help="a reference picture whose look and subject carry over (an "
                             "IP-Adapter), weight 0 to 2 (default 1); repeatable")
    parser.add_argument("--ip-adapter", metavar="NAME",
                        help="the installed IP-Adapter to read the image prompts with "
                             "(default: the one for the model's family)")


def _image_prompt(text: str) -> tuple[Path, float]:
    """PICTURE or PICTURE:WEIGHT; a path may hold a colon (C:\\...), a weight never does."""
    path, _, weight = text.rpartition(":")
    if path and not weight.startswith(("\\", "/")):
        try:
            return Path(path), float(weight)
        except ValueError:
            pass
    return Path(text), 1.0


def image_prompt_options(store: ModelStore, family: str,
                         arguments: argparse.Namespace) -> tuple:
    """The request's image prompts: the installed adapter and encoder found before any work."""
    from desktop.image_prompts import make_image_prompts

    if arguments.ip_adapter and not arguments.image_prompt:
        raise BadRequest("--ip-adapter chooses how image prompts are read; add an "
                         "--image-prompt.")
    return make_image_prompts(store, family, arguments.image_prompt, arguments.ip_adapter)


def add_rng_argument(parser: argparse.ArgumentParser) -> None:
    """``--rng``: the generator each picture's seed is fed to (``engine.noise``)."""
    parser.add_argument(
        "--rng", choices=GENERATOR_NAMES, default=NUMPY,
        help="where the random numbers come from: numpy (Easel's own, the default), or "
             "torch-cpu / torch-cuda (torch.randn on the CPU / an NVIDIA GPU, to remake seeds "
             "from AUTOMATIC1111: its RNG 'CPU', or its default 'GPU' and 'NV')")


def add_generation_arguments(parser: argparse.ArgumentParser, count: int = 1) -> None:
    """What every command that makes pictures with a diffusion model takes: the model, the
    negative prompt, steps, guidance, scheduler, seed, count, a copy's path, and the RNG,
    emphasis, LoRA and runtime options."""
    parser.add_argument("--model", "-m", help="an installed model (default as for generate)")
    parser.add_argument("--negative-prompt", "-n", default="", help="what to avoid")
    parser.add_argument("--steps", type=int, help="steps of the full schedule")
    parser.add_argument("--guidance", "--cfg", type=float, help="how closely to follow the "
                        "prompt (model default if unset)")
    parser.add_argument("--scheduler", choices=SCHEDULER_NAMES + DISTILLED_SCHEDULER_NAMES)
    parser.add_argument("--seed", type=int, help="random seed; picture i uses seed + i")
    parser.add_argument("--count", type=int, default=count, help=f"pictures (default {count})")
    parser.add_argument("--output", "-o", type=Path,
                        help="also write a copy to this .png file name or folder")
    add_rng_argument(parser)
    add_emphasis_argument(parser)
    add_lora_argument(parser)
    add_fast_decode_argument(parser)
    add_runtime_arguments(parser)


def runtime_options(arguments: argparse.Namespace) -> RuntimeOptions:
    if arguments.threads < 0:
        raise BadRequest("--threads must be 0 (all cores) or more.")
    return command_line_runtime(arguments.providers, arguments.threads, arguments.precision)


def model_store() -> ModelStore:
    return ModelStore(paths.models_dir(), paths.built_in_models_dir())


def output_paths(output: Path | None, seed: int, count: int) -> list[Path | None]:
    """Where each image's extra copy goes (None: the library only); refuses to overwrite
    anything, before any work is done."""
    seeds = [seed + index for index in range(count)]
    if output is None:
        return [None] * count
    if output.suffix:
        if output.suffix.lower() != ".png":
            raise BadRequest("Easel writes PNG files: give an output name ending in .png, "
                             "or a folder.")
        folder = output.parent
        names = [output.name] if count == 1 else [f"{output.stem}-{s}.png" for s in seeds]
    else:
        folder = output
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


def run_cancellable(job: Callable[[CancelToken], GenerationResult]) -> GenerationResult:
    """Run in a worker thread so Ctrl+C can cancel even inside a long ONNX Runtime call."""
    result, interrupted = run_interruptible(job)
    if interrupted:
        raise Cancelled("Cancelled.")
    return result


def run_interruptible(job: Callable[[CancelToken], _T]) -> tuple[_T, bool]:
    """Run ``job`` in a worker thread, cancelling its token on Ctrl+C; returns what it
    returned (a batch's summary of what it saved before the stop) and whether Ctrl+C was
    pressed. An error the job raised is raised here."""
    cancel = CancelToken()
    outcome: dict = {}
    finished = threading.Event()
    interrupted = []

    def work() -> None:
        try:
            outcome["result"] = job(cancel)
        except BaseException as error:  # handed to the main thread, re-raised there
            outcome["error"] = error
        finally:
            finished.set()

    # Ctrl+C only notes the wish. A KeyboardInterrupt raised inside Event.wait can leave the
    # event's lock taken (seen under load: the worker then hangs in set(), and we in wait()),
    # so the handler raises nothing and the loop below does the cancelling.
    def on_interrupt(signum: int, frame: object) -> None:
        interrupted.append(signum)

    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, on_interrupt) if in_main_thread else None
    try:
        threading.Thread(target=work, name="easel-generate", daemon=True).start()
        while not finished.wait(0.1):
            if interrupted and not cancel.cancelled:
                cancel.cancel()
    finally:
        if in_main_thread:
            signal.signal(signal.SIGINT, previous)
    if "error" in outcome:
        raise Cancelled("Cancelled.") if interrupted else outcome["error"]
    return outcome["result"], bool(interrupted)


def progress_printer() -> Callable[[Progress], None] | None:
    if not sys.stderr.isatty():
        return None
    started = time.monotonic()

    def show(progress: Progress) -> None:
        elapsed = time.monotonic() - started
        stage = f" {progress.stage:<9}" if progress.stage else ""  # padded: one line rewritten
        print(f"\rimage {progress.image + 1}/{progress.images}  "
              f"step {progress.step}/{progress.steps}{stage}  {elapsed:.1f} s", end="",
              file=sys.stderr, flush=True)
        if progress.step == progress.steps and progress.image + 1 == progress.images:
            print(file=sys.stderr)

    return show


def screened(request: object) -> dict:
    """The content filter on the request's prompts, in the mode the settings file chose: a
    blocked prompt stops the command with its sentence (PromptBlocked), a flagged one is said
    and its record returned for the pictures' metadata (Library.add_generated's checks)."""
    return prompt_screen()(request)


def prompt_screen() -> Callable[[object], dict]:
    """``screened`` with the settings file read once, for a batch's many requests."""
    mode = settings_file.load(settings_file.default_path()).settings.content_filter

    def screened_request(request: object) -> dict:
        screening = screen(request, paths.data_dir(), mode)
        for note in screening.notes:
            say(f"warning: {note}")
        return screening.checks

    return screened_request


@contextlib.contextmanager
def open_library() -> Iterator[Library]:
    # The window's settings file says what each picture carries (Content Credentials, the
    # watermark), so a picture made here carries what one made in the window does.
    loaded = settings_file.load(settings_file.default_path())
    if loaded.message:
        say(f"warning: {loaded.message}")
    library = Library.open(paths.data_dir(), provenance=loaded.settings.provenance())
    for warning in library.report.warnings:
        say(f"warning: {warning}")
    try:
        yield library
    finally:
        for note in library.provenance.take_notes():  # a replaced key, an unsigned save
            say(f"warning: {note}")
        library.close()


def announce_device(model, request, result: GenerationResult | None = None) -> None:
    """Say where the UNet runs: before the work (``result`` None), loading the UNet the
    request runs now (with controls, the one that takes their residuals: the plain one is
    then never needed); with image prompts that UNet is the adapter's, known once the run
    has read it, so it is said after (given ``result``)."""
    image_prompts = bool(getattr(request, "image_prompts", ()))
    if result is None and image_prompts:
        return
    if result is not None and not image_prompts:
        return
    if result is not None:
        device = result.device
    else:
        device = (model.control_unet if getattr(request, "controls", ()) else model.unet).device
    say(f"running on {device.summary}")
    say_device(device)


def say_device(device: DeviceReport) -> None:
    """That there is no NVIDIA GPU (a plain note), and why a GPU was not used (a warning)."""
    if device.note:
        say(device.note)
    if device.reason:
        say(f"warning: {device.reason}")


def say(message: str) -> None:
    print(f"easel: {message}", file=sys.stderr)
