"""What goes into the engine and what comes out: plain frozen dataclasses."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from engine.images import preview_pixels
from engine.runtime import DeviceReport

# Named in every image's metadata, so a later generator can live beside this one.
GENERATOR = "numpy-pcg64-standard-normal-float32"


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
    generator: str = GENERATOR


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
    """One denoising step done. ``preview()`` is cheap (no VAE) and only runs if asked."""

    image: int  # index of the image in the batch, from 0
    images: int
    step: int  # steps done for this image, from 1
    steps: int
    latents: np.ndarray = field(repr=False)
    preview_factors: np.ndarray | None = field(default=None, repr=False)

    def preview(self) -> np.ndarray:
        return preview_pixels(self.latents, self.preview_factors)


ProgressCallback = Callable[[Progress], None]
