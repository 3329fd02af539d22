"""The gallery and prompt history: Qt-free, shared by the desktop app and ``easel``.

``Library.open(desktop.paths.data_dir())`` opens (creating, migrating or repairing) the
library; see ``store`` for the layout and the order of writes that keeps images safe.
"""

from desktop.library.errors import (
    BadImage,
    DiskFull,
    LibraryError,
    LibraryInUse,
    LibraryTooNew,
    UnknownImage,
)
from desktop.library.history import HistoryEntry
from desktop.library.pages import PageTable
from desktop.library.recovery import ReconcileReport
from desktop.library.rows import ImageEntry
from desktop.library.store import Library, OpenReport, Page

__all__ = [
    "BadImage", "DiskFull", "HistoryEntry", "ImageEntry", "Library", "LibraryError",
    "LibraryInUse", "LibraryTooNew", "OpenReport", "Page", "PageTable", "ReconcileReport",
    "UnknownImage",
]
