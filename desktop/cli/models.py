"""The ``easel models`` commands: import, list, remove and pack installed models."""

from __future__ import annotations

import argparse
from pathlib import Path

from desktop import model_kinds
from desktop.cli import model_sources
from desktop.cli.common import add_runtime_arguments, model_store, runtime_options, say
from desktop.model_prepare import installed_line, prepare_installed
from desktop.model_sources import hf_cache
from desktop.units import size_text


def add_commands(commands: argparse._SubParsersAction) -> None:
    models = commands.add_parser("models", help="import, list and remove models")
    model_commands = models.add_subparsers(title="model commands", metavar="COMMAND")
    importing = model_commands.add_parser("import", help="import a model folder")
    importing.add_argument("source",
                           help="a Stable Diffusion 1.x, 2.x or XL model: a diffusers or ONNX "
                                "(optimum, Amuse) folder, a single-file .safetensors "
                                "checkpoint, a .ckpt/.pt/.bin file (read as plain tensors "
                                "only), or a Hugging Face repo id (owner/name) already in "
                                "the Hugging Face cache")
    importing.add_argument("--family", choices=("sd1", "sd2", "sdxl"),
                           help="the model family, checked against a checkpoint file")
    importing.add_argument("--prediction", choices=("epsilon", "v_prediction"),
                           help="what an SD 2.x checkpoint predicts (its file cannot tell)")
    importing.add_argument("--few-step", choices=("auto", "none", "turbo", "lcm"),
                           default="auto",
                           help="a few-step distilled model (default: detected from its configs)")
    importing.add_argument("--name", help="name to install it under (default: folder name)")
    importing.add_argument("--kind", choices=[kind.name for kind in model_kinds.KINDS],
                           help="what the model is, where its content could be either")
    importing.add_argument("--no-prepare", action="store_true",
                           help="leave optimising the model for this processor to its first "
                                "use (by default the import does it, so the first load is "
                                "quick)")
    add_runtime_arguments(importing)  # what it is prepared for: give generate's the same
    importing.set_defaults(run=_import_model)
    listing = model_commands.add_parser("list", help="list installed models")
    listing.set_defaults(run=_list_models)
    removing = model_commands.add_parser("remove", help="remove an installed model")
    removing.add_argument("name")
    removing.set_defaults(run=_remove_model)
    packing = model_commands.add_parser(
        "pack", help="copy installed models into a folder to share with a Ray cluster",
        description="Copy installed models (any kind, the built-in starter model too) into "
                    "FOLDER/NAME, each checked against its checksums, so FOLDER can be put on "
                    "a shared disk and read by a cluster's workers: easel batch FILE --ray "
                    "ADDRESS --ray-models FOLDER. A model already there is kept.")
    packing.add_argument("names", nargs="+", metavar="NAME", help="an installed model")
    packing.add_argument("--to", type=Path, required=True, metavar="FOLDER",
                         help="the folder to copy them into (made if missing)")
    packing.set_defaults(run=_pack_models)
    model_sources.add_commands(model_commands)
    models.set_defaults(run=lambda _: models.print_help() or 0)


def _import_model(arguments: argparse.Namespace) -> int:
    store = model_store()

    def progress(stage: str, done: int, total: int) -> None:
        say(f"[{done}/{total}] {stage}")

    distillation = None if arguments.few_step == "none" else arguments.few_step
    source, name = Path(arguments.source), arguments.name
    if hf_cache.looks_like_repo_id(arguments.source):
        cached = hf_cache.cached_snapshot(arguments.source, hint=_get_hint(arguments.source))
        say(f"Importing {arguments.source} from the Hugging Face cache ({cached.folder}).")
        source, name = cached.folder, name or arguments.source.split("/")[1]
    runtime = None if arguments.no_prepare else runtime_options(arguments)  # bad ones: now
    model = store.import_model(source, name, progress,
                               family=arguments.family, prediction=arguments.prediction,
                               distillation=distillation, kind=arguments.kind)
    outcome = None if runtime is None else prepare_installed(model, runtime, progress)
    print(installed_line(model, outcome))
    return 0


def _get_hint(repo_id: str) -> str | None:
    """What to run when ``repo_id`` is not in the cache: the catalogue's entry, if it has one."""
    from desktop.catalogue import load_catalogue

    entry = next((e for e in load_catalogue().entries if e.repo == repo_id), None)
    return f"download it with: easel models get {entry.id}" if entry else None


def _list_models(arguments: argparse.Namespace) -> int:
    store = model_store()
    models = store.installed() if store.root.is_dir() else store.list()
    if not models:
        print("No models installed. Get one with: easel models get sd-turbo "
              "(easel models catalogue lists them), or add one with: easel models import "
              "FOLDER")
        return 0
    width = max(len(model.name) for model in models)
    kind_width = max(len(model.kind) for model in models)
    for model in models:
        where = "  (built in)" if model.built_in else ""
        print(f"{model.name:<{width}}  {model.kind:<{kind_width}}  {_details(model)}  "
              f"{size_text(model.size_bytes)}{where}")
    return 0


def _details(model) -> str:
    """What sets a model apart from others of its kind: a diffusion model's family and
    prediction; an upscaler's scale (its family says "4x upscaler (ESRGAN)"); for the kinds
    that steer a model, the family they fit and what they are for."""
    if model.kind == "diffusion":
        return f"{model.family:<7}  {model.prediction_type:<12}"
    if model.kind == "upscaler" or not model.use:
        return model.family
    return f"{model.family:<7}  {model.use.split(':')[0]}"


def _pack_models(arguments: argparse.Namespace) -> int:
    from desktop.model_pack import pack_models

    def progress(stage: str, done: int, total: int) -> None:
        say(f"[{done}/{total}] {stage}")

    for model in pack_models(model_store(), arguments.names, arguments.to, progress):
        state = "packed" if model.copied else "already there"
        print(f"'{model.name}': {state} in {model.folder} ({size_text(model.size_bytes)}).")
    print(f"Give the workers this folder: easel batch FILE --ray ADDRESS --ray-models "
          f"{arguments.to}")
    return 0


def _remove_model(arguments: argparse.Namespace) -> int:
    model_store().remove(arguments.name)
    print(f"Removed '{arguments.name}'.")
    return 0
