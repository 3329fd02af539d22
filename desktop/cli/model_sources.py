"""The ``easel models`` commands that find models: the catalogue, downloads, other apps'
folders. Only ``get`` touches the network, and only for the entry or address it is given."""

from __future__ import annotations

import argparse
from pathlib import Path

from desktop.catalogue import Entry, is_installed, load_catalogue
from desktop.cli.common import model_store
from desktop.model_sources.scan import app_of, scan_folder


def add_commands(model_commands: argparse._SubParsersAction) -> None:
    listing = model_commands.add_parser(
        "catalogue", help="the models Easel can download for you (installed ones marked)")
    listing.set_defaults(run=_catalogue)
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
        mark = "installed" if is_installed(entry, installed) else _gb(entry.download_size)
        print(f"{entry.id:<{width}}  {mark:>9}  {entry.name}: {entry.use}")
        print(f"{'':<{width}}  {'':>9}  {_licence(entry)}")
    print("Get one with: easel models get ID (sizes are downloads; "
          "the import needs more while it runs).")
    return 0


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
        print(f"  {item.path}  {item.description}, {_gb(item.size_bytes)}{note}")
    importable = [item for item in found if item.importable]
    if importable:
        print(f"Import one in place (the file is read, never moved or changed) with: "
              f"easel models import '{importable[0].path}' --name NAME")
    return 0


def _gb(size_bytes: int) -> str:
    if size_bytes >= 10**9:
        return f"{size_bytes / 10**9:.1f} GB"
    return f"{size_bytes / 10**6:.0f} MB" if size_bytes >= 10**6 else f"{size_bytes} bytes"
