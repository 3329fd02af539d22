"""ONNX model folders made by other tools (Hugging Face optimum, Amuse/OnnxStack): what they are.

The two layouts share the folders the engine reads (``text_encoder/``, ``unet/``,
``vae_decoder/``, ``vae_encoder/``, ``tokenizer/``, ``scheduler/``). What differs:

- optimum writes ``model_index.json`` naming an ONNX pipeline (optimum-onnx keeps the PyTorch
  pipeline's, "StableDiffusionPipeline" with a ``vae`` entry), ``tokenizer/`` with
  ``vocab.json`` + ``merges.txt`` (often ``tokenizer.json`` too), weights above 2 GB in
  ``model.onnx_data``, and a VAE encoder giving ``latent_parameters`` (mean and log-variance,
  2 x latent channels); diffusers' older ONNX script wrote ``weights.pb`` and ``latent_sample``;
- Amuse/OnnxStack folders may have no ``model_index.json``, a tokenizer that is itself an ONNX
  graph needing onnxruntime-extensions' custom ops (never loaded: it is left behind), weights
  in ``model.onnx.data``, and a VAE encoder giving ``latent_sample`` (latent channels, already
  sampled or the mean).

This module is plain Python (no onnx, no torch): the application can tell an ONNX folder from
a diffusers one, and refuse unsafe files, without the export extra. Checking the graphs
themselves needs the ``onnx`` package and lives in ``engine.export.onnx_folder``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from engine.errors import ModelError

GRAPH_FILE = "model.onnx"
REQUIRED_GRAPHS = ("text_encoder", "unet", "vae_decoder")
OPTIONAL_GRAPHS = ("vae_encoder",)  # without it the model still makes images from text

# model_index.json classes of the ONNX Stable Diffusion 1.x/2.x pipelines: diffusers' current and
# pre-0.7 names, and optimum's. All hold the same four graphs; what the UNet is (text to image,
# inpainting with 9 input channels) is read from the graph itself, not from the class name, since
# the legacy inpainting pipeline runs an ordinary 4-channel UNet.
ONNX_PIPELINE_CLASSES = ("OnnxStableDiffusionPipeline", "StableDiffusionOnnxPipeline",
                         "ORTStableDiffusionPipeline", "OnnxStableDiffusionImg2ImgPipeline",
                         "ORTStableDiffusionImg2ImgPipeline", "OnnxStableDiffusionInpaintPipeline",
                         "ORTStableDiffusionInpaintPipeline",
                         "OnnxStableDiffusionInpaintPipelineLegacy")
# optimum-onnx (0.1 and later) keeps the PyTorch pipeline's model_index.json unchanged, so an
# ONNX export names the diffusers class it came from; the graphs beside it are what count.
EXPORTED_PIPELINE_CLASSES = ("StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline",
                             "StableDiffusionInpaintPipeline",
                             "StableDiffusionInstructPix2PixPipeline")
# The weight files of a diffusers (PyTorch) folder, whatever their format or variant.
DIFFUSERS_WEIGHTS = "diffusion_pytorch_model*"
# Libraries a model_index.json entry may name; any other is a module shipped with the model.
KNOWN_LIBRARIES = ("diffusers", "transformers", "optimum", "onnxruntime")

# Files that would be code if anything loaded them: Python, and native libraries that an
# onnxruntime session can be told to load as custom operators.
CODE_SUFFIXES = (".py", ".pyc", ".pyo", ".pyd")
LIBRARY_SUFFIXES = (".so", ".dll", ".dylib")


@dataclass(frozen=True)
class OnnxFolder:
    """A recognised ONNX model folder, not yet checked graph by graph."""

    folder: Path
    layout: str  # "optimum" (has model_index.json) or "amuse" (has none)
    model_index: dict | None
    graphs: tuple[str, ...]  # the components present, in REQUIRED_GRAPHS + OPTIONAL_GRAPHS order

    @property
    def name(self) -> str:
        return self.folder.name


def is_onnx_model_folder(folder: Path) -> bool:
    """True when ``folder`` is for this importer rather than the diffusers one, told by the
    graphs it holds, never by the pipeline class model_index.json names (optimum's exports name
    the PyTorch class they came from).

    A folder with all three graphs (text encoder, UNet, VAE decoder) is an ONNX model, even
    with PyTorch weights beside them: the graphs are used as they are, with no export and no
    torch. A diffusers folder that also carries some graphs but not all is a diffusers model,
    and a folder of graphs alone is sent here even when incomplete, so the importer can name
    the missing graph. A cheap look that picks the importer; the importer checks everything.
    """
    folder = Path(folder)
    graphs = [component for component in REQUIRED_GRAPHS
              if (folder / component / GRAPH_FILE).is_file()]
    weights = _has_diffusers_weights(folder)
    if len(graphs) == len(REQUIRED_GRAPHS):
        # SDXL graphs cannot be imported as they are (two text encoders), but its PyTorch
        # weights beside them can be exported: send such a folder to the diffusers importer.
        return not (weights and _names_sdxl(folder))
    return bool(graphs) and not weights


def _names_sdxl(folder: Path) -> bool:
    try:
        pipeline = json.loads((folder / "model_index.json").read_text()).get("_class_name")
    except (OSError, ValueError, AttributeError):
        return False
    return isinstance(pipeline, str) and "StableDiffusionXL" in pipeline


def _has_diffusers_weights(folder: Path) -> bool:
    return any(any((folder / component).glob(DIFFUSERS_WEIGHTS))
               for component in ("unet", "vae") if (folder / component).is_dir())


def recognise_onnx_folder(folder: Path) -> OnnxFolder:
    """The layout of ``folder``, or ModelError saying in one sentence why it cannot be imported.

    Also refuses any code or native library anywhere in the folder and any link that leads
    out of it, so nothing later reads a file the user did not give.
    """
    folder = Path(folder)
    name = folder.name
    if not folder.is_dir():
        raise ModelError(f"'{name}' is not a folder.")
    # The graphs first: a folder given by mistake (a home folder) is never walked whole.
    missing = [component for component in REQUIRED_GRAPHS
               if not (folder / component / GRAPH_FILE).is_file()]
    if len(missing) == len(REQUIRED_GRAPHS):
        raise ModelError(f"'{name}' is not an ONNX model folder (it has no "
                         f"unet/{GRAPH_FILE}, text_encoder/ or vae_decoder/).")
    if missing:
        raise ModelError(f"'{name}' is not a complete model: {missing[0]}/{GRAPH_FILE} "
                         f"is missing.")
    refuse_unsafe_files(folder)  # before any file is read: a link may lead anywhere
    index = _read_model_index(folder)
    graphs = REQUIRED_GRAPHS + tuple(component for component in OPTIONAL_GRAPHS
                                     if (folder / component / GRAPH_FILE).is_file())
    return OnnxFolder(folder, "amuse" if index is None else "optimum", index, graphs)


def _read_model_index(folder: Path) -> dict | None:
    if not (folder / "model_index.json").exists():
        return None  # Amuse/OnnxStack folders need none
    index = read_json(folder, "model_index.json")
    pipeline = index.get("_class_name")
    if isinstance(pipeline, list):  # ["module", "Class"] names a pipeline shipped as code
        raise ModelError(f"'{folder.name}' uses a custom pipeline; Easel never runs code that "
                         f"comes with a model.")
    if pipeline not in ONNX_PIPELINE_CLASSES + EXPORTED_PIPELINE_CLASSES:
        raise ModelError(_refusal(folder.name, pipeline))
    for component, entry in index.items():
        if component.startswith("_") or not isinstance(entry, list):
            continue
        library = entry[0] if entry else None
        if library is not None and library not in KNOWN_LIBRARIES:
            raise ModelError(f"'{folder.name}' uses a custom {component} ({library}); Easel "
                             f"never runs code that comes with a model.")
    return index


def _refusal(name: str, pipeline: object) -> str:
    if isinstance(pipeline, str) and "StableDiffusionXL" in pipeline:
        # The diffusers importer takes SDXL; this one reads one text encoder only.
        return (f"'{name}' is an ONNX {pipeline} model; Easel imports ONNX folders of "
                f"Stable Diffusion 1.x/2.x only, so import SDXL from its diffusers folder.")
    kind = f"a {pipeline}" if pipeline else "an unknown"
    return f"'{name}' is {kind} model, not an ONNX Stable Diffusion 1.x/2.x model."


def refuse_unsafe_files(folder: Path) -> None:
    """Refuse Python files, native libraries, and links leading out of ``folder``."""
    root = folder.resolve()
    for directory, subfolders, files in os.walk(folder):  # links are not followed
        for entry in sorted(subfolders) + sorted(files):
            path = Path(directory) / entry
            relative = path.relative_to(folder).as_posix()
            if path.is_symlink() and not _leads_inside(path, root):
                raise ModelError(f"'{folder.name}' has a link that leads outside the model "
                                 f"folder ({relative}); Easel imports only the folder's own "
                                 f"files.")
            lowered = entry.lower()
            if lowered.endswith(CODE_SUFFIXES):
                raise ModelError(f"'{folder.name}' ships Python code ({relative}); Easel never "
                                 f"runs code that comes with a model.")
            if lowered.endswith(LIBRARY_SUFFIXES) or ".so." in lowered:
                raise ModelError(f"'{folder.name}' ships a native library ({relative}); Easel "
                                 f"never runs code that comes with a model, custom operators "
                                 f"included.")


def _leads_inside(link: Path, root: Path) -> bool:
    try:
        return link.resolve(strict=True).is_relative_to(root)
    except (OSError, RuntimeError):  # a dangling link or a loop leads nowhere useful
        return False


def read_json(folder: Path, relative: str) -> dict:
    """The JSON object in ``folder/relative``; ModelError if unreadable or not an object.

    Any ``auto_map`` (transformers' pointer to modelling code shipped with a model) is refused.
    """
    sentence = f"'{folder.name}' is damaged: {relative} cannot be read."
    try:
        data = json.loads((folder / relative).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise ModelError(sentence) from None
    if not isinstance(data, dict):
        raise ModelError(sentence)
    if "auto_map" in data:
        raise ModelError(f"'{folder.name}' asks to run its own code ({relative} names it); "
                         f"Easel never runs code that comes with a model.")
    return data
