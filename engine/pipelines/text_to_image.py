"""Text to image: prompt → latents → pixels, following diffusers' StableDiffusionPipeline.

The loop reads top to bottom like diffusers': check inputs, encode the prompt, prepare the
latents, denoise, decode. Each image of a batch draws from its own generator fed seed + i
and steps its own scheduler, so any one of them can be made again by itself; on a GPU several
share each UNet call (``engine.pipelines.batching``), with the pixels they have alone.

One pipeline serves every family; the model's description says what differs. SDXL
(StableDiffusionXLPipeline) reads two text encoders and conditions the UNet on the image size
as well; LCM models (LatentConsistencyModelPipeline) take the guidance scale as an embedding
instead of a second UNet pass; turbo models only change the defaults (1-4 steps, no guidance).
The steps every pipeline shares live in ``engine.pipelines.diffusion``. A picture larger than
the model's largest native side is drawn smaller and enlarged (``engine.pipelines.native_size``).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from engine.embeddings.record import recorded_embeddings
from engine.errors import BadRequest
from engine.lora.record import recorded_loras
from engine.model import Model
from engine.noise import NoiseGenerator, make_generator, stored_name
from engine.pipelines.diffusion import (
    MAX_COUNT,
    MAX_SEED,
    MAX_SIDE,
    VARIANT_PURPOSES,
    DiffusionPipeline,
    ImageDenoising,
    PromptEmbeddings,
    guidance_scale_embedding,
    penultimate_output,
)
from engine.pipelines.guides import prepare_guides
from engine.pipelines.native_size import drawing_notes, drawn_size, enlarge, record_drawing
from engine.placement import placement_note, too_many_note
from engine.request import (
    GeneratedImage,
    GenerationParameters,
    GenerationResult,
    ProgressCallback,
    TextToImageRequest,
)
from engine.runtime import CancelToken
from engine.size_rule import check_side

# Kept importable from here, where they were first defined.
__all__ = ["MAX_COUNT", "MAX_SEED", "MAX_SIDE", "VARIANT_PURPOSES", "PromptEmbeddings",
           "TextToImagePipeline", "guidance_scale_embedding", "penultimate_output"]


class TextToImagePipeline(DiffusionPipeline):
    def __init__(self, model: Model, place_objects: bool = True) -> None:
        super().__init__(model)
        # False draws every prompt as written: how the starter's evaluation measures its
        # weights alone (``engine.placement``).
        self.place_objects = place_objects

    def __call__(
        self,
        request: TextToImageRequest,
        on_progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
    ) -> GenerationResult:
        cancel = cancel or CancelToken()
        # The request's LoRAs (none: the plain model) on the sessions, before any encoding.
        self.model.use_loras(request.loras)
        self.model.use_embeddings(request.embeddings)  # the ones its prompts may name
        # 1. Check inputs and fill in the model's defaults.
        parameters = self.check_inputs(request)
        use_guidance = self.uses_guidance(parameters.guidance)
        guides = prepare_guides(self.model, request.controls, request.image_prompts,
                                *drawn_size(parameters), use_guidance, cancel)
        parameters = guides.recorded(parameters)

        # 2. Encode the prompt (and the negative prompt, for classifier-free guidance), and
        # gather everything else the UNet is conditioned on. Objects the prompt leaves
        # unplaced are given a place first, by a model that says where (the starter's).
        prompt, warnings = self.placed_prompt(parameters.prompt)
        embeddings, encoding_notes = self.encode_prompt(
            prompt, parameters.negative_prompt, use_guidance, cancel, parameters.emphasis)
        warnings += encoding_notes
        conditioning = self.prepare_conditioning(embeddings, parameters.guidance,
                                                 *drawn_size(parameters))

        # 3. Prepare each image's initial latents, scheduler and generator.
        images = [self.prepare_image(parameters, request, index, on_progress)
                  for index in range(request.count)]

        # 4. Denoise, several images per UNet call where the device gains by it.
        per_call = self.images_per_call(request.count, use_guidance, images[0].latents.shape,
                                        guides)
        results = []
        for index, image in enumerate(self.denoise_images(
                images, conditioning, parameters.guidance, use_guidance, cancel,
                per_call=per_call, guides=guides, notes=warnings)):
            # 5. Decode (a NaN or black frame is a failure, never a picture), and enlarge
            # what was drawn smaller than asked (``engine.pipelines.native_size``).
            pixels = self.decode_latents(image.latents, cancel, warnings)
            pixels = enlarge(pixels, parameters.width, parameters.height)
            results.append(GeneratedImage(pixels, replace(parameters,
                                                          seed=parameters.seed + index)))
        warnings += drawing_notes(parameters, self.model.name, self.description)
        warnings += guides.notes
        warnings += self.model.take_notes()
        return GenerationResult(tuple(results), tuple(warnings),
                                guides.unet(self.model).device)

    def placed_prompt(self, prompt: str) -> tuple[str, list[str]]:
        """The prompt the model draws, and a note when it is not the prompt as written. The
        picture keeps the prompt as written: placing is the same every time, so the same
        prompt and seed make the same picture again."""
        placement = self.model.placement if self.place_objects else None
        if placement is None:
            return prompt, []
        if (named := len(placement.named_objects(prompt))) > placement.most_objects:
            return prompt, [too_many_note(self.model.name, named)]
        placed = placement.place(prompt)
        # The added words must fit in what the text encoder reads, or they would push the
        # user's own words out of it.
        if placed is None or self.model.tokenizer(placed).truncated_text:
            return prompt, []
        return placed, [placement_note(placed)]

    def check_inputs(self, request: TextToImageRequest) -> GenerationParameters:
        description = self.description
        width = description.default_width if request.width is None else request.width
        height = description.default_height if request.height is None else request.height
        self.check_variant(("text-to-image",), "make a picture from text alone")
        for side, value in (("width", width), ("height", height)):
            check_side(description, self.model.name, side, value)
            if value > MAX_SIDE:
                raise BadRequest(f"The {side} can be at most {MAX_SIDE} pixels (got {value}).")
        settings = self.check_settings(request.steps, request.guidance, request.scheduler,
                                       request.count, request.seed, request.prompt,
                                       prompt_may_be_empty=False)
        parameters = record_drawing(GenerationParameters(
            prompt=request.prompt, negative_prompt=request.negative_prompt or "",
            width=width, height=height, steps=settings.steps, guidance=settings.guidance,
            scheduler=settings.scheduler, seed=request.seed, model_name=self.model.name,
            model_hash=self.model.hash, model_family=description.family,
            decoder=self.decoder_name,
            generator=stored_name(request.generator), emphasis=request.emphasis,
            loras=recorded_loras(request.loras),
            embeddings=recorded_embeddings(request.embeddings, request.prompt,
                                           request.negative_prompt or "",
                                           model=self.model)), description)
        self.check_latent_shape(request.latents, request.count, *drawn_size(parameters),
                                "initial latents")
        return parameters

    def prepare_image(self, parameters: GenerationParameters, request: TextToImageRequest,
                      index: int, on_progress: ProgressCallback | None) -> ImageDenoising:
        """Image ``index``'s generator fed seed + index, its scheduler, and its initial
        latents: the generator's first draw (see design.md, Seeds)."""
        rng = make_generator(request.generator, parameters.seed + index)
        scheduler = self.make_scheduler(parameters.scheduler)
        scheduler.set_timesteps(parameters.steps)
        latents = self.prepare_latents(rng, parameters, request, index)
        latents = latents * np.float32(scheduler.init_noise_sigma)
        report = self.progress_reporter(on_progress, index, request.count, parameters.steps)
        return ImageDenoising(latents, scheduler, rng, report)

    def prepare_latents(self, rng: NoiseGenerator, parameters: GenerationParameters,
                        request: TextToImageRequest, index: int) -> np.ndarray:
        factor = self.description.vae_scale_factor
        width, height = drawn_size(parameters)
        shape = (1, self.description.latent_channels, height // factor, width // factor)
        drawn = rng.standard_normal(shape, dtype=np.float32)
        if request.latents is not None:
            return np.asarray(request.latents[index : index + 1], dtype=np.float32)
        return drawn
