"""Upscaling the source picture in the window, in plain data: the upscaler, the request, the job.

Qt-free, like ``desktop.app.editing``: the studio builds the request on the GUI thread (the
size check that needs no model happens there, in the engine's own words) and queues ``upscale``
for the worker. The job saves through the library's ``add_generated`` with the source's id,
exactly as ``easel upscale`` does, so the window's results carry the same metadata.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Protocol

from desktop.app.editing import SourcePicture
from desktop.app.generation import Context, Device, Outcome
from desktop.image_files import read_parameters
from desktop.library import Library
from engine.request import GenerationResult
from engine.runtime import CancelToken
from engine.upscale import LANCZOS_WARNING, SCALES, UpscalePipeline, UpscaleRequest
from engine.upscale.tiles import TileProgress

# The engine's sentence names the command line; in the window the menu is the way in.
LANCZOS_NOTE = ("No upscaler is installed, so the picture was enlarged by Lanczos resampling, "
                "which adds no detail; add one with Models › Import model….")
TILES_STAGE = "Upscaling, tile"  # the queue shows "Upscaling, tile (3/8)"
UPSCALE_SCALES = SCALES  # the menus offer these (2x, 4x)


class Upscalers(Protocol):
    """Runs upscale requests (the real engine, or a test's script)."""

    def upscale(self, upscaler: str | None, request: UpscaleRequest, on_tile: TileProgress,
                cancel: CancelToken) -> GenerationResult: ...


def upscale_request(source: SourcePicture, scale: int) -> UpscaleRequest:
    """The request for the source enlarged ``scale`` times; a scale Easel does not make or a
    result too large to open again is refused (BadRequest, the engine's sentence) before any
    job is queued. An upscaler's own limits are checked when it runs."""
    request = UpscaleRequest(source.pixels, scale)
    UpscalePipeline(None).check_inputs(request)  # the size checks, with no model loaded
    return request


def upscaled_size(source: SourcePicture, scale: int) -> tuple[int, int]:
    width, height = source.size
    return width * scale, height * scale


def upscale(upscalers: Upscalers, library: Library, upscaler: str | None,
            request: UpscaleRequest, context: Context, source_id: str | None = None,
            source_path: Path | None = None) -> Outcome:
    """Enlarge the picture and save it into the library (operation "upscale", the source's id
    for lineage). Runs on the worker thread: reading the source's settings opens its file."""
    if source_path is not None and request.source_parameters is None:
        # Its prompt and seed travel with the enlarged picture, as with `easel upscale`.
        request = replace(request, source_parameters=read_parameters(source_path))

    def on_tile(done: int, total: int) -> None:
        context.report(done, total, stage=TILES_STAGE)

    context.report(0, 1, stage=TILES_STAGE)  # Lanczos reports no tiles; say it has started
    result = upscalers.upscale(upscaler, request, on_tile, context.cancel)
    context.cancel.raise_if_cancelled()  # cancelled after the last tile: nothing is saved
    entries = tuple(library.add_generated(image.pixels, image.parameters, source_id=source_id)
                    for image in result.images)
    warnings = tuple(LANCZOS_NOTE if warning == LANCZOS_WARNING else warning
                     for warning in result.warnings)
    return Outcome(entries, tuple(image.pixels for image in result.images), warnings,
                   Device(result.device.summary, result.device.reason, result.device.note))
