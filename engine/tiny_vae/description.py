"""What the engine needs to know about an installed tiny VAE, read without torch or onnx.

An installed tiny VAE folder holds ``model.onnx`` (the decoder: ``latent_sample`` (N, 4, h, w)
-> ``sample`` (N, 3, 8h, 8w) in [-1, 1]) and ``easel.json`` marked ``"kind": "tiny_vae"``:
the families whose latents it decodes, which variant it is and how that was decided. The
weights cannot tell TAESD (SD 1.x and 2.x share one latent space) from TAESDXL, so the import
decides from the user's ``family`` option, else from the name, and the description says which.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from engine.control.description import read_installed_graph
from engine.errors import ModelError

TINY_VAE_KIND = "tiny_vae"
DESCRIPTION_FILE = "easel.json"
GRAPH_FILE = "model.onnx"
DESCRIPTION_FORMAT = 1
LATENT_CHANNELS = 4  # SD 1.x, 2.x and XL; TAESD3 and TAEF1 decode 16
SCALE_FACTOR = 8  # pixels per latent cell, a side: TAESD's, as every SD model's VAE
# What a tiny VAE may have: Stable Diffusion's 8, and the smaller ones of tiny test models.
SCALE_FACTORS = (2, 4, 8)
# The variants and the families whose latents each decodes.
VARIANT_FAMILIES = {"taesd": ("sd1", "sd2"), "taesdxl": ("sdxl",)}
FAMILY_VARIANTS = {"sd1": "taesd", "sd2": "taesd", "sdxl": "taesdxl"}
# How the variant was decided: the import's family option, "xl" in a name, or neither.
DECIDED_BY = ("option", "name", "default")


@dataclass(frozen=True)
class TinyVaeDescription:
    families: tuple[str, ...]  # ("sd1", "sd2") for TAESD, ("sdxl",) for TAESDXL
    source: str = ""
    licence: str | None = None
    variant: str = "taesd"
    decided_by: str = "default"
    latent_channels: int = LATENT_CHANNELS
    scale_factor: int = SCALE_FACTOR

    @property
    def summary(self) -> str:
        return f"tiny VAE for {', '.join(self.families)}"

    def as_json(self) -> dict:
        data = asdict(self)
        data["families"] = list(self.families)
        return {"kind": TINY_VAE_KIND, "format": DESCRIPTION_FORMAT, **data}

    def save(self, folder: Path) -> None:
        text = json.dumps(self.as_json(), indent=2) + "\n"
        (Path(folder) / DESCRIPTION_FILE).write_text(text, encoding="utf-8")


def decide_variant(family: str | None, names: list[str]) -> tuple[str, str]:
    """The variant ("taesd" or "taesdxl") and how it was decided: ``family`` when given (the
    import's option), else "xl" in any of ``names`` (the source's file and folder names)."""
    if family is not None:
        if family not in FAMILY_VARIANTS:
            raise ModelError(f"A tiny VAE fits {', '.join(FAMILY_VARIANTS)}, not the family "
                             f"'{family}'.")
        return FAMILY_VARIANTS[family], "option"
    if any("xl" in name.lower() for name in names):
        return "taesdxl", "name"
    return "taesd", "default"


def describe_variant(variant: str, decided_by: str, source: str, licence: str | None,
                     scale_factor: int = SCALE_FACTOR) -> TinyVaeDescription:
    return TinyVaeDescription(VARIANT_FAMILIES[variant], source, licence, variant, decided_by,
                              scale_factor=scale_factor)


def read_tiny_vae_description(folder: Path) -> TinyVaeDescription:
    """The description of the tiny VAE installed in ``folder``; ModelError in one sentence
    when it or its graph is missing or damaged."""
    return read_installed_graph(folder, "tiny VAE", _from_json)


def _from_json(data: object, name: str) -> TinyVaeDescription:
    damaged = ModelError(f"The description of tiny VAE '{name}' is damaged.")
    if not isinstance(data, dict) or data.get("kind") != TINY_VAE_KIND \
            or not isinstance(data.get("format"), int):
        raise damaged
    if data["format"] > DESCRIPTION_FORMAT:
        raise ModelError(f"Tiny VAE '{name}' was installed by a newer Easel; update Easel or "
                         f"import it again.")
    variant, families = data.get("variant"), data.get("families")
    licence = data.get("licence")
    if (variant not in VARIANT_FAMILIES or not isinstance(families, list)
            or tuple(families) != VARIANT_FAMILIES[variant]
            or data.get("decided_by") not in DECIDED_BY
            or data.get("latent_channels") != LATENT_CHANNELS
            or data.get("scale_factor") not in SCALE_FACTORS
            or not (licence is None or isinstance(licence, str))):
        raise damaged
    return TinyVaeDescription(tuple(families), str(data.get("source", "")), licence, variant,
                              data["decided_by"], scale_factor=data["scale_factor"])
