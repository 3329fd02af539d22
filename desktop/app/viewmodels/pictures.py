"""What the gallery does to its pictures that involves no source picture and no job: mark as
favourite, move to the trash and back, copy to the clipboard.

Kept out of the studio so that view-model stays about making pictures; the studio owns one
of these and passes its sentences on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QGuiApplication, QImage

from desktop.app.viewmodels.gallery import GalleryModel
from desktop.app.worker import JobRunner
from desktop.library import ImageEntry, Library
from engine.errors import EaselError

COPY_PREFIX = "copy:"
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
