"""What every Stable Diffusion pipeline shares: the checks every request needs, prompt
encoding, the UNet's conditioning, the denoising loop and decoding.

diffusers repeats these helpers in each pipeline file ("Copied from ..."); here each task's
pipeline subclasses ``DiffusionPipeline`` and keeps only its own steps, under diffusers'
names, so text to image, image to image and inpainting read alike.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import takewhile
from typing import TYPE_CHECKING

import numpy as np

from engine.errors import BadRequest, ModelError
from engine.images import to_pixels
from engine.model import Model
from engine.noise import NoiseGenerator
from engine.pipelines.batching import images_per_call
from engine.prompt_chunks import make_chunks
from engine.prompt_emphasis import apply_emphasis, check_emphasis
from engine.prompt_syntax import ParsedPrompt, parse_prompt
from engine.request import Progress, ProgressCallback
from engine.runtime import CancelToken, Session
from engine.runtime.binding import CudaGraphFailed, bound_calls
from engine.runtime.errors import OutOfMemory, out_of_memory_at
from engine.schedulers import make_scheduler
from engine.schedulers.base import Scheduler
from engine.tokenizer import PromptTokenizer, truncation_warning

if TYPE_CHECKING:  # the pipelines with controls or image prompts load them; plain ones never
    from engine.pipelines.guides import Guides

# After a step, given (step from 1, latents, and for pictures that share UNet calls the
# picture's place in its group and the group's size).
StepReport = Callable[..., None]
# After a step, given (step from 1, latents), the latents to go on with (masked blending).
AfterStep = Callable[[int, np.ndarray], np.ndarray]
# Given the UNet's prediction for its whole batch, the one noise prediction the scheduler steps
# with: InstructPix2Pix's three-way guidance, layout regions' per-pixel average.
CombinePrediction = Callable[[np.ndarray], np.ndarray]

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


@dataclass(eq=False)
class ImageDenoising:
    """One picture's own denoising: its latents, its scheduler (multistep ones keep a
    history) and its generator (design.md, Seeds), what its UNet input adds and what
    follows each of its steps. ``denoise_images`` steps it in place."""

    latents: np.ndarray  # (1, channels, height, width)
    scheduler: Scheduler
    rng: NoiseGenerator
    report: StepReport
    # (rows, channels, height, width): an inpainting UNet's mask and masked picture.
    extra_channels: np.ndarray | None = None
    after_step: AfterStep | None = None
    steps_done: int = 0


@dataclass(frozen=True)
class Settings:
    """The settings every request has, with the model's defaults filled in and checked."""

    steps: int
    guidance: float
    scheduler: str


class DiffusionPipeline:
    def __init__(self, model: Model) -> None:
        self.model = model
        self.description = model.description

    # --- checks -------------------------------------------------------------------------

    def check_variant(self, allowed: tuple[str, ...], cannot: str) -> None:
        """Refuse a model whose UNet takes other inputs than this task gives it."""
        variant = self.description.variant
        if variant not in allowed:
            purpose = VARIANT_PURPOSES.get(variant, f"a {variant} model")
            raise BadRequest(f"'{self.model.name}' is {purpose}; it cannot {cannot}.")

    def check_settings(self, steps: int | None, guidance: float | None, scheduler: str | None,
                       count: int, seed: int, prompt: str,
                       prompt_may_be_empty: bool = True) -> Settings:
        """Fill in the model's defaults and refuse what no model can do, before any work."""
        description = self.description
        steps = description.default_steps if steps is None else steps
        guidance = description.default_guidance if guidance is None else guidance
        scheduler = scheduler or description.default_scheduler
        if not isinstance(steps, int) or steps < 1:
            raise BadRequest(f"Steps must be at least 1 (got {steps}).")
        if not math.isfinite(guidance) or guidance < 0:
            raise BadRequest(f"Guidance must be a number of 0 or more (got {guidance}).")
        if not 1 <= count <= MAX_COUNT:
            raise BadRequest(f"The number of images must be between 1 and {MAX_COUNT} "
                             f"(got {count}).")
        if not 0 <= seed <= MAX_SEED - count:
            raise BadRequest(f"The seed must be between 0 and {MAX_SEED - count}.")
        self.make_scheduler(scheduler)  # an unknown name is refused before any work
        self.check_words(prompt, prompt_may_be_empty)
        self.check_prompt_syntax(prompt, "prompt")
        return Settings(steps, float(guidance), scheduler)

    def check_words(self, prompt: str, allow_empty: bool = True) -> None:
        """A model with a closed word list (the starter model) refuses a prompt in which it
        knows no word, and says which words it knows. Text to image draws from the prompt
        alone, so there (``allow_empty`` False) a prompt that names nothing, empty or only
        words like "a", is refused too: it would make a random scene. Variations and regions
        may leave a prompt empty."""
        tokenizer = self.model.tokenizer
        if not tokenizer.known_words:
            return  # an open vocabulary (CLIP): every prompt means something
        tokens = tokenizer(prompt)
        if tokens.known_word_count:
            return
        if tokens.unknown_words:
            what = "knows none of the words in this prompt"
        elif not allow_empty:
            what = ("draws what a prompt names and this prompt "
                    + ("is empty" if not prompt.strip() else "names nothing it knows"))
        else:
            return
        raise BadRequest(f"The model '{self.model.name}' {what}; it knows only these words: "
                         f"{', '.join(tokenizer.known_words)}.")

    def check_prompt_syntax(self, text: str, label: str) -> ParsedPrompt | None:
        """A CLIP model reads weights and BREAK (``engine.prompt_syntax``), so bad brackets or
        weights are refused before any work; a word list (the starter) reads plain words."""
        if self.model.tokenizer.is_word_list:
            return None
        return parse_prompt(text, label)

    def check_latent_shape(self, latents: np.ndarray | None, count: int, width: int,
                           height: int, label: str) -> None:
        """Explicit starting noise must have one latent image per requested image."""
        if latents is None:
            return
        factor = self.description.vae_scale_factor
        expected = (count, self.description.latent_channels, height // factor, width // factor)
        if tuple(latents.shape) != expected:
            raise BadRequest(f"The {label} must have shape {expected} "
                             f"(got {tuple(latents.shape)}).")

    def uses_guidance(self, guidance: float) -> bool:
        # As diffusers: guidance <= 1 means off; a model with a guidance embedding (LCM) takes
        # the scale as an input and never runs the unconditioned pass.
        return guidance > 1.0 and not self.description.guidance_embedding_dim

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

    # --- the prompt ---------------------------------------------------------------------

    def encode_prompt(self, prompt: str, negative_prompt: str, use_guidance: bool,
                      cancel: CancelToken, emphasis: str = "original",
                      ) -> tuple[PromptEmbeddings, list[str]]:
        """Text embeddings, [negative, positive] stacked when guidance is on.

        A prompt and negative prompt of different lengths are made the same number of chunks
        by adding chunks of the empty prompt to the shorter (A1111's "pad prompt/negative
        prompt" option: the UNet then runs both in one batch).
        """
        check_emphasis(emphasis)
        warnings: list[str] = []
        texts = {"prompt": prompt}
        if use_guidance:
            texts = {"negative prompt": negative_prompt, **texts}
        for label, text in texts.items():  # both refused before either is encoded
            self.check_prompt_syntax(text, label)
        zero_negative = use_guidance and not negative_prompt and (
            self.description.force_zeros_for_empty_prompt)
        encoded = {}
        for label, text in texts.items():
            if label == "negative prompt" and zero_negative:
                continue  # SDXL was trained with zeros for "no negative prompt"
            encoded[label] = self.encode_text(text, label, warnings, cancel, emphasis)
        if zero_negative:
            # Zeros of any length attend to nothing, so they match A1111's one zero chunk.
            hidden, pooled = encoded["prompt"]
            zeros = None if pooled is None else np.zeros_like(pooled)
            encoded = {"negative prompt": (np.zeros_like(hidden), zeros), **encoded}
        hidden_states = self.same_length([hidden for hidden, _ in encoded.values()], cancel)
        hidden_states = np.concatenate(hidden_states)
        text_embeds = None
        if self.description.text_encoders == 2:
            text_embeds = np.concatenate([pooled for _, pooled in encoded.values()])
            text_embeds = text_embeds.astype(np.float32)
        return PromptEmbeddings(hidden_states.astype(np.float32), text_embeds), warnings

    def same_length(self, hidden_states: list[np.ndarray],
                    cancel: CancelToken) -> list[np.ndarray]:
        """Hidden states (1, tokens, features) of several texts, the shorter ones lengthened
        with chunks of the empty prompt, so they stack into one UNet batch."""
        longest = max(hidden.shape[1] for hidden in hidden_states)
        if all(hidden.shape[1] == longest for hidden in hidden_states):
            return hidden_states
        empty = self.encode_text("", "empty prompt", [], cancel)[0]
        return [np.concatenate([hidden] + [empty] * ((longest - hidden.shape[1])
                                                     // empty.shape[1]), axis=1)
                for hidden in hidden_states]

    def encode_text(self, text: str, label: str, warnings: list[str],
                    cancel: CancelToken, emphasis: str = "original",
                    ) -> tuple[np.ndarray, np.ndarray | None]:
        """(hidden states, pooled projection or None) of one text, through every encoder.

        A CLIP model reads the text in 77-token chunks, weighted (``engine.prompt_syntax``,
        ``engine.prompt_chunks``, ``engine.prompt_emphasis``), as AUTOMATIC1111's web UI does.
        With two encoders (SDXL) their hidden states are joined along the features, and the
        second one's projected pooled output of the first chunk is the pooled embedding.
        """
        parsed = self.check_prompt_syntax(text, label)
        if parsed is None:
            return self._encode_words(text, label, warnings, cancel)
        if parsed.unclosed:
            warnings.append(f"The {label} leaves '{parsed.unclosed}' open, so "
                            f"{'it weighs' if len(parsed.unclosed) == 1 else 'they weigh'} "
                            f"everything after to the end.")
        hidden = self._encode_chunks("text_encoder", self.model.tokenizer, parsed,
                                     emphasis, [], cancel)[0]
        if self.description.text_encoders == 1:
            return hidden, None
        # The same words again: the second tokenizer pads with its own token.
        hidden_2, pooled = self._encode_chunks("text_encoder_2",
                                               self.model.tokenizer_2, parsed, emphasis,
                                               ["text_embeds"], cancel)
        return np.concatenate([hidden, hidden_2], axis=-1), pooled

    def _encode_chunks(self, component: str, tokenizer: PromptTokenizer,
                       parsed: ParsedPrompt, emphasis: str, extra_outputs: list[str],
                       cancel: CancelToken) -> list[np.ndarray]:
        """The weighted hidden states of every chunk joined along the tokens (1, 77 × n,
        features), then ``extra_outputs`` of the first chunk. ``component`` names the text
        encoder that reads ``tokenizer``'s ids."""
        embeddings = self.model.embeddings
        sections = [[(tokenizer.piece_ids(piece), weight) for piece, weight in section]
                    for section in parsed.sections]
        if embeddings is not None:  # an embedding's name becomes the ids of its vectors
            sections = [[(embeddings.find(component, tokenizer.piece_ids, ids), weight)
                         for ids, weight in section] for section in sections]
        encoder = self.model.session(component)
        chunks = make_chunks(sections, tokenizer.special_tokens,
                             self.description.text_max_length - 2)
        states, first_extras = [], []
        for index, chunk in enumerate(chunks):  # one run each: imported encoders may take
            hidden, *extras = self._hidden_state(  # one text at a time
                encoder, np.array([chunk.ids]), extra_outputs, cancel)
            states.append(apply_emphasis(hidden[0], np.array(chunk.weights), emphasis))
            if index == 0:
                first_extras = extras
        return [np.concatenate(states)[np.newaxis], *first_extras]

    def _encode_words(self, text: str, label: str, warnings: list[str],
                      cancel: CancelToken) -> tuple[np.ndarray, np.ndarray | None]:
        """A word-list model's (the starter's) one 77-token input: cut at its length, with
        a warning that says what was left out, and unknown words named."""
        tokens = self.model.tokenizer(text)
        if tokens.truncated_text:
            warnings.append(truncation_warning(tokens.truncated_text, label,
                                               self.description.text_max_length - 2))
        if tokens.unknown_words and tokens.known_word_count:
            warnings.append(f"The model does not know these words of the {label}, so it "
                            f"ignored them: {', '.join(tokens.unknown_words)}.")
        hidden = self._hidden_state(self.model.text_encoder, tokens.ids, [], cancel)[0]
        if self.description.text_encoders == 1:
            return hidden, None
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

    def prepare_conditioning(self, embeddings: PromptEmbeddings, guidance: float, width: int,
                             height: int) -> dict[str, np.ndarray]:
        """Every UNet input but the latents and the timestep, batched like the latents."""
        description = self.description
        conditioning = {"encoder_hidden_states": embeddings.hidden_states}
        batch = len(embeddings.hidden_states)
        if description.size_conditioning:
            # SDXL's micro-conditioning: the picture is uncropped and made at the size asked
            # for: (original height, width, crop top, left, target height, width).
            size = [height, width]
            time_ids = np.array([size + [0, 0] + size], dtype=np.float32)
            conditioning["text_embeds"] = embeddings.text_embeds
            conditioning["time_ids"] = np.repeat(time_ids, batch, axis=0)
        if description.guidance_embedding_dim:
            embedding = guidance_scale_embedding(guidance, description.guidance_embedding_dim)
            conditioning["timestep_cond"] = np.repeat(embedding, batch, axis=0)
        return conditioning

    # --- denoising and decoding ---------------------------------------------------------

    def progress_reporter(self, on_progress: ProgressCallback | None, index: int, count: int,
                          steps: int) -> StepReport:
        """The per-step report of image ``index``, of ``steps`` steps actually run."""
        def report(step: int, latents: np.ndarray, place: int = 0, group_size: int = 1) -> None:
            if on_progress is not None:
                on_progress(Progress(index, count, step, steps, latents,
                                     self.model.preview_factors,
                                     preview_decoder=self.model.preview_decoder,
                                     group_start=index - place, group_size=group_size))

        return report

    def images_per_call(self, count: int, use_guidance: bool, latent_shape: tuple[int, ...],
                        guides: Guides | None = None) -> int:
        """How many of ``count`` pictures share a UNet call (``engine.pipelines.batching``).
        ControlNets and image prompts put the negative prompt's row first in every call, so
        with them each picture has its calls to itself."""
        if guides is not None and (guides.control is not None
                                   or guides.image_prompt is not None):
            return 1
        unet = self.model.unet if guides is None else guides.unet(self.model)
        samples = 2 if use_guidance else 1
        return images_per_call(self.model.runtime.image_batch, unet.device.in_use, count,
                               samples * latent_shape[-2] * latent_shape[-1])

    def denoise(self, latents: np.ndarray, conditioning: dict[str, np.ndarray], guidance: float,
                use_guidance: bool, scheduler: Scheduler, rng: np.random.Generator,
                report: StepReport, cancel: CancelToken, *, begin: int = 0,
                extra_channels: np.ndarray | None = None,
                after_step: AfterStep | None = None,
                combine: CombinePrediction | None = None,
                unet_batch: int | None = None,
                guides: Guides | None = None,
                notes: list[str] | None = None) -> np.ndarray:
        """One picture's denoising (``denoise_images`` with that picture alone): its latents
        after the scheduler's timesteps from ``begin`` (image to image starts partway).

        ``extra_channels`` (batched like the UNet input) are joined to the scaled latents on
        the channel axis: an inpainting UNet reads the mask and the masked picture there.
        ``after_step`` may replace the latents after each step (masked latent blending).
        """
        image = ImageDenoising(latents, scheduler, rng, report, extra_channels, after_step)
        (done,) = self.denoise_images([image], conditioning, guidance, use_guidance, cancel,
                                      begin=begin, combine=combine, unet_batch=unet_batch,
                                      guides=guides, notes=notes)
        return done.latents

    def denoise_images(self, images: Sequence[ImageDenoising],
                       conditioning: dict[str, np.ndarray], guidance: float,
                       use_guidance: bool, cancel: CancelToken, *, per_call: int = 1,
                       begin: int = 0, combine: CombinePrediction | None = None,
                       unet_batch: int | None = None, guides: Guides | None = None,
                       notes: list[str] | None = None) -> Iterator[ImageDenoising]:
        """Denoise the pictures of one request (their timesteps are the same), ``per_call``
        of them in each UNet call, and yield each, in order, when its last step is done.

        ``combine`` replaces classifier-free guidance: the UNet then runs each picture's
        latents once per row of the conditioning, and ``combine`` turns that picture's
        prediction into one. ``unet_batch`` caps the samples of one UNet call, so many
        prompts never need more memory than that many. ``guides`` add their ControlNets'
        residuals and image tokens to every UNet call, and choose the UNet that takes them
        (``engine.pipelines.guides``); with them ``per_call`` must be 1.

        Out of memory with several pictures a call halves them and goes on from the step
        that failed (nothing done is lost); with one picture it is one sentence with a size
        that would fit. What the user should know of it (fewer pictures a call, CUDA graphs
        given up) is added to ``notes``.
        """
        waiting = list(images)
        while waiting:
            # Pictures halved after running out of memory are partway: they go on together.
            group = list(takewhile(lambda image: image.steps_done == waiting[0].steps_done,
                                   waiting[:per_call]))
            try:
                self._denoise_group(group, conditioning, guidance, use_guidance, cancel,
                                    begin, combine, unet_batch, guides, notes)
            except OutOfMemory as error:
                if len(group) == 1:
                    factor = self.description.vae_scale_factor
                    height, width = group[0].latents.shape[-2:]
                    raise out_of_memory_at(error.device, width * factor,
                                           height * factor) from error
                per_call = len(group) // 2
                if notes is not None:
                    notes.append(f"Out of memory with {len(group)} pictures in one UNet call "
                                 f"on {error.device}; made {per_call} at a time instead.")
                continue
            del waiting[:len(group)]
            yield from group

    def _denoise_group(self, group: list[ImageDenoising], conditioning: dict[str, np.ndarray],
                       guidance: float, use_guidance: bool, cancel: CancelToken, begin: int,
                       combine: CombinePrediction | None, unet_batch: int | None,
                       guides: Guides | None, notes: list[str] | None) -> None:
        """The steps left to ``group``'s pictures, which share each UNet call: row r of
        picture j's input is sample r × pictures + j, as ``np.repeat`` batches the
        conditioning (guidance: [negatives..., positives...]). Each picture's scheduler
        steps with its own rows of the prediction and draws from its own generator."""
        unet = self.model.unet if guides is None else guides.unet(self.model)
        timestep_type = unet.input_type("timestep")
        rows = 2 if use_guidance else 1
        if combine is not None:
            rows = len(conditioning["encoder_hidden_states"])
        count = len(group)
        constants = {name: np.repeat(value, count, axis=0)
                     for name, value in conditioning.items()}
        calls = bound_calls(unet, constants, unet_batch)
        timesteps = group[0].scheduler.timesteps[begin:]
        for index in range(group[0].steps_done, len(timesteps)):
            cancel.raise_if_cancelled()
            timestep = timesteps[index]
            # Guidance runs negative and positive in one call.
            samples = [image.scheduler.scale_model_input(
                np.concatenate([image.latents] * rows), timestep) for image in group]
            feeds = {
                "sample": _by_rows(samples).astype(np.float32),
                "timestep": np.full((rows * count,), timestep, dtype=timestep_type),
            }
            if guides is not None:  # before the extra channels: ControlNets read four
                feeds.update(guides.feeds(index, len(timesteps), {**feeds, **constants},
                                          unet, cancel))
            if group[0].extra_channels is not None:
                extra = _by_rows([image.extra_channels for image in group])
                feeds["sample"] = np.concatenate([feeds["sample"], extra.astype(np.float32)],
                                                 axis=1)
            try:
                prediction = calls(feeds, cancel)
            except CudaGraphFailed as failure:
                # Said, never silent; the same call again, without CUDA graphs.
                self.model.stop_cuda_graph(failure.reason)
                if notes is not None:
                    notes.append(failure.reason)
                unet = self.model.unet if guides is None else guides.unet(self.model)
                calls = bound_calls(unet, constants, unet_batch)
                prediction = calls(feeds, cancel)
            prediction = prediction.reshape(rows, count, *prediction.shape[1:])
            for number, image in enumerate(group):
                noise_pred = prediction[:, number]
                if combine is not None:
                    noise_pred = combine(noise_pred)
                elif use_guidance:
                    negative, positive = noise_pred[:1], noise_pred[1:]
                    noise_pred = negative + np.float32(guidance) * (positive - negative)
                image.latents = image.scheduler.step(noise_pred, timestep, image.latents,
                                                     image.rng)
                if image.after_step is not None:
                    image.latents = image.after_step(index + 1, image.latents)
                image.steps_done = index + 1
            for place, image in enumerate(group):
                image.report(index + 1, image.latents, place, count)

    @property
    def decoder_name(self) -> str | None:
        """The tiny VAE that decodes the final pictures ("fast decode"), for their metadata;
        None when the model's own VAE does."""
        fast = self.model.fast_decoder
        return None if fast is None else fast.name

    def decode_latents(self, latents: np.ndarray, cancel: CancelToken,
                       notes: list[str] | None = None) -> np.ndarray:
        """uint8 (H, W, 3) pixels; a NaN or black frame is a failure, never a picture. An
        fp16 VAE decoder that overflows decodes again in fp32 (``Model.decode``), and says
        so once in ``notes``."""
        cancel.raise_if_cancelled()
        if self.model.fast_decoder is not None:  # it reads the latents as the UNet made them
            return self.model.fast_decoder.decode(latents, cancel)[0]
        description = self.description
        latents = latents / np.float32(description.latent_scaling_factor)
        latents = latents + np.float32(description.latent_shift_factor)
        decoded, warning = self.model.decode(latents.astype(np.float32), cancel)
        if warning is not None and notes is not None:
            notes.append(warning)
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


def _by_rows(parts: list[np.ndarray]) -> np.ndarray:
    """Each picture's (rows, ...) as one UNet batch, row by row: row r of picture j at
    r × pictures + j (one picture: its rows as they are)."""
    return np.stack(parts, axis=1).reshape(-1, *parts[0].shape[1:])
