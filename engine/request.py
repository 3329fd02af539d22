"""What goes into the engine and what comes out: plain frozen dataclasses."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from engine.control.control import Control, RecordedControl, checked_controls
from engine.image_prompt.prompt import ImagePrompt, RecordedImagePrompt
from engine.images import PictureInput, preview_pixels
from engine.lora.tags import checked_loras
from engine.noise import NUMPY, NUMPY_STORED_NAME, generator_name
from engine.prompt_emphasis import check_emphasis
from engine.runtime import DeviceReport

# numpy's generator as every image's metadata names it (engine.noise has the others).
GENERATOR = NUMPY_STORED_NAME


@dataclass(frozen=True, eq=False)
class TextToImageRequest:
    """A text-to-image job. ``None`` means "the model's default"."""

    prompt: str
    negative_prompt: str = ""
    width: int | None = None
    height: int | None = None
    steps: int | None = None
    guidance: float | None = None
    scheduler: str | None = None
    seed: int = 0
    count: int = 1
    # Explicit initial latents, shape (count, channels, height / f, width / f), unscaled
    # standard normal. They replace the generator's first draw for each image; the generator
    # still advances past that draw, so per-step noise stays the same for a given seed.
    latents: np.ndarray | None = None
    # How (words:1.3) weights act on CLIP models: "original" (A1111's default: weighted, then
    # rescaled to the unweighted mean) or "none" (A1111's "No norm": weighted only).
    emphasis: str = "original"
    # Where the random numbers come from: "numpy" (Easel's own), "torch-cpu" or "torch-cuda"
    # (torch.randn's on the CPU or an NVIDIA GPU, to remake seeds from torch-based tools).
    generator: str = NUMPY
    # LoRAs to make the picture with: (file, weight) pairs, files already found by the caller
    # (the app's model store); weight 0 is the model as it is, exactly.
    loras: tuple[tuple[str, float], ...] = ()
    # Textual-inversion embeddings a prompt may name: (name as written in prompts, file)
    # pairs the caller has found (the app offers every installed one of the model's family,
    # as A1111 does); a name not among them is just words.
    embeddings: tuple[tuple[str, str], ...] = ()
    # ControlNets steering the picture, each with its control picture (engine.control).
    controls: tuple[Control, ...] = ()
    # Reference pictures whose look and subject carry over (IP-Adapter: engine.image_prompt).
    image_prompts: tuple[ImagePrompt, ...] = ()

    def __post_init__(self) -> None:
        check_emphasis(self.emphasis)
        generator_name(self.generator)
        object.__setattr__(self, "loras", checked_loras(self.loras))
        object.__setattr__(self, "controls", checked_controls(self.controls))
        object.__setattr__(self, "image_prompts", tuple(self.image_prompts))


@dataclass(frozen=True, eq=False)
class ImageToImageRequest:
    """Redraw a picture, keeping its composition: diffusers' StableDiffusionImg2ImgPipeline.

    "Variations" are this request with ``count`` images and often no prompt: image i uses
    seed + i, so any one can be made again alone. The result has the picture's size.
    """

    image: PictureInput  # uint8 (H, W, 3) pixels or a PIL image
    prompt: str = ""
    negative_prompt: str = ""
    # How much to redraw, more than 0 and at most 1: the share of the steps that run, from
    # that far along the noise schedule. 1 keeps only a trace of the picture.
    strength: float = 0.75
    steps: int | None = None  # the full schedule; about steps × strength of them run
    guidance: float | None = None
    scheduler: str | None = None
    seed: int = 0
    count: int = 1
    # Explicit starting noise, shape (count, channels, H / f, W / f) with H and W rounded up
    # to the model's pixel multiple; it replaces the generator's first draw for each image, as
    # ``TextToImageRequest.latents`` does.
    noise: np.ndarray | None = None
    generator: str = NUMPY  # as TextToImageRequest.generator
    emphasis: str = "original"  # as TextToImageRequest.emphasis
    loras: tuple[tuple[str, float], ...] = ()  # as TextToImageRequest.loras
    embeddings: tuple[tuple[str, str], ...] = ()  # as TextToImageRequest.embeddings
    controls: tuple[Control, ...] = ()  # as TextToImageRequest.controls
    image_prompts: tuple[ImagePrompt, ...] = ()  # as TextToImageRequest.image_prompts

    def __post_init__(self) -> None:
        check_emphasis(self.emphasis)
        generator_name(self.generator)
        object.__setattr__(self, "loras", checked_loras(self.loras))
        object.__setattr__(self, "controls", checked_controls(self.controls))
        object.__setattr__(self, "image_prompts", tuple(self.image_prompts))


@dataclass(frozen=True, eq=False)
class InpaintRequest:
    """Repaint the masked part of a picture: diffusers' StableDiffusionInpaintPipeline, with an
    inpainting model (9-channel UNet) or, with any other model, by masked latent blending.

    Outside the mask the result is the picture's own pixels, exactly.
    """

    image: PictureInput
    # White (128 and above in grey) = repaint, black = keep; uint8 (H, W) or (H, W, 3), bool,
    # or a PIL image. A mask of another size is stretched to the picture's, and the result
    # says so.
    mask: PictureInput
    prompt: str = ""
    negative_prompt: str = ""
    strength: float = 1.0  # 1: the masked part starts from pure noise
    # Pixels inside the mask's edge over which the new picture fades in, so no seam shows.
    feather: int = 4
    steps: int | None = None
    guidance: float | None = None
    scheduler: str | None = None
    seed: int = 0
    count: int = 1
    noise: np.ndarray | None = None  # as ImageToImageRequest.noise
    generator: str = NUMPY  # as TextToImageRequest.generator
    emphasis: str = "original"  # as TextToImageRequest.emphasis
    loras: tuple[tuple[str, float], ...] = ()  # as TextToImageRequest.loras
    embeddings: tuple[tuple[str, str], ...] = ()  # as TextToImageRequest.embeddings
    controls: tuple[Control, ...] = ()  # as TextToImageRequest.controls
    image_prompts: tuple[ImagePrompt, ...] = ()  # as TextToImageRequest.image_prompts

    def __post_init__(self) -> None:
        check_emphasis(self.emphasis)
        generator_name(self.generator)
        object.__setattr__(self, "loras", checked_loras(self.loras))
        object.__setattr__(self, "controls", checked_controls(self.controls))
        object.__setattr__(self, "image_prompts", tuple(self.image_prompts))


@dataclass(frozen=True, eq=False)
class OutpaintRequest:
    """Extend the canvas by some pixels on any side and paint the new border to fit."""

    image: PictureInput
    left: int = 0
    top: int = 0
    right: int = 0
    bottom: int = 0
    prompt: str = ""
    negative_prompt: str = ""
    strength: float = 1.0
    feather: int = 4
    steps: int | None = None
    guidance: float | None = None
    scheduler: str | None = None
    seed: int = 0
    count: int = 1
    noise: np.ndarray | None = None  # as ImageToImageRequest.noise, for the larger canvas
    generator: str = NUMPY  # as TextToImageRequest.generator
    emphasis: str = "original"  # as TextToImageRequest.emphasis
    loras: tuple[tuple[str, float], ...] = ()  # as TextToImageRequest.loras
    embeddings: tuple[tuple[str, str], ...] = ()  # as TextToImageRequest.embeddings

    def __post_init__(self) -> None:
        check_emphasis(self.emphasis)
        generator_name(self.generator)
        object.__setattr__(self, "loras", checked_loras(self.loras))


@dataclass(frozen=True, eq=False)
class InstructPix2PixRequest:
    """Edit a picture by an instruction ("make it winter") with an InstructPix2Pix model:
    diffusers' StableDiffusionInstructPix2PixPipeline. The result has the picture's size.

    Two guidances: ``guidance`` pulls towards the instruction, ``image_guidance`` towards the
    picture (higher keeps more of it). As in diffusers, both are off unless guidance is above
    1 and image guidance at least 1.
    """

    image: PictureInput
    instruction: str
    guidance: float | None = None
    image_guidance: float = 1.5
    negative_prompt: str = ""
    steps: int | None = None
    scheduler: str | None = None
    seed: int = 0
    count: int = 1
    # Explicit starting noise, as ``ImageToImageRequest.noise``.
    noise: np.ndarray | None = None
    generator: str = NUMPY  # as TextToImageRequest.generator
    emphasis: str = "original"  # as TextToImageRequest.emphasis
    loras: tuple[tuple[str, float], ...] = ()  # as TextToImageRequest.loras
    embeddings: tuple[tuple[str, str], ...] = ()  # as TextToImageRequest.embeddings

    def __post_init__(self) -> None:
        check_emphasis(self.emphasis)
        generator_name(self.generator)
        object.__setattr__(self, "loras", checked_loras(self.loras))


@dataclass(frozen=True, eq=False)
class HiresFixRequest:
    """Text to image at a base size, enlarged ``scale`` times and redrawn at the larger size
    (A1111's "Hires. fix"): more pixels without the doubled subjects a model draws when asked
    for a size far above the one it was trained at.

    Each image i is made by text to image from seed + i, enlarged by the pipeline's upscaler
    (or Lanczos resampling when it has none) and refined by image to image with the same seed.
    """

    base: TextToImageRequest  # the first pass; its width and height are the base size
    # How many times larger each side becomes, more than 1 and at most 4; the final sides are
    # rounded to what the model can make.
    scale: float = 2.0
    # The refining pass's image-to-image strength. 0.4 redraws the detail an upscaler cannot
    # invent (and the softness of Lanczos) but keeps the composition, which breaks up into
    # repeated subjects above about 0.5 at sizes the model was not trained at.
    strength: float = 0.4


# A layout region: (x, y, width, height) in pixels from the top-left corner, and its prompt.
Region = tuple[tuple[int, int, int, int], str]


@dataclass(frozen=True, eq=False)
class RegionsRequest:
    """Text to image with layout regions: a global prompt for the whole canvas and boxes,
    each with its own prompt ("a moon" top left, "a horse" bottom right).

    At each step the UNet predicts the noise for every prompt; inside a box, that box's
    prediction is averaged in with ``region_weight`` against the global prompt's 1
    (MultiDiffusion's region-based generation).
    """

    prompt: str
    regions: tuple[Region, ...] | list[Region]
    negative_prompt: str = ""
    width: int | None = None
    height: int | None = None
    # How much a region's prompt outweighs the global prompt inside its box.
    region_weight: float = 4.0
    steps: int | None = None
    guidance: float | None = None
    scheduler: str | None = None
    seed: int = 0
    count: int = 1
    latents: np.ndarray | None = None  # as TextToImageRequest.latents
    generator: str = NUMPY  # as TextToImageRequest.generator
    emphasis: str = "original"  # as TextToImageRequest.emphasis
    loras: tuple[tuple[str, float], ...] = ()  # as TextToImageRequest.loras
    embeddings: tuple[tuple[str, str], ...] = ()  # as TextToImageRequest.embeddings
    controls: tuple[Control, ...] = ()  # as TextToImageRequest.controls
    image_prompts: tuple[ImagePrompt, ...] = ()  # as TextToImageRequest.image_prompts

    def __post_init__(self) -> None:
        check_emphasis(self.emphasis)
        generator_name(self.generator)
        object.__setattr__(self, "loras", checked_loras(self.loras))
        object.__setattr__(self, "controls", checked_controls(self.controls))
        object.__setattr__(self, "image_prompts", tuple(self.image_prompts))


@dataclass(frozen=True)
class GenerationParameters:
    """Everything needed to make one image again, as it was actually run."""

    prompt: str
    negative_prompt: str
    width: int
    height: int
    steps: int
    guidance: float
    scheduler: str
    seed: int
    model_name: str
    model_hash: str
    model_family: str
    generator: str = GENERATOR  # as engine.noise.stored_name names it
    emphasis: str = "original"  # as TextToImageRequest.emphasis
    # The LoRAs it was made with, as a picture names them: (name, weight, A1111's short
    # hash), weight 0 left out (engine.lora.record); never a path of this machine.
    loras: tuple[tuple[str, float, str], ...] = ()
    # The embeddings its prompts named, as a picture names them: (name, A1111's short hash)
    # (engine.embeddings.record); never a path of this machine.
    embeddings: tuple[tuple[str, str], ...] = ()
    # The ControlNets that steered it: name, hash, control, weight, start, end, guess mode
    # (engine.control.control.RecordedControl); the control pictures are the caller's to keep.
    controls: tuple[RecordedControl, ...] = ()
    # The image prompts it was made with: adapter name and hash, encoder, weight
    # (engine.image_prompt.prompt.RecordedImagePrompt); the pictures are the caller's to keep.
    image_prompts: tuple[RecordedImagePrompt, ...] = ()
    # Editing: what was done ("text_to_image", "image_to_image", "inpaint", "outpaint",
    # "instruct_pix2pix", "regions", "upscale", "hires_fix") and its settings. The source
    # picture and mask are the caller's to keep (lineage).
    operation: str = "text_to_image"
    # "Fast decode": the tiny VAE that turned the latents into the picture in place of the
    # model's own VAE (engine.tiny_vae); None when the model's own VAE did.
    decoder: str | None = None
    strength: float | None = None
    feather: int | None = None
    extend: tuple[int, int, int, int] | None = None  # outpainting: left, top, right, bottom
    image_guidance: float | None = None  # InstructPix2Pix: how closely to keep the picture
    # Layout regions: each box (x, y, width, height) with its prompt, and their weight.
    regions: tuple[Region, ...] | None = None
    region_weight: float | None = None
    # Enlarging ("upscale", "hires_fix"): how many times larger each side was made, and by
    # what: the upscaler's name or "Lanczos" (resampling, no network).
    scale: float | None = None
    upscaler: str | None = None
    # Hires fix: the (width, height) of the first pass; ``strength`` is the refining pass's.
    base_size: tuple[int, int] | None = None


@dataclass(frozen=True, eq=False)
class GeneratedImage:
    pixels: np.ndarray  # uint8, (height, width, 3)
    parameters: GenerationParameters


@dataclass(frozen=True, eq=False)
class GenerationResult:
    images: tuple[GeneratedImage, ...]
    warnings: tuple[str, ...]  # things the user should hear, e.g. a truncated prompt
    device: DeviceReport


@dataclass(frozen=True, eq=False)
class Progress:
    """One denoising step done. ``preview()`` only runs if asked: the tiny VAE's picture when
    the model has one to preview with (a fraction of a second at 512×512 on a CPU), else a
    linear map of the latents (no network, at latent resolution)."""

    image: int  # index of the image in the batch, from 0
    images: int
    step: int  # steps done for this image, from 1
    steps: int
    latents: np.ndarray = field(repr=False)
    preview_factors: np.ndarray | None = field(default=None, repr=False)
    # What is being done, in the user's words, when a job has several stages (hires fix);
    # "" for a plain denoising step.
    stage: str = ""
    # The tiny VAE's decoder (engine.tiny_vae.TinyVae.preview) when one is in use.
    preview_decoder: Callable[[np.ndarray], np.ndarray] | None = field(default=None, repr=False)
    # The pictures whose steps are made together with this one's, in one UNet call (on a GPU
    # several share each call, engine.pipelines.batching): the first one's index, and how many.
    group_start: int | None = None
    group_size: int = 1

    @property
    def done(self) -> float:
        """How much of the request's denoising is done, from 0 to 1: a group's pictures are
        all at this step."""
        start = self.image if self.group_start is None else self.group_start
        return (start + self.group_size * self.step / max(self.steps, 1)) / max(self.images, 1)

    def preview(self) -> np.ndarray:
        if self.preview_decoder is not None:
            return self.preview_decoder(self.latents)
        return preview_pixels(self.latents, self.preview_factors)


ProgressCallback = Callable[[Progress], None]
