"""Image to image and variations: picture → noised latents → a new picture, following
diffusers' StableDiffusionImg2ImgPipeline.

The picture's latents are noised to the level that ``strength`` says and denoised from
there: check inputs, encode the prompt, preprocess the picture, set the timesteps (the first
1 - strength of them are skipped), prepare the latents, denoise, decode.

Each image i draws from its own generator fed seed + i (``engine.noise``), in this order
(design.md, Seeds): the starting noise (the same first draw as text to image), the VAE
encoder's sample, then the per-step noise of ancestral samplers. The VAE encoder runs once
per request, whatever the count; only its sampling is per image.

Any picture size works: the picture is grown to the model's pixel multiple by repeating its
edge, and the result is cropped back, so it has the picture's size and nothing is resampled,
except for a picture larger than the model's largest native side, redrawn smaller and
enlarged back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from engine.embeddings.record import recorded_embeddings
from engine.errors import BadRequest
from engine.images import pad_to_multiple, picture_pixels, to_sample
from engine.lora.record import recorded_loras
from engine.model import Model
from engine.noise import NoiseGenerator, make_generator, stored_name
from engine.pipelines.diffusion import MAX_SIDE, DiffusionPipeline, ImageDenoising
from engine.pipelines.guides import prepare_guides
from engine.pipelines.native_size import (
    drawing_notes,
    drawn_size,
    enlarge,
    record_drawing,
    shrink,
)
from engine.request import (
    GeneratedImage,
    GenerationParameters,
    GenerationResult,
    ImageToImageRequest,
    InpaintRequest,
    ProgressCallback,
)
from engine.runtime import CancelToken
from engine.schedulers.base import Scheduler
from engine.vae_encoding import latents_from_encoder_output, vae_encoder_output

# With the steps left to the model's default, a low strength gets more steps so that at least
# one runs (a 1-step turbo model at strength 0.5 runs 1 of 2); never more than this.
MAX_AUTOMATIC_STEPS = 1000

EditRequest = ImageToImageRequest | InpaintRequest


@dataclass(frozen=True)
class EditSettings:
    """A checked edit request: its generation parameters and the working canvas."""

    parameters: GenerationParameters
    picture: np.ndarray  # uint8 (H, W, 3), the picture as given (or as drawn, smaller)
    multiple: int  # the canvas is padded to this multiple of pixels


class SourceLatents:
    """A picture's VAE encoding, run once; ``sample`` draws each image's latents from it.

    ``sample`` is the picture as float32 (1, 3, H, W) in [-1, 1] (``engine.images.to_sample``).
    """

    def __init__(self, model: Model, sample: np.ndarray, cancel: CancelToken) -> None:
        self.description = model.description
        self.output_name = vae_encoder_output(model)
        (self.output,) = model.vae_encoder.run({"sample": sample.astype(np.float32)},
                                               [self.output_name], cancel)
        factor = self.description.vae_scale_factor
        self.shape = (1, self.description.latent_channels,
                      sample.shape[2] // factor, sample.shape[3] // factor)

    def sample(self, rng: NoiseGenerator) -> np.ndarray:
        """The latents the UNet works in, shifted and scaled as the description says."""
        latents = latents_from_encoder_output(self.output_name, self.output, rng)
        latents = latents - np.float32(self.description.latent_shift_factor)
        return latents * np.float32(self.description.latent_scaling_factor)


class ImageToImagePipeline(DiffusionPipeline):
    def __call__(
        self,
        request: ImageToImageRequest,
        on_progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
    ) -> GenerationResult:
        cancel = cancel or CancelToken()
        # The request's LoRAs (none: the plain model) on the sessions, before any encoding.
        self.model.use_loras(request.loras)
        self.model.use_embeddings(request.embeddings)  # the ones its prompts may name
        # 1. Check inputs and fill in the model's defaults.
        settings = self.check_inputs(request)
        parameters = settings.parameters
        use_guidance = self.guidance_needed(parameters)
        canvas = pad_to_multiple(settings.picture, settings.multiple)
        guides = prepare_guides(self.model, request.controls, request.image_prompts,
                                canvas.shape[1], canvas.shape[0], use_guidance, cancel)
        parameters = guides.recorded(parameters)

        # 2. Encode the prompt and gather the UNet's other conditioning.
        embeddings, warnings = self.encode_prompt(
            parameters.prompt, parameters.negative_prompt, use_guidance, cancel,
            parameters.emphasis)
        conditioning = self.prepare_conditioning(embeddings, parameters.guidance,
                                                 canvas.shape[1], canvas.shape[0])

        # 3. Preprocess the picture: grown to the working size and encoded once.
        source = SourceLatents(self.model, to_sample(canvas), cancel)

        # 4-5. Set each image's timesteps and prepare its latents: the picture's, noised.
        images = [self.prepare_image(parameters, request, source, index, on_progress)
                  for index in range(request.count)]
        begin = self.first_step(parameters.steps, parameters.strength)

        # 6. Denoise, several images per UNet call where the device gains by it.
        per_call = self.images_per_call(request.count, use_guidance, images[0].latents.shape,
                                        guides)
        results = []
        for index, image in enumerate(self.denoise_images(
                images, conditioning, parameters.guidance, use_guidance, cancel,
                per_call=per_call, begin=begin, guides=guides, notes=warnings)):
            # 7. Decode (a NaN or black frame is a failure), crop to the picture's size as
            # drawn, and enlarge it back if it was redrawn smaller.
            pixels = self.decode_latents(image.latents, cancel, warnings)
            width, height = drawn_size(parameters)
            pixels = np.ascontiguousarray(pixels[:height, :width])
            pixels = enlarge(pixels, parameters.width, parameters.height)
            results.append(GeneratedImage(pixels, replace(parameters,
                                                          seed=parameters.seed + index)))
        warnings += drawing_notes(parameters, self.model.name, self.description)
        warnings += guides.notes
        warnings += self.model.take_notes()
        return GenerationResult(tuple(results), tuple(warnings),
                                guides.unet(self.model).device)

    def check_inputs(self, request: ImageToImageRequest) -> EditSettings:
        self.check_variant(("text-to-image",), "redraw a whole picture (inpaint with it instead)")
        return self.check_edit(request, "image_to_image", at_native_size=True)

    def check_edit(self, request: EditRequest, operation: str,
                   at_native_size: bool = False) -> EditSettings:
        """The checks every edit shares: the picture, strength, steps and the rest.

        ``at_native_size``: a picture larger than the model's largest native side is redrawn
        at that size and enlarged back (``engine.pipelines.native_size``), as text to image
        draws it, so a model of fixed scale does not fill it with copies of its subject.
        """
        self.check_vae_encoder()
        picture = picture_pixels(request.image, MAX_SIDE)
        strength = self.check_strength(request.strength)
        settings = self.check_settings(request.steps, request.guidance, request.scheduler,
                                       request.count, request.seed, request.prompt)
        steps = self.steps_for_strength(request.steps, settings.steps, strength)
        multiple = self.description.pixel_multiple
        height, width = picture.shape[:2]
        parameters = GenerationParameters(
            prompt=request.prompt, negative_prompt=request.negative_prompt or "",
            width=width, height=height, steps=steps, guidance=settings.guidance,
            scheduler=settings.scheduler, seed=request.seed, model_name=self.model.name,
            model_hash=self.model.hash, model_family=self.description.family,
            decoder=self.decoder_name,
            operation=operation, strength=strength, generator=stored_name(request.generator),
            emphasis=request.emphasis, loras=recorded_loras(request.loras),
            embeddings=recorded_embeddings(request.embeddings, request.prompt,
                                           request.negative_prompt or "",
                                           model=self.model))
        if at_native_size:
            parameters = record_drawing(parameters, self.description)
            picture = shrink(picture, *drawn_size(parameters))
        drawn_width, drawn_height = drawn_size(parameters)
        self.check_latent_shape(request.noise, request.count, _round_up(drawn_width, multiple),
                                _round_up(drawn_height, multiple), "starting noise")
        return EditSettings(parameters, picture, multiple)

    def check_vae_encoder(self) -> None:
        if not (self.model.folder / "vae_encoder" / "model.onnx").is_file():
            raise BadRequest(f"'{self.model.name}' has no VAE encoder, so it cannot start from "
                             f"a picture; import the model again with its VAE encoder.")

    @staticmethod
    def check_strength(strength: float) -> float:
        if isinstance(strength, bool) or not isinstance(strength, int | float) or not (
                0 < strength <= 1):
            raise BadRequest(f"The strength must be more than 0 and at most 1 (got {strength}); "
                             f"0.3 changes little of the picture, 1 keeps only a trace of it.")
        return float(strength)

    @staticmethod
    def steps_for_strength(asked: int | None, steps: int, strength: float) -> int:
        """The schedule's length, such that ``steps × strength`` steps (at least 1) run."""
        needed = math.ceil(1 / strength)
        while int(needed * strength) < 1:  # 1 / strength rounded down in binary
            needed += 1
        if int(steps * strength) >= 1:
            return steps
        if needed > MAX_AUTOMATIC_STEPS:
            raise BadRequest(f"A strength of {strength:g} is too small to change the picture; "
                             f"use {1 / MAX_AUTOMATIC_STEPS:g} or more.")
        if asked is None:
            return needed
        raise BadRequest(f"At strength {strength:g}, {steps} steps run none at all (steps × "
                         f"strength must reach 1); use {needed} steps or more, or a higher "
                         f"strength.")

    def guidance_needed(self, parameters: GenerationParameters) -> bool:
        # With no prompt and no negative prompt both halves of guidance read the same text and
        # predict the same noise: guidance would only double the UNet's work (variations).
        same_text = not parameters.prompt and not parameters.negative_prompt and (
            not self.description.force_zeros_for_empty_prompt)
        return self.uses_guidance(parameters.guidance) and not same_text

    def get_timesteps(self, name: str, steps: int, strength: float) -> tuple[Scheduler, int]:
        """A scheduler set to ``steps`` timesteps, and where in them this strength begins."""
        scheduler = self.make_scheduler(name)
        scheduler.set_timesteps(steps)
        begin = self.first_step(steps, strength)
        scheduler.set_begin_index(begin)
        return scheduler, begin

    @staticmethod
    def first_step(steps: int, strength: float) -> int:
        """Where in ``steps`` timesteps a strength of ``strength`` begins."""
        # As diffusers: int() rounds the steps run down.
        run = min(int(steps * strength), steps)
        return max(steps - run, 0)

    def prepare_image(self, parameters: GenerationParameters, request: ImageToImageRequest,
                      source: SourceLatents, index: int,
                      on_progress: ProgressCallback | None) -> ImageDenoising:
        """Image ``index``'s generator fed seed + index, its scheduler set to the timesteps
        the strength runs, and its latents: the picture's, noised to the first of them."""
        rng = make_generator(request.generator, parameters.seed + index)
        scheduler, begin = self.get_timesteps(parameters.scheduler, parameters.steps,
                                              parameters.strength)
        noise = self.prepare_noise(rng, source.shape, request.noise, index)
        image_latents = source.sample(rng)
        latents = scheduler.add_noise(image_latents, noise, scheduler.timesteps[begin])
        report = self.progress_reporter(on_progress, index, request.count,
                                        len(scheduler.timesteps) - begin)
        return ImageDenoising(latents, scheduler, rng, report)

    @staticmethod
    def prepare_noise(rng: NoiseGenerator, shape: tuple[int, ...],
                      given: np.ndarray | None, index: int) -> np.ndarray:
        """The generator's first draw, or the caller's noise in its place (the generator still
        advances, so the later draws stay those of the seed)."""
        drawn = rng.standard_normal(shape, dtype=np.float32)
        if given is not None:
            return np.asarray(given[index : index + 1], dtype=np.float32)
        return drawn


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple
