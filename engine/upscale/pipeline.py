"""Upscaling a picture 2x or 4x: with an installed super-resolution network, run in overlapping
tiles (engine.upscale.tiles), or, when none is installed, by Lanczos resampling, which adds no
detail and says so in the result.

The largest output is ``MAX_OUTPUT_SIDE`` pixels a side. That keeps every result openable by
Easel itself (the library opens pictures up to 16384 pixels a side, and Pillow's
decompression-bomb limit, which Easel treats as an error, is about 89 million pixels:
8192 x 8192 is 67 million).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

import numpy as np
from PIL import Image

from engine.errors import BadRequest, GenerationFailed, ModelError
from engine.images import PictureInput, picture_pixels
from engine.manifest import manifest_hash, verify_manifest
from engine.request import GeneratedImage, GenerationParameters, GenerationResult
from engine.runtime import CancelToken, DeviceReport, RuntimeOptions, Session, get_session
from engine.upscale.description import GRAPH_FILE, UpscalerDescription
from engine.upscale.tiles import TileProgress, upscale_in_tiles

MAX_OUTPUT_SIDE = 8192
SCALES = (2, 4)
DEFAULT_TILE = 256  # input pixels; a 4x ESRGAN tile then needs well under 1 GB inside ORT
DEFAULT_OVERLAP = 32  # more than an ESRGAN's edge effects reach into a tile, measured
MIN_TILE = 32
OPERATION = "upscale"
LANCZOS_NAME = "Lanczos"
LANCZOS_FAMILY = "lanczos"  # the model family written for resampled pictures: no network ran
UPSCALER_FAMILY = "upscaler"
LANCZOS_WARNING = ("No upscaler is installed, so the picture was enlarged by Lanczos "
                   "resampling, which adds no detail; add one with: easel models import FILE.")
# A picture from outside Easel has no generation settings, but the metadata Easel writes names
# a sampler; steps 0 says that none ran.
UNSAMPLED_SCHEDULER = "euler"


@dataclass(frozen=True, eq=False)
class UpscaleRequest:
    """Enlarge a picture ``scale`` times along each side."""

    image: PictureInput  # uint8 (H, W, 3) pixels or a PIL image
    scale: int = 4
    tile: int = DEFAULT_TILE  # input pixels per tile side
    overlap: int = DEFAULT_OVERLAP  # input pixels shared by neighbouring tiles
    # The source picture's own settings (prompt, seed, ...), kept in the result's metadata so
    # the enlarged picture is found by the same words; None for a picture from outside.
    source_parameters: GenerationParameters | None = None


class Upscaler:
    """An installed upscaler. Cheap to create: the session is made on first use and cached."""

    def __init__(self, folder: Path, description: UpscalerDescription, runtime: RuntimeOptions,
                 name: str) -> None:
        self.folder = folder
        self.description = description
        self.runtime = runtime
        self.name = name
        self.hash = manifest_hash(folder)

    @cached_property
    def session(self) -> Session:
        return get_session(self.folder / GRAPH_FILE, self.runtime)


def load_upscaler(folder: Path, runtime: RuntimeOptions | None = None,
                  name: str | None = None) -> Upscaler:
    """Open an installed upscaler folder after the cheap integrity check."""
    folder = Path(folder)
    name = name or folder.name
    if not folder.is_dir():
        raise ModelError(f"'{folder}' is not a folder, so it cannot be an upscaler.")
    description = UpscalerDescription.load(folder)
    verify_manifest(folder)
    if not (folder / GRAPH_FILE).is_file():
        raise ModelError(f"'{name}' is not a complete upscaler: {GRAPH_FILE} is missing.")
    return Upscaler(folder, description, runtime or RuntimeOptions(), name)


@dataclass(frozen=True)
class _Plan:
    passes: int  # how many times the network runs over the picture
    reduce: int  # then shrink by this whole factor (a 4x network for a 2x result)


class UpscalePipeline:
    """Runs upscale requests with ``upscaler``, or by Lanczos resampling when it is None."""

    def __init__(self, upscaler: Upscaler | None) -> None:
        self.upscaler = upscaler

    def check_inputs(self, request: UpscaleRequest) -> np.ndarray:
        """The picture's pixels, or BadRequest in one sentence before anything runs."""
        self.check_scale(request.scale)
        # The picture's size is checked before a PIL image is decoded.
        if isinstance(request.image, Image.Image):
            self._check_output(request.image.width, request.image.height, request.scale)
        pixels = picture_pixels(request.image, MAX_OUTPUT_SIDE)
        self._check_output(pixels.shape[1], pixels.shape[0], request.scale)
        if self.upscaler is not None:
            if not MIN_TILE <= request.tile <= MAX_OUTPUT_SIDE:
                raise BadRequest(f"Tiles must be {MIN_TILE} to {MAX_OUTPUT_SIDE} pixels a side "
                                 f"(got {request.tile}).")
            if not 0 <= request.overlap <= request.tile // 4:
                raise BadRequest(f"The tile overlap must be 0 to a quarter of the tile "
                                 f"({request.tile // 4} pixels); got {request.overlap}.")
        return pixels

    def check_scale(self, scale: int) -> None:
        """Refuse a scale that neither Easel nor this upscaler makes, before any picture is
        read (a hires fix checks its enlargement with this before its first pass)."""
        if scale not in SCALES:
            raise BadRequest(f"Easel upscales 2x or 4x, not {scale!r}x.")
        if self.upscaler is not None:
            self._plan(scale)

    @staticmethod
    def _check_output(width: int, height: int, scale: int) -> None:
        if max(width, height) * scale > MAX_OUTPUT_SIDE:
            raise BadRequest(f"Upscaling this {width}×{height} picture {scale}x would make it "
                             f"{width * scale}×{height * scale} pixels, and Easel makes pictures "
                             f"up to {MAX_OUTPUT_SIDE} pixels a side so it can open them again.")

    def _plan(self, scale: int) -> _Plan:
        model_scale = self.upscaler.description.scale
        passes = round(math.log(scale, model_scale)) if model_scale > 1 else 0
        if model_scale > 1 and model_scale ** passes == scale:
            return _Plan(passes, 1)
        if model_scale > 1 and model_scale % scale == 0:
            return _Plan(1, model_scale // scale)
        raise BadRequest(f"The upscaler '{self.upscaler.name}' enlarges {model_scale}x, so it "
                         f"cannot make a picture {scale}x larger.")

    def __call__(self, request: UpscaleRequest, progress: TileProgress | None = None,
                 cancel: CancelToken | None = None) -> GenerationResult:
        pixels = self.check_inputs(request)
        if self.upscaler is None:
            return self._resample(request, pixels)
        plan = self._plan(request.scale)
        for number in range(plan.passes):
            reduce = plan.reduce if number == plan.passes - 1 else 1
            pixels = self._run_network(pixels, request, reduce, _pass_progress(
                progress, number, plan.passes), cancel)
        parameters = _result_parameters(request, pixels, self.upscaler.name,
                                        self.upscaler.hash, UPSCALER_FAMILY)
        return GenerationResult((GeneratedImage(pixels, parameters),), (),
                                self.upscaler.session.device)

    def _run_network(self, pixels: np.ndarray, request: UpscaleRequest, reduce: int,
                     progress: TileProgress | None, cancel: CancelToken | None) -> np.ndarray:
        description = self.upscaler.description
        session = self.upscaler.session
        multiple = description.size_multiple
        tile = description.tile_size or max(multiple, request.tile // multiple * multiple)
        height, width = pixels.shape[:2]
        # Edge-padded to sides the network takes (and to a whole fixed tile); cropped after.
        padded = np.pad(pixels, ((0, _padding(height, multiple, description.tile_size)),
                                 (0, _padding(width, multiple, description.tile_size)),
                                 (0, 0)), mode="edge")

        def run_tile(sample: np.ndarray) -> np.ndarray:
            if cancel is not None:
                cancel.raise_if_cancelled()
            (upscaled,) = session.run({description.input_name: sample},
                                      [description.output_name], cancel)
            if not np.isfinite(upscaled).all():
                raise GenerationFailed("The upscaler produced invalid values (not-a-number); "
                                       "nothing was saved. Try the CPU provider.")
            return upscaled

        overlap = min(request.overlap, tile // 4)
        upscaled = upscale_in_tiles(padded, run_tile, description.scale, tile=tile,
                                    overlap=overlap, reduce=reduce, progress=progress)
        factor = description.scale // reduce
        return np.ascontiguousarray(upscaled[:height * factor, :width * factor])

    def _resample(self, request: UpscaleRequest, pixels: np.ndarray) -> GenerationResult:
        height, width = pixels.shape[:2]
        size = (width * request.scale, height * request.scale)
        resized = np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.LANCZOS))
        parameters = _result_parameters(request, resized, LANCZOS_NAME, "", LANCZOS_FAMILY)
        device = DeviceReport(requested=(), in_use="cpu", reason=None, cpu_threads=1)
        return GenerationResult((GeneratedImage(resized, parameters),), (LANCZOS_WARNING,),
                                device)


def _padding(length: int, multiple: int, fixed_tile: int | None) -> int:
    target = max(length, fixed_tile or 0)
    return -target % multiple + (target - length)


def _pass_progress(progress: TileProgress | None, number: int,
                   passes: int) -> TileProgress | None:
    """Tiles of several passes reported as one count (each pass as an equal share)."""
    if progress is None or passes == 1:
        return progress

    def report(done: int, total: int) -> None:
        progress(number * total + done, passes * total)

    return report


def _result_parameters(request: UpscaleRequest, pixels: np.ndarray, name: str, model_hash: str,
                       family: str) -> GenerationParameters:
    height, width = pixels.shape[:2]
    base = request.source_parameters or GenerationParameters(
        prompt="", negative_prompt="", width=width, height=height, steps=0, guidance=0.0,
        scheduler=UNSAMPLED_SCHEDULER, seed=0, model_name=name, model_hash=model_hash,
        model_family=family)
    # The network (or Lanczos) is the "model" of this picture; the one that drew the source
    # is one step back in its lineage. Editing settings belong to the source, not to this.
    # The scale and the upscaler's name are written where other tools read them (A1111's
    # "Postprocess upscale by", "Postprocess upscaler"), beside the model fields.
    return replace(base, width=width, height=height, model_name=name, model_hash=model_hash,
                   model_family=family, operation=OPERATION, strength=None, feather=None,
                   extend=None, scale=request.scale, upscaler=name, base_size=None)
