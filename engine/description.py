"""The model description: what the engine needs to know about a model folder, as data.

Each model folder carries ``easel.json``. The pipeline reads it instead of branching on
model names, so a new family (SDXL, few-step, our starter model) is a new description,
not a new pipeline.
"""

from __future__ import annotations

import json
import math
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Literal

from engine.errors import ModelError

DESCRIPTION_FILE = "easel.json"
# The newest format this Easel reads. A description is written as format 1 unless it uses a
# field that format 1 lacks, so models an older Easel can run still load there.
DESCRIPTION_FORMAT = 2
FORMAT_2_FIELDS = ("variant", "text_encoders", "text_hidden_state", "size_conditioning",
                   "force_zeros_for_empty_prompt", "guidance_embedding_dim", "distillation",
                   "size_multiple", "largest_native_side")

PredictionType = Literal["epsilon", "v_prediction", "flow"]
PREDICTION_TYPES = ("epsilon", "v_prediction", "flow")
# The families in the user's words, for the sentences that refuse a model of another family.
FAMILY_NAMES = {"sd1": "Stable Diffusion 1.x", "sd2": "Stable Diffusion 2.x",
                "sdxl": "Stable Diffusion XL"}
# What the UNet takes besides the noisy latents: nothing, or an image and a mask to repaint
# (9 input channels), or an image to edit by instruction (8).
VARIANTS = ("text-to-image", "inpainting", "instruct-pix2pix")
TEXT_HIDDEN_STATES = ("last", "penultimate")
DISTILLATIONS = ("turbo", "lcm")


@dataclass(frozen=True)
class ModelDescription:
    family: str  # "sd1", "sd2", ... shown to the user
    latent_channels: int
    vae_scale_factor: int  # pixels per latent cell along each side
    latent_scaling_factor: float  # the VAE's scaling_factor (0.18215 for SD 1.x / 2.x)
    prediction_type: PredictionType
    default_width: int
    default_height: int
    default_steps: int
    default_guidance: float
    default_scheduler: str
    latent_shift_factor: float = 0.0
    text_max_length: int = 77
    # Latent → RGB matrix (channels × 3) for cheap live previews; None shows raw channels.
    preview_rgb_factors: tuple[tuple[float, float, float], ...] | None = None
    variant: str = "text-to-image"
    # SDXL reads two text encoders and joins their hidden states along the features; the
    # second's projected pooled output goes to the UNet as ``text_embeds``.
    text_encoders: int = 1
    # The hidden state the UNet reads: "last" (after the final layer norm, SD 1.x / 2.x) or
    # "penultimate" (the layer before, without that norm, SDXL).
    text_hidden_state: str = "last"
    # SDXL's micro-conditioning: the UNet also takes ``text_embeds`` and ``time_ids``
    # (original size, crop corner, target size).
    size_conditioning: bool = False
    # An empty negative prompt is zeros rather than the encoded empty text (SDXL base).
    force_zeros_for_empty_prompt: bool = False
    # LCM: guidance goes into the UNet as an embedding of this size (``timestep_cond``)
    # instead of a second, unconditioned UNet pass; 0 when the UNet has no such input.
    guidance_embedding_dim: int = 0
    # A few-step model: "turbo" (adversarial diffusion distillation) or "lcm"; None otherwise.
    distillation: str | None = None
    # Widths and heights must be multiples of this many pixels (besides the VAE's cell): a
    # UNet that cannot handle odd sizes between its levels says so here (the starter: 64).
    size_multiple: int = 8
    # The largest side the model draws a scene at, in pixels; None: no limit. A model that
    # draws at a fixed scale (the starter: 32 px scenes shown at 256) fills a larger canvas
    # with copies of its subject, so a larger picture is drawn at this size, in its shape, and
    # enlarged (``engine.pipelines.native_size``).
    largest_native_side: int | None = None
    format: int = 1

    def __post_init__(self) -> None:
        if self.preview_rgb_factors is not None:  # JSON gives lists; keep the dataclass hashable
            rows = tuple(tuple(float(value) for value in row) for row in self.preview_rgb_factors)
            object.__setattr__(self, "preview_rgb_factors", rows)
        if self.prediction_type not in PREDICTION_TYPES:
            raise ModelError(f"The model description names an unknown prediction type "
                             f"'{self.prediction_type}'.")
        for name, value, allowed in (("variant", self.variant, VARIANTS),
                                     ("text hidden state", self.text_hidden_state,
                                      TEXT_HIDDEN_STATES),
                                     ("distillation", self.distillation, (None, *DISTILLATIONS))):
            if value not in allowed:
                raise ModelError(f"The model description names an unknown {name} '{value}'.")
        if not isinstance(self.size_multiple, int) or self.size_multiple < 1:
            raise ModelError(f"The model description names a size multiple of "
                             f"{self.size_multiple!r}; it must be a whole number of pixels.")
        side = self.largest_native_side
        if side is not None and (isinstance(side, bool) or not isinstance(side, int) or side < 1
                                 or side % self.pixel_multiple):
            raise ModelError(f"The model description names a largest native side of {side!r}; "
                             f"it must be a multiple of the model's {self.pixel_multiple} "
                             f"pixels.")
        if self.text_encoders not in (1, 2):
            raise ModelError(f"The model description names {self.text_encoders} text encoders; "
                             f"Easel runs models with 1 or 2.")

    @property
    def pixel_multiple(self) -> int:
        """Widths and heights the model can make are multiples of this many pixels."""
        return math.lcm(8, self.vae_scale_factor, self.size_multiple)

    def required_format(self) -> int:
        """1 unless a field that format 1 lacks is set to something other than its default."""
        defaults = {field.name: field.default for field in fields(self)
                    if field.default is not MISSING}
        uses_format_2 = any(getattr(self, name) != defaults[name] for name in FORMAT_2_FIELDS)
        return 2 if uses_format_2 else 1

    def to_json(self) -> str:
        data = {**asdict(self), "format": self.required_format()}
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    def save(self, folder: Path) -> None:
        (Path(folder) / DESCRIPTION_FILE).write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def load(cls, folder: Path) -> ModelDescription:
        path = Path(folder) / DESCRIPTION_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ModelError(f"'{Path(folder).name}' is not an Easel model folder "
                             f"(it has no {DESCRIPTION_FILE}).") from None
        except (OSError, ValueError) as error:
            raise ModelError(f"The description of model '{Path(folder).name}' "
                             f"cannot be read ({error}).") from None
        if not isinstance(data, dict) or data.get("format", 0) > DESCRIPTION_FORMAT:
            raise ModelError(f"Model '{Path(folder).name}' was made by a newer Easel; "
                             f"update Easel to use it.")
        known = {field.name for field in fields(cls)}
        try:
            return cls(**{key: value for key, value in data.items() if key in known})
        except TypeError as error:
            raise ModelError(f"The description of model '{Path(folder).name}' "
                             f"is incomplete ({error}).") from None
