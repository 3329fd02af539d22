"""What the gallery does to its pictures that involves no source picture and no job: mark as
favourite, move to the trash and back, copy to the clipboard, export (Save as).

Kept out of the studio so that view-model stays about making pictures; the studio owns one
of these and passes its sentences on.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QGuiApplication, QImage

from desktop.app.viewmodels.gallery import GalleryModel
from desktop.app.worker import JobRunner
from desktop.library import ImageEntry, Library
from engine.errors import EaselError

COPY_PREFIX = "copy:"
NOTHING_TO_EXPORT = ("Choose a picture in the gallery (or show one on the canvas) to "
                     "export first.")
Result = TypeVar("Result")


def plural(count: int) -> str:
    return f"{count} picture{'s' if count != 1 else ''}"


class PictureActions(QObject):
    message = Signal(str)  # news for the status bar
    problem = Signal(str)  # a sentence the user must see

    def __init__(self, library: Library, gallery: GalleryModel, runner: JobRunner,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.library = library
        self.gallery = gallery
        self.runner = runner
        self.last_trashed: list[str] = []
        self.export_folder: Path | None = None  # where the last export went (offered again)
        runner.image_ready.connect(self._image_ready)
        runner.image_failed.connect(self._image_failed)

    def copy(self, entry: ImageEntry) -> None:
        """Put the picture on the clipboard (decoded off the GUI thread, then copied)."""
        path = entry.path
        self.runner.load_image(COPY_PREFIX + entry.id, lambda: path)

    def set_favourite(self, entries: list[ImageEntry], favourite: bool) -> None:
        self._library_call(self.library.set_favourite, [e.id for e in entries], favourite)
        self.gallery.refresh()

    def trash(self, entries: list[ImageEntry]) -> None:
        ids = [entry.id for entry in entries]
        if not ids or self._library_call(self.library.trash, ids) is None:
            return
        self.last_trashed = ids
        self.gallery.refresh()
        self.message.emit(f"Moved {plural(len(ids))} to the trash (Ctrl+Z brings them back).")

    def undo_trash(self) -> None:
        if not self.last_trashed:
            return
        if self._library_call(self.library.restore, self.last_trashed) is not None:
            count = len(self.last_trashed)
            self.last_trashed = []
            self.gallery.refresh()
            self.message.emit(f"Restored {plural(count)}.")

    def export(self, entries: list[ImageEntry], folder: Path,
               strip_metadata: bool = False) -> list[Path]:
        """Copy the pictures into ``folder`` under their own names, never overwriting: what
        `easel gallery export` does (the library's export, all or nothing). Without metadata
        only the pixels go, no prompt and no settings."""
        if not entries:
            self.problem.emit(NOTHING_TO_EXPORT)
            return []
        try:
            written = self.library.export([entry.id for entry in entries], Path(folder),
                                          strip_metadata=strip_metadata)
        except EaselError as error:
            self.problem.emit(str(error))
            return []
        except OSError as error:  # a folder that cannot be made or written to
            self.problem.emit(f"Nothing was exported: '{folder}' cannot be written to "
                              f"({error.strerror or error}).")
            return []
        self.export_folder = Path(folder)
        where = written[0] if len(written) == 1 else Path(folder)
        what = (" (the pixels only: no prompt, no settings, no Content Credentials)"
                if strip_metadata else "")
        self.message.emit(f"Exported {plural(len(written))} to {where}{what}.")
        return written

    def _library_call(self, function: Callable[..., Result], *args: object) -> Result | None:
        try:
            return function(*args)
        except EaselError as error:
            self.problem.emit(str(error))
            return None

    def _image_ready(self, key: str, image: QImage) -> None:
        if key.startswith(COPY_PREFIX):
            QGuiApplication.clipboard().setImage(image)
            self.message.emit("Picture copied.")

    def _image_failed(self, key: str, message: str) -> None:
        if key.startswith(COPY_PREFIX):
            self.problem.emit(message)
