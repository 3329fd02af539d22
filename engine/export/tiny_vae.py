"""Tiny VAEs (TAESD, TAESDXL) -> an installed tiny VAE (engine.tiny_vae.description).

Sources, told by their content:
- a diffusers ``AutoencoderTiny`` folder (madebyollin/taesd on the Hub): ``config.json``
  naming the class and ``diffusion_pytorch_model.safetensors``, or a ``.bin`` pickle read only
  as plain tensors in a separate process;
- madebyollin's single files (``taesd_decoder.safetensors``, ``taesdxl_decoder.pth``, ...),
  whose tensors are named by their place in a bare ``nn.Sequential`` ("1.weight",
  "3.conv.0.weight"), or a folder holding them. The decoder's layer 0 is a clamp with no
  weights, which is how a decoder file is told from an encoder file (its layer 0 is a
  convolution). The structure (blocks and channels) is read from the names and shapes, and
  every weight must find its place in diffusers' decoder.

Only the decoder is exported: ``latent_sample`` -> ``sample`` exactly as diffusers'
``AutoencoderTiny.decode(...).sample`` gives it (the decoder clamps the latents with
tanh(x / 3) * 3 and maps its [0, 1] output to [-1, 1]).

torch and diffusers are imported only inside the functions that export, so the model kinds can
recognise a source without them.
"""

from __future__ import annotations

import inspect
import json
import re
import tempfile
from pathlib import Path
from typing import Any

from engine.errors import ModelError
from engine.export.formats import PICKLE, SAFETENSORS, detect_format, pickled_strings
from engine.tiny_vae.description import (
    GRAPH_FILE,
    LATENT_CHANNELS,
    SCALE_FACTOR,
    SCALE_FACTORS,
    TinyVaeDescription,
    decide_variant,
    describe_variant,
)

CONFIG_FILE = "config.json"
TINY_CLASS = "AutoencoderTiny"
DIFFUSERS_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin",
                     "diffusion_pytorch_model.fp16.safetensors")
# madebyollin's bare Sequential names: a plain convolution ("1.weight"), a block's
# convolutions ("3.conv.0.weight") and a block's 1x1 skip when its channels change.
_BARE_NAME = re.compile(r"\d+\.(?:weight|bias|conv\.\d+\.(?:weight|bias)|skip\.weight)")
DECODER, ENCODER = "decoder", "encoder"
# TAESD's decoder and encoder are about 5 MB each in float32.
_MAX_FILE_BYTES = 64 * 1024 * 1024
# What the other tiny VAEs of the family decode, for the sentence that refuses them.
_OTHER_LATENTS = {16: "TAESD3 or TAEF1, made for SD3 and FLUX"}


# --- recognising a tiny VAE -------------------------------------------------------------------

def is_tiny_vae_folder(source: Path) -> bool:
    """A diffusers folder whose config names AutoencoderTiny (its weights are checked at
    import, so a folder that lost them is told so in a sentence)."""
    config = _json(Path(source) / CONFIG_FILE) if Path(source).is_dir() else None
    return isinstance(config, dict) and config.get("_class_name") == TINY_CLASS


def bare_role(names: set[str]) -> str | None:
    """"decoder" or "encoder" for a madebyollin file's tensor names (or a pickle's strings,
    whose other strings are not weight names), None for anything else."""
    weights = {name for name in names if name.endswith((".weight", ".bias"))}
    if not weights or not all(_BARE_NAME.fullmatch(name) for name in weights):
        return None
    if "1.weight" in weights and "0.weight" not in weights:
        return DECODER  # layer 0 is the decoder's clamp
    if "0.weight" in weights and "1.conv.0.weight" in weights:
        return ENCODER
    return None


def file_role(path: Path) -> str | None:
    """The role of the weights file ``path`` by its tensor names; None when it is not one."""
    try:
        format = detect_format(path)
    except ModelError:
        return None
    if format == SAFETENSORS:
        from engine.export.safetensors_check import check_safetensors

        try:
            return bare_role(set(check_safetensors(path)))
        except ModelError:
            return None
    return bare_role(pickled_strings(path)) if format == PICKLE else None


def files_in(folder: Path) -> dict[Path, str]:
    """The madebyollin weights files at the top of ``folder``, each with its role. Files
    larger than any tiny VAE are not read: a folder of checkpoints is asked about quickly."""
    if not Path(folder).is_dir():
        return {}
    roles = {path: file_role(path) for path in sorted(Path(folder).iterdir())
             if path.is_file() and path.stat().st_size <= _MAX_FILE_BYTES}
    return {path: role for path, role in roles.items() if role is not None}


# --- the import -------------------------------------------------------------------------------

def import_tiny_vae(source: Path, building: Path, family: str | None = None) -> None:
    """Export the tiny VAE at ``source`` (a diffusers folder, a decoder file or a folder of
    them) into ``building``: ``model.onnx`` and ``easel.json``. ``family`` ("sd1", "sd2",
    "sdxl") says which latents it decodes; without it, "xl" in a name means SDXL's."""
    source = Path(source)
    folder = source if source.is_dir() else source.parent
    decoder = None if source.is_dir() and is_tiny_vae_folder(source) else _decoder_file(source)
    if decoder is None:
        shown, names = source.name, [source.name]
    else:
        shown = decoder.name if source.is_file() else f"{source.name}/{decoder.name}"
        names = [decoder.name] + ([source.name] if source.is_dir() else [])
    # Decided before the weights are read: a wrong option is refused at once.
    variant, decided_by = decide_variant(family, names + _snapshot_repo(folder))
    with tempfile.TemporaryDirectory(prefix="easel-tiny-vae-", dir=building) as scratch:
        vae = _diffusers_vae(source, Path(scratch)) if decoder is None else \
            _single_file_vae(decoder, shown, Path(scratch))
    from engine.export.controlnet_source import _readme_licence

    export_tiny_vae(vae, building, describe_variant(
        variant, decided_by, shown, _readme_licence(folder / "README.md"),
        _decoder_scale(vae, shown)))


def export_tiny_vae(vae: Any, folder: Path, description: TinyVaeDescription) -> None:
    """Write ``folder/model.onnx`` (the decoder of the AutoencoderTiny ``vae``, whose scale
    ``description`` gives) and ``easel.json``."""
    from engine.export.graphs import VaeDecoderGraph, _noise, export_graph

    export_graph(VaeDecoderGraph(vae.float().eval()), (_noise(1, LATENT_CHANNELS, 5, 7),),
                 Path(folder) / GRAPH_FILE)
    description.save(folder)


def _decoder_file(source: Path) -> Path:
    """The one decoder file ``source`` is or holds; one sentence otherwise."""
    found = {source: file_role(source)} if source.is_file() else files_in(source)
    decoders = [path for path, role in found.items() if role == DECODER]
    if len(decoders) == 1:
        return decoders[0]
    if len(decoders) > 1:
        listed = ", ".join(path.name for path in decoders)
        raise ModelError(f"'{source.name}' holds several tiny VAE decoders ({listed}); import "
                         f"the one you want on its own.")
    if ENCODER in found.values():
        raise ModelError(f"'{source.name}' is a tiny VAE's encoder only; Easel needs the "
                         f"decoder file (such as taesd_decoder.safetensors) to decode latents.")
    raise ModelError(f"'{source.name}' is not a tiny VAE Easel can read (no TAESD decoder "
                     f"weights and no AutoencoderTiny {CONFIG_FILE}).")


# --- diffusers' AutoencoderTiny folder --------------------------------------------------------

def _diffusers_vae(folder: Path, scratch: Path) -> Any:
    """The folder's AutoencoderTiny with every decoder weight from the file (never filled at
    random); the encoder's weights are read when present but not needed."""
    from diffusers import AutoencoderTiny

    config = _json(folder / CONFIG_FILE)
    _check_latent_channels(config.get("latent_channels", LATENT_CHANNELS), folder.name)
    weights = next((folder / name for name in DIFFUSERS_WEIGHTS if (folder / name).is_file()),
                   None)
    if weights is None:
        raise ModelError(f"The tiny VAE '{folder.name}' has no weights file "
                         f"({' or '.join(DIFFUSERS_WEIGHTS[:2])}).")
    # Only the arguments the class takes: diffusers saves one more (block_out_channels) and
    # warns when it is given back.
    known = inspect.signature(AutoencoderTiny.__init__).parameters
    try:
        vae = AutoencoderTiny.from_config({key: value for key, value in config.items()
                                           if key in known})
    except (ValueError, TypeError, KeyError, IndexError, RuntimeError):
        raise ModelError(f"The {CONFIG_FILE} of tiny VAE '{folder.name}' is damaged.") from None
    tensors = _tensors(weights, scratch)
    wanted = {name for name in vae.state_dict() if name.startswith(f"{DECODER}.")}
    _load(vae, tensors, wanted, folder.name)
    return vae


# --- madebyollin's single files ---------------------------------------------------------------

def _single_file_vae(decoder: Path, shown: str, scratch: Path) -> Any:
    """An AutoencoderTiny built to the structure the decoder file's names and shapes say,
    holding its weights under diffusers' names (the bare index less one: diffusers has no
    clamp layer)."""
    from diffusers import AutoencoderTiny

    tensors = _tensors(decoder, scratch)
    first = tensors.get("1.weight")
    if first is None or first.ndim != 4:
        raise _not_fitting(shown, "1.weight")
    _check_latent_channels(int(first.shape[1]), shown)
    channels, blocks = _decoder_structure(tensors, shown)
    try:
        vae = AutoencoderTiny(latent_channels=LATENT_CHANNELS,
                              decoder_block_out_channels=channels, num_decoder_blocks=blocks,
                              encoder_block_out_channels=channels,
                              num_encoder_blocks=(1,) * len(channels))
    except (ValueError, TypeError, RuntimeError):
        raise _not_fitting(shown, "1.weight") from None
    renamed = {_diffusers_name(name): tensor for name, tensor in tensors.items()}
    wanted = {name for name in vae.state_dict() if name.startswith(f"{DECODER}.")}
    _load(vae, renamed, wanted, shown, bare=True)
    return vae


def _decoder_structure(tensors: dict, shown: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(channels of each stage, blocks in each stage) from the bare names: after the input
    convolution (layer 1), blocks ("N.conv.0.weight") until a plain convolution ("N.weight"),
    which ends the stage; the last one gives the picture."""
    layers = sorted({int(name.split(".")[0]) for name in tensors})
    channels: list[int] = []
    blocks = [0]
    for layer in layers[1:]:
        if f"{layer}.conv.0.weight" in tensors:
            blocks[-1] += 1
        elif f"{layer}.weight" in tensors and tensors[f"{layer}.weight"].ndim == 4:
            channels.append(int(tensors[f"{layer}.weight"].shape[1]))
            blocks.append(0)
        else:
            raise _not_fitting(shown, next(name for name in tensors
                                           if name.startswith(f"{layer}.")))
    if not channels or blocks[-1]:
        raise _not_fitting(shown, f"{layers[-1]}.weight")
    return tuple(channels), tuple(blocks[:-1])


def _diffusers_name(bare: str) -> str:
    index, rest = bare.split(".", 1)
    return f"{DECODER}.layers.{int(index) - 1}.{rest}"


def _bare_name(name: str) -> str:
    index, rest = name.removeprefix(f"{DECODER}.layers.").split(".", 1)
    return f"{int(index) + 1}.{rest}"


# --- weights ----------------------------------------------------------------------------------

def _tensors(weights: Path, scratch: Path) -> dict:
    """The file's tensors as float32, a pickle read only as plain tensors (in a separate
    process) and a .safetensors header checked before anything is allocated."""
    from safetensors.torch import load_file

    from engine.export.safetensors_check import check_safetensors

    format = detect_format(weights)
    if format == PICKLE:
        from engine.export.pickle_convert import pickle_to_safetensors

        converted = scratch / f"{weights.stem}.safetensors"
        pickle_to_safetensors(weights, converted, what="a tiny VAE")
        weights = converted
    elif format != SAFETENSORS:
        raise ModelError(f"'{weights.name}' is neither a .safetensors file nor a PyTorch "
                         f"checkpoint.")
    check_safetensors(weights)
    return {name: tensor.float() for name, tensor in load_file(str(weights)).items()}


def _load(vae: Any, tensors: dict, wanted: set[str], shown: str, bare: bool = False) -> None:
    """Put ``tensors`` into ``vae``: every name in ``wanted`` must be there and every tensor
    must have a place of its shape (a missing one would decode with random numbers)."""
    places = vae.state_dict()
    told = _bare_name if bare else str
    for name, tensor in tensors.items():
        if name not in places or tuple(places[name].shape) != tuple(tensor.shape):
            raise _not_fitting(shown, told(name))
    missing = sorted(wanted - set(tensors))
    if missing:
        raise ModelError(f"The tiny VAE '{shown}' lacks {len(missing)} of its decoder's "
                         f"weights (such as '{told(missing[0])}'); download it again.")
    vae.load_state_dict({**places, **tensors}, strict=True)


def _check_latent_channels(channels: object, shown: str) -> None:
    if channels == LATENT_CHANNELS:
        return
    named = _OTHER_LATENTS.get(channels) if isinstance(channels, int) else None
    which = f" ({named})" if named else ""
    raise ModelError(f"'{shown}' is a tiny VAE for {channels}-channel latents{which}; Easel's "
                     f"tiny VAEs decode the 4-channel latents of SD 1.x, 2.x and XL.")


def _decoder_scale(vae: Any, shown: str) -> int:
    """How many times the latents' side the decoder's pictures are: 8 for TAESD, as SD's
    full VAE (smaller only in tiny test models); one sentence for any other, or for pictures
    that are not 3 colours."""
    config = vae.config
    scale = int(config.upsampling_scaling_factor) ** (len(config.num_decoder_blocks) - 1)
    if scale not in SCALE_FACTORS or int(config.out_channels) != 3:
        raise ModelError(f"The tiny VAE '{shown}' makes pictures {scale} times the latents' "
                         f"side with {config.out_channels} colours, not the {SCALE_FACTOR} "
                         f"times and 3 colours of Stable Diffusion's VAE.")
    return scale


def _not_fitting(shown: str, weight: str) -> ModelError:
    return ModelError(f"'{shown}' does not fit a TAESD decoder (its weight '{weight}' has no "
                      f"place of its shape), so Easel cannot read it.")


# --- names and files --------------------------------------------------------------------------

def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _snapshot_repo(folder: Path) -> list[str]:
    """A Hugging Face cache snapshot is named by its commit; its repository names it
    ("models--madebyollin--taesdxl")."""
    resolved = folder.resolve()
    return [resolved.parent.parent.name] if resolved.parent.name == "snapshots" else []
