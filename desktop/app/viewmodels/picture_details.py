"""Picture details: everything the library knows about one picture, and what its Content
Credentials say (valid, changed since signing, or none). Read on the runner's pool: checking
the credentials hashes the whole file, which the GUI thread must not wait for."""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import QObject, Signal

from desktop.app.worker import JobRunner
from desktop.library import ImageEntry, Library
from desktop.picture_info import credentials_lines, picture_fields

KEY_PREFIX = "details:"


@dataclass(frozen=True)
class Details:
    image_id: str
    fields: list[tuple[str, str]]
    credentials: list[str]  # the first line says whether they hold


class PictureDetailsModel(QObject):
    ready = Signal(object)  # Details
    failed = Signal(str)  # one sentence

    def __init__(self, library: Library, runner: JobRunner, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._library = library
        self._runner = runner
        runner.fetched.connect(self._fetched)
        runner.image_failed.connect(self._failed)

    def ask(self, entry: ImageEntry) -> None:
        """Read ``entry``'s details; ``ready`` (or ``failed``) answers."""
        library = self._library

        def read() -> Details:
            chain = library.lineage(entry.id)[1:]
            credentials = [] if entry.missing else credentials_lines(
                entry.path, library.provenance.serial_number())
            return Details(entry.id, picture_fields(entry, library.tags_of(entry.id), chain),
                           credentials)

        self._runner.fetch(KEY_PREFIX + entry.id, read)

    def _fetched(self, key: str, details: object) -> None:
        if key.startswith(KEY_PREFIX):
            self.ready.emit(details)

    def _failed(self, key: str, sentence: str) -> None:
        if key.startswith(KEY_PREFIX):
            self.failed.emit(sentence)
