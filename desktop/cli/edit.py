"""The ``easel`` editing commands: edit, variations, inpaint, outpaint and instruct start from
a picture; regions lays out a new one.

SOURCE is a picture file (PNG, JPEG or WEBP) or a library picture's id (its first
characters are enough). Every result is saved in the library with the operation and, when the
source is a library picture, the source's id, so lineage shows ("made from …").
"""

from __future__ import annotations

import argparse
import secrets
from dataclasses import replace
from pathlib import Path

from PIL import Image

from desktop.cli.common import (
    HEIGHT_HELP,
    OUTPAINT_DESCRIPTION,
    WIDTH_HELP,
    add_control_arguments,
    add_generation_arguments,
    add_image_prompt_arguments,
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
    side_help,
)
from desktop.cli.generate import safety_verdicts, say_flagged
from desktop.decoding import Decoding, use_decoding
from desktop.image_files import copy_png
from desktop.model_kinds.embedding import installed_embeddings
from desktop.source_pictures import SourcePicture, open_picture, source_picture
from engine.errors import BadRequest
from engine.model import load_model
from engine.pipelines.guides import input_pictures
from engine.pipelines.image_to_image import ImageToImagePipeline
from engine.pipelines.inpaint import InpaintPipeline
from engine.pipelines.instruct_pix2pix import InstructPix2PixPipeline
from engine.pipelines.outpaint import OutpaintPipeline
from engine.pipelines.regions import RegionsPipeline
from engine.pipelines.text_to_image import TextToImagePipeline
from engine.request import (
    ImageToImageRequest,
    InpaintRequest,
    InstructPix2PixRequest,
    OutpaintRequest,
    Region,
    RegionsRequest,
    TextToImageRequest,
)


def add_commands(commands: argparse._SubParsersAction) -> None:
    edit = commands.add_parser("edit", help="redraw a picture with a prompt (image to image)")
    _source(edit)
    edit.add_argument("prompt", nargs="?", default="", help="what the new picture should show")
    _strength(edit, 0.75)
    add_generation_arguments(edit)
    add_control_arguments(edit)
    add_image_prompt_arguments(edit)
    edit.set_defaults(run=_image_to_image)

    variations = commands.add_parser("variations", help="new pictures like a picture")
    _source(variations)
    variations.add_argument("--prompt", "-p", default="",
                            help="optionally, what the variations should show")
    variations.add_argument("--strength", type=float,
                            help="how much to redraw, above 0 and at most 1 (default 0.6 to "
                                 "keep the composition; to keep the meaning, a new picture "
                                 "unless given)")
    variations.add_argument("--mode", choices=("composition", "meaning"),
                            default="composition",
                            help="keep the picture's composition (image to image, the default) "
                                 "or its meaning: its look and subject in a new composition "
                                 "(the picture as an image prompt; needs an IP-Adapter)")
    add_generation_arguments(variations, count=4)
    add_control_arguments(variations)
    add_image_prompt_arguments(variations)
    variations.set_defaults(run=_image_to_image)

    inpaint = commands.add_parser("inpaint", help="repaint the masked part of a picture")
    _source(inpaint)
    inpaint.add_argument("prompt", nargs="?", default="", help="what to paint there")
    inpaint.add_argument("--mask", required=True, type=Path,
                         help="a picture of the same size: white = repaint, black = keep")
    inpaint.add_argument("--invert-mask", action="store_true",
                         help="repaint the black part instead")
    _strength(inpaint, 1.0)
    _feather(inpaint)
    add_generation_arguments(inpaint)
    add_control_arguments(inpaint)
    add_image_prompt_arguments(inpaint)
    inpaint.set_defaults(run=_inpaint)

    outpaint = commands.add_parser("outpaint", help="extend a picture past its edges",
                                   description=OUTPAINT_DESCRIPTION)
    _source(outpaint)
    outpaint.add_argument("prompt", nargs="?", default="", help="what the new border shows")
    for side in ("left", "top", "right", "bottom", "all"):
        outpaint.add_argument(f"--{side}", type=int, default=0, help=side_help(side))
    _feather(outpaint)
    add_generation_arguments(outpaint)
    outpaint.set_defaults(run=_outpaint)

    instruct = commands.add_parser("instruct", help="change a picture as an instruction says "
                                   "(an InstructPix2Pix model)")
    _source(instruct)
    instruct.add_argument("instruction", help='how to change it, e.g. "make it winter"')
    instruct.add_argument("--image-guidance", type=float, default=1.5,
                          help="how closely to keep the picture (default 1.5)")
    add_generation_arguments(instruct)
    instruct.set_defaults(run=_instruct)

    regions = commands.add_parser("regions", help="make a picture with prompts for boxes on "
                                  "it (layout regions)")
    regions.add_argument("prompt", help="what the whole picture shows")
    regions.add_argument("--region", "-r", action="append", default=[], metavar="X,Y,W,H:PROMPT",
                         help="a box in pixels from the top-left corner and what it shows; "
                              "repeat for more boxes")
    regions.add_argument("--region-weight", type=float, default=RegionsRequest.region_weight,
                         help="how much a box's prompt outweighs the global one inside it "
                              f"(default {RegionsRequest.region_weight:g})")
    regions.add_argument("--width", "-W", type=int, help=WIDTH_HELP)
    regions.add_argument("--height", "-H", type=int, help=HEIGHT_HELP)
    add_generation_arguments(regions)
    add_control_arguments(regions)
    add_image_prompt_arguments(regions)
    regions.set_defaults(run=_regions)


def _source(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="a picture file, or a library picture's id")


def _strength(parser: argparse.ArgumentParser, default: float) -> None:
    parser.add_argument("--strength", type=float, default=default,
                        help=f"how much to redraw, above 0 and at most 1 (default {default})")


def _feather(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--feather", type=int, default=4,
                        help="pixels over which the new part fades in (default 4)")


# --- the commands -----------------------------------------------------------------------------


def _image_to_image(arguments: argparse.Namespace) -> int:
    """``edit`` and ``variations``: the same pipeline, with different defaults. Variations
    that keep the meaning read the picture as an image prompt instead: a new picture (text to
    image at the picture's size), or with ``--strength`` a light redraw of it too."""
    meaning = getattr(arguments, "mode", "composition") == "meaning"
    if arguments.strength is None and not meaning:
        arguments.strength = 0.6
    if meaning and arguments.strength is None:
        return _run(arguments, TextToImagePipeline, lambda picture, seed: TextToImageRequest(
            arguments.prompt, **_settings(arguments, seed)))
    return _run(arguments, ImageToImagePipeline, lambda picture, seed: ImageToImageRequest(
        picture, arguments.prompt, strength=arguments.strength, **_settings(arguments, seed)))


def _inpaint(arguments: argparse.Namespace) -> int:
    mask = open_picture(arguments.mask, "L")
    if arguments.invert_mask:
        mask = Image.eval(mask, lambda value: 255 - value)
    return _run(arguments, InpaintPipeline, lambda picture, seed: InpaintRequest(
        picture, mask, arguments.prompt, strength=arguments.strength,
        feather=arguments.feather, **_settings(arguments, seed)))


def _outpaint(arguments: argparse.Namespace) -> int:
    sides = {side: getattr(arguments, side) + arguments.all
             for side in ("left", "top", "right", "bottom")}
    if any(value < 0 for value in sides.values()):
        raise BadRequest("The pixels to add on a side cannot be negative.")
    if not any(sides.values()):
        raise BadRequest("Say how far to extend the picture, e.g. --right 128 or --all 64.")
    return _run(arguments, OutpaintPipeline, lambda picture, seed: OutpaintRequest(
        picture, **sides, prompt=arguments.prompt, feather=arguments.feather,
        **_settings(arguments, seed)))


def _instruct(arguments: argparse.Namespace) -> int:
    return _run(arguments, InstructPix2PixPipeline, lambda picture, seed: InstructPix2PixRequest(
        picture, arguments.instruction, image_guidance=arguments.image_guidance,
        **_settings(arguments, seed)))


def _regions(arguments: argparse.Namespace) -> int:
    if not arguments.region:
        raise BadRequest('Give at least one region, e.g. --region "0,0,128,128:a moon".')
    regions = [_parse_region(text) for text in arguments.region]
    return _run(arguments, RegionsPipeline, lambda _, seed: RegionsRequest(
        arguments.prompt, regions, width=arguments.width, height=arguments.height,
        region_weight=arguments.region_weight, **_settings(arguments, seed)))


def _parse_region(text: str) -> Region:
    """"x,y,w,h:prompt" → ((x, y, w, h), prompt); the pipeline checks the box itself."""
    box, colon, prompt = text.partition(":")
    try:  # not whole numbers, or not four of them, is a ValueError too
        x, y, width, height = (int(number) for number in box.split(","))
    except ValueError:
        colon = ""
    if not colon:
        raise BadRequest(f"A region is four whole numbers and a prompt, x,y,width,height:prompt "
                         f'(e.g. "0,0,128,128:a moon"), not "{text}".')
    return (x, y, width, height), prompt.strip()


def _image_prompts(store, model, arguments: argparse.Namespace, picture) -> tuple:
    """The request's image prompts; variations that keep the meaning put the source first."""
    family = model.description.family
    if getattr(arguments, "mode", "composition") != "meaning":
        return image_prompt_options(store, family, arguments)
    from desktop.image_prompts import make_image_prompts

    pictures = [(picture, 1.0), *arguments.image_prompt]
    return make_image_prompts(store, family, pictures, arguments.ip_adapter)


def _size_like(picture: Image.Image, model) -> dict:
    """The source's size to the model's pixel multiple (at least one), for a new picture."""
    multiple = model.description.pixel_multiple
    return {"width": max(multiple, picture.width // multiple * multiple),
            "height": max(multiple, picture.height // multiple * multiple)}


def _settings(arguments: argparse.Namespace, seed: int) -> dict:
    return {"negative_prompt": arguments.negative_prompt, "steps": arguments.steps,
            "guidance": arguments.guidance, "scheduler": arguments.scheduler, "seed": seed,
            "count": arguments.count, "generator": arguments.rng,
            "emphasis": arguments.emphasis}


def _run(arguments: argparse.Namespace, pipeline_class: type, make_request) -> int:
    """Open the source, check the request before any model loads, run it, save the results
    in the library (with the source's id when it has one) and any copies asked for."""
    store = model_store()
    name = arguments.model or store.default_model().name
    seed = arguments.seed if arguments.seed is not None else secrets.randbelow(2**32)
    with open_library() as library:
        source = SourcePicture(None, None)  # regions starts from no picture
        if hasattr(arguments, "source"):
            source = source_picture(library, arguments.source)
        model = load_model(store.path_of(name), runtime_options(arguments), name)
        use_decoding(store, model, Decoding(previews=False, fast_decode=arguments.fast_decode))
        pipeline = pipeline_class(model)
        request = make_request(source.picture, seed)
        # The text that may carry <lora:...> tags: the prompt, or an instruction.
        words = getattr(request, "prompt", None) or getattr(request, "instruction", "")
        request = replace(request, loras=lora_options(store, words, arguments),
                          embeddings=installed_embeddings(store, model.description.family))
        if hasattr(arguments, "control"):  # the edits that ControlNets can steer
            request = replace(request, controls=control_options(
                store, model.description.family, arguments))
        if hasattr(arguments, "image_prompt"):  # and that image prompts can steer
            request = replace(request, image_prompts=_image_prompts(
                store, model, arguments, source.picture))
            if isinstance(request, TextToImageRequest):  # keeping the meaning: its size
                request = replace(request, **_size_like(source.picture, model))
        pipeline.check_inputs(request)  # bad input fails before anything loads or runs
        checks = screened(request)
        targets = output_paths(arguments.output, seed, arguments.count)
        announce_device(model, request)
        result = run_cancellable(lambda cancel: pipeline(request, progress_printer(), cancel))
        announce_device(model, request, result)
        for warning in result.warnings:
            say(f"warning: {warning}")
        verdicts = safety_verdicts(store, result, arguments)
        # The control and reference pictures, kept by the keys the pictures record.
        library.keep_inputs(input_pictures(request))
        for image, target, verdict in zip(result.images, targets, verdicts, strict=True):
            picture_checks = {**checks, **verdict}
            entry = library.add_generated(image.pixels, image.parameters,
                                          source_id=source.image_id,
                                          checks=picture_checks)
            if target is not None:  # the copy is the library's file, byte for byte
                copy_png(entry.path, target)
            print(target or entry.path)
            say_flagged(picture_checks, target or entry.path)
    return 0
