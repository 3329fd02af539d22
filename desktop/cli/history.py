"""The ``easel history`` commands: list the prompts used so far, and pin or unpin one."""

from __future__ import annotations

import argparse
from datetime import datetime

from desktop.cli.common import open_library


def add_commands(commands: argparse._SubParsersAction) -> None:
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
