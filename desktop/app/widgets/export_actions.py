"""Save as / Export: copy pictures out of the library into a folder the user picks, with their
prompt and settings or as pixels only (as `easel gallery export [--strip-metadata]` does).

Kept beside the main window: the window puts ``file_actions`` in its File menu, the gallery
calls ``add_to`` for its context menu.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QObject
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QFileDialog, QMenu, QWidget

from desktop.app.viewmodels.gallery import ImageEntry
from desktop.app.viewmodels.studio import Studio
from desktop.app.widgets.icons import icon

WITH_METADATA = "Export…"
WITHOUT_METADATA = "Export without metadata…"
WITH_TIP = ("Save a copy of the picture in a folder you choose, with its prompt and settings "
            "(as `easel gallery export`)")
WITHOUT_TIP = "Save a copy with the pixels only: no prompt, no settings, no Content Credentials"


class ExportActions(QObject):
    def __init__(self, studio: Studio, window: QWidget,
                 selected: Callable[[], list[ImageEntry]]) -> None:
        """``selected``: the gallery's selected pictures; with none, the canvas's picture."""
        super().__init__(window)
        self.studio = studio
        self.window = window
        self._selected = selected
        self.export_action = self._action(WITH_METADATA, WITH_TIP, False)
        self.export_action.setShortcut(QKeySequence("Ctrl+Shift+S"))
        self.export_action.setToolTip(f"{WITH_TIP} (Ctrl+Shift+S)")
        self.export_bare_action = self._action(WITHOUT_METADATA, WITHOUT_TIP, True)

    def _action(self, text: str, tip: str, strip: bool) -> QAction:
        action = QAction(icon("export"), text, self.window)
        action.setToolTip(tip)
        action.setStatusTip(tip)
        action.triggered.connect(lambda: self.export(self.chosen(), strip))
        self.window.addAction(action)  # the shortcut works whichever panel has the focus
        return action

    def file_actions(self) -> list[QAction]:
        return [self.export_action, self.export_bare_action]

    def chosen(self) -> list[ImageEntry]:
        """The pictures the File menu's Export means: the gallery's selection, or else the
        finished picture on the canvas."""
        studio = self.studio
        selected = self._selected()
        if selected:
            return selected
        entry = None if studio.canvas_is_preview else studio.canvas_entry
        return [entry] if entry is not None else []

    def add_to(self, menu: QMenu, entries: list[ImageEntry]) -> None:
        """The context menu's two entries, for ``entries``."""
        for text, tip, strip in ((WITH_METADATA, WITH_TIP, False),
                                 (WITHOUT_METADATA, WITHOUT_TIP, True)):
            action = menu.addAction(icon("export"), text, self._exporter(entries, strip))
            action.setToolTip(tip)

    def _exporter(self, entries: list[ImageEntry], strip: bool) -> Callable[[], object]:
        return lambda: self.export(entries, strip)

    def export(self, entries: list[ImageEntry], strip_metadata: bool) -> list[Path]:
        """Ask for the folder, then export; cancelling the dialog does nothing."""
        pictures = self.studio.pictures
        if not entries:
            return pictures.export([], Path())  # says what to choose first
        start = str(pictures.export_folder or Path.home())
        title = "Export the pictures to" if len(entries) > 1 else "Export the picture to"
        folder = QFileDialog.getExistingDirectory(self.window, title, start)
        if not folder:
            return []
        return pictures.export(entries, Path(folder), strip_metadata)
