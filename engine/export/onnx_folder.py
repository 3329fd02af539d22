"""Import an ONNX Stable Diffusion folder made by another tool (optimum, Amuse/OnnxStack) as it is.

The graphs are used unchanged, never re-exported; nothing in the folder is ever run or
imported. Everything is checked before anything is written (see engine.onnx_folder for the
files, engine.export.onnx_checks for each graph), so a refusal leaves no trace. Then only what
the engine reads is copied into our layout: the four graphs with their weights, the component
configs, the tokenizer (with the ``tokenizer.json`` the engine reads), the scheduler config,
``model_index.json``, and ``easel.json``. Anything else (Amuse's ONNX tokenizer, which needs
onnxruntime-extensions' custom operators; READMEs; safety checkers) stays behind.

A graph whose weights sit in one external file gets it renamed ``model.onnx.data`` (our
layout; optimum writes ``model.onnx_data``, older tools ``weights.pb``), with the references in
the graph rewritten to match. Torch's one-file-per-tensor weights keep their names.
"""

from __future__ import annotations

import importlib
import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from engine.description import ModelDescription
from engine.errors import Cancelled, ExportUnavailable, ModelError
from engine.export import UNAVAILABLE_SENTENCE
from engine.export.onnx_checks import COMPONENT_NAMES, CheckedGraph, all_tensors, check_graph
from engine.export.onnx_description import (
    ComponentConfigs,
    describe_onnx_folder,
    read_configs,
    vocabulary_size,
)
from engine.export.weights_map import MAPPED_COMPONENTS, write_weights_map_from_names
from engine.onnx_folder import GRAPH_FILE, OnnxFolder, read_json, recognise_onnx_folder
from engine.resource_files import resource_path

Progress = Callable[[str, int, int], None]
ShouldStop = Callable[[], bool]

DATA_FILE = "model.onnx.data"
# Every SD 1.x/2.x model uses CLIP's vocabulary; only the pad token differs by family.
CLIP_TOKENIZER = resource_path("tokenizers", "clip")
PAD_TOKENS = {"sd1": "<|endoftext|>", "sd2": "!"}
SD1_SCHEDULER = resource_path("configs", "sd15", "scheduler", "scheduler_config.json")
TOKENIZER_CONFIGS = ("tokenizer_config.json", "special_tokens_map.json")
# What the import needs of the export extra: torch is not among them.
_DEPENDENCIES = ("onnx", "transformers")


def import_onnx_folder(source: Path, destination: Path, progress: Progress | None = None,
                       should_stop: ShouldStop | None = None) -> ModelDescription:
    """Check the ONNX folder ``source`` and install it into ``destination``.

    ``destination`` must be absent or an empty folder. Any refusal (ModelError, one sentence)
    comes before anything is written; if copying fails later, ``destination`` is removed (or
    emptied, when it was given). ``progress(component, number, total)`` is called as each
    graph is copied ("UNet", 2, 4); ``should_stop()`` is asked before each and a True answer
    raises Cancelled (and cleans up). The checksum manifest is the model store's job.
    """
    _require_dependencies()
    source, destination = Path(source), Path(destination)
    folder = recognise_onnx_folder(source)
    graphs = {component: check_graph(source, component) for component in folder.graphs}
    configs = read_configs(source)
    description = describe_onnx_folder(folder.name, graphs, configs)
    scheduler = _scheduler_config_file(folder, configs, description)
    _check_tokenizer_files(source)

    created = _prepare(destination)
    try:
        for number, component in enumerate(folder.graphs, start=1):
            if should_stop is not None and should_stop():
                raise Cancelled("The model import was cancelled.")
            if progress is not None:
                progress(COMPONENT_NAMES[component], number, len(folder.graphs))
            _install_graph(graphs[component], source, destination)
            if component in MAPPED_COMPONENTS:  # so a LoRA finds its weights (engine.lora)
                write_weights_map_from_names(destination / component / GRAPH_FILE)
        _install_tokenizer(source / "tokenizer", destination / "tokenizer", description,
                           vocabulary_size(configs.text_encoder))
        (destination / "scheduler").mkdir()
        shutil.copyfile(scheduler, destination / "scheduler" / "scheduler_config.json")
        _install_model_index(folder, destination)
        description.save(destination)
    except BaseException:
        _discard(destination, created)
        raise
    return description


def _require_dependencies() -> None:
    for name in _DEPENDENCIES:
        try:
            importlib.import_module(name)
        except ImportError:
            raise ExportUnavailable(UNAVAILABLE_SENTENCE) from None


# --- checks that need the description -------------------------------------------------------

def _scheduler_config_file(folder: OnnxFolder, configs: ComponentConfigs,
                           description: ModelDescription) -> Path:
    if configs.scheduler:
        return folder.folder / "scheduler" / "scheduler_config.json"
    # Amuse folders keep their scheduler settings in their own template; every SD 1.x model
    # was trained with one schedule, but SD 2.x models differ in what they predict.
    if description.family == "sd1":
        return SD1_SCHEDULER
    raise ModelError(f"'{folder.name}' has no scheduler/scheduler_config.json, so Easel cannot "
                     f"tell whether this Stable Diffusion 2 model predicts noise or velocity.")


def _check_tokenizer_files(model_folder: Path) -> None:
    folder, name = model_folder / "tokenizer", model_folder.name
    for file in TOKENIZER_CONFIGS:
        if (folder / file).exists():
            read_json(model_folder, f"tokenizer/{file}")
    if _has_vocabulary(folder) or not (folder / "tokenizer.json").exists():
        return  # tokenizer.json is made from vocab.json and merges.txt (or CLIP's own files)
    from tokenizers import Tokenizer

    try:
        Tokenizer.from_file(str(folder / "tokenizer.json"))
    except Exception as error:  # tokenizers raises plain Exception on a bad file
        raise ModelError(f"'{name}' is damaged: tokenizer/tokenizer.json cannot be "
                         f"read.") from error


def _has_vocabulary(folder: Path) -> bool:
    return (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()


# --- writing --------------------------------------------------------------------------------

def _prepare(destination: Path) -> bool:
    """Make sure ``destination`` is an empty folder; True when this import created it."""
    if not destination.exists():
        destination.mkdir(parents=True)
        return True
    if not destination.is_dir() or any(destination.iterdir()):
        raise ValueError(f"The import destination {destination} must be an empty folder.")
    return False


def _discard(destination: Path, created: bool) -> None:
    if created:
        shutil.rmtree(destination, ignore_errors=True)
        return
    for path in destination.iterdir():
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _install_graph(graph: CheckedGraph, source: Path, destination: Path) -> None:
    target = destination / graph.component
    target.mkdir()
    names = {file: file for file in graph.external_files}
    if len(names) == 1:
        names = {file: DATA_FILE for file in names}
    for original, name in names.items():
        shutil.copyfile(graph.path.parent / original, target / name)
    if all(original == name for original, name in names.items()):
        shutil.copyfile(graph.path, target / GRAPH_FILE)
    else:
        _write_renamed_references(graph.path, target / GRAPH_FILE, names)
    config = source / graph.component / "config.json"
    if config.is_file():
        shutil.copyfile(config, target / "config.json")
    check_graph(destination, graph.component)  # what is installed is what was checked


def _write_renamed_references(original: Path, target: Path, names: dict[str, str]) -> None:
    import onnx

    model = onnx.load(str(original), load_external_data=False)
    for tensor in all_tensors(model):
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = names[entry.value]
    # Serialised directly: onnx.save_model would also try to write external data itself.
    target.write_bytes(model.SerializeToString())


def _install_tokenizer(source: Path, target: Path, description: ModelDescription,
                       vocab_size: int) -> None:
    if not _has_vocabulary(source) and (source / "tokenizer.json").is_file():
        target.mkdir()
        for file in ("tokenizer.json", *TOKENIZER_CONFIGS):
            if (source / file).is_file():
                shutil.copyfile(source / file, target / file)
        return
    from engine.export.tokenizer import TOKENIZER_FILES, export_tokenizer

    origin = source if _has_vocabulary(source) else CLIP_TOKENIZER
    with tempfile.TemporaryDirectory(prefix="easel-tokenizer-") as scratch:
        # export_tokenizer names the model after the tokenizer's parent folder in its errors.
        staging = Path(scratch) / target.parent.name / "tokenizer"
        staging.mkdir(parents=True)
        for file in TOKENIZER_FILES:
            if (origin / file).is_file():
                shutil.copyfile(origin / file, staging / file)
        if origin == CLIP_TOKENIZER or not _declares_pad_token(staging):
            _set_pad_token(staging, PAD_TOKENS[description.family])
        export_tokenizer(staging, target, description.text_max_length, vocab_size)


def _declares_pad_token(folder: Path) -> bool:
    for file in TOKENIZER_CONFIGS:
        path = folder / file
        if path.is_file() and "pad_token" in json.loads(path.read_text(encoding="utf-8")):
            return True
    return False


def _set_pad_token(folder: Path, pad_token: str) -> None:
    for file in TOKENIZER_CONFIGS:
        path = folder / file
        data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        data["pad_token"] = pad_token
        path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _install_model_index(folder: OnnxFolder, destination: Path) -> None:
    target = destination / "model_index.json"
    if folder.model_index is not None:
        shutil.copyfile(folder.folder / "model_index.json", target)
        return
    # Amuse folders have none; write the one diffusers' and optimum's ONNX pipelines read.
    scheduler = json.loads((destination / "scheduler" / "scheduler_config.json")
                           .read_text(encoding="utf-8")).get("_class_name", "PNDMScheduler")
    onnx_model = ["diffusers", "OnnxRuntimeModel"]
    index = {
        "_class_name": "OnnxStableDiffusionPipeline",
        "_diffusers_version": "0.0.0",
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", scheduler],
        "text_encoder": onnx_model,
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": onnx_model,
        "vae_decoder": onnx_model,
        **({"vae_encoder": onnx_model} if "vae_encoder" in folder.graphs else {}),
    }
    target.write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
