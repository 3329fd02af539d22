"""One control of a request: a ControlNet, the control picture it reads, and how strongly and
when it steers (diffusers' ``controlnet_conditioning_scale``, ``control_guidance_start`` /
``_end`` and ``guess_mode``; A1111's Weight, Guidance Start / End and Control Mode)."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.errors import BadRequest
from engine.images import PictureInput

MAX_WEIGHT = 2.0  # A1111's slider stops there; more only burns the picture
MAX_CONTROLS = 4


@dataclass(frozen=True, eq=False)
class Control:
    """``controlnet`` is an installed ControlNet's folder, found by the caller (the model
    store); ``picture`` is the control picture already made (edges, a scribble, a depth map:
    ``engine.control.pictures``), any size: it is resized to the picture being made.
    ``start`` and ``end`` are shares of the steps run; ``guess_mode`` lets the ControlNet
    steer without the prompt's help (it sees only the prompt's half of the guidance batch,
    its deeper layers weigh less: A1111's "ControlNet is more important")."""

    controlnet: Path | str
    picture: PictureInput
    weight: float = 1.0
    start: float = 0.0
    end: float = 1.0
    guess_mode: bool = False

    def __post_init__(self) -> None:
        for label, value in (("weight", self.weight), ("start", self.start),
                             ("end", self.end)):
            if isinstance(value, bool) or not isinstance(value, int | float) \
                    or not math.isfinite(value):
                raise BadRequest(f"A control's {label} must be a number (got {value!r}).")
        if not 0.0 <= self.weight <= MAX_WEIGHT:
            raise BadRequest(f"A control's weight must be between 0 and {MAX_WEIGHT:g} "
                             f"(got {self.weight:g}).")
        if not 0.0 <= self.start < self.end <= 1.0:
            raise BadRequest(f"A control's start and end are shares of the steps, with "
                             f"0 ≤ start < end ≤ 1 (got {self.start:g} and {self.end:g}).")

    def steers_at(self, index: int, steps: int) -> bool:
        """Whether this control acts at step ``index`` (from 0) of ``steps``: diffusers'
        ``controlnet_keep``, which drops a step that begins before ``start`` or ends after
        ``end``."""
        return not (index / steps < self.start or (index + 1) / steps > self.end)


@dataclass(frozen=True)
class RecordedControl:
    """What a picture records of a control: names and numbers, never a path of this machine
    (the control picture is kept beside the picture by the app)."""

    controlnet: str  # the installed ControlNet's name
    hash: str  # its manifest hash, as a model's
    control: str | None  # what it reads: "canny", "depth", ... when known
    weight: float
    start: float
    end: float
    guess_mode: bool
    # The control picture's key (picture_key), so the app can keep the picture and give it
    # back (Reuse parameters); None in pictures made before it was recorded.
    picture: str | None = None


def picture_key(pixels: np.ndarray) -> str:
    """A short name for a picture's content (its size and pixels): equal pictures, equal
    keys, so a picture used again is kept once."""
    digest = hashlib.sha256(f"{pixels.shape}|{pixels.dtype}|".encode())
    digest.update(np.ascontiguousarray(pixels).tobytes())
    return digest.hexdigest()[:20]


def checked_controls(controls: Sequence[Control]) -> tuple[Control, ...]:
    """The request's controls as a tuple; one sentence when they are not controls or too
    many (each ControlNet holds a UNet's encoder half in memory)."""
    controls = tuple(controls)
    for control in controls:
        if not isinstance(control, Control):
            raise BadRequest("Each control must be an engine Control (a ControlNet, its "
                             "picture, weight, start and end).")
    if len(controls) > MAX_CONTROLS:
        raise BadRequest(f"At most {MAX_CONTROLS} controls can steer one picture "
                         f"(got {len(controls)}).")
    return controls
