"""Installed IP-Adapters and image encoders as the engine runs them: descriptions checked,
sessions opened on first use and shared (engine.runtime), pictures read as CLIP reads them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image

from engine.errors import ModelError
from engine.image_prompt.description import (
    ENCODER_FILE,
    PROJECTION_FILE,
    read_adapter_description,
    read_encoder_description,
)
from engine.manifest import manifest_hash, verify_manifest
from engine.runtime import CancelToken, RuntimeOptions, Session, get_session

Description = TypeVar("Description")


def _checked(folder: Path, what: str, read: Callable[[Path], Description]) -> Description:
    """The description ``read`` finds in ``folder``, once the folder is there and its files
    match its manifest (the cheap check every model's load does)."""
    if not folder.is_dir():
        raise ModelError(f"The {what} '{folder.name}' is not installed.")
    description = read(folder)
    verify_manifest(folder)
    return description


class ImageEncoder:
    """A CLIP vision encoder: a picture -> ``image_embeds`` and the penultimate hidden states."""

    def __init__(self, folder: Path, runtime: RuntimeOptions) -> None:
        self.folder = Path(folder)
        self.name = self.folder.name
        self.description = _checked(self.folder, "image encoder", read_encoder_description)
        self.runtime = runtime

    @property
    def session(self) -> Session:
        return get_session(self.folder / ENCODER_FILE, self.runtime)

    def pixel_values(self, pixels: np.ndarray) -> np.ndarray:
        """(1, 3, S, S) as transformers' CLIPImageProcessor makes them: the short side
        resized to S (bicubic), the centre S×S kept, scaled to [0, 1] and normalised."""
        side = self.description.image_size
        height, width = pixels.shape[:2]
        short, long = sorted((height, width))
        long = int(side * long / short)
        size = (side, long) if width <= height else (long, side)  # PIL's (width, height)
        resized = np.asarray(Image.fromarray(pixels).resize(
            size, Image.Resampling.BICUBIC, reducing_gap=None))
        top, left = (resized.shape[0] - side) // 2, (resized.shape[1] - side) // 2
        cropped = resized[top:top + side, left:left + side].astype(np.float32)
        mean = np.array(self.description.mean, np.float32)
        std = np.array(self.description.std, np.float32)
        values = (cropped * np.float32(1 / 255) - mean) / std
        return values.transpose(2, 0, 1)[np.newaxis].astype(np.float32)

    def encode(self, pixel_values: np.ndarray, output: str,
               cancel: CancelToken) -> np.ndarray:
        """``image_embeds`` or ``penultimate_hidden_states`` of a batch of pixel values."""
        session = self.session
        feeds = {"pixel_values": pixel_values.astype(session.input_type("pixel_values"))}
        return session.run(feeds, [output], cancel)[0].astype(np.float32)


class IPAdapter:
    """An installed IP-Adapter: its image projection and, for the UNet edit, its folder."""

    def __init__(self, folder: Path, runtime: RuntimeOptions) -> None:
        self.folder = Path(folder)
        self.name = self.folder.name
        self.description = _checked(self.folder, "IP-Adapter", read_adapter_description)
        self.hash = manifest_hash(self.folder)
        self.runtime = runtime

    @property
    def encoder_output(self) -> str:
        """What the projection reads of the encoder: base adapters the pooled projection,
        plus ones the penultimate hidden states (diffusers' ``output_hidden_states``)."""
        return "image_embeds" if self.description.variant == "base" else (
            "penultimate_hidden_states")

    def tokens(self, encoded: np.ndarray, cancel: CancelToken) -> np.ndarray:
        """(batch, tokens, cross_attention_dim) image tokens of encoded pictures."""
        session = get_session(self.folder / PROJECTION_FILE, self.runtime)
        name = session.input_names[0]
        return session.run({name: encoded.astype(session.input_type(name))}, ["ip_tokens"],
                           cancel)[0].astype(np.float32)
