"""Icons from resources/icons: SVG, so they stay sharp at any screen scale."""

from __future__ import annotations

from functools import cache

from PySide6.QtGui import QIcon

from desktop.paths import icons_dir


@cache
def icon(name: str) -> QIcon:
    path = icons_dir() / f"{name}.svg"
    return QIcon(str(path)) if path.is_file() else QIcon()
