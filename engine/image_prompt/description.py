"""What the engine knows about an installed IP-Adapter or CLIP vision encoder, read without
torch or onnx from the folder's ``easel.json``.

An IP-Adapter folder holds ``image_projection.onnx`` (the adapter's image projection:
``image_embeds`` or ``image_hidden_states`` -> ``ip_tokens``), ``ip_adapter.safetensors``
(each cross-attention's ``{n}.to_k_ip.weight`` / ``{n}.to_v_ip.weight``, numbered as the
adapter's file numbers them) and ``easel.json``. An image encoder folder holds ``model.onnx``
(``pixel_values`` -> ``image_embeds``, ``penultimate_hidden_states``) and ``easel.json``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from engine.errors import ModelError

DESCRIPTION_FILE = "easel.json"
IP_ADAPTER_KIND = "ip_adapter"
IMAGE_ENCODER_KIND = "image_encoder"
PROJECTION_FILE = "image_projection.onnx"
WEIGHTS_FILE = "ip_adapter.safetensors"
ENCODER_FILE = "model.onnx"
DESCRIPTION_FORMAT = 1
FAMILIES = ("sd1", "sd2", "sdxl")
VARIANTS = ("base", "plus")
# The text width of each family's UNet cross-attention, which an adapter's keys carry.
CROSS_ATTENTION_FAMILIES = {768: "sd1", 1024: "sd2", 2048: "sdxl"}
# CLIPImageProcessor's defaults, which every IP-Adapter encoder on the Hub uses.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class AdapterDescription:
    family: str  # the models it fits
    variant: str  # "base" (image_embeds -> tokens) or "plus" (hidden states -> tokens)
    tokens: int  # image tokens one picture gives
    cross_attention_dim: int  # the UNet's text width its tokens have
    encoder_width: int  # base: the encoder's projection size; plus: its hidden size
    layers: int  # cross-attentions it adds to
    source: str = ""
    licence: str | None = None

    def save(self, folder: Path) -> None:
        data = {"kind": IP_ADAPTER_KIND, "format": DESCRIPTION_FORMAT, **asdict(self)}
        _write(folder, data)


@dataclass(frozen=True)
class EncoderDescription:
    width: int  # hidden size: the penultimate hidden states' last dimension
    projection: int  # image_embeds' size
    image_size: int  # the square side it reads (224)
    tokens: int  # hidden states per picture (257: one per patch and the class token)
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    source: str = ""
    licence: str | None = None

    @property
    def summary(self) -> str:
        return f"CLIP vision encoder, width {self.width}, projection {self.projection}"

    def save(self, folder: Path) -> None:
        data = {"kind": IMAGE_ENCODER_KIND, "format": DESCRIPTION_FORMAT, **asdict(self)}
        data["mean"], data["std"] = list(self.mean), list(self.std)
        _write(folder, data)


def _write(folder: Path, data: dict) -> None:
    text = json.dumps(data, indent=2) + "\n"
    (Path(folder) / DESCRIPTION_FILE).write_text(text, encoding="utf-8")


def read_adapter_description(folder: Path) -> AdapterDescription:
    """The description of the IP-Adapter installed in ``folder``; ModelError in one sentence
    when it is not one, is damaged or has lost its files."""
    data = _read(folder, IP_ADAPTER_KIND, "an installed IP-Adapter")
    try:
        description = AdapterDescription(
            data["family"], data["variant"], _count(data["tokens"]),
            _count(data["cross_attention_dim"]), _count(data["encoder_width"]),
            _count(data["layers"]), str(data.get("source", "")), data.get("licence"))
    except (KeyError, TypeError, ValueError):
        raise _damaged("IP-Adapter", folder) from None
    if description.family not in FAMILIES or description.variant not in VARIANTS:
        raise _damaged("IP-Adapter", folder)
    _require_files(folder, "IP-Adapter", (PROJECTION_FILE, WEIGHTS_FILE))
    return description


def read_encoder_description(folder: Path) -> EncoderDescription:
    """The description of the image encoder installed in ``folder`` (ModelError as above)."""
    data = _read(folder, IMAGE_ENCODER_KIND, "an installed image encoder")
    try:
        mean, std = tuple(map(float, data["mean"])), tuple(map(float, data["std"]))
        description = EncoderDescription(
            _count(data["width"]), _count(data["projection"]), _count(data["image_size"]),
            _count(data["tokens"]), mean, std, str(data.get("source", "")),
            data.get("licence"))
    except (KeyError, TypeError, ValueError):
        raise _damaged("image encoder", folder) from None
    if len(description.mean) != 3 or len(description.std) != 3 or 0 in description.std:
        raise _damaged("image encoder", folder)
    _require_files(folder, "image encoder", (ENCODER_FILE,))
    return description


def installed_kind(folder: Path) -> str | None:
    """The kind ``easel.json`` in ``folder`` names, or None (no file, unreadable)."""
    try:
        data = json.loads((Path(folder) / DESCRIPTION_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data.get("kind") if isinstance(data, dict) else None


def _read(folder: Path, kind: str, what: str) -> dict:
    folder = Path(folder)
    try:
        data = json.loads((folder / DESCRIPTION_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"'{folder.name}' is not {what} (it has no {DESCRIPTION_FILE}).") \
            from None
    except (OSError, ValueError):
        raise ModelError(f"The description of '{folder.name}' cannot be read.") from None
    if not isinstance(data, dict) or data.get("kind") != kind:
        raise ModelError(f"'{folder.name}' is not {what}.")
    if not isinstance(data.get("format"), int) or data["format"] > DESCRIPTION_FORMAT:
        raise ModelError(f"'{folder.name}' was installed by a newer Easel; update Easel or "
                         f"import it again.")
    return data


def _count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(value)
    return value


def _damaged(what: str, folder: Path) -> ModelError:
    return ModelError(f"The description of {what} '{Path(folder).name}' is damaged.")


def _require_files(folder: Path, what: str, names: tuple[str, ...]) -> None:
    for name in names:
        if not (Path(folder) / name).is_file():
            raise ModelError(f"The {what} '{Path(folder).name}' has lost its {name}; import "
                             f"it again.")
