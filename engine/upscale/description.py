"""What the engine needs to know about an installed upscaler, as data.

An upscaler's folder carries ``easel.json`` like every model folder (so the model store names,
lists and removes it the same way), marked ``"kind": "upscaler"``. It is a separate, small
description because an upscaler shares nothing with a Stable Diffusion model but the folder.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from engine.errors import ModelError

DESCRIPTION_FILE = "easel.json"  # the same name as engine.description's: one per model folder
UPSCALER_KIND = "upscaler"
UPSCALER_FORMAT = 1
GRAPH_FILE = "model.onnx"
MAX_MODEL_SCALE = 8


@dataclass(frozen=True)
class UpscalerDescription:
    scale: int  # each side of the output is this many times the input's
    architecture: str  # the network, as spandrel names it ("ESRGAN"), or "ONNX" when imported
    input_name: str = "image"  # float32 (1, 3, H, W), RGB in [0, 1]
    output_name: str = "upscaled"  # float32 (1, 3, H * scale, W * scale), RGB in [0, 1]
    # Tiles must have sides that are multiples of this (ESRGAN 2x folds 2x2 pixels into
    # channels first; a traced graph cannot pad for itself at every size).
    size_multiple: int = 1
    # A graph traced at one input size takes only that size (some Amuse upscalers); None: any.
    tile_size: int | None = None
    kind: str = UPSCALER_KIND
    format: int = UPSCALER_FORMAT

    def __post_init__(self) -> None:
        if self.kind != UPSCALER_KIND:
            raise ModelError(f"The description names a {self.kind!r} model, not an upscaler.")
        if not isinstance(self.scale, int) or not 1 <= self.scale <= MAX_MODEL_SCALE:
            raise ModelError(f"The upscaler description names a scale of {self.scale!r}; Easel "
                             f"runs upscalers of 1x to {MAX_MODEL_SCALE}x.")
        if not isinstance(self.size_multiple, int) or self.size_multiple < 1:
            raise ModelError(f"The upscaler description names a size multiple of "
                             f"{self.size_multiple!r}; it must be a whole number of pixels.")
        if self.tile_size is not None and (not isinstance(self.tile_size, int)
                                           or self.tile_size < 8):
            raise ModelError(f"The upscaler description names a tile size of "
                             f"{self.tile_size!r}; it must be at least 8 pixels.")

    @property
    def summary(self) -> str:
        """A few words for lists: "4x upscaler (ESRGAN)"."""
        return f"{self.scale}x upscaler ({self.architecture})"

    def save(self, folder: Path) -> None:
        text = json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"
        (Path(folder) / DESCRIPTION_FILE).write_text(text, encoding="utf-8")

    @classmethod
    def load(cls, folder: Path) -> UpscalerDescription:
        folder = Path(folder)
        data = _read(folder)
        if data.get("kind") != UPSCALER_KIND:
            raise ModelError(f"'{folder.name}' is not an upscaler.")
        if not isinstance(data.get("format"), int) or data["format"] > UPSCALER_FORMAT:
            raise ModelError(f"Upscaler '{folder.name}' was made by a newer Easel; update Easel "
                             f"to use it.")
        known = set(cls.__dataclass_fields__)
        try:
            return cls(**{key: value for key, value in data.items() if key in known})
        except TypeError as error:
            raise ModelError(f"The description of upscaler '{folder.name}' is incomplete "
                             f"({error}).") from None


def is_upscaler_folder(folder: Path) -> bool:
    """True when ``folder`` holds an installed upscaler's description (cheap; not checked)."""
    try:
        return _read(Path(folder)).get("kind") == UPSCALER_KIND
    except ModelError:
        return False


def _read(folder: Path) -> dict:
    try:
        data = json.loads((folder / DESCRIPTION_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"'{folder.name}' is not an Easel model folder (it has no "
                         f"{DESCRIPTION_FILE}).") from None
    except (OSError, ValueError) as error:
        raise ModelError(f"The description of model '{folder.name}' cannot be read "
                         f"({error}).") from None
    if not isinstance(data, dict):
        raise ModelError(f"The description of model '{folder.name}' is damaged.")
    return data
