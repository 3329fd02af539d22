"""Which VAE turns a model's latents into pictures: the tiny one (TAESD) for live previews
when one fitting the model is installed, and for the final pictures only when the user asks
for "fast decode" (a setting in the window, ``--fast-decode`` on the command line).

The model's own VAE stays the default for final pictures: the tiny one is several times
faster on a CPU but blurs fine detail, so a picture it decoded says so in its metadata.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from desktop.model_store import ModelStore
from engine.errors import BadRequest
from engine.model import Model
from engine.runtime import RuntimeOptions
from engine.tiny_vae.description import FAMILY_VARIANTS


@dataclass(frozen=True)
class Decoding:
    """The user's choices: tiny-VAE previews when one fits, and fast decode."""

    previews: bool = True
    fast_decode: bool = False


def add_fast_decode_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--fast-decode", action="store_true",
                        help="decode the pictures with the installed tiny VAE (TAESD): "
                             "faster, a little softer; the picture's metadata says so")


def use_decoding(store: ModelStore, model: Model, decoding: Decoding,
                 runtime: RuntimeOptions | None = None, strict: bool = True) -> str | None:
    """Give ``model`` the installed tiny VAE that fits its family, for what ``decoding``
    asks. When fast decode is asked and none fits: BadRequest in one sentence when
    ``strict`` (a command), else the model's own VAE decodes and the sentence comes back as
    a note for the job's warnings (the window's setting applies to every model)."""
    if not (decoding.previews or decoding.fast_decode):
        model.use_tiny_vae(None)
        return None
    from desktop.model_kinds.tiny_vae import find_tiny_vae
    from engine.tiny_vae import load_tiny_vae

    family = model.description.family
    folder = find_tiny_vae(store, family, scale_factor=model.description.vae_scale_factor)
    if folder is None:
        model.use_tiny_vae(None)
        if not decoding.fast_decode:
            return None
        missing = (f"Fast decode needs a tiny VAE for {family} models, and none is "
                   f"installed; import TAESD (or TAESDXL for SDXL) with: easel models import "
                   f"FOLDER") if family in FAMILY_VARIANTS else (
            f"Fast decode works with Stable Diffusion 1.x, 2.x and XL models; there is no "
            f"tiny VAE for model '{model.name}' ({family})")
        if strict:
            raise BadRequest(missing + ".")
        return missing + "; the model's own VAE decoded these pictures."
    tiny = load_tiny_vae(folder, runtime or model.runtime, folder.name)
    model.use_tiny_vae(tiny, previews=decoding.previews, fast_decode=decoding.fast_decode)
    return None
