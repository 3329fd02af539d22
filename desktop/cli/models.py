"""The ``easel models`` commands: import, list and remove installed models."""

from __future__ import annotations

import argparse
from pathlib import Path

from desktop.cli.common import model_store, say


def add_commands(commands: argparse._SubParsersAction) -> None:
    models = commands.add_parser("models", help="import, list and remove models")
    model_commands = models.add_subparsers(title="model commands", metavar="COMMAND")
    importing = model_commands.add_parser("import", help="import a model folder")
    importing.add_argument("source", type=Path,
                           help="a Stable Diffusion 1.x, 2.x or XL model: a diffusers or ONNX "
                                "(optimum, Amuse) folder, a single-file .safetensors "
                                "checkpoint, or a .ckpt/.pt/.bin file (read as plain tensors "
                                "only)")
    importing.add_argument("--family", choices=("sd1", "sd2", "sdxl"),
                           help="the model family, checked against a checkpoint file")
    importing.add_argument("--prediction", choices=("epsilon", "v_prediction"),
                           help="what an SD 2.x checkpoint predicts (its file cannot tell)")
    importing.add_argument("--few-step", choices=("auto", "none", "turbo", "lcm"),
                           default="auto",
                           help="a few-step distilled model (default: detected from its configs)")
    importing.add_argument("--name", help="name to install it under (default: folder name)")
    importing.set_defaults(run=_import_model)
    listing = model_commands.add_parser("list", help="list installed models")
    listing.set_defaults(run=_list_models)
    removing = model_commands.add_parser("remove", help="remove an installed model")
    removing.add_argument("name")
    removing.set_defaults(run=_remove_model)
    models.set_defaults(run=lambda _: models.print_help() or 0)


def _import_model(arguments: argparse.Namespace) -> int:
    store = model_store()

    def progress(stage: str, done: int, total: int) -> None:
        say(f"[{done}/{total}] {stage}")

    distillation = None if arguments.few_step == "none" else arguments.few_step
    model = store.import_model(arguments.source, arguments.name, progress,
                               family=arguments.family, prediction=arguments.prediction,
                               distillation=distillation)
    print(f"Installed '{model.name}' ({model.family}, {_size(model.size_bytes)}).")
    return 0


def _list_models(arguments: argparse.Namespace) -> int:
    store = model_store()
    models = store.list() + (store.upscalers() if store.root.is_dir() else [])
    if not models:
        print("No models installed. Add one with: easel models import FOLDER")
        return 0
    width = max(len(model.name) for model in models)
    for model in models:
        where = "  (built in)" if model.built_in else ""
        # An upscaler's family says its scale ("4x upscaler (ESRGAN)"); it has no prediction.
        kind = model.family if model.kind == "upscaler" else \
            f"{model.family:<7}  {model.prediction_type:<12}"
        print(f"{model.name:<{width}}  {kind}  {_size(model.size_bytes)}{where}")
    return 0


def _remove_model(arguments: argparse.Namespace) -> int:
    model_store().remove(arguments.name)
    print(f"Removed '{arguments.name}'.")
    return 0


def _size(size_bytes: int) -> str:
    if size_bytes < 1000:
        return f"{size_bytes} bytes"
    for unit in ("KB", "MB", "GB"):
        size_bytes /= 1000
        if size_bytes < 1000 or unit == "GB":
            break
    return f"{size_bytes:.1f} {unit}"
