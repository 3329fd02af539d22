"""Decoding latents with an installed tiny VAE: the final pictures ("fast decode") or a live
preview of the first picture of a batch while the UNet works.

The tiny VAE takes the latents exactly as the UNet works in them: diffusers gives
AutoencoderTiny a scaling factor of 1.0, so its pipelines pass them unscaled (the full VAE
takes them divided by its scaling factor instead).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.errors import BadRequest, GenerationFailed
from engine.images import to_pixels, vae_pixels
from engine.manifest import verify_manifest
from engine.runtime import CancelToken, RuntimeOptions, Session, get_session
from engine.tiny_vae.description import (
    GRAPH_FILE,
    LATENT_CHANNELS,
    TinyVaeDescription,
    read_tiny_vae_description,
)

INPUT, OUTPUT = "latent_sample", "sample"


class TinyVae:
    """An installed tiny VAE, its session open."""

    def __init__(self, name: str, folder: Path, description: TinyVaeDescription,
                 session: Session) -> None:
        self.name = name
        self.folder = folder
        self.description = description
        self._session = session

    def fits(self, family: str) -> bool:
        """Whether it decodes the latents of models of ``family`` ("sd1", "sdxl")."""
        return family in self.description.families

    def decode(self, latents: np.ndarray, cancel: CancelToken | None = None) -> np.ndarray:
        """uint8 pictures (N, 8h, 8w, 3) from latents (N, 4, h, w) as the UNet works in them;
        GenerationFailed in one sentence for not-a-number or black pictures, as the full VAE's
        (engine.images.to_pixels)."""
        decoded = self._run(latents, cancel)
        return np.stack([to_pixels(decoded[index:index + 1]) for index in range(len(decoded))])

    def preview(self, latents: np.ndarray) -> np.ndarray:
        """A preview (8h, 8w, 3) uint8 of the first picture of ``latents``; a dark one is
        still a preview (early steps may be), but not-a-number is one sentence."""
        decoded = self._run(latents[:1], None)
        if not np.isfinite(decoded).all():
            raise GenerationFailed("The tiny VAE produced not-a-number values for the "
                                   "preview; try another scheduler or the CPU provider.")
        return vae_pixels(decoded)

    def _run(self, latents: np.ndarray, cancel: CancelToken | None) -> np.ndarray:
        _check_latents(latents, self.name)
        feeds = {INPUT: np.ascontiguousarray(latents, self._session.input_type(INPUT))}
        return self._session.run(feeds, [OUTPUT], cancel)[0]


def load_tiny_vae(folder: Path, runtime: RuntimeOptions | None = None,
                  name: str | None = None) -> TinyVae:
    """The tiny VAE installed in ``folder``; ModelError in one sentence when it is damaged."""
    folder = Path(folder)
    description = read_tiny_vae_description(folder)
    verify_manifest(folder)  # the cheap check, as every model's load
    session = get_session(folder / GRAPH_FILE, runtime)
    return TinyVae(name or folder.name, folder, description, session)


def _check_latents(latents: object, name: str) -> None:
    if not isinstance(latents, np.ndarray) or latents.ndim != 4 \
            or latents.shape[1] != LATENT_CHANNELS or not np.issubdtype(latents.dtype,
                                                                       np.floating):
        shape = getattr(latents, "shape", None)
        raise BadRequest(f"The tiny VAE '{name}' decodes float latents of shape (N, "
                         f"{LATENT_CHANNELS}, h, w), not {shape}.")
    if 0 in latents.shape:
        raise BadRequest(f"The tiny VAE '{name}' was given no latents to decode.")
