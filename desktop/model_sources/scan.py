"""Find the models in another app's model folder, by their content, without changing anything.

AUTOMATIC1111 and Forge keep checkpoints in ``models/Stable-diffusion`` and upscalers in
``models/ESRGAN``; ComfyUI in ``models/checkpoints`` and ``models/upscale_models``; InvokeAI
in ``models/`` under folders of its own naming. Names and folders vary too much to trust, so
each file is told by what it holds: its tensor names (and, for .safetensors, their shapes),
read from the header or the pickle's opcodes, never by loading it. Files are opened for
reading only; importing one later reads it in place.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from engine.errors import EaselError, ModelError

DIFFUSION, UPSCALER, LORA = "diffusion", "upscaler", "lora"  # kinds Easel imports today
CONTROLNET, EMBEDDING, VAE = "controlnet", "embedding", "vae"  # not yet
UNKNOWN = "unknown"
UNSUPPORTED = "unsupported"  # a Stable Diffusion checkpoint the import would refuse
IMPORTABLE = (DIFFUSION, UPSCALER, LORA)
_UNSUPPORTED = "unsupported: "
MODEL_FILES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
_NOT_YET = {CONTROLNET: "a ControlNet", EMBEDDING: "a textual-inversion embedding",
            VAE: "a VAE on its own"}


@dataclass(frozen=True)
class FoundModel:
    path: Path
    kind: str
    size_bytes: int
    description: str  # one line: "Stable Diffusion 1.x", "SDXL inpainting", "4x upscaler", ...

    @property
    def importable(self) -> bool:
        return self.kind in IMPORTABLE


def scan_folder(folder: Path) -> list[FoundModel]:
    """Every model file and diffusers/ONNX model folder under ``folder``, by path."""
    folder = Path(folder).expanduser()
    if not folder.exists():
        raise EaselError(f"'{folder}' does not exist.")
    if not folder.is_dir():
        raise EaselError(f"'{folder}' is a file, not a folder; import it with: "
                         f"easel models import '{folder}'.")
    return sorted((found for found in _candidates(folder)), key=lambda found: str(found.path))


def app_of(folder: Path) -> str | None:
    """Which app's model folder this looks like, for the summary line (None: no idea)."""
    folder = Path(folder).expanduser()
    for root in (folder, folder / "models"):
        if (root / "Stable-diffusion").is_dir():
            return "AUTOMATIC1111 or Forge"
        if (root / "checkpoints").is_dir() or (root / "upscale_models").is_dir():
            return "ComfyUI"
    if (folder / "invokeai.yaml").is_file() or (folder / "databases" / "invokeai.db").is_file():
        return "InvokeAI"
    return None


def _candidates(folder: Path) -> Iterator[FoundModel]:
    for here, folders, files in os.walk(folder, onerror=lambda _error: None):
        here_path = Path(here)
        if _is_model_folder(here_path):
            folders.clear()  # its parts are one model, not several
            yield _describe_folder(here_path)
            continue
        folders[:] = sorted(name for name in folders if not name.startswith("."))
        for name in sorted(files):
            path = here_path / name
            if name.startswith(".") or not name.lower().endswith(MODEL_FILES):
                continue
            if path.is_symlink() and not path.exists():
                continue  # a dangling link: nothing to import
            found = _describe_file(path)
            if found is not None and found.kind != UNKNOWN:
                yield found  # files that hold no model (test data, caches) stay out


def _is_model_folder(folder: Path) -> bool:
    from engine.onnx_folder import is_onnx_model_folder

    if is_onnx_model_folder(folder):
        return True
    # A diffusers folder with weights; one with configs only (a template) is no model.
    weights = folder / "unet"
    return (folder / "model_index.json").is_file() and weights.is_dir() and any(
        path.suffix in (".safetensors", ".bin") for path in weights.iterdir())


def _describe_folder(folder: Path) -> FoundModel:
    from engine.onnx_folder import is_onnx_model_folder

    size = sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())
    form = "ONNX model folder" if is_onnx_model_folder(folder) else "diffusers folder"
    return FoundModel(folder, DIFFUSION, size, form)


def _describe_file(path: Path) -> FoundModel | None:
    from engine.export.formats import (
        PICKLE,
        SAFETENSORS,
        detect_format,
        looks_like_upscaler,
        pickled_strings,
    )

    try:
        size = path.stat().st_size
        form = detect_format(path)
    except (OSError, EaselError):
        return None  # not a model file after all (or unreadable): leave it out
    if form not in (SAFETENSORS, PICKLE):
        return None
    if looks_like_upscaler(path, form):
        return FoundModel(path, UPSCALER, size, "upscaler")
    shapes = _safetensors_shapes(path) if form == SAFETENSORS else None
    names = set(shapes) if shapes is not None else pickled_strings(path)
    kind = _kind_of(names)
    if kind == LORA:
        return FoundModel(path, LORA, size, "LoRA")
    if kind != DIFFUSION:
        description = (f"{_NOT_YET[kind]}, which Easel cannot use yet" if kind in _NOT_YET
                       else "not a model Easel recognises")
        return FoundModel(path, kind, size, description)
    description = _diffusion_description(path, names, shapes)
    if description.startswith(_UNSUPPORTED):
        return FoundModel(path, UNSUPPORTED, size, description.removeprefix(_UNSUPPORTED))
    return FoundModel(path, DIFFUSION, size, description)


def _kind_of(names: set[str]) -> str:
    from engine.export.checkpoint_family import UNET_CONV_IN

    if UNET_CONV_IN in names:
        return DIFFUSION
    if any(name.startswith(("lora_unet_", "lora_te")) or ".lora_down." in name
           or ".lora_A." in name for name in names):
        return LORA
    if any(name.startswith(("control_model.", "controlnet_cond_embedding.",
                            "input_hint_block.")) for name in names):
        return CONTROLNET
    if names & {"emb_params", "string_to_param", "clip_l", "clip_g"}:
        return EMBEDDING
    if any(name.startswith(("encoder.down", "decoder.up")) for name in names) and \
            any("quant_conv" in name for name in names):
        return VAE
    return UNKNOWN


def _diffusion_description(path: Path, names: set[str],
                           shapes: dict[str, tuple[int, ...]] | None) -> str:
    from engine.export.checkpoint_family import FAMILY_NAMES, detect_checkpoint

    if shapes is None:  # a pickle: names tell the family, its shapes are not read here
        for family, marker in (("sdxl", "conditioner.embedders.1."),
                               ("sd2", "cond_stage_model.model."),
                               ("sd1", "cond_stage_model.transformer.")):
            if any(name.startswith(marker) for name in names):
                return FAMILY_NAMES[family]
        return "Stable Diffusion checkpoint"
    try:
        kind = detect_checkpoint(shapes, path.name)
    except ModelError as unsupported:
        return _UNSUPPORTED + str(unsupported).rstrip(".")  # why the import would refuse it
    return kind.family_name + (" inpainting" if kind.inpainting else "")


def _safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]] | None:
    from engine.export.safetensors_check import check_safetensors

    try:
        return {name: info.shape for name, info in check_safetensors(path).items()}
    except ModelError:
        return {}  # a damaged header: recognised as nothing, the import would say why

