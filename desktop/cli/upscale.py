"""The ``easel upscale`` command: enlarge a picture 2x or 4x.

SOURCE is a picture file (PNG, JPEG or WEBP) or a library picture's id, as for ``easel edit``.
The result is saved in the library with the operation "upscale" and, when the source is a
library picture, the source's id (lineage). It is made by an installed upscaler (imported with
``easel models import``), or, with none installed, by Lanczos resampling, which is said.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

from desktop.cli.common import (
    add_runtime_arguments,
    model_store,
    open_library,
    output_paths,
    run_cancellable,
    runtime_options,
    say,
    say_device,
)
from desktop.image_files import copy_png, read_parameters
from desktop.library import Library, UnknownImage
from desktop.model_store import ModelStore
from desktop.source_pictures import source_picture
from engine.errors import EaselError
from engine.request import GenerationParameters
from engine.runtime import RuntimeOptions
from engine.upscale import (
    DEFAULT_TILE,
    SCALES,
    UpscalePipeline,
    Upscaler,
    UpscaleRequest,
    load_upscaler,
)


def add_commands(commands: argparse._SubParsersAction) -> None:
    upscale = commands.add_parser("upscale", help="enlarge a picture 2x or 4x")
    upscale.add_argument("source", help="a picture file, or a library picture's id")
    upscale.add_argument("--scale", type=int, choices=SCALES, default=4,
                         help="how many times larger each side becomes (default 4)")
    upscale.add_argument("--model", "-m",
                         help="an installed upscaler (default: the only one installed; with "
                              "none, Lanczos resampling, which adds no detail)")
    upscale.add_argument("--tile", type=int, default=DEFAULT_TILE,
                         help=f"tile side in pixels; smaller uses less memory "
                              f"(default {DEFAULT_TILE})")
    upscale.add_argument("--output", "-o", type=Path,
                         help="also write a copy to this .png file name or folder")
    add_runtime_arguments(upscale)
    upscale.set_defaults(run=_upscale)


def _upscale(arguments: argparse.Namespace) -> int:
    """Open the source, check the request before any model loads, run it, save the result in
    the library (with the source's id when it has one) and any copy asked for."""
    store = model_store()
    runtime = runtime_options(arguments)
    with open_library() as library:
        source = source_picture(library, arguments.source)
        upscaler = chosen_upscaler(store, arguments.model, runtime, "--model")
        pipeline = UpscalePipeline(upscaler)
        request = UpscaleRequest(source.picture, arguments.scale, tile=arguments.tile,
                                 source_parameters=_source_parameters(library,
                                                                      arguments.source))
        pipeline.check_inputs(request)  # bad input fails before anything loads or runs
        seed = request.source_parameters.seed if request.source_parameters else 0
        (target,) = output_paths(arguments.output, seed, 1)
        if upscaler is not None:
            device = upscaler.session.device
            say(f"upscaling with '{upscaler.name}' ({upscaler.description.summary}) on "
                f"{device.summary}")
            say_device(device)
        result = run_cancellable(lambda cancel: pipeline(request, _tile_printer(), cancel))
        for warning in result.warnings:
            say(f"warning: {warning}")
        (image,) = result.images
        entry = library.add_generated(image.pixels, image.parameters, source_id=source.image_id)
        if target is not None:  # the copy is the library's file, byte for byte
            copy_png(entry.path, target)
        print(target or entry.path)
    return 0


def chosen_upscaler(store: ModelStore, name: str | None, runtime: RuntimeOptions,
                    option: str) -> Upscaler | None:
    """The named upscaler, else the only one installed; None (Lanczos) when none is.
    ``option`` is the command's option that names one, for the message."""
    if name is None:
        installed = store.upscalers()
        if not installed:
            return None
        if len(installed) > 1:
            names = ", ".join(model.name for model in installed)
            raise EaselError(f"Several upscalers are installed ({names}); choose one with "
                             f"{option}.")
        name = installed[0].name
    return load_upscaler(store.upscaler_path(name), runtime, name)


def _source_parameters(library: Library, source: str) -> GenerationParameters | None:
    """The settings the source (a file or a library id) was made with, if Easel made it."""
    path = Path(source)
    if not path.is_file():
        try:
            path = library.get(source).path
        except UnknownImage:
            return None
    return read_parameters(path)


def _tile_printer() -> Callable[[int, int], None] | None:
    if not sys.stderr.isatty():
        return None
    started = time.monotonic()

    def show(done: int, total: int) -> None:
        elapsed = time.monotonic() - started
        print(f"\rtile {done}/{total}  {elapsed:.1f} s", end="", file=sys.stderr, flush=True)
        if done == total:
            print(file=sys.stderr)

    return show
