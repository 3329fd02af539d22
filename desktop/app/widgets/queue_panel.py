"""The job queue: what waits and what runs, a progress bar with steps and time left, and
buttons to cancel the running job or take a waiting one off the queue."""

from __future__ import annotations

from PySide6.QtWidgets import (
    QHBoxLayout,
    QListView,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from desktop.app.viewmodels.jobs import JobIdRole, describe
from desktop.app.viewmodels.studio import Studio
from desktop.app.widgets.icons import icon


class QueuePanel(QWidget):
    def __init__(self, studio: Studio, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.studio = studio
        self.list = QListView()
        self.list.setModel(studio.jobs)
        self.list.setToolTip("Jobs run one at a time, top first")
        self.bar = QProgressBar()
        self.bar.setRange(0, 1000)
        self.bar.setTextVisible(True)
        self.bar.setFormat("idle")
        self.bar.setValue(0)
        self.cancel_button = QPushButton(icon("cancel"), "Cancel")
        self.cancel_button.setToolTip("Stop the running job (Esc); nothing is saved")
        self.remove_button = QPushButton("Remove from queue")
        self.remove_button.setToolTip("Take the selected waiting job off the queue")
        buttons = QHBoxLayout()
        buttons.addWidget(self.bar, 1)
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(self.remove_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(buttons)
        layout.addWidget(self.list)
        self.cancel_button.clicked.connect(studio.cancel_running)
        self.remove_button.clicked.connect(self._remove_selected)
        studio.progress_changed.connect(self._show_progress)
        self._show_progress()

    def _show_progress(self) -> None:
        running = self.studio.jobs.running()
        self.cancel_button.setEnabled(running is not None)
        if running is None:
            self.bar.setValue(0)
            self.bar.setFormat("idle")
            return
        progress = self.studio.progress
        self.bar.setValue(0 if progress is None else int(progress.fraction * 1000))
        self.bar.setFormat(describe(running))

    def _remove_selected(self) -> None:
        for index in self.list.selectionModel().selectedIndexes():
            self.studio.cancel(index.data(JobIdRole))
