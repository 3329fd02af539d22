"""The ``easel gallery`` commands: list, search, show, export, import, rebuild, mark, tag and
trash the library's pictures."""

from __future__ import annotations

import argparse
from datetime import datetime, timedelta
from pathlib import Path

from desktop.cli import picture_check
from desktop.cli.common import open_library, say
from desktop.library import ImageEntry
from desktop.picture_info import credentials_lines, picture_fields
from desktop.provenance.reading import NONE, UNREADABLE, read_credentials
from engine.errors import BadRequest


def add_commands(commands: argparse._SubParsersAction) -> None:
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
                        help="write pixels only: no prompt, no generation settings, no "
                             "Content Credentials")
    export.add_argument("--search", default="", dest="text", help="select by prompt words")
    _add_filters(export, paging=False)
    export.set_defaults(run=_gallery_export)

    importing = actions.add_parser("import", help="add PNGs made by Easel or other tools "
                                                  "(A1111, ComfyUI, InvokeAI)")
    importing.add_argument("files", nargs="+", type=Path)
    importing.set_defaults(run=_gallery_import)

    picture_check.add_command(actions)

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
        fields = picture_fields(entry, library.tags_of(entry.id),
                                library.lineage(entry.id)[1:])
        own_serial = library.provenance.serial_number()
    for name, value in fields:
        print(f"{name + ':':<17}{value}")
    if not entry.missing:
        for line in credentials_lines(entry.path, own_serial):
            print(line)
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
    if arguments.strip_metadata and written:
        say("note: the copies carry no Content Credentials either (--strip-metadata removes "
            "them with the prompt).")
    return 0


def _gallery_import(arguments: argparse.Namespace) -> int:
    with open_library() as library:
        for path in arguments.files:
            entry = library.import_file(path)
            print(f"{entry.id[:12]}  {entry.origin:<8}  {path}")
            if (note := _credentials_note(path)) is not None:
                say(f"note: {note}")
    return 0


def _credentials_note(path: Path) -> str | None:
    """What happens to an imported file's Content Credentials: the library's copy is
    re-encoded (its EXIF dropped), so they stay in the original file only."""
    credentials = read_credentials(path)
    if credentials.state == NONE:
        return None
    if credentials.state == UNREADABLE:
        return (f"'{path.name}' carries Content Credentials that could not be read "
                f"({credentials.sentence.split('(', 1)[-1].rstrip(').')}); the library's copy "
                "has none, and the file stays as it was.")
    return (f"'{path.name}' carries Content Credentials; they stay in that file (the "
            "library's copy is re-encoded without them).")


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
