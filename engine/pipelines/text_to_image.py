"""Text to image: prompt → latents → pixels, following diffusers' StableDiffusionPipeline.

The loop reads top to bottom like diffusers': check inputs, encode the prompt, prepare the
latents, denoise, decode. Each image of a batch is made alone from seed + i, so any one of
them can be made again by itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from engine.errors import BadRequest
from engine.images import to_pixels
from engine.model import Model
from engine.request import (
    GeneratedImage,
    GenerationParameters,
    GenerationResult,
    Progress,
    ProgressCallback,
    TextToImageRequest,
)
from engine.runtime import CancelToken
from engine.schedulers import make_scheduler
from engine.schedulers.base import Scheduler

StepReport = Callable[[int, np.ndarray], None]

MAX_SIDE = 8192
MAX_COUNT = 100
MAX_SEED = 2**63 - 1


class TextToImagePipeline:
    def __init__(self, model: Model) -> None:
        self.model = model
        self.description = model.description

    def __call__(
        self,
        request: TextToImageRequest,
        on_progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
    ) -> GenerationResult:
        cancel = cancel or CancelToken()
        # 1. Check inputs and fill in the model's defaults.
        parameters = self.check_inputs(request)
        use_guidance = parameters.guidance > 1.0  # as diffusers: guidance <= 1 means off

        # 2. Encode the prompt (and the negative prompt, for classifier-free guidance).
        prompt_embeds, warnings = self.encode_prompt(
            parameters.prompt, parameters.negative_prompt, use_guidance, cancel)

        images = []
        for index in range(request.count):
            seed = parameters.seed + index
            rng = np.random.default_rng(seed)
            scheduler = self.make_scheduler(parameters.scheduler)
            scheduler.set_timesteps(parameters.steps)

            # 3. Prepare the initial latents: the generator's first draw (see design.md, Seeds).
            latents = self.prepare_latents(rng, parameters, request, index)
            latents = latents * np.float32(scheduler.init_noise_sigma)

            # 4. Denoise.
            def report(step: int, current: np.ndarray, index: int = index) -> None:
                if on_progress is not None:
                    on_progress(Progress(index, request.count, step, parameters.steps,
                                         current, self.model.preview_factors))

            latents = self.denoise(latents, prompt_embeds, parameters.guidance, use_guidance,
                                   scheduler, rng, report, cancel)

            # 5. Decode; a NaN or black frame is a failure, never a picture.
            pixels = self.decode_latents(latents, cancel)
            image_parameters = _with_seed(parameters, seed)
            images.append(GeneratedImage(pixels, image_parameters))
        return GenerationResult(tuple(images), tuple(warnings), self.model.unet.device)

    def check_inputs(self, request: TextToImageRequest) -> GenerationParameters:
        description = self.description
        width = description.default_width if request.width is None else request.width
        height = description.default_height if request.height is None else request.height
        steps = description.default_steps if request.steps is None else request.steps
        guidance = description.default_guidance if request.guidance is None else request.guidance
        scheduler = request.scheduler or description.default_scheduler
        multiple = math.lcm(8, description.vae_scale_factor)
        for side, value in (("width", width), ("height", height)):
            if not isinstance(value, int) or value <= 0 or value % multiple:
                raise BadRequest(f"The {side} must be a positive multiple of {multiple} pixels "
                                 f"(got {value}).")
            if value > MAX_SIDE:
                raise BadRequest(f"The {side} can be at most {MAX_SIDE} pixels (got {value}).")
        if not isinstance(steps, int) or steps < 1:
            raise BadRequest(f"Steps must be at least 1 (got {steps}).")
        if not math.isfinite(guidance) or guidance < 0:
            raise BadRequest(f"Guidance must be a number of 0 or more (got {guidance}).")
        if not 1 <= request.count <= MAX_COUNT:
            raise BadRequest(f"The number of images must be between 1 and {MAX_COUNT} "
                             f"(got {request.count}).")
        if not 0 <= request.seed <= MAX_SEED - request.count:
            raise BadRequest(f"The seed must be between 0 and {MAX_SEED - request.count}.")
        self.make_scheduler(scheduler)  # an unknown name is refused before any work
        self.check_words(request.prompt)
        if request.latents is not None:
            expected = (request.count, description.latent_channels,
                        height // description.vae_scale_factor,
                        width // description.vae_scale_factor)
            if tuple(request.latents.shape) != expected:
                raise BadRequest(f"The initial latents must have shape {expected} "
                                 f"(got {tuple(request.latents.shape)}).")
        return GenerationParameters(
            prompt=request.prompt, negative_prompt=request.negative_prompt or "",
            width=width, height=height, steps=steps, guidance=float(guidance),
            scheduler=scheduler, seed=request.seed, model_name=self.model.name,
            model_hash=self.model.hash, model_family=description.family)

    def check_words(self, prompt: str) -> None:
        """A model with a closed word list (the starter model) refuses a prompt in which it
        knows no word, and says which words it knows."""
        tokenizer = self.model.tokenizer
        tokens = tokenizer(prompt)
        if tokens.unknown_words and not tokens.known_word_count:
            raise BadRequest(f"The model '{self.model.name}' knows none of the words in this "
                             f"prompt; it knows only these: {', '.join(tokenizer.known_words)}.")

    def make_scheduler(self, name: str) -> Scheduler:
        is_flow_model = self.description.prediction_type == "flow"
        if (name == "flow_euler") != is_flow_model:
            kind = "flow-matching" if is_flow_model else "diffusion"
            raise BadRequest(f"The scheduler '{name}' does not fit a {kind} model like "
                             f"'{self.model.name}'.")
        config = dict(self.model.scheduler_config)
        if not is_flow_model:
            config["prediction_type"] = self.description.prediction_type
        return make_scheduler(name, config)

    def encode_prompt(self, prompt: str, negative_prompt: str, use_guidance: bool,
                      cancel: CancelToken) -> tuple[np.ndarray, list[str]]:
        """Text embeddings, [negative, positive] stacked when guidance is on."""
        warnings = []
        texts = {"prompt": prompt}
        if use_guidance:
            texts = {"negative prompt": negative_prompt, **texts}
        embeddings = []
        for label, text in texts.items():
            tokens = self.model.tokenizer(text)
            if tokens.truncated_text:
                warnings.append(
                    f"The {label} is longer than the {self.description.text_max_length - 2} "
                    f"tokens the text encoder reads; this end was left out: "
                    f"\"{tokens.truncated_text}\".")
            if tokens.unknown_words and tokens.known_word_count:
                warnings.append(f"The model does not know these words of the {label}, so it "
                                f"ignored them: {', '.join(tokens.unknown_words)}.")
            encoder = self.model.text_encoder
            ids = tokens.ids.astype(encoder.input_type("input_ids"))
            (hidden,) = encoder.run({"input_ids": ids}, ["last_hidden_state"], cancel)
            embeddings.append(hidden)
        return np.concatenate(embeddings).astype(np.float32), warnings

    def prepare_latents(self, rng: np.random.Generator, parameters: GenerationParameters,
                        request: TextToImageRequest, index: int) -> np.ndarray:
        factor = self.description.vae_scale_factor
        shape = (1, self.description.latent_channels,
                 parameters.height // factor, parameters.width // factor)
        drawn = rng.standard_normal(shape, dtype=np.float32)
        if request.latents is not None:
            return np.asarray(request.latents[index : index + 1], dtype=np.float32)
        return drawn

    def denoise(self, latents: np.ndarray, prompt_embeds: np.ndarray, guidance: float,
                use_guidance: bool, scheduler: Scheduler, rng: np.random.Generator,
                report: StepReport, cancel: CancelToken) -> np.ndarray:
        unet = self.model.unet
        timestep_type = unet.input_type("timestep")
        batch = 2 if use_guidance else 1
        for step, timestep in enumerate(scheduler.timesteps, start=1):
            cancel.raise_if_cancelled()
            # Guidance runs negative and positive as one batch-2 call.
            model_input = np.concatenate([latents] * batch)
            model_input = scheduler.scale_model_input(model_input, timestep)
            feeds = {
                "sample": model_input.astype(np.float32),
                "timestep": np.full((batch,), timestep, dtype=timestep_type),
                "encoder_hidden_states": prompt_embeds,
            }
            (noise_pred,) = unet.run(feeds, ["out_sample"], cancel)
            if use_guidance:
                negative, positive = noise_pred[:1], noise_pred[1:]
                noise_pred = negative + np.float32(guidance) * (positive - negative)
            latents = scheduler.step(noise_pred, timestep, latents, rng)
            report(step, latents)
        return latents

    def decode_latents(self, latents: np.ndarray, cancel: CancelToken) -> np.ndarray:
        cancel.raise_if_cancelled()
        description = self.description
        latents = latents / np.float32(description.latent_scaling_factor)
        latents = latents + np.float32(description.latent_shift_factor)
        (decoded,) = self.model.vae_decoder.run({"latent_sample": latents.astype(np.float32)},
                                                ["sample"], cancel)
        return to_pixels(decoded)


def _with_seed(parameters: GenerationParameters, seed: int) -> GenerationParameters:
    return replace(parameters, seed=seed)
