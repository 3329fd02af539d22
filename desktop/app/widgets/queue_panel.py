"""The job queue: what waits and what runs, a progress bar with steps and time left, and
buttons to cancel the running job or take a waiting one off the queue.

Idle, or with one job running, it is a single line (the bar names the running job), so the
canvas keeps the height; the list of jobs shows only while some wait behind the running one.
"""

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

LIST_ROWS = 3  # jobs the list shows at least, while it shows
QWIDGETSIZE_MAX = (1 << 24) - 1  # Qt's "no maximum"


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
        self.cancel_button.setToolTip("Stop the running job (Esc); nothing is saved, except "
                                      "what a download fetched: Get resumes it")
        self.remove_button = QPushButton(icon("clear"), "Remove")
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
        for signal in (studio.jobs.rowsInserted, studio.jobs.rowsRemoved,
                       studio.jobs.modelReset):
            signal.connect(self._show_waiting)
        self._show_progress()
        self._show_waiting()

    def _show_waiting(self) -> None:
        waiting = self.studio.jobs.rowCount() > 1
        row = max(self.list.sizeHintForRow(0), self.fontMetrics().height() + 4)
        self.list.setMinimumHeight(row * LIST_ROWS + 2 * self.list.frameWidth())
        self.list.setVisible(waiting)
        self.remove_button.setVisible(waiting)
        # A cap while nothing waits, so the dock gives the height back once the list goes.
        line = max(self.bar.sizeHint().height(), self.cancel_button.sizeHint().height())
        self.setMaximumHeight(QWIDGETSIZE_MAX if waiting else line)

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
