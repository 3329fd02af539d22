"""The desktop app (PySide6): the only package that imports Qt.

``desktop.app.main()`` opens the window; ``easel`` with no arguments calls it. Layers inside:
``widgets`` show ``viewmodels``; view-models use the engine and the library; ``worker`` is
the one module whose code runs on other threads.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from desktop import display_check


def main(argv: Sequence[str] | None = None) -> int:
    # Before any Qt library loads: Qt aborts the process, naming the wrong package, when its
    # platform plugin cannot load; this says what is missing in one sentence instead.
    problem = display_check.problem()
    if problem:
        print(f"easel: {problem}", file=sys.stderr)
        return 1
    # Imported here so `import desktop.app` stays cheap and Qt loads only to open a window.
    from desktop.app.launch import main as launch

    return launch(argv)
