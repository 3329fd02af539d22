"""The tiny VAE kind: TAESD and TAESDXL, small decoders of Stable Diffusion latents for live
previews and fast decoding.

Recognised by content: a diffusers folder whose ``config.json`` names ``AutoencoderTiny``,
madebyollin's single-file weights (tensors named by a bare ``nn.Sequential``'s indices), or a
folder holding such files; an encoder file alone is recognised so that its import can say the
decoder is needed. Diffusers' full VAE (``AutoencoderKL``) names its class and its tensors
otherwise, so it is never taken for one. Exported to ONNX by engine.export.tiny_vae and
installed as ``model.onnx`` and ``easel.json`` (engine.tiny_vae.description).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from desktop.model_kinds.kind import (
    InstalledModel,
    Progress,
    ShouldStop,
    folder_size,
    kind_in_description,
    weight_names,
)
from engine.errors import ModelError
from engine.export.tiny_vae import bare_role, files_in, is_tiny_vae_folder
from engine.tiny_vae.description import (
    DESCRIPTION_FILE,
    SCALE_FACTOR,
    TINY_VAE_KIND,
    read_tiny_vae_description,
)

if TYPE_CHECKING:
    from desktop.model_store import ModelStore

name = TINY_VAE_KIND
noun = "a tiny VAE (fast previews and decoding)"
fallback_formats: tuple[str, ...] = ()


def recognises(source: Path, format: str) -> bool:
    source = Path(source)
    names = weight_names(source, format)
    if names is not None:
        return bare_role(names) is not None
    return is_tiny_vae_folder(source) or bool(files_in(source))


def needs_exporter(source: Path, format: str) -> bool:
    return True  # exported with torch


def import_into(source: Path, building: Path, progress: Progress | None,
                should_stop: ShouldStop | None, *, family: str | None = None,
                **_other_kinds_options: Any) -> None:
    """Export the tiny VAE's decoder at ``source`` to ONNX into ``building`` and describe it;
    ``family`` ("sd1", "sd2", "sdxl") says whose latents it decodes, which its weights cannot
    tell (without it, "xl" in its name means SDXL's)."""
    from engine.export.tiny_vae import import_tiny_vae

    if progress is not None:
        progress("Exporting the tiny VAE to ONNX", 1, 1)
    import_tiny_vae(Path(source), building, family)


def is_installed_folder(folder: Path) -> bool:
    return kind_in_description(Path(folder) / DESCRIPTION_FILE) == name


def describe(folder: Path) -> InstalledModel:
    folder = Path(folder)
    description = read_tiny_vae_description(folder)
    return InstalledModel(folder.name, description.summary, "", folder_size(folder), folder,
                          kind=name, use="draws live previews and fast-decodes pictures",
                          licence=description.licence)


def use_with(model: str) -> str:
    return (f"the window and easel generate as usual: {model} draws the live previews of the "
            f"models whose family it fits, and with --fast-decode it decodes their pictures")


def find_tiny_vae(store: ModelStore, family: str, model: str | None = None,
                  scale_factor: int = SCALE_FACTOR) -> Path | None:
    """The folder of the installed tiny VAE ``model``, else of the first by name that fits
    ``family`` (and the model's ``scale_factor``, 8 for every real one); None when none fits
    and none was named (it is optional). ModelError in one sentence when the named one is
    not installed or does not fit."""
    installed = store.installed(name)
    if model is None:
        return next((vae.path for vae in installed
                     if _fits(vae.path, family, scale_factor)), None)
    found = next((vae.path for vae in installed if vae.name == model), None)
    if found is None:
        names = ", ".join(vae.name for vae in installed) or "none"
        raise ModelError(f"No tiny VAE named '{model}' is installed (installed: {names}); add "
                         f"one with: easel models import FILE.")
    if not _fits(found, family, scale_factor):
        raise ModelError(f"The tiny VAE '{model}' decodes the latents of "
                         f"{', '.join(read_tiny_vae_description(found).families)} models, not "
                         f"of {family} ones.")
    return found


def _fits(folder: Path, family: str, scale_factor: int = SCALE_FACTOR) -> bool:
    try:
        description = read_tiny_vae_description(folder)
        return family in description.families and description.scale_factor == scale_factor
    except ModelError:
        return False  # a damaged one is not offered; `easel models check` says why
