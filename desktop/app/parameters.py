"""What the prompt panel edits, in plain data: the form, the model choices, size presets.

Qt-free: the panel's view-model holds a ``Form`` and turns it into an engine request; tests
check the defaults and presets without a display.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass, replace
from typing import Any

from desktop.library.metadata import a1111_generator
from desktop.model_store import InstalledModel
from engine.description import ModelDescription
from engine.errors import BadRequest
from engine.noise import NUMPY, generator_name
from engine.pipelines.hires_fix import enlarged_size
from engine.pipelines.text_to_image import MAX_SEED
from engine.request import HiresFixRequest, InstructPix2PixRequest, TextToImageRequest
from engine.schedulers import SCHEDULER_NAMES

ASPECTS = (("1:1", 1, 1), ("4:3", 4, 3), ("3:4", 3, 4), ("3:2", 3, 2), ("2:3", 2, 3),
           ("16:9", 16, 9), ("9:16", 9, 16))
BASE_SIDES = (256, 512, 768, 1024)
MAX_SEED_SHOWN = 2**32 - 1  # new random seeds stay short enough to read and type
# How many pictures one Variations makes, as many as `easel variations` makes by default
# (tests/test_app_variations.py holds the two together).
VARIATIONS_COUNT = 4


@dataclass(frozen=True)
class ModelChoice:
    """An installed model as the model picker shows it."""

    name: str
    family: str
    size_bytes: int
    built_in: bool
    description: ModelDescription

    @property
    def label(self) -> str:
        return self.name if self.name == self.family else f"{self.name}  ({self.family})"

    @property
    def size_multiple(self) -> int:
        return self.description.pixel_multiple


@dataclass(frozen=True)
class SizePreset:
    label: str
    width: int
    height: int


@dataclass(frozen=True)
class Form:
    """Everything the prompt panel shows; ``seed_locked`` keeps the seed between runs."""

    prompt: str = ""
    negative_prompt: str = ""
    model: str = ""
    width: int = 512
    height: int = 512
    steps: int = 20
    guidance: float = 7.0
    scheduler: str = "euler"
    seed: int = 0
    seed_locked: bool = False
    count: int = 1
    variations: int = VARIATIONS_COUNT  # how many pictures Variations make
    # How much Variations, Edit and Inpaint redraw of the source picture (more than 0, at
    # most 1); text to image ignores it.
    strength: float = 0.75
    # How closely Instruct keeps the source picture (an InstructPix2Pix model's second
    # guidance); the engine's default, as `easel instruct`'s.
    image_guidance: float = InstructPix2PixRequest.image_guidance
    # Hires fix: 1 is off; above 1, Generate makes the picture at the chosen size, enlarges it
    # this many times and redraws it by hires_strength (the engine's defaults).
    hires_scale: float = 1.0
    hires_strength: float = HiresFixRequest.strength
    # Where the seed's random numbers come from (engine.noise): numpy, or torch's when a
    # picture from a torch-based tool is made again.
    generator: str = NUMPY
    # How (words:1.3) weights act on CLIP models (engine.prompt_emphasis): "original" or
    # "none" (A1111's "No norm").
    emphasis: str = "original"


def choice_of(model: InstalledModel) -> ModelChoice:
    return ModelChoice(model.name, model.family, model.size_bytes, model.built_in,
                       ModelDescription.load(model.path))


def schedulers_for(model: ModelChoice) -> list[str]:
    """The samplers that fit the model: flow models have their own, LCM models add theirs."""
    description = model.description
    if description.prediction_type == "flow":
        return ["flow_euler"]
    names = [name for name in SCHEDULER_NAMES if name != "flow_euler"]
    if description.distillation == "lcm":
        names.insert(0, "lcm")
    if description.default_scheduler not in names:
        names.insert(0, description.default_scheduler)
    return names


def size_presets(model: ModelChoice) -> list[SizePreset]:
    """Square and common aspect ratios at the sides near the model's own (512 / 768 / 1024),
    each rounded to a size the model takes, with about the same number of pixels."""
    native = max(model.description.default_width, model.description.default_height)
    sides = [side for side in BASE_SIDES if native / 1.5 <= side <= native * 1.5] or [native]
    multiple = model.size_multiple
    presets = []
    for side in sides:
        for label, across, down in ASPECTS:
            scale = side / math.sqrt(across * down)
            width = max(multiple, round(across * scale / multiple) * multiple)
            height = max(multiple, round(down * scale / multiple) * multiple)
            presets.append(SizePreset(f"{width} × {height}  ({label})", width, height))
    return presets


def form_for_model(form: Form, model: ModelChoice) -> Form:
    """The model's own defaults (a turbo model starts at 1-4 steps without guidance), keeping
    the prompt, seed and count the user already chose."""
    description = model.description
    return replace(form, model=model.name, width=description.default_width,
                   height=description.default_height, steps=description.default_steps,
                   guidance=description.default_guidance,
                   scheduler=description.default_scheduler)


def new_seed() -> int:
    return secrets.randbelow(MAX_SEED_SHOWN + 1)


def request_from(form: Form) -> TextToImageRequest | HiresFixRequest:
    request = TextToImageRequest(
        prompt=form.prompt, negative_prompt=form.negative_prompt, width=form.width,
        height=form.height, steps=form.steps, guidance=form.guidance,
        scheduler=form.scheduler, seed=batch_seed(form), count=form.count,
        generator=form.generator, emphasis=form.emphasis)
    if form.hires_scale > 1:
        return HiresFixRequest(request, form.hires_scale, form.hires_strength)
    return request


def final_size(form: Form, multiple: int) -> tuple[int, int]:
    """The size Generate makes: the chosen one, or with hires fix that one enlarged and
    rounded to the model's multiple (as the engine rounds it)."""
    if form.hires_scale <= 1:
        return form.width, form.height
    return enlarged_size(form.width, form.height, form.hires_scale, multiple)


def batch_seed(form: Form) -> int:
    """The form's seed, kept low enough that the batch's last image (seed + count - 1) is a
    valid seed too."""
    return min(max(form.seed, 0), MAX_SEED - form.count)


def form_from_image(form: Form, prompt: str, negative_prompt: str, model: str,
                    seed: int | None, width: int | None, height: int | None,
                    parameters: dict[str, Any]) -> Form:
    """"Reuse parameters": what an image was made with, written back into the form. Values
    the image does not know (an imported picture) keep what the form had; the seed is locked
    so the next run makes the same picture."""
    settings = parameters.get("settings") if isinstance(parameters.get("settings"), dict) else {}
    steps = _number(parameters.get("steps", settings.get("Steps")), int)
    guidance = _number(parameters.get("guidance", settings.get("CFG scale")), float)
    scheduler = parameters.get("scheduler")
    strength = _number(parameters.get("strength", settings.get("Denoising strength")), float)
    image_guidance = _number(parameters.get("image_guidance", settings.get("Image CFG scale")),
                             float)
    # A hires fix picture is made again from its first pass's size, enlarged as it was; any
    # other picture turns hires fix off, so the next run makes the same picture.
    hires_scale, hires_strength = 1.0, form.hires_strength
    base_size = parameters.get("base_size")
    if parameters.get("operation") == "hires_fix" and isinstance(base_size, list | tuple) \
            and len(base_size) == 2:
        width, height = _number(base_size[0], int), _number(base_size[1], int)
        hires_scale = _number(parameters.get("scale"), float) or 1.0
        hires_strength = strength if strength is not None else form.hires_strength
        strength = None  # the refining strength is not the editing actions' strength
    return replace(
        form, prompt=prompt, negative_prompt=negative_prompt, model=model or form.model,
        seed=form.seed if seed is None else seed, seed_locked=seed is not None,
        width=width or form.width, height=height or form.height,
        steps=form.steps if steps is None else steps,
        guidance=form.guidance if guidance is None else guidance,
        scheduler=scheduler if isinstance(scheduler, str) else form.scheduler,
        strength=form.strength if strength is None else min(max(strength, 0.05), 1.0),
        image_guidance=form.image_guidance if image_guidance is None else image_guidance,
        hires_scale=hires_scale, hires_strength=hires_strength,
        generator=image_generator(parameters) or form.generator,
        emphasis=image_emphasis(parameters, settings))


def image_emphasis(parameters: dict[str, Any], settings: dict[str, Any]) -> str:
    """How a picture's prompt weights acted: Easel's record, or A1111's Emphasis setting
    (written only when not its default); anything else reads as the default."""
    stored = parameters.get("emphasis", "none" if settings.get("Emphasis") == "No norm"
                            else "original")
    return stored if stored in ("original", "none") else "original"


def image_generator(parameters: dict[str, Any]) -> str | None:
    """The generator a picture's seed was drawn with, when the picture says: Easel's own
    record, or an AUTOMATIC1111 picture's RNG setting (none written means its GPU source)."""
    if parameters.get("tool") == "a1111":
        settings = parameters.get("settings")
        return a1111_generator(settings) if isinstance(settings, dict) else None
    stored = parameters.get("generator")
    try:
        return generator_name(stored) if isinstance(stored, str) else None
    except BadRequest:  # a generator from a later Easel: the form keeps its own
        return None


def _number(value: Any, kind: type) -> Any:
    try:
        return None if value is None else kind(value)
    except (TypeError, ValueError):
        return None
