"""Opening the desktop window: plain ``easel`` opens it, ``easel open PICTURE`` opens it with
that picture as the source. The one module of the command line that reaches the GUI."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_commands(commands: argparse._SubParsersAction) -> None:
    opening = commands.add_parser("open", help="open the window with a picture as the source")
    opening.add_argument("picture", type=Path, help="a PNG, JPEG or WEBP file")
    opening.set_defaults(run=lambda arguments: open_window(arguments.picture))


def open_window(picture: Path | None = None) -> int:
    """``easel`` with no command opens the desktop window (or says why it cannot);
    ``easel open PICTURE`` opens it with that picture as the source."""
    # Imported only here: the command line stays Qt-free until a window is asked for.
    from desktop.app import main as open_app

    return open_app([], picture)
