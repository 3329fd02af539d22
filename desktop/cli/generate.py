"""The ``easel generate`` command: make pictures from a prompt, optionally with a hires fix
(made at the model's size, enlarged, then redrawn in detail)."""

from __future__ import annotations

import argparse
import secrets
from pathlib import Path

from desktop.cli.common import (
    HEIGHT_HELP,
    WIDTH_HELP,
    add_control_arguments,
    add_emphasis_argument,
    add_image_prompt_arguments,
    add_lora_argument,
    add_rng_argument,
    add_runtime_arguments,
    announce_device,
    control_options,
    image_prompt_options,
    lora_options,
    model_store,
    open_library,
    output_paths,
    progress_printer,
    run_cancellable,
    runtime_options,
    say,
    screened,
)
from desktop.cli.upscale import chosen_upscaler
from desktop.decoding import Decoding, add_fast_decode_argument, use_decoding
from desktop.image_files import copy_png
from desktop.model_kinds.embedding import installed_embeddings
from desktop.model_store import ModelStore
from desktop.safety import check_failure, flagged_notice, safety_checks
from engine.errors import BadRequest
from engine.model import Model, load_model
from engine.pipelines.guides import input_pictures
from engine.pipelines.hires_fix import HiresFixPipeline
from engine.pipelines.text_to_image import TextToImagePipeline
from engine.request import GenerationResult, HiresFixRequest, TextToImageRequest
from engine.schedulers import DISTILLED_SCHEDULER_NAMES, SCHEDULER_NAMES


def add_commands(commands: argparse._SubParsersAction) -> None:
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
    generate.add_argument("--width", type=int, help=WIDTH_HELP)
    generate.add_argument("--height", type=int, help=HEIGHT_HELP)
    generate.add_argument("--count", type=int, default=1, help="number of images")
    add_emphasis_argument(generate)
    add_lora_argument(generate)
    add_control_arguments(generate)
    add_image_prompt_arguments(generate)
    generate.add_argument("--hires-scale", type=float,
                          help="hires fix: make the picture at its size, enlarge it this many "
                               "times (more than 1, at most 4) and redraw its detail")
    generate.add_argument("--hires-strength", type=float,
                          help=f"how much the hires fix redraws, more than 0 and at most 1 "
                               f"(default {HiresFixRequest.strength})")
    generate.add_argument("--upscaler",
                          help="the installed upscaler a hires fix enlarges with (default: the "
                               "only one installed; with none, Lanczos resampling)")
    generate.add_argument("--output", "-o", type=Path,
                          help="also write a copy to this .png file name or folder (every "
                               "image is saved in the library either way)")
    add_rng_argument(generate)
    add_fast_decode_argument(generate)
    add_runtime_arguments(generate)
    generate.set_defaults(run=_generate)


def _generate(arguments: argparse.Namespace) -> int:
    store = model_store()
    name = arguments.model or store.default_model().name
    loras = lora_options(store, arguments.prompt, arguments)
    model = load_model(store.path_of(name), runtime_options(arguments), name)
    use_decoding(store, model, Decoding(previews=False, fast_decode=arguments.fast_decode))
    seed = arguments.seed if arguments.seed is not None else secrets.randbelow(2**32)
    request = TextToImageRequest(
        prompt=arguments.prompt, negative_prompt=arguments.negative_prompt,
        width=arguments.width, height=arguments.height, steps=arguments.steps,
        guidance=arguments.guidance, scheduler=arguments.scheduler, seed=seed,
        count=arguments.count, emphasis=arguments.emphasis, generator=arguments.rng,
        loras=loras, embeddings=installed_embeddings(store, model.description.family),
        controls=control_options(store, model.description.family, arguments),
        image_prompts=image_prompt_options(store, model.description.family, arguments))
    model.use_loras(request.loras)  # a LoRA that does not fit is said before anything runs
    model.use_embeddings(request.embeddings)  # every installed one its prompt may name
    pipeline = TextToImagePipeline(model)
    if arguments.hires_scale is not None and (request.controls or request.image_prompts):
        raise BadRequest("A hires fix cannot take controls or image prompts yet; leave out "
                         "--hires-scale, or --control and --image-prompt.")
    if arguments.hires_scale is not None:
        request, pipeline = _hires_fix(arguments, request, model)
    elif arguments.hires_strength is not None or arguments.upscaler is not None:
        raise BadRequest("--hires-strength and --upscaler belong to a hires fix; add "
                         "--hires-scale.")
    pipeline.check_inputs(request)  # bad input fails before anything loads or runs
    checks = screened(request)
    targets = output_paths(arguments.output, seed, arguments.count)
    # Opened before the work, so a library that cannot be used fails now, not after it.
    with open_library() as library:
        announce_device(model, request)
        result = run_cancellable(
            lambda cancel: pipeline(request, progress_printer(), cancel))
        announce_device(model, request, result)
        for warning in result.warnings:
            say(f"warning: {warning}")
        verdicts = safety_verdicts(store, result, arguments)
        # The control and reference pictures, kept by the keys the pictures record.
        library.keep_inputs(input_pictures(request))
        for image, target, verdict in zip(result.images, targets, verdicts, strict=True):
            picture_checks = {**checks, **verdict}
            entry = library.add_generated(image.pixels, image.parameters,
                                          checks=picture_checks)
            if target is not None:  # the copy is the library's file, byte for byte
                copy_png(entry.path, target)
            print(target or entry.path)
            say_flagged(picture_checks, target or entry.path)
    return 0


def _hires_fix(arguments: argparse.Namespace, request: TextToImageRequest,
               model: Model) -> tuple[HiresFixRequest, HiresFixPipeline]:
    """The text-to-image request as a hires fix's first pass, enlarged by the chosen upscaler
    (checked with the rest of the request, before anything runs)."""
    upscaler = chosen_upscaler(model_store(), arguments.upscaler, runtime_options(arguments),
                               "--upscaler")
    strength = HiresFixRequest.strength if arguments.hires_strength is None else (
        arguments.hires_strength)
    if upscaler is not None:
        say(f"hires fix: enlarging with '{upscaler.name}' ({upscaler.description.summary})")
    hires = HiresFixRequest(request, scale=arguments.hires_scale, strength=strength)
    return hires, HiresFixPipeline(model, upscaler)


def safety_verdicts(store: ModelStore, result: GenerationResult,
                    arguments: argparse.Namespace) -> list[dict]:
    """The installed safety checker's verdict on each picture, as ``checks`` for the library
    (empty dicts when none is installed), run so that Ctrl+C stops it."""
    pixels = [image.pixels for image in result.images]
    verdicts = run_cancellable(lambda cancel: safety_checks(
        store, pixels, runtime_options(arguments), cancel))
    if (failure := check_failure(verdicts)) is not None:
        say(f"warning: {failure}")
    return verdicts


def say_flagged(checks: dict, picture: Path) -> None:
    """A warning for a picture the safety checker flagged (it is saved all the same)."""
    notice = flagged_notice(checks, str(picture))
    if notice is not None:
        say(f"warning: {notice}")
