"""The ``easel models`` commands that find models: the catalogue, downloads, other apps'
folders. Only ``get`` touches the network, and only for the entry or address it is given."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

from desktop import paths
from desktop.catalogue import Entry, is_installed, load_catalogue
from desktop.cli.common import model_store, run_cancellable, say
from desktop.downloads import DownloadProgress
from desktop.model_sources import get
from desktop.model_sources.scan import app_of, scan_folder
from desktop.units import duration_text, size_text
from engine.errors import Cancelled

EXIT_STOPPED = 130


def add_commands(model_commands: argparse._SubParsersAction) -> None:
    listing = model_commands.add_parser(
        "catalogue", help="the models Easel can download for you (installed ones marked)")
    listing.set_defaults(run=_catalogue)
    getting = model_commands.add_parser(
        "get", help="download a model from the catalogue, or a file from an address, and "
                    "import it (the only command that uses the network)")
    getting.add_argument("source", help="a catalogue entry (see: easel models catalogue) or "
                                        "an http(s) address of a model file")
    getting.add_argument("--sha256", help="the file's SHA-256, as the site lists it (needed "
                                          "for an address)")
    getting.add_argument("--name", help="name to install an address's model under")
    getting.add_argument("--keep-download", action="store_true",
                         help="keep the downloaded files after the import (default: delete "
                              "them; Easel uses its own ONNX copy)")
    getting.set_defaults(run=_get)
    scanning = model_commands.add_parser(
        "scan", help="find the models in another app's model folder (AUTOMATIC1111, Forge, "
                     "ComfyUI, InvokeAI), to import them in place")
    scanning.add_argument("folder", type=Path)
    scanning.set_defaults(run=_scan)


def _catalogue(arguments: argparse.Namespace) -> int:
    store = model_store()
    installed = {model.name for model in store.list() + store.upscalers()}
    entries = load_catalogue().entries
    width = max(len(entry.id) for entry in entries)
    for entry in entries:
        mark = "installed" if is_installed(entry, installed) else size_text(entry.download_size)
        print(f"{entry.id:<{width}}  {mark:>9}  {entry.name}: {entry.use}")
        print(f"{'':<{width}}  {'':>9}  {_licence(entry)}")
    print("Get one with: easel models get ID (sizes are downloads; "
          "the import needs more while it runs).")
    return 0


def _get(arguments: argparse.Namespace) -> int:
    source = arguments.source
    if "://" in source:
        download = get.from_address(source, arguments.sha256, arguments.name)
        say(f"Downloading {source}; check that its licence allows your use.")
    else:
        entry = load_catalogue().entry(source)
        download = get.from_entry(entry)
        say(f"{entry.name}: {size_text(entry.download_size)} to download. {_licence(entry)}.")
        if entry.licence_note:
            say(entry.licence_note)
    store = model_store()

    def progress(stage: str, done: int, total: int) -> None:
        say(f"[{done}/{total}] {stage}")

    try:
        model = run_cancellable(lambda cancel: get.get_model(
            download, store, paths.downloads_dir(), fetched=_download_printer(),
            imported=progress, should_stop=lambda: cancel.cancelled,
            keep_download=arguments.keep_download))
    except Cancelled:
        say("Stopped. What was downloaded is kept: the same command resumes it.")
        return EXIT_STOPPED
    print(f"Installed '{model.name}' ({model.family}, {size_text(model.size_bytes)}).")
    return 0


def _download_printer() -> Callable[[DownloadProgress], None]:
    """Bytes, speed and time left: one line rewritten on a terminal, a line every few
    seconds otherwise (a log)."""
    terminal = sys.stderr.isatty()
    last = [0.0]

    def show(progress: DownloadProgress) -> None:
        finished = progress.total is not None and progress.bytes_done >= progress.total
        now = time.monotonic()
        if not finished and (progress.bytes_done == 0 or (not terminal and now - last[0] < 5)):
            return
        last[0] = now
        total = f"/{size_text(progress.total)}" if progress.total else ""
        left = f", {duration_text(progress.seconds_left)} left" \
            if progress.seconds_left is not None and not finished else ""
        line = (f"{progress.file_name}: {size_text(progress.bytes_done)}{total} at "
                f"{progress.bytes_per_second / 1e6:.1f} MB/s{left}")
        if terminal:
            print(f"\r{line:<79}", end="\n" if finished else "", file=sys.stderr, flush=True)
        else:
            say(line)

    return show


def _licence(entry: Entry) -> str:
    words = f"Licence: {entry.licence}"
    if entry.non_commercial:
        words += " (no commercial use)"
    return words + (", gated: log in with `hf auth login` first" if entry.gated else "")


def _scan(arguments: argparse.Namespace) -> int:
    found = scan_folder(arguments.folder)
    app = app_of(arguments.folder)
    where = f"{arguments.folder} ({app})" if app else str(arguments.folder)
    if not found:
        print(f"No model files found in {where}.")
        return 0
    print(f"Models in {where}:")
    for item in found:
        note = "" if item.importable else "  [cannot be imported]"
        print(f"  {item.path}  {item.description}, {size_text(item.size_bytes)}{note}")
    importable = [item for item in found if item.importable]
    if importable:
        print(f"Import one in place (the file is read, never moved or changed) with: "
              f"easel models import '{importable[0].path}' --name NAME")
    return 0
