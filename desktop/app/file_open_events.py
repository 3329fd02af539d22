"""macOS's "Open with Easel": Finder hands a picture to the app as a FileOpen event (at start
and while it runs), not as a command-line argument as Linux and Windows do."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QEvent, QObject
from PySide6.QtGui import QFileOpenEvent


class FileOpenEvents(QObject):
    """An application event filter that passes each opened file to ``take``."""

    def __init__(self, take: Callable[[Path], None]) -> None:
        super().__init__()
        self._take = take

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt's name)
        if event.type() == QEvent.Type.FileOpen and isinstance(event, QFileOpenEvent):
            self._take(Path(event.file()))
            return True
        return False
