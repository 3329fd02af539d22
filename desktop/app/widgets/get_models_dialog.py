"""Models › Get models…: the catalogue with size, licence and use, and Get, which shows the
licence and the disk needed before it queues the download (progress and Cancel are in the
job queue).

The dialog is not modal, so the queue's Cancel stays in reach while it is open.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QShowEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMessageBox,
    QPushButton,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from desktop.app.viewmodels.catalogue import CatalogueModel
from desktop.app.widgets.icons import icon

INTRO = ("Models Easel can download and import for you. Sizes are downloads; the import "
         "needs more room while it runs. Progress and Cancel are in the job queue.")
# Wrapped columns: the catalogue's one-line uses and its long licence names ("... (no
# commercial use)" must show, not be cut off) fit in two lines at the default size.
WRAPPED_WIDTHS = {1: 280, 3: 300}  # Use, Licence


class GetModelsDialog(QDialog):
    def __init__(self, catalogue: CatalogueModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Get models")
        self.resize(1020, 440)
        self.catalogue = catalogue
        intro = QLabel(INTRO)
        intro.setWordWrap(True)
        self.error = QLabel()  # why the catalogue could not be read, if it could not
        self.error.setWordWrap(True)
        self.table = QTableView()
        self.table.setModel(catalogue)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setWordWrap(True)
        self.table.verticalHeader().hide()
        self._size_columns()
        self.get_button = QPushButton(icon("import"), "Get…")
        close = QPushButton("Close")
        buttons = QHBoxLayout()
        buttons.addWidget(self.get_button)
        buttons.addStretch(1)
        buttons.addWidget(close)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addWidget(self.error)
        layout.addWidget(self.table)
        layout.addLayout(buttons)
        self.get_button.clicked.connect(self.get_selected)
        self.table.doubleClicked.connect(self.get_selected)
        close.clicked.connect(self.close)
        self.table.selectionModel().selectionChanged.connect(self._show_get)
        catalogue.dataChanged.connect(self._show_get)
        catalogue.modelReset.connect(self._show_get)
        self._show_get()

    def showEvent(self, event: QShowEvent) -> None:
        """Read the catalogue and what is installed each time the dialog opens."""
        if not event.spontaneous():
            self.catalogue.load()
            self.error.setText(self.catalogue.error or "")
            self.error.setVisible(self.catalogue.error is not None)
        super().showEvent(event)

    def _size_columns(self) -> None:
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        for column, width in WRAPPED_WIDTHS.items():
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.Interactive)
            header.resizeSection(column, width)
        header.setStretchLastSection(True)
        self.table.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)

    def selected_row(self) -> int | None:
        rows = self.table.selectionModel().selectedRows()
        return rows[0].row() if rows else None

    def _show_get(self) -> None:
        reason = self.catalogue.why_not(self.selected_row())
        self.get_button.setEnabled(reason is None)
        self.get_button.setToolTip(reason or "Show the licence and the disk it needs, then "
                                             "download and import it")

    def get_selected(self) -> None:
        """Get the selected model once the user has seen its licence and agreed."""
        row = self.selected_row()
        if self.catalogue.why_not(row) is not None:
            return  # the button's tooltip says why (a double-click on an installed row)
        headline, details = self.catalogue.confirmation(row)
        if confirm(self, headline, details):
            self.catalogue.get(row)


def confirm(parent: QWidget, headline: str, details: str) -> bool:
    """Ask before a download: the licence and the sizes, with Get and Cancel."""
    box = QMessageBox(QMessageBox.Icon.Question, "Get model", headline,
                      QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel, parent)
    box.setInformativeText(details)
    box.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    box.button(QMessageBox.StandardButton.Yes).setText("Get")
    box.setDefaultButton(QMessageBox.StandardButton.Cancel)  # the licence is read, not skipped
    return QMessageBox.StandardButton(box.exec()) == QMessageBox.StandardButton.Yes
