"""Layout regions: text to image where boxes on the canvas have prompts of their own ("a moon"
top left, "a horse" bottom right) beside a global prompt, after MultiDiffusion's region-based
generation (Bar-Tal et al., 2023).

At each step the UNet predicts the noise of the whole canvas once for every distinct prompt
(and once for the negative prompt, which all of them share). Guidance is applied per prompt,
then the predictions are averaged per cell of the latent grid: the global prompt weighs 1
everywhere, each region ``region_weight`` inside its box (a cell the box covers in part, that
part of it). MultiDiffusion averages the latents each prompt's step would give; every
scheduler here steps affinely in the noise prediction, so averaging the predictions and
stepping once is the same, with one scheduler and one generator as in text to image.

The steps: check inputs, encode the prompts, weigh the regions, prepare the latents,
denoise, decode. Seeds draw as in text to image; with no region (or only regions repeating
the global prompt) the picture is text to image's exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from engine.embeddings.record import recorded_embeddings
from engine.errors import BadRequest
from engine.noise import make_generator
from engine.pipelines.diffusion import CombinePrediction, PromptEmbeddings
from engine.pipelines.guides import prepare_guides
from engine.pipelines.native_size import drawing_notes, drawn_size, enlarge
from engine.pipelines.text_to_image import TextToImagePipeline
from engine.request import (
    GeneratedImage,
    GenerationParameters,
    GenerationResult,
    ProgressCallback,
    Region,
    RegionsRequest,
)
from engine.runtime import CancelToken

# Each region costs one more UNet pass per step, so a picture with the most regions takes
# (MAX_REGIONS + 2) / 2 times as long as one without.
MAX_REGIONS = 8
MAX_REGION_WEIGHT = 100.0
# Samples per UNet call: what text to image with guidance runs, so many prompts never need
# more memory than one prompt does, and providers that like fixed shapes see the same ones.
UNET_BATCH = 2


@dataclass(frozen=True, eq=False)
class Layout:
    """A checked regions request: its parameters, the distinct prompts (the global one
    first) and the share of each prompt in each latent cell."""

    parameters: GenerationParameters
    prompts: tuple[str, ...]
    shares: np.ndarray  # float32 (prompts, 1, h, w), summing to 1 over the prompts
    warnings: tuple[str, ...]


class RegionsPipeline(TextToImagePipeline):
    def __call__(
        self,
        request: RegionsRequest,
        on_progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
    ) -> GenerationResult:
        cancel = cancel or CancelToken()
        # The request's LoRAs (none: the plain model) on the sessions, before any encoding.
        self.model.use_loras(request.loras)
        self.model.use_embeddings(request.embeddings)  # the ones its prompts may name
        # 1. Check inputs and fill in the model's defaults.
        layout = self.check_inputs(request)
        parameters = layout.parameters
        use_guidance = self.uses_guidance(parameters.guidance)
        # ControlNets and image prompts steer every prompt's prediction alike.
        guides = prepare_guides(self.model, request.controls, request.image_prompts,
                                *drawn_size(parameters), use_guidance, cancel)
        parameters = guides.recorded(parameters)

        # 2. Encode every distinct prompt once, the negative prompt once for all of them.
        embeddings, prompt_warnings = self.encode_prompts(
            layout.prompts, parameters.negative_prompt, use_guidance, cancel,
            parameters.emphasis)
        conditioning = self.prepare_conditioning(embeddings, parameters.guidance,
                                                 *drawn_size(parameters))

        # 3. Weigh the regions: guidance per prompt, then their average cell by cell.
        combine = self.region_guidance(layout.shares, parameters.guidance, use_guidance)

        images = []
        for index in range(request.count):
            seed = parameters.seed + index
            rng = make_generator(request.generator, seed)
            scheduler = self.make_scheduler(parameters.scheduler)
            scheduler.set_timesteps(parameters.steps)

            # 4. Prepare the initial latents: the generator's first draw, as text to image.
            latents = self.prepare_latents(rng, parameters, request, index)
            latents = latents * np.float32(scheduler.init_noise_sigma)

            # 5. Denoise, every prompt's prediction in each step.
            report = self.progress_reporter(on_progress, index, request.count, parameters.steps)
            latents = self.denoise(latents, conditioning, parameters.guidance, use_guidance,
                                   scheduler, rng, report, cancel, combine=combine,
                                   unet_batch=UNET_BATCH, guides=guides,
                                   notes=prompt_warnings)

            # 6. Decode (a NaN or black frame is a failure), enlarged if drawn smaller.
            pixels = self.decode_latents(latents, cancel, prompt_warnings)
            pixels = enlarge(pixels, parameters.width, parameters.height)
            images.append(GeneratedImage(pixels, replace(parameters, seed=seed)))
        warnings = (*layout.warnings, *prompt_warnings,
                    *drawing_notes(parameters, self.model.name, self.description),
                    *guides.notes, *self.model.take_notes())
        return GenerationResult(tuple(images), warnings, guides.unet(self.model).device)

    # --- checks ---------------------------------------------------------------------------

    def check_inputs(self, request: RegionsRequest) -> Layout:
        parameters = super().check_inputs(request)  # size, settings, the global prompt
        weight = request.region_weight
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not (
                math.isfinite(weight) and 0 < weight <= MAX_REGION_WEIGHT):
            raise BadRequest(f"The region weight must be more than 0 and at most "
                             f"{MAX_REGION_WEIGHT:g} (got {weight}).")
        regions = self.check_regions(request.regions, parameters.width, parameters.height)
        prompts = tuple(dict.fromkeys([parameters.prompt, *(text for _, text in regions)]))
        weights = np.zeros((len(prompts), 1, *self.latent_grid(parameters)), dtype=np.float32)
        weights[0] = 1  # the global prompt, everywhere
        warnings = []
        for number, (box, text) in enumerate(regions, start=1):
            coverage = self.box_coverage(box, parameters)
            if not (coverage == 1).any():
                cell = math.ceil(parameters.width / weights.shape[-1])
                warnings.append(f"Region {number} covers no whole cell of the model's "
                                f"{cell}-pixel grid, so its prompt shows little; draw it "
                                f"larger.")
            weights[prompts.index(text)] += np.float32(weight) * coverage
        parameters = replace(parameters, operation="regions", regions=regions,
                             region_weight=float(weight), embeddings=recorded_embeddings(
                                 request.embeddings, *prompts, parameters.negative_prompt,
                                 model=self.model))
        shares = weights / weights.sum(axis=0, keepdims=True)  # the global 1 keeps it above 0
        return Layout(parameters, prompts, shares, tuple(warnings))

    def check_regions(self, regions: object, width: int, height: int) -> tuple[Region, ...]:
        """Each region a box inside the canvas with some area, and a prompt."""
        if not isinstance(regions, list | tuple):
            raise BadRequest("The regions must be a list of (box, prompt) pairs.")
        if len(regions) > MAX_REGIONS:
            raise BadRequest(f"A picture can have at most {MAX_REGIONS} regions "
                             f"(got {len(regions)}).")
        checked = []
        for number, region in enumerate(regions, start=1):
            if not isinstance(region, list | tuple) or len(region) != 2:
                raise BadRequest(f"Region {number} must be a box and a prompt.")
            box, text = region
            if not isinstance(box, list | tuple) or len(box) != 4 or not all(
                    isinstance(value, int) and not isinstance(value, bool) for value in box):
                raise BadRequest(f"Region {number}'s box must be four whole numbers of pixels: "
                                 f"x, y, width, height (got {box!r}).")
            x, y, box_width, box_height = box
            if box_width <= 0 or box_height <= 0:
                raise BadRequest(f"Region {number}'s box has no area ({box_width}×{box_height} "
                                 f"pixels); give it a width and a height of at least 1.")
            if x < 0 or y < 0 or x + box_width > width or y + box_height > height:
                raise BadRequest(f"Region {number}'s box ({x}, {y}, {box_width}×{box_height}) "
                                 f"reaches outside the {width}×{height} canvas.")
            if not isinstance(text, str) or not text.strip():
                raise BadRequest(f"Region {number} has no prompt; say what it should show.")
            self.check_words(text)
            checked.append(((x, y, box_width, box_height), text))
        return tuple(checked)

    def latent_grid(self, parameters: GenerationParameters) -> tuple[int, int]:
        factor = self.description.vae_scale_factor
        width, height = drawn_size(parameters)
        return height // factor, width // factor

    def box_coverage(self, box: tuple[int, int, int, int],
                     parameters: GenerationParameters) -> np.ndarray:
        """The share of each latent cell inside the box, (h, w) from 0 to 1: an edge that
        falls inside a cell weighs it in part, so a box moved by a pixel moves its weight.
        Boxes are in the picture's pixels; a cell covers more of them when the picture is
        drawn smaller and enlarged."""
        rows, columns = self.latent_grid(parameters)
        x, y, box_width, box_height = box
        return np.outer(_overlap(y, y + box_height, rows, parameters.height / rows),
                        _overlap(x, x + box_width, columns, parameters.width / columns))

    # --- the prompts ------------------------------------------------------------------------

    def encode_prompts(self, prompts: tuple[str, ...], negative_prompt: str, use_guidance: bool,
                       cancel: CancelToken, emphasis: str = "original",
                       ) -> tuple[PromptEmbeddings, list[str]]:
        """[negative,] global, region prompts... stacked on the batch: the negative prompt
        once, as every prompt's guidance subtracts the same prediction. Prompts of different
        lengths (in chunks of 75 tokens) are padded with empty-prompt chunks to stack."""
        embeddings, warnings = self.encode_prompt(prompts[0], negative_prompt, use_guidance,
                                                  cancel, emphasis)
        rows = len(embeddings.hidden_states)  # [negative,] global
        hidden = list(np.split(embeddings.hidden_states, rows))
        pooled = [embeddings.text_embeds]
        for text in prompts[1:]:
            states, text_embeds = self.encode_text(text, f"region prompt \"{text}\"", warnings,
                                                   cancel, emphasis)
            hidden.append(states)
            pooled.append(text_embeds)
        text_embeds = None
        if embeddings.text_embeds is not None:
            text_embeds = np.concatenate(pooled).astype(np.float32)
        hidden = self.same_length(hidden, cancel)
        return PromptEmbeddings(np.concatenate(hidden).astype(np.float32), text_embeds), warnings

    @staticmethod
    def region_guidance(shares: np.ndarray, guidance: float,
                        use_guidance: bool) -> CombinePrediction:
        """Each prompt's guided prediction, averaged with its share in each cell."""
        def combine(prediction: np.ndarray) -> np.ndarray:
            if use_guidance:
                negative, prompts = prediction[:1], prediction[1:]
                prediction = negative + np.float32(guidance) * (prompts - negative)
            return np.sum(shares * prediction, axis=0, keepdims=True)

        return combine


def _overlap(start: int, end: int, cells: int, size: float) -> np.ndarray:
    """How much of each of ``cells`` cells of ``size`` pixels lies in [start, end), 0 to 1."""
    edges = np.arange(cells + 1) * size
    inside = np.minimum(edges[1:], end) - np.maximum(edges[:-1], start)
    return (np.clip(inside, 0, size) / size).astype(np.float32)
