"""Engine work the app runs in its worker thread: make pictures and save them, import models.

Qt-free and thread-agnostic: ``desktop.app.worker`` calls these from its thread with a
``Context`` (progress out, cancel in). It uses the engine exactly as ``easel generate`` and
``easel edit`` do: the model store, ``load_model``, the pipeline for the request's kind (text
to image, image to image, inpaint, outpaint), the library's ``add_generated`` with the
source picture's id for lineage.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import numpy as np

from desktop.decoding import Decoding, use_decoding
from desktop.library import ImageEntry, Library
from desktop.model_kinds.embedding import installed_embeddings
from desktop.model_kinds.lora import prompt_loras
from desktop.model_prepare import prepare_after_import, saved_runtime
from desktop.model_store import InstalledModel, ModelStore
from desktop.safety import check_failure, flagged_record, safety_checks
from engine.control.control import Control
from engine.errors import BadRequest
from engine.image_prompt.prompt import ImagePrompt
from engine.model import Model, load_model
from engine.pipelines.guides import input_pictures
from engine.pipelines.hires_fix import HiresFixPipeline
from engine.pipelines.image_to_image import ImageToImagePipeline
from engine.pipelines.inpaint import InpaintPipeline
from engine.pipelines.instruct_pix2pix import InstructPix2PixPipeline
from engine.pipelines.outpaint import OutpaintPipeline
from engine.pipelines.regions import RegionsPipeline
from engine.pipelines.text_to_image import TextToImagePipeline
from engine.request import (
    GenerationResult,
    HiresFixRequest,
    ImageToImageRequest,
    InpaintRequest,
    InstructPix2PixRequest,
    OutpaintRequest,
    Progress,
    ProgressCallback,
    RegionsRequest,
    TextToImageRequest,
)
from engine.runtime import (
    CancelToken,
    RuntimeOptions,
    is_loaded,
    needs_preparing,
    release_sessions,
)
from engine.upscale import UpscalePipeline, Upscaler, UpscaleRequest, load_upscaler
from engine.upscale.tiles import TileProgress


class Context(Protocol):
    """What a job gets from the worker: a cancel token and a way to report progress."""

    cancel: CancelToken

    def report(self, step: int, steps: int, image: int = 0, images: int = 1,
               preview: Callable[[], np.ndarray] | None = None, stage: str = "") -> None: ...


Request = (TextToImageRequest | ImageToImageRequest | InpaintRequest | OutpaintRequest
           | InstructPix2PixRequest | RegionsRequest | HiresFixRequest)

# The pipeline that runs each kind of request; all take a model and share check_inputs/call.
PIPELINE_FOR: dict[type, type] = {
    TextToImageRequest: TextToImagePipeline,
    ImageToImageRequest: ImageToImagePipeline,
    InpaintRequest: InpaintPipeline,
    OutpaintRequest: OutpaintPipeline,
    InstructPix2PixRequest: InstructPix2PixPipeline,
    RegionsRequest: RegionsPipeline,
    HiresFixRequest: HiresFixPipeline,
}


class Pipelines(Protocol):
    """Runs any request on a named model (the real engine, or a test's script)."""

    def run(self, model: str, request: Request, on_progress: ProgressCallback,
            cancel: CancelToken) -> GenerationResult: ...


@dataclass(frozen=True, eq=False)
class Device:
    """Where the last job ran, for the status line."""

    summary: str  # "CPU (2 threads)", "CUDA"
    reason: str | None  # why a GPU was not used, in one sentence (a warning)
    note: str | None = None  # "No NVIDIA GPU was found; ...": information, not a warning


@dataclass(frozen=True, eq=False)
class Outcome:
    """A finished generation: the saved library entries and their pixels, in batch order."""

    entries: tuple[ImageEntry, ...]
    pixels: tuple[np.ndarray, ...]
    warnings: tuple[str, ...]
    device: Device


def chosen_upscaler(store: ModelStore, preferred: str = "") -> str | None:
    """The installed upscaler the window uses (Upscale, hires fix): the one chosen in the
    settings while it is installed, else the first by name; None for Lanczos."""
    names = [model.name for model in store.upscalers()]
    if preferred in names:
        return preferred
    return names[0] if names else None


# What the job queue says while a model's first load optimises its graphs ("Preparing ...").
PREPARING_STAGE = "preparing {model} for this processor (once, may take a minute)"


def with_prompt_loras(store: ModelStore, request: Request) -> Request:
    """The request with the LoRAs its prompt's ``<lora:NAME:WEIGHT>`` tags name, resolved to
    their files (one sentence for a name that is not installed)."""
    if isinstance(request, HiresFixRequest):
        return replace(request, base=with_prompt_loras(store, request.base))
    prompt = getattr(request, "prompt", None) or getattr(request, "instruction", None) or ""
    if "<lora:" not in prompt:
        return request
    return replace(request, loras=prompt_loras(store, prompt))


def with_embeddings(store: ModelStore, request: Request, family: str) -> Request:
    """The request with every installed embedding that fits the model, as A1111 offers them
    all: a prompt that names none reads as before."""
    if isinstance(request, HiresFixRequest):
        return replace(request, base=with_embeddings(store, request.base, family))
    return replace(request, embeddings=installed_embeddings(store, family))


# The requests ControlNets and image prompts steer (the engine's guides).
STEERED = (TextToImageRequest, ImageToImageRequest, InpaintRequest, RegionsRequest)


def with_controls(request: Request, controls: tuple[Control, ...]) -> Request:
    """The request steered by the Control panel's ``controls``, made on the GUI thread so a
    bad control is said before anything is queued; one sentence for a kind of request that
    ControlNets do not steer."""
    if not controls:
        return request
    if isinstance(request, HiresFixRequest):
        raise BadRequest("Controls do not steer hires fix yet: turn hires fix off or remove "
                         "the controls.")
    if not isinstance(request, STEERED):
        raise BadRequest("Controls steer Generate, Edit, Variations, Inpaint and Regions "
                         "only: remove them for this.")
    return replace(request, controls=controls)


def with_image_prompts(request: Request, image_prompts: tuple[ImagePrompt, ...]) -> Request:
    """The request with the Controls dock's reference pictures after any image prompts it
    has (the source of variations that keep the meaning), made on the GUI thread as
    ``with_controls``; one sentence for a kind of request image prompts do not steer."""
    if not image_prompts:
        return request
    if isinstance(request, HiresFixRequest):
        raise BadRequest("Image prompts do not steer hires fix yet: turn hires fix off or "
                         "remove the reference pictures.")
    if not isinstance(request, STEERED):
        raise BadRequest("Image prompts steer Generate, Edit, Variations, Inpaint and Regions "
                         "only: remove the reference pictures for this.")
    return replace(request, image_prompts=(*request.image_prompts, *image_prompts))


class EnginePipelines:
    """The real engine, keeping at most ``keep_loaded`` models' sessions in memory."""

    def __init__(self, store: ModelStore, runtime: RuntimeOptions, keep_loaded: int = 2) -> None:
        self.store = store
        self.runtime = runtime
        self.keep_loaded = max(1, keep_loaded)
        self._models: OrderedDict[str, Model] = OrderedDict()  # least recently used first
        self.upscaler = ""  # the settings' choice for hires fix (see chosen_upscaler)
        self._upscaler_folders: set[Path] = set()  # whose sessions the engine has cached
        self._new_options: tuple[RuntimeOptions, int] | None = None
        self.decoding = Decoding()  # the settings' tiny-VAE previews and fast decode

    def reconfigure(self, runtime: RuntimeOptions, keep_loaded: int) -> None:
        """New settings, taken up by the next job (the worker may be mid-run now)."""
        self._new_options = (runtime, max(1, keep_loaded))

    def run(self, model: str, request: Request, on_progress: ProgressCallback,
            cancel: CancelToken) -> GenerationResult:
        pipeline_class = PIPELINE_FOR.get(type(request))
        if pipeline_class is None:
            raise BadRequest(f"Easel cannot run a {type(request).__name__}.")
        if self._new_options is not None:
            self._take_new_options()
        loaded = self._model(model)
        note = use_decoding(self.store, loaded, self.decoding, self.runtime, strict=False)
        if pipeline_class is HiresFixPipeline:  # it enlarges with the window's upscaler
            pipeline = HiresFixPipeline(loaded, self._upscaler(chosen_upscaler(
                self.store, self.upscaler)))
        else:
            pipeline = pipeline_class(loaded)
        request = with_prompt_loras(self.store, request)  # <lora:NAME:WEIGHT> in the prompt
        request = with_embeddings(self.store, request, loaded.description.family)
        pipeline.check_inputs(request)  # a bad request fails before anything loads
        self._say_if_preparing(loaded, on_progress)
        result = pipeline(request, on_progress, cancel)
        return result if note is None else replace(result, warnings=(*result.warnings, note))

    def _say_if_preparing(self, model: Model, on_progress: ProgressCallback) -> None:
        """Before a first load that optimises the model's graphs (a model imported before
        imports prepared them, another onnxruntime or provider, an emptied cache), say so:
        the queue shows it instead of a frozen 0% for up to a minute."""
        # The UNet is nearly all of that time (9 s of 10 for SD 1.5 on 2 cores); a run that
        # loads the VAE encoder for the first time optimises it in a fraction of a second.
        unet = model.folder / "unet" / "model.onnx"
        if is_loaded(unet) or not needs_preparing(unet, self.runtime):
            return
        channels = model.description.latent_channels
        on_progress(Progress(image=0, images=1, step=0, steps=1,
                             latents=np.zeros((1, channels, 1, 1), np.float32),
                             stage=PREPARING_STAGE.format(model=model.name)))

    def upscale(self, upscaler: str | None, request: UpscaleRequest, on_tile: TileProgress,
                cancel: CancelToken) -> GenerationResult:
        """Enlarge with the installed upscaler ``upscaler`` (Lanczos when None), as
        ``easel upscale`` does; the engine caches its session."""
        if self._new_options is not None:
            self._take_new_options()
        return UpscalePipeline(self._upscaler(upscaler))(request, on_tile, cancel)

    def _upscaler(self, name: str | None) -> Upscaler | None:
        if name is None:
            return None
        folder = self.store.upscaler_path(name)
        self._upscaler_folders.add(folder)
        return load_upscaler(folder, self.runtime, name)

    def _take_new_options(self) -> None:
        (runtime, self.keep_loaded), self._new_options = self._new_options, None
        if runtime != self.runtime:
            # Sessions made for the old providers or threads would never be used again.
            self._unload(len(self._models))
            for folder in self._upscaler_folders:
                release_sessions(folder)
            self._upscaler_folders.clear()
            self.runtime = runtime
        self._unload(len(self._models) - self.keep_loaded)

    def _model(self, name: str) -> Model:
        if name in self._models:
            self._models.move_to_end(name)
            return self._models[name]
        model = load_model(self.store.path_of(name), self.runtime, name)
        self._models[name] = model
        self._unload(len(self._models) - self.keep_loaded)
        return model

    def _unload(self, count: int) -> None:
        """Let the ``count`` least recently used models go, with only their own sessions:
        the kept models stay loaded."""
        for _ in range(max(0, count)):
            _, model = self._models.popitem(last=False)
            model.close()


def generate(pipelines: Pipelines, library: Library, model: str, request: Request,
             context: Context, source_id: str | None = None,
             checks: dict | None = None) -> Outcome:
    """Make the pictures and save each into the library (written whole before it is listed),
    with the operation the engine names and, for an edit of a library picture, its id."""

    def on_progress(progress: Progress) -> None:
        first = progress.image if progress.group_start is None else progress.group_start
        context.report(progress.step, progress.steps, first, progress.images,
                       progress.preview, progress.stage, together=progress.group_size)

    result = pipelines.run(model, request, on_progress, context.cancel)
    context.cancel.raise_if_cancelled()  # cancelled after the last step: nothing is saved
    pixels = tuple(image.pixels for image in result.images)
    verdicts = _safety_checks(pipelines, pixels, context)
    context.cancel.raise_if_cancelled()  # cancelled during the check: nothing is saved
    # The control and reference pictures, kept by the keys the pictures record.
    library.keep_inputs(input_pictures(request))
    entries = tuple(library.add_generated(image.pixels, image.parameters, source_id=source_id,
                                          checks={**(checks or {}), **verdict})
                    for image, verdict in zip(result.images, verdicts, strict=True))
    device = Device(result.device.summary, result.device.reason, result.device.note)
    failure = check_failure(verdicts)
    notes = _flagged_note(verdicts) + ((failure,) if failure else ())
    return Outcome(entries, pixels, result.warnings + notes, device)


def _safety_checks(pipelines: Pipelines, pixels: tuple[np.ndarray, ...],
                   context: Context) -> list[dict]:
    """The installed safety checker's verdicts (desktop.safety), run on the engine's store
    and options; a stand-in engine without a store (a test's script) checks nothing."""
    store = getattr(pipelines, "store", None)
    if store is None:
        return [{} for _ in pixels]
    return safety_checks(store, pixels, getattr(pipelines, "runtime", None), context.cancel)


def _flagged_note(verdicts: list[dict]) -> tuple[str, ...]:
    flagged = [flagged_record(verdict) for verdict in verdicts]
    records = [record for record in flagged if record is not None]
    if not records:
        return ()
    count = len(records)
    pictures = "1 picture" if count == 1 else f"{count} pictures"
    return (f"The safety checker {records[0]['checker']} flagged {pictures}; kept, blurred "
            f"in the gallery until clicked.",)


def import_model(store: ModelStore, source: Path, context: Context,
                 name: str | None = None, runtime: RuntimeOptions | None = None
                 ) -> InstalledModel:
    """The same import as ``easel models import``, stopping when the job is cancelled, then
    the model prepared for ``runtime`` (default: the saved settings'), so its first picture
    loads quickly. A cancel or a failure while preparing leaves the model installed: its
    first use prepares it (desktop.model_prepare)."""

    def progress(stage: str, done: int, total: int) -> None:
        context.report(done, max(total, 1), stage=stage)

    def should_stop() -> bool:
        return context.cancel.cancelled

    model = store.import_model(source, name, progress, should_stop)
    prepare_after_import(model, saved_runtime if runtime is None else (
        lambda: runtime), progress, should_stop)
    return model
