"""The ``easel`` command: import models, make pictures, browse the gallery and history.

Every failure the user can cause ends in one sentence on stderr and a non-zero exit; nothing
is left half-written (models are built aside and moved in, images are written atomically).
"""

from __future__ import annotations

import argparse
import secrets
import sqlite3
import sys
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

from desktop import doctor as desktop_doctor
from desktop.cli_common import (
    HEIGHT_HELP,
    WIDTH_HELP,
    add_runtime_arguments,
    model_store,
    open_library,
    output_paths,
    progress_printer,
    run_cancellable,
    runtime_options,
    say,
    say_device,
)
from desktop.cli_edit import add_edit_commands
from desktop.cli_upscale import add_upscale_commands, chosen_upscaler
from desktop.image_files import save_png
from desktop.library import ImageEntry
from engine.errors import BadRequest, Cancelled, EaselError
from engine.model import Model, load_model
from engine.pipelines.hires_fix import HiresFixPipeline
from engine.pipelines.text_to_image import TextToImagePipeline
from engine.request import HiresFixRequest, TextToImageRequest
from engine.schedulers import DISTILLED_SCHEDULER_NAMES, SCHEDULER_NAMES

EXIT_ERROR = 1
EXIT_CANCELLED = 130


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    arguments = parser.parse_args(argv)
    if not hasattr(arguments, "run"):
        return _open_window()
    try:
        return arguments.run(arguments)
    except Cancelled:
        say("Cancelled; nothing was saved.")
        return EXIT_CANCELLED
    except KeyboardInterrupt:
        say("Interrupted; nothing was saved.")
        return EXIT_CANCELLED
    except EaselError as error:
        say(f"error: {error}")
        return EXIT_ERROR
    except sqlite3.Error as error:  # the library's database, beyond what it can repair
        say(f"error: The library database could not be used ({error}).")
        return EXIT_ERROR


def _open_window(picture: Path | None = None) -> int:
    """``easel`` with no command opens the desktop window (or says why it cannot);
    ``easel open PICTURE`` opens it with that picture as the source."""
    # Imported only here: the command line stays Qt-free until a window is asked for.
    from desktop.app import main as open_app

    return open_app([], picture)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="easel", description="Easel: make pictures from text on your own machine.")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    generate = commands.add_parser("generate", help="make pictures from a prompt")
    generate.add_argument("prompt", help="what the picture should show")
    generate.add_argument("--model", "-m",
                          help="name of an installed model (default: the only one installed, "
                               "or the built-in starter model when none is)")
    generate.add_argument("--negative-prompt", "-n", default="", help="what to avoid")
    generate.add_argument("--steps", type=int, help="denoising steps (model default if unset)")
    generate.add_argument("--guidance", "--cfg", type=float,
                          help="how closely to follow the prompt (model default if unset)")
    generate.add_argument("--scheduler", choices=SCHEDULER_NAMES + DISTILLED_SCHEDULER_NAMES,
                          help="sampling method (lcm only for LCM models)")
    generate.add_argument("--seed", type=int, help="random seed; image i uses seed + i")
    generate.add_argument("--width", type=int, help=WIDTH_HELP)
    generate.add_argument("--height", type=int, help=HEIGHT_HELP)
    generate.add_argument("--count", type=int, default=1, help="number of images")
    generate.add_argument("--hires-scale", type=float,
                          help="hires fix: make the picture at its size, enlarge it this many "
                               "times (more than 1, at most 4) and redraw its detail")
    generate.add_argument("--hires-strength", type=float,
                          help=f"how much the hires fix redraws, more than 0 and at most 1 "
                               f"(default {HiresFixRequest.strength})")
    generate.add_argument("--upscaler",
                          help="the installed upscaler a hires fix enlarges with (default: the "
                               "only one installed; with none, Lanczos resampling)")
    generate.add_argument("--output", "-o", type=Path,
                          help="also write a copy to this .png file name or folder (every "
                               "image is saved in the library either way)")
    add_runtime_arguments(generate)
    generate.set_defaults(run=_generate)

    opening = commands.add_parser("open", help="open the window with a picture as the source")
    opening.add_argument("picture", type=Path, help="a PNG, JPEG or WEBP file")
    opening.set_defaults(run=lambda arguments: _open_window(arguments.picture))

    doctor = commands.add_parser("doctor", help="a report of this installation to paste "
                                                "into a bug report (never uses the network)")
    desktop_doctor.add_arguments(doctor)
    doctor.set_defaults(run=desktop_doctor.run)

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
    add_edit_commands(commands)
    add_upscale_commands(commands)
    _add_gallery_commands(commands)
    _add_history_commands(commands)
    return parser


def _generate(arguments: argparse.Namespace) -> int:
    store = model_store()
    name = arguments.model or store.default_model().name
    model = load_model(store.path_of(name), runtime_options(arguments), name)
    seed = arguments.seed if arguments.seed is not None else secrets.randbelow(2**32)
    request = TextToImageRequest(
        prompt=arguments.prompt, negative_prompt=arguments.negative_prompt,
        width=arguments.width, height=arguments.height, steps=arguments.steps,
        guidance=arguments.guidance, scheduler=arguments.scheduler, seed=seed,
        count=arguments.count)
    pipeline = TextToImagePipeline(model)
    if arguments.hires_scale is not None:
        request, pipeline = _hires_fix(arguments, request, model)
    elif arguments.hires_strength is not None or arguments.upscaler is not None:
        raise BadRequest("--hires-strength and --upscaler belong to a hires fix; add "
                         "--hires-scale.")
    pipeline.check_inputs(request)  # bad input fails before anything loads or runs
    targets = output_paths(arguments.output, seed, arguments.count)
    # Opened before the work, so a library that cannot be used fails now, not after it.
    with open_library() as library:
        device = model.unet.device  # loads the UNet now, so the device is known before waiting
        say(f"running on {device.summary}")
        say_device(device)
        result = run_cancellable(
            lambda cancel: pipeline(request, progress_printer(), cancel))
        for warning in result.warnings:
            say(f"warning: {warning}")
        for image, target in zip(result.images, targets, strict=True):
            entry = library.add_generated(image.pixels, image.parameters)
            if target is not None:  # the copy carries the same id as the library's image
                save_png(image.pixels, target, image.parameters, entry.id)
            print(target or entry.path)
    return 0


def _hires_fix(arguments: argparse.Namespace, request: TextToImageRequest,
               model: Model) -> tuple[HiresFixRequest, HiresFixPipeline]:
    """The text-to-image request as a hires fix's first pass, enlarged by the chosen upscaler
    (checked with the rest of the request, before anything runs)."""
    upscaler = chosen_upscaler(model_store(), arguments.upscaler, runtime_options(arguments),
                               "--upscaler")
    strength = HiresFixRequest.strength if arguments.hires_strength is None else (
        arguments.hires_strength)
    if upscaler is not None:
        say(f"hires fix: enlarging with '{upscaler.name}' ({upscaler.description.summary})")
    hires = HiresFixRequest(request, scale=arguments.hires_scale, strength=strength)
    return hires, HiresFixPipeline(model, upscaler)


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


def _add_gallery_commands(commands: argparse._SubParsersAction) -> None:
    gallery = commands.add_parser("gallery", help="browse, search, export and repair the "
                                                  "library of pictures")
    actions = gallery.add_subparsers(title="gallery commands", metavar="COMMAND")

    listing = actions.add_parser("list", help="list pictures, newest first")
    _add_filters(listing)
    listing.set_defaults(run=_gallery_list, text="")
    search = actions.add_parser("search", help="search prompts and negative prompts")
    search.add_argument("text", help="words to find (the last one may be the start of a word)")
    _add_filters(search)
    search.set_defaults(run=_gallery_list)

    show = actions.add_parser("show", help="everything known about one picture")
    show.add_argument("id", help="the picture's id (or its first characters)")
    show.set_defaults(run=_gallery_show)

    export = actions.add_parser("export", help="copy pictures to a folder")
    export.add_argument("ids", nargs="*", help="picture ids (default: those the filters select)")
    export.add_argument("--to", type=Path, required=True, dest="folder", help="target folder")
    export.add_argument("--strip-metadata", action="store_true",
                        help="write pixels only: no prompt or generation settings")
    export.add_argument("--search", default="", dest="text", help="select by prompt words")
    _add_filters(export, paging=False)
    export.set_defaults(run=_gallery_export)

    importing = actions.add_parser("import", help="add PNGs made by Easel or other tools "
                                                  "(A1111, ComfyUI, InvokeAI)")
    importing.add_argument("files", nargs="+", type=Path)
    importing.set_defaults(run=_gallery_import)

    rebuild = actions.add_parser("rebuild", help="re-read every picture file and repair "
                                                 "the index and search")
    rebuild.set_defaults(run=_gallery_rebuild)

    for name, helptext, run in (("favourite", "mark pictures as favourites", _gallery_favourite),
                                ("delete", "move pictures to the trash", _gallery_delete),
                                ("restore", "take pictures back out of the trash",
                                 _gallery_restore)):
        action = actions.add_parser(name, help=helptext)
        action.add_argument("ids", nargs="+", help="picture ids (or their first characters)")
        if name == "favourite":
            action.add_argument("--off", action="store_true", help="remove the mark instead")
        action.set_defaults(run=run)
    tag = actions.add_parser("tag", help="add or remove a tag")
    tag.add_argument("tag")
    tag.add_argument("ids", nargs="+", help="picture ids (or their first characters)")
    tag.add_argument("--remove", action="store_true", help="remove the tag instead")
    tag.set_defaults(run=_gallery_tag)
    empty = actions.add_parser("empty-trash", help="delete the pictures in the trash for good")
    empty.set_defaults(run=_gallery_empty_trash)
    gallery.set_defaults(run=lambda _: gallery.print_help() or 0)


def _add_filters(parser: argparse.ArgumentParser, paging: bool = True) -> None:
    parser.add_argument("--model", help="only pictures made with this model")
    parser.add_argument("--seed", type=int, help="only pictures with this seed")
    parser.add_argument("--since", help="made on or after this date (2025-05-31)")
    parser.add_argument("--until", help="made on or before this date")
    parser.add_argument("--favourites", action="store_true", help="only favourites")
    parser.add_argument("--tag", help="only pictures with this tag")
    parser.add_argument("--trash", action="store_true", help="the pictures in the trash")
    if paging:
        parser.add_argument("--limit", type=int, default=50, help="pictures per page (50)")
        parser.add_argument("--page", type=int, default=1, help="which page, from 1")
        parser.add_argument("--paths", action="store_true", help="show each file's path")


def _add_history_commands(commands: argparse._SubParsersAction) -> None:
    prompts = commands.add_parser("history", help="the prompts used so far")
    actions = prompts.add_subparsers(title="history commands", metavar="COMMAND")
    listing = actions.add_parser("list", help="pinned prompts first, then the most recent")
    listing.add_argument("search", nargs="?", default="", help="only prompts containing this")
    listing.add_argument("--negative", action="store_true", help="negative prompts instead")
    listing.add_argument("--limit", type=int, default=50)
    listing.set_defaults(run=_history_list)
    for name in ("pin", "unpin"):
        action = actions.add_parser(name, help=f"{name} a prompt from the history")
        action.add_argument("text", help="the prompt, as listed")
        action.add_argument("--negative", action="store_true", help="a negative prompt")
        action.set_defaults(run=_history_pin, pinned=name == "pin")
    prompts.set_defaults(run=lambda _: prompts.print_help() or 0)


def _selection_filters(arguments: argparse.Namespace) -> dict:
    return {"model": arguments.model, "seed": arguments.seed,
            "since": _date(arguments.since, "--since") if arguments.since else None,
            "until": _date_end(arguments.until) if arguments.until else None,
            "favourites": arguments.favourites, "tag": arguments.tag,
            "trash": "only" if arguments.trash else "exclude"}


def _gallery_list(arguments: argparse.Namespace) -> int:
    if not 1 <= arguments.limit <= 10_000 or arguments.page < 1:
        raise BadRequest("--limit takes 1 to 10000 and --page takes 1 or more.")
    with open_library() as library:
        filters = _selection_filters(arguments)
        page = library.search(arguments.text, limit=arguments.limit,
                              offset=(arguments.page - 1) * arguments.limit, **filters)
        total = library.count(arguments.text, **filters)
    for entry in page.entries:
        print(_entry_line(entry, arguments.paths))
    shown = f"{len(page.entries)} of {total} picture{'s' if total != 1 else ''}"
    more = (f"; next: --page {arguments.page + 1}" if page.next_cursor else "")
    say(f"{shown}{more}" if total else "No pictures match.")
    return 0


def _entry_line(entry: ImageEntry, with_path: bool) -> str:
    when = datetime.fromtimestamp(entry.created_at).strftime("%Y-%m-%d %H:%M")
    marks = ("*" if entry.favourite else " ") + ("!" if entry.missing else " ")
    seed = "" if entry.seed is None else str(entry.seed)
    size = f"{entry.width}x{entry.height}" if entry.width else ""
    prompt = " ".join(entry.prompt.split())
    prompt = prompt if len(prompt) <= 60 else prompt[:59] + "…"
    line = (f"{entry.id[:12]}  {when}  {marks} {entry.model[:16]:<16}  {seed:>10}  "
            f"{size:>9}  {prompt}")
    return f"{line}  {entry.path}" if with_path else line


def _gallery_show(arguments: argparse.Namespace) -> int:
    with open_library() as library:
        entry = library.get(arguments.id)
        tags = library.tags_of(entry.id)
        chain = library.lineage(entry.id)[1:]
    fields = [("id", entry.id), ("file", entry.path), ("made", datetime.fromtimestamp(
        entry.created_at).strftime("%Y-%m-%d %H:%M:%S")), ("prompt", entry.prompt),
        ("negative prompt", entry.negative_prompt), ("model", entry.model),
        ("seed", entry.seed), ("size", f"{entry.width}x{entry.height}"),
        ("operation", entry.operation), ("from", entry.origin),
        ("made from", " <- ".join(source.id[:12] for source in chain)),
        ("favourite", "yes" if entry.favourite else ""), ("tags", ", ".join(tags)),
        ("in the trash", "yes" if entry.trashed else ""),
        ("file missing", "yes" if entry.missing else "")]
    for name, value in fields:
        if value not in ("", None):
            print(f"{name + ':':<17}{value}")
    return 0


def _gallery_export(arguments: argparse.Namespace) -> int:
    filters = _selection_filters(arguments)
    selected = any(value for key, value in filters.items() if key != "trash")
    if not arguments.ids and not (arguments.text or selected or arguments.trash):
        raise BadRequest("Name the pictures to export by id, or select them with --search or "
                         "a filter such as --favourites.")
    with open_library() as library:
        ids = list(arguments.ids)
        if not ids:
            ids = [entry.id for entry in library.search(arguments.text, limit=10_000,
                                                        **filters).entries]
        if not ids:
            raise BadRequest("No pictures match; nothing was exported.")
        written = library.export(ids, arguments.folder, strip_metadata=arguments.strip_metadata)
    for path in written:
        print(path)
    return 0


def _gallery_import(arguments: argparse.Namespace) -> int:
    with open_library() as library:
        for path in arguments.files:
            entry = library.import_file(path)
            print(f"{entry.id[:12]}  {entry.origin:<8}  {path}")
    return 0


def _gallery_rebuild(arguments: argparse.Namespace) -> int:
    with open_library() as library:
        report = library.rebuild()
        total = library.count(trash="include")
    print(f"{total} pictures in the library: {report.indexed} newly indexed, "
          f"{report.refreshed} re-read, {report.flagged_missing} with their file missing.")
    for relative in report.unreadable:
        say(f"warning: '{relative}' is not a readable PNG; it was left where it is.")
    return 0


def _gallery_favourite(arguments: argparse.Namespace) -> int:
    with open_library() as library:
        count = library.set_favourite(arguments.ids, not arguments.off)
    print(f"{'Unmarked' if arguments.off else 'Marked'} {count} as favourite.")
    return 0


def _gallery_tag(arguments: argparse.Namespace) -> int:
    with open_library() as library:
        if arguments.remove:
            library.remove_tags(arguments.ids, [arguments.tag])
        else:
            library.add_tags(arguments.ids, [arguments.tag])
    return 0


def _gallery_delete(arguments: argparse.Namespace) -> int:
    with open_library() as library:
        count = library.trash(arguments.ids)
    print(f"Moved {count} to the trash (undo with: easel gallery restore ID).")
    return 0


def _gallery_restore(arguments: argparse.Namespace) -> int:
    with open_library() as library:
        count = library.restore(arguments.ids)
    print(f"Restored {count} from the trash.")
    return 0


def _gallery_empty_trash(arguments: argparse.Namespace) -> int:
    with open_library() as library:
        count = library.empty_trash()
    print(f"Deleted {count} picture{'s' if count != 1 else ''} for good.")
    return 0


def _history_list(arguments: argparse.Namespace) -> int:
    with open_library() as library:
        entries = library.history(arguments.search,
                                  "negative" if arguments.negative else "prompt",
                                  arguments.limit)
    for entry in entries:
        when = datetime.fromtimestamp(entry.last_used).strftime("%Y-%m-%d %H:%M")
        print(f"{'pinned' if entry.pinned else '':<6}  {entry.uses:>5}x  {when}  {entry.text}")
    return 0


def _history_pin(arguments: argparse.Namespace) -> int:
    with open_library() as library:
        library.pin_prompt(arguments.text, arguments.pinned,
                           "negative" if arguments.negative else "prompt")
    return 0


def _date(text: str, option: str) -> float:
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise BadRequest(f"{option} takes a date like 2025-05-31 or 2025-05-31T14:30, "
                         f"not '{text}'.") from None


def _date_end(text: str) -> float:
    """A bare date means the whole of that day."""
    moment = _date(text, "--until")
    if "T" not in text and " " not in text:
        moment = (datetime.fromtimestamp(moment) + timedelta(days=1)).timestamp()
    return moment


def _size(size_bytes: int) -> str:
    if size_bytes < 1000:
        return f"{size_bytes} bytes"
    for unit in ("KB", "MB", "GB"):
        size_bytes /= 1000
        if size_bytes < 1000 or unit == "GB":
            break
    return f"{size_bytes:.1f} {unit}"


if __name__ == "__main__":
    sys.exit(main())
