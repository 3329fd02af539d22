"""Hires fix: text to image at the base size, enlarge, then refine by image to image at the
larger size with the same seed (A1111's "Hires. fix").

A model asked for a picture far above the size it was trained at repeats its subject across
the canvas; made at its own size and then enlarged, the composition holds, and the refining
pass redraws the detail that enlarging cannot invent. Nothing here denoises by itself: the
three stages are the existing text-to-image, upscale and image-to-image pipelines, run one
image at a time so that progress and cancellation follow the one picture being made.

Enlarging uses an installed upscaler when the pipeline is given one, at the smallest scale it
makes (2x or 4x) that reaches the final size, then Lanczos resampling for the rest of the way
(a 1.5x hires fix runs the network at 2x and shrinks). With no upscaler, Lanczos resampling
does it all, which is said in the result's warnings and recorded as the upscaler "Lanczos".
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from PIL import Image

from engine.errors import BadRequest
from engine.model import Model
from engine.pipelines.diffusion import MAX_SIDE
from engine.pipelines.image_to_image import ImageToImagePipeline
from engine.pipelines.text_to_image import TextToImagePipeline
from engine.request import (
    GeneratedImage,
    GenerationParameters,
    GenerationResult,
    HiresFixRequest,
    ImageToImageRequest,
    Progress,
    ProgressCallback,
)
from engine.runtime import CancelToken
from engine.upscale import (
    LANCZOS_NAME,
    MAX_OUTPUT_SIDE,
    SCALES,
    UpscalePipeline,
    Upscaler,
    UpscaleRequest,
)

OPERATION = "hires_fix"
MAX_SCALE = 4
# The stages as the progress bar names them.
BASE_STAGE = "drawing"
UPSCALE_STAGE = "upscaling"
REFINE_STAGE = "refining"
# Enlarging counts as one step of the progress bar: it has no denoising steps of its own.
UPSCALE_STEPS = 1
LANCZOS_HIRES_WARNING = ("No upscaler was used, so the picture was enlarged by Lanczos "
                         "resampling before it was refined; an installed upscaler keeps more "
                         "of its detail.")


@dataclass(frozen=True)
class HiresPlan:
    """A checked hires fix: the first pass's parameters and what the later stages will do."""

    parameters: GenerationParameters  # the first pass's, with the model's defaults filled in
    scale: float  # as asked; the final size is rounded from it
    width: int  # the final size
    height: int
    strength: float
    network_scale: int | None  # the upscaler runs at this scale; None: Lanczos only
    refine_steps: int  # the refining pass's schedule; about refine_steps × strength run
    steps: int  # progress steps per image: both passes' denoising steps and enlarging


def enlarged_size(width: int, height: int, scale: float, multiple: int) -> tuple[int, int]:
    """``width`` × ``height`` times ``scale``, each side rounded to a multiple of ``multiple``
    pixels (what the model can make): the size a hires fix ends at."""
    return (max(multiple, round(width * scale / multiple) * multiple),
            max(multiple, round(height * scale / multiple) * multiple))


class HiresFixPipeline:
    """Hires fix with ``model``, enlarging with ``upscaler`` (Lanczos when it is None)."""

    def __init__(self, model: Model, upscaler: Upscaler | None = None) -> None:
        self.model = model
        self.upscaler = upscaler
        self.text_to_image = TextToImagePipeline(model)
        self.upscale = UpscalePipeline(upscaler)
        self.image_to_image = ImageToImagePipeline(model)

    def __call__(
        self,
        request: HiresFixRequest,
        on_progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
    ) -> GenerationResult:
        cancel = cancel or CancelToken()
        # 1. Check inputs: every stage's, before anything runs.
        plan = self.check_inputs(request)
        base = request.base

        images, warnings, device = [], [], self.model.unet.device
        for index in range(base.count):
            seed = plan.parameters.seed + index
            progress = _StageProgress(on_progress, index, base.count, plan)

            # 2. Make the picture at the base size: text to image, this image alone.
            latents = None if base.latents is None else base.latents[index:index + 1]
            first = self.text_to_image(replace(base, seed=seed, count=1, latents=latents),
                                       progress.base, cancel)

            # 3. Enlarge it to the final size.
            progress.enlarging()
            enlarged = self.enlarge(first.images[0].pixels, plan, cancel)
            progress.enlarged()

            # 4. Refine it at the final size: image to image with the same seed.
            refine = ImageToImageRequest(
                enlarged, prompt=base.prompt, negative_prompt=base.negative_prompt,
                strength=plan.strength, steps=plan.refine_steps,
                guidance=plan.parameters.guidance, scheduler=plan.parameters.scheduler,
                seed=seed, generator=base.generator, emphasis=base.emphasis, loras=base.loras,
                embeddings=base.embeddings)
            refined = self.image_to_image(refine, progress.refine, cancel)

            images.append(GeneratedImage(refined.images[0].pixels,
                                         self.result_parameters(plan, seed)))
            warnings += [*first.warnings, *refined.warnings]
            device = refined.device
        if plan.network_scale is None:
            warnings.append(LANCZOS_HIRES_WARNING)
        # Each pass of each image repeats the same prompt warnings; say each once.
        return GenerationResult(tuple(images), tuple(dict.fromkeys(warnings)), device)

    def check_inputs(self, request: HiresFixRequest) -> HiresPlan:
        scale = request.scale
        if isinstance(scale, bool) or not isinstance(scale, int | float) or not (
                1 < scale <= MAX_SCALE):
            shown = f"{scale:g}" if isinstance(scale, int | float) else repr(scale)
            raise BadRequest(f"The hires scale must be more than 1 and at most {MAX_SCALE} "
                             f"(got {shown}).")
        parameters = self.text_to_image.check_inputs(request.base)
        self.image_to_image.check_vae_encoder()
        strength = self.image_to_image.check_strength(request.strength)
        width, height = self.final_size(parameters.width, parameters.height, scale)
        network_scale = self.check_network_scale(parameters, width, height)
        # The refining schedule follows the first pass's steps, lengthened as image to image
        # does for its default steps when steps × strength would run none (a 1-step turbo
        # model), so the recorded steps and strength make the same picture again.
        refine_steps = self.image_to_image.steps_for_strength(None, parameters.steps, strength)
        scheduler, begin = self.image_to_image.get_timesteps(parameters.scheduler, refine_steps,
                                                             strength)
        refine_run = len(scheduler.timesteps) - begin
        steps = parameters.steps + UPSCALE_STEPS + refine_run
        return HiresPlan(parameters, float(scale), width, height, strength, network_scale,
                         refine_steps, steps)

    def final_size(self, width: int, height: int, scale: float) -> tuple[int, int]:
        """The base size times ``scale``, each side rounded to what the model can make."""
        multiple = self.model.description.pixel_multiple
        final = enlarged_size(width, height, scale, multiple)
        if max(final) > MAX_SIDE:
            raise BadRequest(f"A hires fix of {width}×{height} at {scale:g}x would make "
                             f"{final[0]}×{final[1]} pixels; Easel makes pictures up to "
                             f"{MAX_SIDE} pixels a side.")
        if final == (width, height):
            raise BadRequest(f"At {width}×{height} a hires scale of {scale:g} does not enlarge "
                             f"the picture (sides are multiples of {multiple} pixels for this "
                             f"model); use a larger scale.")
        return final[0], final[1]

    def check_network_scale(self, parameters: GenerationParameters, width: int,
                            height: int) -> int | None:
        """The scale the upscaler runs at: the smallest that reaches the final size."""
        if self.upscaler is None:
            return None
        needed = max(width / parameters.width, height / parameters.height)
        scale = min(option for option in SCALES if option >= needed)
        self.upscale.check_scale(scale)
        if max(parameters.width, parameters.height) * scale > MAX_OUTPUT_SIDE:
            raise BadRequest(f"The upscaler would first enlarge the {parameters.width}×"
                             f"{parameters.height} picture {scale}x, past Easel's "
                             f"{MAX_OUTPUT_SIDE} pixels a side; use a smaller size or scale.")
        return scale

    def enlarge(self, pixels: np.ndarray, plan: HiresPlan, cancel: CancelToken) -> np.ndarray:
        """The base picture at the final size: the upscaler, then Lanczos for any rest."""
        cancel.raise_if_cancelled()
        if plan.network_scale is not None:
            upscaled = self.upscale(UpscaleRequest(pixels, plan.network_scale), None, cancel)
            pixels = upscaled.images[0].pixels
        if pixels.shape[:2] != (plan.height, plan.width):
            resized = Image.fromarray(pixels).resize((plan.width, plan.height),
                                                     Image.Resampling.LANCZOS)
            pixels = np.asarray(resized)
        cancel.raise_if_cancelled()
        return pixels

    def result_parameters(self, plan: HiresPlan, seed: int) -> GenerationParameters:
        """The first pass's settings at the final size, with how it was enlarged and
        refined: enough to make the picture again."""
        base = plan.parameters
        upscaler = LANCZOS_NAME if self.upscaler is None else self.upscaler.name
        return replace(base, seed=seed, width=plan.width, height=plan.height,
                       operation=OPERATION, strength=plan.strength, scale=plan.scale,
                       upscaler=upscaler, base_size=(base.width, base.height))


class _StageProgress:
    """One image's three stages as one count of steps, since the user sees one bar: the first
    pass's steps, one for enlarging, then the refining pass's."""

    def __init__(self, on_progress: ProgressCallback | None, index: int, count: int,
                 plan: HiresPlan) -> None:
        self.on_progress = on_progress
        self.index = index
        self.count = count
        self.plan = plan
        self.last: Progress | None = None  # its latents preview the picture while enlarging

    def base(self, progress: Progress) -> None:
        self._report(progress, progress.step, BASE_STAGE)

    def enlarging(self) -> None:
        # The same count as the last step, so the bar names the stage while the upscaler runs.
        if self.last is not None:
            self._report(self.last, self.plan.parameters.steps, UPSCALE_STAGE)

    def enlarged(self) -> None:
        if self.last is not None:
            self._report(self.last, self.plan.parameters.steps + UPSCALE_STEPS, UPSCALE_STAGE)

    def refine(self, progress: Progress) -> None:
        done_before = self.plan.parameters.steps + UPSCALE_STEPS
        self._report(progress, done_before + progress.step, REFINE_STAGE)

    def _report(self, progress: Progress, step: int, stage: str) -> None:
        self.last = progress
        if self.on_progress is not None:
            self.on_progress(replace(progress, image=self.index, images=self.count, step=step,
                                     steps=self.plan.steps, stage=stage))
