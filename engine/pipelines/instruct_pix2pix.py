"""Edit a picture by instruction ("make it winter") with an InstructPix2Pix model, following
diffusers' StableDiffusionInstructPix2PixPipeline.

The UNet reads 8 channels: the noisy latents and the picture's latents. The picture's latents
are the VAE encoder's mode (its mean), unscaled, as the model was trained and as diffusers
gives them (``sample_mode="argmax"``, no ``scaling_factor``), so nothing is drawn for them.
Guidance is three-way, in one batch-3 UNet call: (instruction, picture), (negative prompt,
picture) and (negative prompt, no picture: zeros), combined as

    uncond + guidance × (text − image) + image_guidance × (image − uncond)

The steps: check inputs, encode the prompt, preprocess the picture, set the timesteps,
prepare the picture's latents, prepare the latents, denoise, decode. Each image i draws from
its own generator fed seed + i (``engine.noise``): the starting noise first (as text to
image), then the per-step noise of ancestral samplers. Any picture size works, grown to the
model's multiple by repeating its edge and cropped back, as in image to image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from engine.embeddings.record import recorded_embeddings
from engine.errors import BadRequest
from engine.images import pad_to_multiple, picture_pixels, to_sample
from engine.lora.record import recorded_loras
from engine.noise import make_generator, stored_name
from engine.pipelines.diffusion import MAX_SIDE, CombinePrediction, PromptEmbeddings
from engine.pipelines.image_to_image import ImageToImagePipeline, _round_up
from engine.request import (
    GeneratedImage,
    GenerationParameters,
    GenerationResult,
    InstructPix2PixRequest,
    ProgressCallback,
)
from engine.runtime import CancelToken
from engine.vae_encoding import vae_encoder_output


@dataclass(frozen=True, eq=False)
class InstructSettings:
    """A checked instruction edit: its parameters, the picture and the working multiple."""

    parameters: GenerationParameters
    picture: np.ndarray  # uint8 (H, W, 3), the picture as given
    multiple: int


class InstructPix2PixPipeline(ImageToImagePipeline):
    def __call__(
        self,
        request: InstructPix2PixRequest,
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
        use_guidance = self.uses_image_guidance(parameters)

        # 2. Encode the prompt: [instruction, negative, negative] with guidance, as diffusers.
        canvas = pad_to_multiple(settings.picture, settings.multiple)
        embeddings, warnings = self.encode_prompt(
            parameters.prompt, parameters.negative_prompt, use_guidance, cancel,
            parameters.emphasis)
        if use_guidance:
            negative, positive = embeddings.hidden_states[:1], embeddings.hidden_states[1:]
            embeddings = PromptEmbeddings(np.concatenate([positive, negative, negative]))
        conditioning = self.prepare_conditioning(embeddings, parameters.guidance,
                                                 canvas.shape[1], canvas.shape[0])

        # 3. Preprocess the picture and 5. prepare its latents: encoded once, the mode.
        image_latents = self.prepare_image_latents(to_sample(canvas), use_guidance, cancel)
        latent_shape = (1, self.description.latent_channels, *image_latents.shape[2:])
        combine = self.image_guidance(parameters) if use_guidance else None

        images = []
        for index in range(request.count):
            seed = parameters.seed + index
            rng = make_generator(request.generator, seed)
            # 4. Set the timesteps: the whole schedule, from pure noise.
            scheduler = self.make_scheduler(parameters.scheduler)
            scheduler.set_timesteps(parameters.steps)

            # 6. Prepare the latents: the generator's first draw, as text to image.
            latents = self.prepare_noise(rng, latent_shape, request.noise, index)
            latents = latents * np.float32(scheduler.init_noise_sigma)

            # 7. Denoise, the picture's latents joined to the UNet's input channels.
            report = self.progress_reporter(on_progress, index, request.count, parameters.steps)
            latents = self.denoise(latents, conditioning, parameters.guidance, False, scheduler,
                                   rng, report, cancel, extra_channels=image_latents,
                                   combine=combine, notes=warnings)

            # 8. Decode (a NaN or black frame is a failure), then crop to the picture's size.
            pixels = self.decode_latents(latents, cancel, warnings)
            pixels = np.ascontiguousarray(pixels[:parameters.height, :parameters.width])
            images.append(GeneratedImage(pixels, replace(parameters, seed=seed)))
        warnings += self.model.take_notes()
        return GenerationResult(tuple(images), tuple(warnings), self.model.unet.device)

    def check_inputs(self, request: InstructPix2PixRequest) -> InstructSettings:
        self.check_variant(("instruct-pix2pix",), "edit a picture by instruction (an "
                           "InstructPix2Pix model can)")
        if self.description.text_encoders != 1:  # SDXL's has a pipeline of its own
            raise BadRequest(f"'{self.model.name}' is an SDXL InstructPix2Pix model, which "
                             f"Easel does not run yet.")
        self.check_vae_encoder()
        picture = picture_pixels(request.image, MAX_SIDE)
        if not isinstance(request.instruction, str) or not request.instruction.strip():
            raise BadRequest("Say how to change the picture, e.g. \"make it winter\".")
        image_guidance = request.image_guidance
        if isinstance(image_guidance, bool) or not isinstance(image_guidance, int | float) or (
                not math.isfinite(image_guidance) or image_guidance < 0):
            raise BadRequest(f"The image guidance must be a number of 0 or more "
                             f"(got {image_guidance}); 1.5 is usual, higher keeps more of "
                             f"the picture.")
        settings = self.check_settings(request.steps, request.guidance, request.scheduler,
                                       request.count, request.seed, request.instruction)
        multiple = self.description.pixel_multiple
        height, width = picture.shape[:2]
        self.check_latent_shape(request.noise, request.count, _round_up(width, multiple),
                                _round_up(height, multiple), "starting noise")
        parameters = GenerationParameters(
            prompt=request.instruction, negative_prompt=request.negative_prompt or "",
            width=width, height=height, steps=settings.steps, guidance=settings.guidance,
            scheduler=settings.scheduler, seed=request.seed, model_name=self.model.name,
            model_hash=self.model.hash, model_family=self.description.family,
            decoder=self.decoder_name,
            operation="instruct_pix2pix", image_guidance=float(image_guidance),
            generator=stored_name(request.generator), emphasis=request.emphasis,
            loras=recorded_loras(request.loras),
            embeddings=recorded_embeddings(request.embeddings, request.instruction,
                                           request.negative_prompt or "",
                                           model=self.model))
        return InstructSettings(parameters, picture, multiple)

    def uses_image_guidance(self, parameters: GenerationParameters) -> bool:
        # As diffusers: both guidances run only when guidance is above 1 and image guidance
        # at least 1; otherwise one UNet pass reads the instruction and the picture.
        image_guidance = parameters.image_guidance or 0.0
        return self.uses_guidance(parameters.guidance) and image_guidance >= 1.0

    def prepare_image_latents(self, sample: np.ndarray, use_guidance: bool,
                              cancel: CancelToken) -> np.ndarray:
        """The UNet's extra channels: the picture's latents (the encoder's mode, unscaled),
        batched [picture, picture, zeros] with guidance, as diffusers."""
        output_name = vae_encoder_output(self.model)
        (output,) = self.model.vae_encoder.run({"sample": sample.astype(np.float32)},
                                               [output_name], cancel)
        output = np.asarray(output, dtype=np.float32)
        if output_name == "latent_parameters":  # mean and log-variance: the mode is the mean
            output = output[:, :self.description.latent_channels]
        if not use_guidance:
            return output
        return np.concatenate([output, output, np.zeros_like(output)])

    @staticmethod
    def image_guidance(parameters: GenerationParameters) -> CombinePrediction:
        """diffusers' three-way guidance of the batch (text, image, unconditioned)."""
        guidance = np.float32(parameters.guidance)
        image_guidance = np.float32(parameters.image_guidance)

        def combine(prediction: np.ndarray) -> np.ndarray:
            text, image, unconditioned = prediction[:1], prediction[1:2], prediction[2:]
            return (unconditioned + guidance * (text - image)
                    + image_guidance * (image - unconditioned))

        return combine
