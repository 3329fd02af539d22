"""``easel doctor``: one plain-text report of this installation, to paste into a bug report.

Qt-free and offline. Every section is guarded: what cannot be checked becomes a line saying
so, never an exception.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def report() -> str:
    """The whole report, as text."""
    return f"Python {sys.version.split()[0]} ({sys.executable})\n"


def run(arguments: object = None) -> int:
    """Print the report to stdout; always 0."""
    print(report(), end="")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
