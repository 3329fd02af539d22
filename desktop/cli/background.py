"""The ``easel remove-background`` and ``easel replace-background`` commands.

SOURCE is a picture file (PNG, JPEG or WEBP) or a library picture's id, as for ``easel
upscale``. The subject is cut out (engine.background) by an installed segmenter, or, with
none installed, by the flood fill that cuts a subject off a flat background, which is said.

- ``remove-background`` saves the cut-out in the library as an RGBA picture (transparent
  where the background was), or the mask alone (grey, white = subject), or the subject laid
  on a colour or on a picture (RGB);
- ``replace-background`` keeps the subject's pixels exactly and has a diffusion model paint
  the rest: inpainting with the inverted mask, then the subject laid back over the result
  through its own alpha, so an opaque subject pixel is the source's pixel, bit for bit.

Each result records the operation ("remove_background", "replace_background"), the source's
id when it is a library picture (lineage), and under the operation's name in its metadata
the segmenter ("flood fill" when none) and whether the mask was refined. The cutting and
the recording are desktop.background's, which the window's background tools share.
"""

from __future__ import annotations

import argparse
import functools
import secrets
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageColor, ImageOps

from desktop.background import (
    background_mask,
    check_subject,
    chosen_segmenter,
    cut_subject,
    cutout_parameters,
    over,
    save_cutout,
    save_replaced,
    transparent,
)
from desktop.cli.common import (
    add_generation_arguments,
    add_runtime_arguments,
    announce_device,
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
from desktop.decoding import Decoding, use_decoding
from desktop.image_files import read_parameters
from desktop.library import BadImage, Library, UnknownImage
from desktop.library.atomic import write_atomically
from desktop.library.images import flattened, has_transparency, load_pixels, open_image
from desktop.library.metadata import from_easel
from desktop.library.rows import ImageEntry
from desktop.model_kinds.embedding import installed_embeddings
from desktop.source_pictures import open_picture
from engine.background import FLOOD_FILL, Cutout
from engine.errors import BadRequest
from engine.model import load_model
from engine.pipelines.inpaint import InpaintPipeline
from engine.request import InpaintRequest
from engine.runtime import RuntimeOptions


def add_commands(commands: argparse._SubParsersAction) -> None:
    remove = commands.add_parser(
        "remove-background", help="cut a picture's subject out (transparent background)")
    remove.add_argument("source", help="a picture file, or a library picture's id")
    remove.add_argument("--model", "-m", metavar="SEGMENTER",
                        help="an installed segmenter (default: the only one installed; with "
                             "none, a flood fill, which only cuts flat backgrounds)")
    remove.add_argument("--refine", action="store_true",
                        help="sharpen the mask along the picture's edges (hair, fur)")
    result = remove.add_mutually_exclusive_group()
    result.add_argument("--mask-only", action="store_true",
                        help="save the mask alone: a grey picture, white = subject")
    result.add_argument("--background", metavar="COLOUR|PICTURE",
                        help="lay the subject on a colour (#rrggbb, white, ...) or on a "
                             "picture (resized to cover) instead of transparency")
    remove.add_argument("--output", "-o", type=Path,
                        help="also write a copy to this .png file name or folder")
    add_runtime_arguments(remove)
    remove.set_defaults(run=_remove_background)

    swap = commands.add_parser(
        "replace-background", help="keep a picture's subject and paint a new background")
    swap.add_argument("source", help="a picture file, or a library picture's id")
    swap.add_argument("prompt", help='what the new background shows, e.g. "a beach at sunset"')
    swap.add_argument("--segmenter", metavar="NAME",
                      help="the installed segmenter that finds the subject (default as for "
                           "remove-background)")
    swap.add_argument("--refine", action="store_true",
                      help="sharpen the mask along the picture's edges (hair, fur)")
    swap.add_argument("--strength", type=float, default=1.0,
                      help="how much of the background to redraw, above 0 and at most 1 "
                           "(default 1: a new background)")
    swap.add_argument("--feather", type=int, default=0,
                      help="pixels of the new background over which it fades into the old "
                           "(default 0; the subject is never touched)")
    add_generation_arguments(swap)
    swap.set_defaults(run=_replace_background)


# --- remove-background ------------------------------------------------------------------------


def _remove_background(arguments: argparse.Namespace) -> int:
    """Check everything (source, segmenter, background, output) before cutting, cut, save the
    result in the library with the source's id, and the copy asked for."""
    store = model_store()
    runtime = runtime_options(arguments)
    backdrop = _backdrop(arguments.background)
    with open_library() as library:
        source = _source(library, arguments.source)
        segmenter = chosen_segmenter(store, arguments.model, "--model")
        (target,) = output_paths(arguments.output, _seed(source), 1)
        cutout = _cut(source, segmenter, arguments.refine, runtime)
        if arguments.mask_only:
            pixels, shown = cutout.alpha, "mask"
        elif backdrop is None:
            pixels, shown = transparent(source.rgb, cutout.alpha), "transparent"
        else:
            pixels, shown = _laid_on(source.rgb, cutout.alpha, backdrop), backdrop.recorded
        height, width = pixels.shape[:2]
        parameters = cutout_parameters(source.path, width, height, cutout.method)
        entry = save_cutout(library, pixels, parameters, source.image_id,
                            {"segmenter": cutout.method, "refine": arguments.refine,
                             "result": shown})
        _copy(entry, target)
        print(target or entry.path)
    return 0


@dataclass(frozen=True)
class Backdrop:
    """What a cut-out is laid on: a colour, or a picture (already read and checked)."""

    colour: tuple[int, int, int] | None
    picture: Image.Image | None
    recorded: str  # as the picture's metadata says it: "#rrggbb", or "picture"


def _backdrop(text: str | None) -> Backdrop | None:
    """``--background``: a picture file when one has that name, else a colour; read before
    any work, so a wrong one is one sentence and nothing is cut."""
    if text is None:
        return None
    if Path(text).is_file():
        return Backdrop(None, open_picture(Path(text), "RGB"), "picture")
    try:
        colour = ImageColor.getrgb(text)
    except ValueError:
        raise BadRequest(f"'{text}' is neither a colour (#rrggbb, or a name such as white) "
                         f"nor a picture file.") from None
    red, green, blue = colour[:3]
    return Backdrop((red, green, blue), None, f"#{red:02x}{green:02x}{blue:02x}")


def _laid_on(rgb: np.ndarray, alpha: np.ndarray, backdrop: Backdrop) -> np.ndarray:
    """The subject over the backdrop by its alpha: RGB, an opaque subject pixel exact."""
    height, width = alpha.shape
    if backdrop.picture is not None:  # scaled to cover, centred, the overflow cropped
        ground = np.asarray(ImageOps.fit(backdrop.picture, (width, height),
                                         Image.Resampling.LANCZOS), dtype=np.uint8)
    else:
        ground = np.broadcast_to(np.array(backdrop.colour, np.uint8), (height, width, 3))
    return over(rgb, ground, alpha)


# --- replace-background -----------------------------------------------------------------------


def _replace_background(arguments: argparse.Namespace) -> int:
    """Cut the subject out, inpaint the rest with the inverted mask, lay the subject back
    over each result through its alpha, and save them with the source's id."""
    store = model_store()
    runtime = runtime_options(arguments)
    name = arguments.model or store.default_model().name
    seed = arguments.seed if arguments.seed is not None else secrets.randbelow(2**32)
    with open_library() as library:
        source = _source(library, arguments.source)
        segmenter = chosen_segmenter(store, arguments.segmenter, "--segmenter")
        model = load_model(store.path_of(name), runtime, name)
        use_decoding(store, model, Decoding(previews=False, fast_decode=arguments.fast_decode))
        targets = output_paths(arguments.output, seed, arguments.count)
        cutout = _cut(source, segmenter, arguments.refine, runtime)
        background = background_mask(cutout)  # white = repaint
        request = InpaintRequest(
            Image.fromarray(source.rgb), background, arguments.prompt,
            strength=arguments.strength, feather=arguments.feather,
            negative_prompt=arguments.negative_prompt, steps=arguments.steps,
            guidance=arguments.guidance, scheduler=arguments.scheduler, seed=seed,
            count=arguments.count, generator=arguments.rng, emphasis=arguments.emphasis)
        request = replace(request, loras=lora_options(store, arguments.prompt, arguments),
                          embeddings=installed_embeddings(store, model.description.family))
        pipeline = InpaintPipeline(model)
        pipeline.check_inputs(request)  # bad input fails before the model runs
        checks = screened(request)
        announce_device(model, request)
        result = run_cancellable(lambda cancel: pipeline(request, progress_printer(), cancel))
        for warning in result.warnings:
            say(f"warning: {warning}")
        saved = save_replaced(library, source.rgb, cutout, result.images, source.image_id,
                              arguments.refine, checks)
        for (entry, _), target in zip(saved, targets, strict=True):
            _copy(entry, target)
            print(target or entry.path)
    return 0


# --- shared -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """The source picture: its RGB (laid on white where it was transparent), its alpha
    (None when it has none), the library picture it is, and its file (for its settings)."""

    rgb: np.ndarray  # uint8 (H, W, 3)
    alpha: np.ndarray | None  # uint8 (H, W)
    image_id: str | None
    path: Path


def _source(library: Library, text: str) -> Source:
    """SOURCE as ``easel upscale`` reads it (a file, else a library id), its alpha kept."""
    path, image_id = Path(text), None
    if not path.is_file():
        try:
            entry = library.get(text)
        except UnknownImage:
            raise BadRequest(f"'{text}' is neither a picture file nor a picture in the "
                             f"library.") from None
        if entry.missing:
            raise BadRequest(f"The file of library picture {entry.id[:12]} is missing.")
        path, image_id = entry.path, entry.id
    try:
        with open_image(path) as image:
            picture = load_pixels(image, path.name)
            text_chunks = dict(getattr(image, "text", {}))
            alpha = (np.asarray(picture.convert("RGBA").getchannel("A"))
                     if has_transparency(picture) else None)
            rgb = np.asarray(flattened(picture), dtype=np.uint8)
    except BadImage as error:
        raise BadRequest(str(error)) from None
    if image_id is None and isinstance(text_chunks.get("easel"), str):
        # An outside copy of a library picture keeps its lineage, as for the other edits.
        info = from_easel(text_chunks["easel"])
        if info is not None and info.image_id and library.has_image(info.image_id):
            image_id = info.image_id
    if alpha is not None and not alpha.any():
        raise BadRequest(f"'{path.name}' is already fully transparent; there is no subject "
                         f"to cut out.")
    return Source(rgb, alpha, image_id, path)


def _seed(source: Source) -> int:
    parameters = read_parameters(source.path)
    return parameters.seed if parameters is not None else 0


def _cut(source: Source, segmenter: Path | None, refine: bool,
         runtime: RuntimeOptions) -> Cutout:
    """The subject's mask, inside what was already opaque (a cut-out cut again loses nothing
    it had hidden back); the cut's notes (the flood fill, a licence) said as warnings."""
    cutout = run_cancellable(functools.partial(cut_subject, source.rgb, segmenter, refine,
                                               runtime, source_alpha=source.alpha))
    for note in cutout.notes:
        say(f"warning: {note}")
    check_subject(cutout)
    if cutout.method != FLOOD_FILL:
        say(f"cut out with the segmenter '{cutout.method}'")
    return cutout


def _copy(entry: ImageEntry, target: Path | None) -> None:
    """The copy asked for with --output: the library's file itself, id and all."""
    if target is not None:
        data = entry.path.read_bytes()
        write_atomically(target, lambda stream: stream.write(data))
