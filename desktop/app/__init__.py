"""The desktop app (PySide6): the only package that imports Qt.

``desktop.app.main()`` opens the window; ``easel`` with no arguments calls it. Layers inside:
``widgets`` show ``viewmodels``; view-models use the engine and the library; ``worker`` is
the one module whose code runs on other threads.
"""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    # Imported here so `import desktop.app` stays cheap and Qt loads only to open a window.
    from desktop.app.launch import main as launch

    return launch(argv)
