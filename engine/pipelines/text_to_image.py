"""Text to image: prompt → latents → pixels, following diffusers' StableDiffusionPipeline.

The loop reads top to bottom like diffusers': check inputs, encode the prompt, prepare the
latents, denoise, decode. Each image of a batch is made alone from seed + i, so any one of
them can be made again by itself.

One pipeline serves every family; the model's description says what differs. SDXL
(StableDiffusionXLPipeline) reads two text encoders and conditions the UNet on the image size
as well; LCM models (LatentConsistencyModelPipeline) take the guidance scale as an embedding
instead of a second UNet pass; turbo models only change the defaults (1-4 steps, no guidance).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from engine.errors import BadRequest, ModelError
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
from engine.runtime import CancelToken, Session
from engine.schedulers import make_scheduler
from engine.schedulers.base import Scheduler

StepReport = Callable[[int, np.ndarray], None]

MAX_SIDE = 8192
MAX_COUNT = 100
MAX_SEED = 2**63 - 1

# What a model that is not a text-to-image model does, for the sentence that refuses it.
VARIANT_PURPOSES = {
    "inpainting": "an inpainting model, which repaints a masked part of a picture",
    "instruct-pix2pix": "an InstructPix2Pix model, which edits a picture by instruction",
}


@dataclass(frozen=True, eq=False)
class PromptEmbeddings:
    """The text conditioning, [negative, positive] stacked on the batch when guidance is on."""

    hidden_states: np.ndarray  # (batch, tokens, features): the UNet's encoder_hidden_states
    text_embeds: np.ndarray | None = None  # (batch, projection): SDXL's pooled text embedding


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
        # As diffusers: guidance <= 1 means off; a model with a guidance embedding (LCM) takes
        # the scale as an input and never runs the unconditioned pass.
        use_guidance = parameters.guidance > 1.0 and not self.description.guidance_embedding_dim

        # 2. Encode the prompt (and the negative prompt, for classifier-free guidance), and
        # gather everything else the UNet is conditioned on.
        embeddings, warnings = self.encode_prompt(
            parameters.prompt, parameters.negative_prompt, use_guidance, cancel)
        conditioning = self.prepare_conditioning(embeddings, parameters)

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

            latents = self.denoise(latents, conditioning, parameters.guidance, use_guidance,
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
        if description.variant in VARIANT_PURPOSES:
            raise BadRequest(f"'{self.model.name}' is {VARIANT_PURPOSES[description.variant]}; "
                             f"it cannot make a picture from text alone.")
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
                      cancel: CancelToken) -> tuple[PromptEmbeddings, list[str]]:
        """Text embeddings, [negative, positive] stacked when guidance is on."""
        warnings: list[str] = []
        texts = {"prompt": prompt}
        if use_guidance:
            texts = {"negative prompt": negative_prompt, **texts}
        zero_negative = use_guidance and not negative_prompt and (
            self.description.force_zeros_for_empty_prompt)
        encoded = {}
        for label, text in texts.items():
            if label == "negative prompt" and zero_negative:
                continue  # SDXL was trained with zeros for "no negative prompt"
            encoded[label] = self.encode_text(text, label, warnings, cancel)
        if zero_negative:
            hidden, pooled = encoded["prompt"]
            zeros = None if pooled is None else np.zeros_like(pooled)
            encoded = {"negative prompt": (np.zeros_like(hidden), zeros), **encoded}
        hidden_states = np.concatenate([hidden for hidden, _ in encoded.values()])
        text_embeds = None
        if self.description.text_encoders == 2:
            text_embeds = np.concatenate([pooled for _, pooled in encoded.values()])
            text_embeds = text_embeds.astype(np.float32)
        return PromptEmbeddings(hidden_states.astype(np.float32), text_embeds), warnings

    def encode_text(self, text: str, label: str, warnings: list[str],
                    cancel: CancelToken) -> tuple[np.ndarray, np.ndarray | None]:
        """(hidden states, pooled projection or None) of one text, through every encoder.

        With two encoders (SDXL) their hidden states are joined along the features, and the
        second one's projected pooled output is the pooled embedding, as in diffusers.
        """
        tokens = self.model.tokenizer(text)
        if tokens.truncated_text:
            warnings.append(
                f"The {label} is longer than the {self.description.text_max_length - 2} "
                f"tokens the text encoder reads; this end was left out: "
                f"\"{tokens.truncated_text}\".")
        if tokens.unknown_words and tokens.known_word_count:
            warnings.append(f"The model does not know these words of the {label}, so it "
                            f"ignored them: {', '.join(tokens.unknown_words)}.")
        hidden = self._hidden_state(self.model.text_encoder, tokens.ids, [], cancel)[0]
        if self.description.text_encoders == 1:
            return hidden, None
        # The same words, tokenized again: the second tokenizer pads with its own token.
        ids_2 = self.model.tokenizer_2(text).ids
        hidden_2, pooled = self._hidden_state(self.model.text_encoder_2, ids_2, ["text_embeds"],
                                              cancel)
        return np.concatenate([hidden, hidden_2], axis=-1), pooled

    def _hidden_state(self, encoder: Session, ids: np.ndarray, extra_outputs: list[str],
                      cancel: CancelToken) -> list[np.ndarray]:
        """The hidden state the description names, then ``extra_outputs``."""
        if self.description.text_hidden_state == "last":
            name = "last_hidden_state"
        else:
            name = penultimate_output(encoder)
        ids = ids.astype(encoder.input_type("input_ids"))
        return encoder.run({"input_ids": ids}, [name, *extra_outputs], cancel)

    def prepare_conditioning(self, embeddings: PromptEmbeddings,
                             parameters: GenerationParameters) -> dict[str, np.ndarray]:
        """Every UNet input but the latents and the timestep, batched like the latents."""
        description = self.description
        conditioning = {"encoder_hidden_states": embeddings.hidden_states}
        batch = len(embeddings.hidden_states)
        if description.size_conditioning:
            # SDXL's micro-conditioning: the picture is uncropped and made at the size asked
            # for: (original height, width, crop top, left, target height, width).
            size = [parameters.height, parameters.width]
            time_ids = np.array([size + [0, 0] + size], dtype=np.float32)
            conditioning["text_embeds"] = embeddings.text_embeds
            conditioning["time_ids"] = np.repeat(time_ids, batch, axis=0)
        if description.guidance_embedding_dim:
            embedding = guidance_scale_embedding(parameters.guidance,
                                                 description.guidance_embedding_dim)
            conditioning["timestep_cond"] = np.repeat(embedding, batch, axis=0)
        return conditioning

    def prepare_latents(self, rng: np.random.Generator, parameters: GenerationParameters,
                        request: TextToImageRequest, index: int) -> np.ndarray:
        factor = self.description.vae_scale_factor
        shape = (1, self.description.latent_channels,
                 parameters.height // factor, parameters.width // factor)
        drawn = rng.standard_normal(shape, dtype=np.float32)
        if request.latents is not None:
            return np.asarray(request.latents[index : index + 1], dtype=np.float32)
        return drawn

    def denoise(self, latents: np.ndarray, conditioning: dict[str, np.ndarray], guidance: float,
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
                **conditioning,
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


def penultimate_output(encoder: Session) -> str:
    """The name of a text encoder's second-to-last hidden state.

    Encoders exported for SDXL give every hidden state as ``hidden_states.0`` (the embeddings)
    to ``hidden_states.N`` (the last layer, before the final layer norm), as optimum names them.
    """
    layers = sorted(int(name.rsplit(".", 1)[1]) for name in encoder.output_names
                    if name.startswith("hidden_states.") and name.rsplit(".", 1)[1].isdigit())
    if len(layers) < 2:
        raise ModelError("This model's text encoder does not give the hidden states it needs; "
                         "import the model again with this version of Easel.")
    return f"hidden_states.{layers[-2]}"


def guidance_scale_embedding(guidance: float, dim: int) -> np.ndarray:
    """LCM's guidance input: sinusoidal features of (guidance - 1) * 1000, shape (1, dim).

    diffusers' get_guidance_scale_embedding (after VDM), in float32 as torch computes it.
    """
    half = dim // 2
    w = np.float32(guidance - 1) * np.float32(1000.0)
    rate = np.float32(np.log(np.float64(np.float32(10000.0)))) / np.float32(half - 1)
    frequencies = np.exp((np.arange(half, dtype=np.float32) * -rate).astype(np.float64))
    angles = w * frequencies.astype(np.float32)
    embedding = np.concatenate([np.sin(angles), np.cos(angles)])
    if dim % 2:
        embedding = np.concatenate([embedding, np.zeros(1, dtype=np.float32)])
    return embedding.astype(np.float32)[np.newaxis]


def _with_seed(parameters: GenerationParameters, seed: int) -> GenerationParameters:
    return replace(parameters, seed=seed)
