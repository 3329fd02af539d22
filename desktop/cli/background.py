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
the segmenter ("flood fill" when none) and whether the mask was refined.
"""

from __future__ import annotations

import argparse
import functools
import secrets
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageColor, ImageOps

from desktop.cli.common import (
    add_emphasis_argument,
    add_lora_argument,
    add_rng_argument,
    add_runtime_arguments,
    announce_device,
    lora_options,
    model_store,
    open_library,
    open_picture,
    output_paths,
    progress_printer,
    run_cancellable,
    runtime_options,
    say,
)
from desktop.image_files import read_parameters
from desktop.library import BadImage, Library, UnknownImage
from desktop.library.atomic import write_atomically
from desktop.library.images import flattened, has_transparency, load_pixels, open_image
from desktop.library.metadata import from_easel
from desktop.library.rows import ImageEntry
from desktop.model_kinds.embedding import installed_embeddings
from desktop.model_store import ModelStore
from engine.background import FLOOD_FILL, Cutout, apply_alpha, cut_out
from engine.errors import BadRequest, ModelError
from engine.model import load_model
from engine.pipelines.inpaint import InpaintPipeline
from engine.request import GenerationParameters, InpaintRequest
from engine.runtime import RuntimeOptions
from engine.schedulers import DISTILLED_SCHEDULER_NAMES, SCHEDULER_NAMES

SEGMENTER = "segmenter"
REMOVE, REPLACE = "remove_background", "replace_background"
# The parameters of a cut-out of a picture Easel did not make: no prompt, no steps.
UNSAMPLED_SCHEDULER = "euler"


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
    swap.add_argument("--model", "-m", help="an installed model (default as for generate)")
    swap.add_argument("--negative-prompt", "-n", default="", help="what to avoid")
    swap.add_argument("--steps", type=int, help="steps of the full schedule")
    swap.add_argument("--guidance", "--cfg", type=float,
                      help="how closely to follow the prompt (model default if unset)")
    swap.add_argument("--scheduler", choices=SCHEDULER_NAMES + DISTILLED_SCHEDULER_NAMES)
    swap.add_argument("--seed", type=int, help="random seed; picture i uses seed + i")
    swap.add_argument("--count", type=int, default=1, help="pictures (default 1)")
    swap.add_argument("--output", "-o", type=Path,
                      help="also write a copy to this .png file name or folder")
    add_rng_argument(swap)
    add_emphasis_argument(swap)
    add_lora_argument(swap)
    add_runtime_arguments(swap)
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
            pixels, shown = _transparent(source.rgb, cutout.alpha), "transparent"
        else:
            pixels, shown = _laid_on(source.rgb, cutout.alpha, backdrop), backdrop.recorded
        height, width = pixels.shape[:2]
        parameters = replace(source.parameters(width, height), model_name=cutout.method,
                             operation=REMOVE)
        entry = library.add_generated(
            pixels, parameters, source_id=source.image_id,
            settings={"segmenter": cutout.method, "refine": arguments.refine,
                      "result": shown})
        _copy(entry, target)
        print(target or entry.path)
    return 0


def _transparent(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The RGBA cut-out, white under full transparency: what was removed is not kept in the
    file, and a reader that drops the alpha sees the subject on white."""
    rgba = apply_alpha(rgb, alpha)
    rgba[alpha == 0, :3] = 255
    return rgba


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


def over(subject: np.ndarray, ground: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``subject`` over ``ground`` by ``alpha`` (uint8 H×W): where it is 255, exactly the
    subject; where 0, exactly the ground."""
    weight = alpha[..., np.newaxis].astype(np.float32) / np.float32(255)
    blended = np.rint(subject * weight + ground * (np.float32(1) - weight)).astype(np.uint8)
    opaque = (alpha == 255)[..., np.newaxis]
    return np.where(opaque, subject, blended)


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
        targets = output_paths(arguments.output, seed, arguments.count)
        cutout = _cut(source, segmenter, arguments.refine, runtime)
        if (cutout.alpha == 255).all():
            raise BadRequest("The whole picture was found to be the subject; there is no "
                             "background to replace.")
        background = Image.fromarray(255 - cutout.alpha, "L")  # white = repaint
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
        announce_device(model, request)
        result = run_cancellable(lambda cancel: pipeline(request, progress_printer(), cancel))
        for warning in result.warnings:
            say(f"warning: {warning}")
        settings = {"segmenter": cutout.method, "refine": arguments.refine}
        for image, target in zip(result.images, targets, strict=True):
            pixels = over(source.rgb, image.pixels, cutout.alpha)
            entry = library.add_generated(
                pixels, replace(image.parameters, operation=REPLACE),
                source_id=source.image_id, settings=settings)
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

    def parameters(self, width: int, height: int) -> GenerationParameters:
        """The source's settings when Easel made it (its prompt and seed carry over, as an
        enlargement's do), else blank ones; the size is the result's."""
        base = read_parameters(self.path) or GenerationParameters(
            prompt="", negative_prompt="", width=width, height=height, steps=0,
            guidance=0.0, scheduler=UNSAMPLED_SCHEDULER, seed=0, model_name="",
            model_hash="", model_family="")
        # The segmenter is this picture's "model"; the one that drew the source is one step
        # back in its lineage. Editing settings belong to the source, not to this.
        return replace(base, width=width, height=height, model_hash="", model_family="",
                       strength=None, feather=None, extend=None, image_guidance=None,
                       regions=None, region_weight=None, scale=None, upscaler=None,
                       base_size=None)


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


def chosen_segmenter(store: ModelStore, name: str | None, option: str) -> Path | None:
    """The named segmenter's folder, else the only one installed; None (the flood fill) when
    none is. ``option`` is the command's option that names one, for the message."""
    installed = store.installed(SEGMENTER)
    names = ", ".join(model.name for model in installed) or "none"
    if name is not None:
        for model in installed:
            if model.name == name:
                return model.path
        raise ModelError(f"No segmenter named '{name}' is installed (installed: {names}); "
                         f"add one with: easel models import FILE.")
    if len(installed) > 1:
        raise ModelError(f"Several segmenters are installed ({names}); choose one with "
                         f"{option}.")
    return installed[0].path if installed else None


def _cut(source: Source, segmenter: Path | None, refine: bool,
         runtime: RuntimeOptions) -> Cutout:
    """The subject's mask, inside what was already opaque (a cut-out cut again loses nothing
    it had hidden back); the cut's notes (the flood fill, a licence) said as warnings."""
    cutout = run_cancellable(functools.partial(_cut_out, source.rgb, segmenter, refine,
                                               runtime))
    for note in cutout.notes:
        say(f"warning: {note}")
    if source.alpha is not None:
        cutout = replace(cutout, alpha=np.minimum(cutout.alpha, source.alpha))
    if not cutout.alpha.any():
        raise BadRequest("No subject was found in this picture; nothing was saved.")
    if cutout.method != FLOOD_FILL:
        say(f"cut out with the segmenter '{cutout.method}'")
    return cutout


def _cut_out(rgb: np.ndarray, segmenter: Path | None, refine: bool,
             runtime: RuntimeOptions, cancel) -> Cutout:
    return cut_out(rgb, segmenter, refine, runtime, cancel)


def _copy(entry: ImageEntry, target: Path | None) -> None:
    """The copy asked for with --output: the library's file itself, id and all."""
    if target is not None:
        data = entry.path.read_bytes()
        write_atomically(target, lambda stream: stream.write(data))
