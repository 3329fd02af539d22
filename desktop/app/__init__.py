"""The desktop app (PySide6): the only package that imports Qt.

``desktop.app.main()`` opens the window; ``easel`` with no arguments calls it, and
``easel open PICTURE`` calls it with a picture to start from. Layers inside:
``widgets`` show ``viewmodels``; view-models use the engine and the library; ``worker`` is
the one module whose code runs on other threads.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from desktop import display_check


def main(argv: Sequence[str] | None = None, picture: Path | None = None) -> int:
    """Open the window (with ``picture`` as its source picture); the exit status."""
    if picture is not None:
        # Checked before Qt loads: a bad path is one sentence and no window.
        from desktop.app.open_picture import checked_picture
        from desktop.library import BadImage

        try:
            picture = checked_picture(picture)
        except BadImage as error:
            print(f"easel: error: {error}", file=sys.stderr)
            # Started by a file manager's "Open with Easel" there is no terminal to read
            # stderr: say it where the user is looking, in a box.
            if not _has_terminal() and display_check.problem() is None:
                from desktop.app.launch import say_in_a_box

                say_in_a_box(str(error))
            return 1
    # Before any Qt library loads: Qt aborts the process, naming the wrong package, when its
    # platform plugin cannot load; this says what is missing in one sentence instead.
    problem = display_check.problem()
    if problem:
        print(f"easel: {problem}", file=sys.stderr)
        return 1
    # Imported here so `import desktop.app` stays cheap and Qt loads only to open a window.
    from desktop.app.launch import main as launch

    return launch(argv, picture)


def _has_terminal() -> bool:
    try:
        return sys.stderr is not None and sys.stderr.isatty()
    except (AttributeError, ValueError):  # a closed or replaced stream (pythonw)
        return False
