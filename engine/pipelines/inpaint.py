"""Inpainting: repaint the masked part of a picture, following diffusers'
StableDiffusionInpaintPipeline, for both kinds of model it runs:

- an inpainting model (its UNet takes 9 channels) reads, beside the noisy latents, the mask
  and the latents of the picture with the masked part blanked out;
- any other model repaints by masked latent blending: after each step the unmasked part of
  the latents is put back as the picture's own latents, noised to the next step's level.

The steps: check inputs, encode the prompt, preprocess the picture and mask, set the
timesteps, prepare the latents, prepare the mask latents, denoise, decode; then, beyond
diffusers, the final compositing: the decoded picture is laid over the original through the
feathered mask, so outside the mask the result is the original pixels exactly.

The model sees the mask as diffusers gives it (binarized, one latent cell per
``vae_scale_factor`` pixels, each cell masked when its top-left pixel is), so the picture
before compositing is diffusers' own; feathering only shapes the compositing.

A picture larger than the model's largest native side (the starter's 256 px) is repainted as
image to image redraws it (``engine.pipelines.native_size``): the picture and the mask are
shrunk to the size text to image would draw at, repainted there, and the result enlarged and
composited over the full-size picture through the full-size mask.

Each image i draws from its own generator fed seed + i (``engine.noise``), in this order:
the starting noise, the picture's VAE sample (blending, or a strength below 1), the masked
picture's VAE sample (inpainting models), then the per-step noise of ancestral samplers.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from engine.errors import BadRequest
from engine.images import (
    composite,
    feathered,
    mask_pixels,
    pad_to_multiple,
    picture_pixels,
    to_sample,
)
from engine.noise import make_generator
from engine.pipelines.diffusion import MAX_SIDE, AfterStep
from engine.pipelines.guides import prepare_guides
from engine.pipelines.image_to_image import EditSettings, ImageToImagePipeline, SourceLatents
from engine.pipelines.native_size import drawing_notes, drawn_size, enlarge, shrink_mask
from engine.request import GeneratedImage, GenerationResult, InpaintRequest, ProgressCallback
from engine.runtime import CancelToken
from engine.schedulers.base import Scheduler

MAX_FEATHER = 256


@dataclass(frozen=True, eq=False)
class InpaintSettings:
    """A checked inpainting request: the edit's settings, its mask and what to tell the user.

    The edit's picture and ``drawn_mask`` are at the size drawn (``drawn_size``), ``picture``
    and ``mask`` at the picture's own size; they differ only for a picture larger than the
    model's largest native side."""

    edit: EditSettings
    mask: np.ndarray  # float32 (H, W) at the picture's size: 1 repaint, 0 keep
    warnings: tuple[str, ...]
    picture: np.ndarray  # uint8 (H, W, 3), the picture as given: what is composited over
    drawn_mask: np.ndarray  # float32, the mask at the size drawn


class InpaintPipeline(ImageToImagePipeline):
    def __call__(
        self,
        request: InpaintRequest,
        on_progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
    ) -> GenerationResult:
        cancel = cancel or CancelToken()
        # The request's LoRAs (none: the plain model) on the sessions, before any encoding.
        self.model.use_loras(request.loras)
        self.model.use_embeddings(request.embeddings)  # the ones its prompts may name
        # 1. Check inputs and fill in the model's defaults.
        settings = self.check_inputs(request)
        parameters = settings.edit.parameters
        use_guidance = self.guidance_needed(parameters)
        inpainting_unet = self.description.variant == "inpainting"
        full_strength = parameters.strength == 1.0

        # 2. Encode the prompt and gather the UNet's other conditioning.
        multiple = settings.edit.multiple
        canvas = pad_to_multiple(settings.edit.picture, multiple)
        guides = prepare_guides(self.model, request.controls, request.image_prompts,
                                canvas.shape[1], canvas.shape[0], use_guidance, cancel)
        parameters = guides.recorded(parameters)
        embeddings, prompt_warnings = self.encode_prompt(
            parameters.prompt, parameters.negative_prompt, use_guidance, cancel,
            parameters.emphasis)
        conditioning = self.prepare_conditioning(embeddings, parameters.guidance,
                                                 canvas.shape[1], canvas.shape[0])

        # 3. Preprocess the picture and the mask at the working size; encode each once.
        canvas_mask = pad_to_multiple(settings.drawn_mask, multiple)
        sample = to_sample(canvas)
        source = None
        if not inpainting_unet or not full_strength:  # blending or noising needs its latents
            source = SourceLatents(self.model, sample, cancel)
        masked_source = None
        if inpainting_unet:  # the masked part blanked to 0 (mid grey), as diffusers does
            masked_source = SourceLatents(self.model, sample * (canvas_mask < 0.5), cancel)
        latent_mask = self.prepare_mask(canvas_mask)
        latent_shape = (1, self.description.latent_channels, *latent_mask.shape[2:])
        weight = feathered(settings.mask, request.feather)  # for the final compositing
        warnings = [*settings.warnings, *prompt_warnings]
        if not latent_mask.any():
            warnings.append(f"The mask is thinner than the model's {multiple}-pixel grid "
                            f"everywhere, so little may change; paint it wider.")

        images = []
        for index in range(request.count):
            seed = parameters.seed + index
            rng = make_generator(request.generator, seed)
            # 4. Set the timesteps: a strength of s runs the last s of them.
            scheduler, begin = self.get_timesteps(parameters.scheduler, parameters.steps,
                                                  parameters.strength)
            timesteps = scheduler.timesteps[begin:]

            # 5. Prepare the latents: pure noise at full strength, else the noised picture.
            noise = self.prepare_noise(rng, latent_shape, request.noise, index)
            image_latents = None if source is None else source.sample(rng)
            if full_strength:
                latents = noise * np.float32(scheduler.init_noise_sigma)
            else:
                latents = scheduler.add_noise(image_latents, noise, timesteps[0])

            # 6. Prepare the mask latents: what an inpainting UNet reads besides the latents,
            # or, for any other model, the blending of the picture back in after each step.
            extra_channels = after_step = None
            if masked_source is not None:
                extra_channels = self.prepare_mask_latents(
                    latent_mask, masked_source.sample(rng), use_guidance)
            else:
                after_step = self.masked_blending(scheduler, timesteps, image_latents, noise,
                                                  latent_mask)

            # 7. Denoise.
            report = self.progress_reporter(on_progress, index, request.count, len(timesteps))
            latents = self.denoise(latents, conditioning, parameters.guidance, use_guidance,
                                   scheduler, rng, report, cancel, begin=begin,
                                   extra_channels=extra_channels, after_step=after_step,
                                   guides=guides, notes=warnings)

            # 8. Decode (a NaN or black frame is a failure): diffusers' picture.
            pixels = self.decode_latents(latents, cancel, warnings)

            # 9. Crop to the size drawn, enlarge it back if that was smaller, and composite
            # over the original through the feathered mask, at its own size: outside the
            # mask, the original pixels exactly.
            width, height = drawn_size(parameters)
            pixels = enlarge(np.ascontiguousarray(pixels[:height, :width]), parameters.width,
                             parameters.height)
            pixels = composite(pixels, settings.picture, weight)
            images.append(GeneratedImage(pixels, replace(parameters, seed=seed)))
        warnings += drawing_notes(parameters, self.model.name, self.description,
                                  "the repainted part")
        warnings += guides.notes
        warnings += self.model.take_notes()
        return GenerationResult(tuple(images), tuple(warnings),
                                guides.unet(self.model).device)

    def check_inputs(self, request: InpaintRequest) -> InpaintSettings:
        self.check_variant(("text-to-image", "inpainting"), "repaint a masked part of a picture")
        edit = self.check_edit(request, "inpaint", at_native_size=True)
        picture = picture_pixels(request.image, MAX_SIDE)  # full size, as check_edit read it
        feather = request.feather
        if isinstance(feather, bool) or not isinstance(feather, int) or not (
                0 <= feather <= MAX_FEATHER):
            raise BadRequest(f"The feather must be a whole number of pixels from 0 to "
                             f"{MAX_FEATHER} (got {feather}).")
        width, height = edit.parameters.width, edit.parameters.height
        mask, resized = mask_pixels(request.mask, width, height, MAX_SIDE)
        if not mask.any():
            raise BadRequest("The mask is empty: paint the part of the picture to repaint in "
                             "white, and leave the rest black.")
        edit = replace(edit, parameters=replace(edit.parameters, feather=feather))
        drawn_mask = shrink_mask(mask, *drawn_size(edit.parameters))
        return InpaintSettings(edit, mask, (resized,) if resized else (), picture, drawn_mask)

    @staticmethod
    def prepare_mask_latents(latent_mask: np.ndarray, masked_latents: np.ndarray,
                             use_guidance: bool) -> np.ndarray:
        """An inpainting UNet's extra input channels: the mask, then the masked picture's
        latents, batched like the latents (twice with guidance)."""
        extra = np.concatenate([latent_mask, masked_latents], axis=1)
        return np.concatenate([extra] * (2 if use_guidance else 1))

    @staticmethod
    def masked_blending(scheduler: Scheduler, timesteps: np.ndarray, image_latents: np.ndarray,
                        noise: np.ndarray, latent_mask: np.ndarray) -> AfterStep:
        """diffusers' inpainting with an ordinary UNet: after each step, the unmasked part
        becomes the picture's latents again, noised to the level of the next step (clean
        after the last), so the model paints the masked part to fit what surrounds it."""
        def blend(step: int, latents: np.ndarray) -> np.ndarray:
            known = image_latents
            if step < len(timesteps):
                known = scheduler.add_noise(image_latents, noise, timesteps[step])
            return (np.float32(1) - latent_mask) * known + latent_mask * latents

        return blend

    def prepare_mask(self, mask: np.ndarray) -> np.ndarray:
        """The mask at latent size, (1, 1, h, w): torch's nearest resize, as diffusers."""
        factor = self.description.vae_scale_factor
        return np.ascontiguousarray(mask[::factor, ::factor])[np.newaxis, np.newaxis]
