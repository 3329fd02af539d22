"""Batch lines as jobs: each with an id from its settings and line, its model, and the engine
request it runs, all checked before any work so that a bad line is one sentence naming it.

A job's id is what makes a batch resumable: the library keeps it in each picture's metadata
(``Library.batch_pictures``), so a batch run again makes only the pictures it does not have.
A line without a seed gets one from its id: the same line makes the same pictures, whether
the run finishes at once or after three restarts.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from PIL import Image

from desktop.batch.lines import FROM_PICTURE, BatchLine
from desktop.library import Library
from desktop.model_kinds.embedding import installed_embeddings
from desktop.model_kinds.lora import prompt_loras
from desktop.model_store import ModelStore
from desktop.source_pictures import open_picture, source_picture
from engine.errors import BadRequest, EaselError
from engine.model import Model, load_model
from engine.pipelines.image_to_image import ImageToImagePipeline
from engine.pipelines.inpaint import InpaintPipeline
from engine.pipelines.instruct_pix2pix import InstructPix2PixPipeline
from engine.pipelines.outpaint import OutpaintPipeline
from engine.pipelines.text_to_image import TextToImagePipeline
from engine.request import (
    ImageToImageRequest,
    InpaintRequest,
    InstructPix2PixRequest,
    OutpaintRequest,
    TextToImageRequest,
)
from engine.runtime import RuntimeOptions

Request = (TextToImageRequest | ImageToImageRequest | InpaintRequest | OutpaintRequest
           | InstructPix2PixRequest)

PIPELINES = {"generate": TextToImagePipeline, "edit": ImageToImagePipeline,
             "variations": ImageToImagePipeline, "inpaint": InpaintPipeline,
             "outpaint": OutpaintPipeline, "instruct": InstructPix2PixPipeline}

# What each operation takes besides what all take; anything else on its line is a mistake
# worth a sentence (a strength on a generate line would silently do nothing).
_COMMON = {"operation", "prompt", "negative_prompt", "model", "steps", "guidance", "scheduler",
           "seed", "count", "emphasis", "rng"}
_OWN = {"generate": {"width", "height"},
        "edit": {"source", "strength"},
        "variations": {"source", "strength"},
        "inpaint": {"source", "mask", "invert_mask", "strength", "feather"},
        "outpaint": {"source", "left", "top", "right", "bottom", "feather"},
        "instruct": {"source", "instruction", "image_guidance"}}
# The defaults of the commands of the same names (``easel variations`` makes 4).
_DEFAULT_COUNT = {"variations": 4}
_DEFAULT_STRENGTH = {"edit": 0.75, "variations": 0.6, "inpaint": 1.0}


@dataclass(frozen=True)
class Job:
    """One line of a batch, checked: run it with ``JobMaker.request``."""

    line: int
    id: str
    settings: Mapping[str, Any]
    model: str  # the installed model's name
    model_folder: Path
    seed: int  # picture i uses seed + i
    count: int
    source_id: str | None = None  # the library picture an edit starts from, for lineage
    checks: Mapping[str, Any] = field(default_factory=dict)  # the content filter's record

    @property
    def operation(self) -> str:
        return self.settings["operation"]

    def described(self) -> str:
        """A few words for progress lines: the operation and the start of the prompt."""
        words = self.settings.get("prompt") or self.settings.get("instruction") or ""
        words = words if len(words) <= 40 else words[:39] + "…"
        return f"{self.operation} {words!r}" if words else self.operation


def job_id(line: BatchLine) -> str:
    """The same settings on the same line give the same id, in any file format."""
    text = json.dumps({"line": line.number, "settings": dict(line.settings)}, sort_keys=True,
                      ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def seed_of(identifier: str) -> int:
    """The seed of a line that gives none: fixed by its id, below 2**32 as seeds are."""
    return int(identifier[:8], 16)


class JobMaker:
    """Turns lines into jobs and jobs into requests: the model store, the library (for source
    pictures given by id), the runtime options, the folder relative paths start from, and the
    content filter (``screen``: a request → its record, raising PromptBlocked)."""

    def __init__(self, store: ModelStore, library: Library, runtime: RuntimeOptions,
                 folder: Path, screen: Callable[[Any], Mapping[str, Any]] | None = None) -> None:
        self.store = store
        self.library = library
        self.runtime = runtime
        self.folder = Path(folder)
        self.screen = screen
        self._models: dict[str, Model] = {}  # opened for checking only: no sessions

    def jobs(self, lines: list[BatchLine]) -> list[Job]:
        """Every line as a job, each checked as fully as can be without running it."""
        return [self.job(line) for line in lines]

    def job(self, line: BatchLine) -> Job:
        try:
            return self._job(line)
        except EaselError as error:
            raise _on_line(error, line.number) from None

    def _job(self, line: BatchLine) -> Job:
        settings = dict(line.settings)
        operation = settings["operation"]
        extra = sorted(set(settings) - _COMMON - _OWN[operation])
        if extra:
            raise BadRequest(f"{', '.join(extra)} {'does' if len(extra) == 1 else 'do'} not "
                             f"apply to {operation}; leave {'it' if len(extra) == 1 else 'them'}"
                             " out or change the operation.")
        model = self._model(settings.get("model"))
        identifier = job_id(line)
        seed = settings["seed"] if "seed" in settings else seed_of(identifier)
        count = settings.get("count", _DEFAULT_COUNT.get(operation, 1))
        job = Job(line.number, identifier, settings, model.name, model.folder, seed, count)
        request, source_id = self._request(job, model, seed, count)
        PIPELINES[operation](model).check_inputs(request)  # size, steps, count, scheduler…
        checks = dict(self.screen(request)) if self.screen is not None else {}
        return replace(job, source_id=source_id, checks=checks)

    def request(self, job: Job, first: int = 0, count: int | None = None) -> Request:
        """The request that makes pictures ``first`` to ``first + count`` of ``job`` (picture
        i uses seed + i, so any run of them can be made alone)."""
        model = self._model(job.model)
        count = job.count - first if count is None else count
        return self._request(job, model, job.seed + first, count)[0]

    def _model(self, name: str | None) -> Model:
        name = name or self.store.default_model().name
        if name not in self._models:
            self._models[name] = load_model(self.store.path_of(name), self.runtime, name)
        return self._models[name]

    def _request(self, job: Job, model: Model, seed: int, count: int
                 ) -> tuple[Request, str | None]:
        settings = job.settings
        operation = job.operation
        prompt = settings.get("prompt", "")
        common = {"negative_prompt": settings.get("negative_prompt", ""),
                  "steps": settings.get("steps"), "guidance": settings.get("guidance"),
                  "scheduler": settings.get("scheduler"), "seed": seed, "count": count,
                  "emphasis": settings.get("emphasis", "original")}
        if "rng" in settings:
            common["generator"] = settings["rng"]
        family = model.description.family
        words = settings.get("instruction") or prompt
        extras = {"loras": prompt_loras(self.store, words),
                  "embeddings": installed_embeddings(self.store, family)}
        if operation == "generate":
            return TextToImageRequest(prompt, width=settings.get("width"),
                                      height=settings.get("height"), **common, **extras), None
        picture, source_id = self._source(settings["source"])
        strength = settings.get("strength", _DEFAULT_STRENGTH.get(operation))
        if operation in ("edit", "variations"):
            request = ImageToImageRequest(picture, prompt, strength=strength, **common)
        elif operation == "inpaint":
            mask = open_picture(self._path(settings["mask"]), "L")
            if settings.get("invert_mask"):
                mask = Image.eval(mask, lambda value: 255 - value)
            request = InpaintRequest(picture, mask, prompt, strength=strength,
                                     feather=settings.get("feather", 4), **common)
        elif operation == "outpaint":
            sides = {side: settings.get(side, 0) for side in ("left", "top", "right", "bottom")}
            if any(value < 0 for value in sides.values()):
                raise BadRequest("The pixels to add on a side cannot be negative.")
            if not any(sides.values()):
                raise BadRequest("Say how far to extend the picture: left, top, right or "
                                 "bottom.")
            request = OutpaintRequest(picture, **sides, prompt=prompt,
                                      feather=settings.get("feather", 4), **common)
        else:
            instruction = settings.get("instruction") or prompt
            guidance = settings.get("image_guidance", 1.5)
            request = InstructPix2PixRequest(picture, instruction, image_guidance=guidance,
                                             **common)
        return replace(request, **extras), source_id

    def _source(self, text: str) -> tuple[Image.Image, str | None]:
        """A file (relative to the batch file's folder) or a library picture's id."""
        path = self._path(text)
        found = source_picture(self.library, str(path) if path.is_file() else text)
        return found.picture, found.image_id

    def _path(self, text: str) -> Path:
        path = Path(text).expanduser()
        if not path.is_absolute() and (self.folder / path).exists():
            return self.folder / path
        return path


def _on_line(error: EaselError, number: int) -> EaselError:
    """The same error, its sentence starting with the line it is about."""
    text = str(error) or type(error).__name__
    message = f"Line {number}: {text}"
    try:
        return type(error)(message)
    except TypeError:  # an error type that wants more than a message
        return BadRequest(message)


__all__ = ["FROM_PICTURE", "PIPELINES", "Job", "JobMaker", "Request", "job_id", "seed_of"]
