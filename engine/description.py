"""The model description: what the engine needs to know about a model folder, as data.

Each model folder carries ``easel.json``. The pipeline reads it instead of branching on
model names, so a new family (SDXL, few-step, our starter model) is a new description,
not a new pipeline.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Literal

from engine.errors import ModelError

DESCRIPTION_FILE = "easel.json"
DESCRIPTION_FORMAT = 1

PredictionType = Literal["epsilon", "v_prediction", "flow"]
PREDICTION_TYPES = ("epsilon", "v_prediction", "flow")


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
    format: int = DESCRIPTION_FORMAT

    def __post_init__(self) -> None:
        if self.preview_rgb_factors is not None:  # JSON gives lists; keep the dataclass hashable
            rows = tuple(tuple(float(value) for value in row) for row in self.preview_rgb_factors)
            object.__setattr__(self, "preview_rgb_factors", rows)
        if self.prediction_type not in PREDICTION_TYPES:
            raise ModelError(f"The model description names an unknown prediction type "
                             f"'{self.prediction_type}'.")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

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
