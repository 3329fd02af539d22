"""The models Easel can download (Models › Get models…): the catalogue as a table with size,
licence and use, and the action that queues a download-and-import job.

The catalogue is read when the dialog opens, not at start, so a damaged catalogue file costs
only this dialog (its one sentence is shown in it). A download runs in the job queue like an
import: progress with bytes, speed and time left, Cancel, and the queue's problem sentence.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    Qt,
    Signal,
)

from desktop import paths
from desktop.app import downloading
from desktop.app.viewmodels.jobs import JobQueueModel, JobRow
from desktop.app.worker import JobRunner
from desktop.catalogue import Entry, is_installed, load_catalogue
from desktop.model_store import ModelStore
from desktop.units import size_text
from engine.errors import EaselError

Index = QModelIndex | QPersistentModelIndex
HEADERS = ("Model", "Use", "Download", "Licence", "")
NOTHING_SELECTED = "Select a model in the list to get it."
NO_COMMERCIAL_USE = "no commercial use"
CANCELLED = ("Download stopped; what arrived is kept, and Get resumes it from there "
             "(Models › Get models…).")


class CatalogueModel(QAbstractTableModel):
    problem = Signal(str)  # a sentence the user must see
    message = Signal(str)  # news for the status bar

    def __init__(self, store: ModelStore, runner: JobRunner, jobs: JobQueueModel,
                 keep_downloads: Callable[[], bool], parent: QObject | None = None,
                 downloads: Callable[[], Path] = paths.downloads_dir) -> None:
        """``keep_downloads`` reads the setting when a job is queued; ``downloads`` gives the
        folder where partial and kept downloads live."""
        super().__init__(parent)
        self._store, self._runner, self._jobs = store, runner, jobs
        self._keep_downloads, self._downloads = keep_downloads, downloads
        self._entries: tuple[Entry, ...] = ()
        self._installed: set[str] = set()
        self._queued: dict[int, str] = {}  # job id -> entry id, while in the queue
        self.error: str | None = None  # why the catalogue could not be read
        for ended in (runner.finished, runner.failed, runner.cancelled):
            ended.connect(self._job_ended)

    # Reading -------------------------------------------------------------------------------

    def load(self) -> None:
        """Read the catalogue and what is installed (each time the dialog opens)."""
        self.beginResetModel()
        try:
            self._entries, self.error = load_catalogue().entries, None
        except EaselError as error:
            self._entries, self.error = (), str(error)
        self._installed = {model.name for model in self._store.installed()}
        self.endResetModel()

    def refresh_installed(self) -> None:
        self._installed = {model.name for model in self._store.installed()}
        self._changed()

    def entry_at(self, row: int) -> Entry:
        return self._entries[row]

    def why_not(self, row: int | None) -> str | None:
        """Why Get cannot start for ``row`` (one sentence), or None when it can."""
        if row is None or not 0 <= row < len(self._entries):
            return NOTHING_SELECTED
        entry = self._entries[row]
        if is_installed(entry, self._installed):
            return (f"'{entry.install_as}' is installed already; remove it in Models › Manage "
                    "models… to get it again.")
        if entry.id in self._queued.values():
            return f"{entry.name} is in the job queue already."
        return None

    def confirmation(self, row: int) -> tuple[str, str]:
        """(headline, details) to show before any byte is fetched: the licence first (and
        that it forbids commercial use, where it does), then the download and the disk."""
        entry = self._entries[row]
        licence = f"Licence: {entry.licence}"
        if entry.non_commercial:
            licence += f" ({NO_COMMERCIAL_USE})"
        lines = [f"{licence}.", entry.licence_note or "", f"Read it at {entry.licence_url}"]
        if entry.gated:
            lines.append("Hugging Face serves it only after you accept its terms there and log "
                         "in with `hf auth login`.")
        lines.append(f"Download: {size_text(entry.download_size)}; the import needs "
                     f"{size_text(entry.disk_during_import)} free while it runs and leaves "
                     f"{size_text(entry.disk_after_import)}.")
        kept = self._bytes_kept(entry)
        if kept:
            lines.append(f"{size_text(kept)} of it is here from an earlier try; the download "
                         "resumes from there.")
        return f"Get {entry.name}?", "\n\n".join(line for line in lines if line)

    # Getting -------------------------------------------------------------------------------

    def get(self, row: int) -> int | None:
        """Queue the download and import of ``row``'s model; returns the job id (None, with a
        problem sentence, when it cannot start)."""
        if (reason := self.why_not(row)) is not None:
            self.problem.emit(reason)
            return None
        entry = self._entries[row]
        try:
            folder = self._downloads()
        except EaselError as error:  # the data folder is read-only or full
            self.problem.emit(str(error))
            return None
        kept = self._bytes_kept(entry)
        work = functools.partial(downloading.get_model, self._store, entry, folder,
                                 self._keep_downloads())
        job_id = self._runner.submit(work)
        resuming = f" (resuming after {size_text(kept)})" if kept else ""
        self._jobs.add(JobRow(job_id, f"Get {entry.name}{resuming}", "download",
                              extra={"cancelled": CANCELLED}))
        self._queued[job_id] = entry.id
        self._changed()
        self.message.emit(f"{entry.name} is queued: progress and Cancel are in the job queue.")
        return job_id

    def _bytes_kept(self, entry: Entry) -> int:
        try:
            return downloading.bytes_kept(entry, self._downloads())
        except (EaselError, OSError):
            return 0  # only a hint: Get itself says what is wrong with the folder

    def _job_ended(self, job_id: int) -> None:
        if self._queued.pop(job_id, None) is not None:
            self.refresh_installed()

    def _changed(self) -> None:
        if self._entries:
            self.dataChanged.emit(self.index(0, 0),
                                  self.index(len(self._entries) - 1, len(HEADERS) - 1))

    # The table -----------------------------------------------------------------------------

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008 (Qt's own default)
        return 0 if parent.isValid() else len(self._entries)

    def columnCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(HEADERS)

    def headerData(self, section: int, orientation: Qt.Orientation,
                   role: int = Qt.ItemDataRole.DisplayRole) -> object:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return HEADERS[section]
        return None

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> object:
        if not index.isValid() or index.row() >= len(self._entries):
            return None
        entry = self._entries[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return self._cells(entry)[index.column()]
        if role == Qt.ItemDataRole.ToolTipRole:
            return self._tips(entry)[index.column()]
        return None

    def _cells(self, entry: Entry) -> tuple[str, ...]:
        licence = entry.licence + (f" ({NO_COMMERCIAL_USE})" if entry.non_commercial else "")
        if is_installed(entry, self._installed):
            status = "installed"
        elif entry.id in self._queued.values():
            status = "in the queue"
        else:
            status = ""
        return entry.name, entry.use, size_text(entry.download_size), licence, status

    def _tips(self, entry: Entry) -> tuple[str | None, ...]:
        licence = " ".join(filter(None, [entry.licence_note, entry.licence_url]))
        disk = f"The import needs {size_text(entry.disk_during_import)} free while it runs."
        return f"Installs as '{entry.install_as}'", entry.use, disk, licence, None
