"""The ``easel`` command: import models, make pictures, browse the gallery and history.

Every failure the user can cause ends in one sentence on stderr and a non-zero exit; nothing
is left half-written (models are built aside and moved in, images are written atomically).

Each command group is a module of this package with an ``add_commands(commands)``; a new
group is one line in ``_parser`` (the order there is the order ``easel --help`` lists).
"""

from __future__ import annotations

import argparse
import sqlite3
from collections.abc import Sequence

from desktop.cli import (
    background,
    batch,
    doctor,
    edit,
    faces,
    gallery,
    generate,
    grid,
    history,
    models,
    upscale,
    window,
)
from desktop.cli.common import say
from engine.errors import Cancelled, EaselError

EXIT_ERROR = 1
EXIT_CANCELLED = 130


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    arguments = parser.parse_args(argv)
    if not hasattr(arguments, "run"):
        return window.open_window()
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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="easel", description="Easel: make pictures from text on your own machine.")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    generate.add_commands(commands)
    window.add_commands(commands)
    doctor.add_commands(commands)
    models.add_commands(commands)
    edit.add_commands(commands)
    upscale.add_commands(commands)
    background.add_commands(commands)
    faces.add_commands(commands)
    gallery.add_commands(commands)
    history.add_commands(commands)
    batch.add_commands(commands)
    grid.add_commands(commands)
    return parser
