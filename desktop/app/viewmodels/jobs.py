"""The visible job queue: what is waiting, what runs, and how far it got."""

from __future__ import annotations

from dataclasses import dataclass, field

from PySide6.QtCore import QAbstractListModel, QModelIndex, QObject, QPersistentModelIndex, Qt

from desktop.app.worker import JobProgress

Index = QModelIndex | QPersistentModelIndex
JobIdRole = Qt.ItemDataRole.UserRole + 1


@dataclass
class JobRow:
    id: int
    title: str
    kind: str  # "generate", "import" or "download"
    running: bool = False
    progress: JobProgress | None = None
    extra: dict = field(default_factory=dict)  # what the job's owner needs back at the end


class JobQueueModel(QAbstractListModel):
    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._rows: list[JobRow] = []

    def add(self, row: JobRow) -> None:
        self.beginInsertRows(QModelIndex(), len(self._rows), len(self._rows))
        self._rows.append(row)
        self.endInsertRows()

    def find(self, job_id: int) -> JobRow | None:
        return next((row for row in self._rows if row.id == job_id), None)

    def remove(self, job_id: int) -> JobRow | None:
        for number, row in enumerate(self._rows):
            if row.id == job_id:
                self.beginRemoveRows(QModelIndex(), number, number)
                del self._rows[number]
                self.endRemoveRows()
                return row
        return None

    def set_running(self, job_id: int) -> None:
        self._update(job_id, running=True)

    def set_progress(self, job_id: int, progress: JobProgress) -> None:
        self._update(job_id, progress=progress)

    def running(self) -> JobRow | None:
        return next((row for row in self._rows if row.running), None)

    def ids(self) -> list[int]:
        return [row.id for row in self._rows]

    def _update(self, job_id: int, **values: object) -> None:
        for number, row in enumerate(self._rows):
            if row.id == job_id:
                for name, value in values.items():
                    setattr(row, name, value)
                index = self.index(number)
                self.dataChanged.emit(index, index)
                return

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008 (Qt's own default)
        return 0 if parent.isValid() else len(self._rows)

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> object:
        if not index.isValid() or index.row() >= len(self._rows):
            return None
        row = self._rows[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return f"{describe(row)}   {row.title}"
        if role == Qt.ItemDataRole.ToolTipRole:
            return row.title
        if role == JobIdRole:
            return row.id
        return None


def describe(row: JobRow) -> str:
    """"queued", "step 5/12 · 3 s left", "image 2/4 · step 5/12", "Downloading X · 1.2/4.3 GB
    · 45 MB/s · 69 s left"."""
    if not row.running:
        return "queued"
    progress = row.progress
    if progress is None:
        return "starting…"
    if progress.detail:  # a download: its own words for bytes, speed and time left
        return f"{progress.stage} · {progress.detail}" if progress.stage else progress.detail
    if progress.stage:
        stage = progress.stage[:1].upper() + progress.stage[1:]  # the engine's are lower case
        return f"{stage} ({progress.step}/{progress.steps})"
    parts = []
    if progress.together > 1:  # made together in one UNet call (on a GPU)
        last = progress.image + progress.together
        parts.append(f"images {progress.image + 1}–{last}/{progress.images}")
    elif progress.images > 1:
        parts.append(f"image {progress.image + 1}/{progress.images}")
    parts.append(f"step {progress.step}/{progress.steps}")
    left = progress.seconds_left
    if left is not None:
        parts.append(f"{left:.0f} s left" if left >= 1 else "almost done")
    return " · ".join(parts)
