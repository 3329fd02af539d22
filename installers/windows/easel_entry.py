"""The frozen app's entry point on Windows: both easel.exe (the command line, with a console)
and easelw.exe (the Start-menu entry and "Open with Easel", without one) run it.

A program without a console has no stdout or stderr (they are None), and a write to them would
raise; such writes go nowhere instead, and the window says what went wrong.
"""

import os
import sys

if __name__ == "__main__":
    if sys.stdout is None:
        sys.stdout = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 (for the process' life)
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115

    from desktop.cli import main

    sys.exit(main())
