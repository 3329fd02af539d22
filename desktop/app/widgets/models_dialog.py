"""The models view: installed models with family and size, import and remove."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QMessageBox,
    QPushButton,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from desktop.app.viewmodels.studio import Studio
from desktop.app.widgets.icons import icon

NOTHING_SELECTED = "Select a model in the list to remove it."


class ModelsDialog(QDialog):
    def __init__(self, studio: Studio, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Models")
        self.resize(560, 320)
        self.studio = studio
        self.table = QTableView()
        self.table.setModel(studio.models)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.table.verticalHeader().hide()
        import_file = QPushButton(icon("import"), "Import file…")
        import_file.setToolTip("A single-file .safetensors or .ckpt checkpoint")
        import_folder = QPushButton(icon("folder"), "Import folder…")
        import_folder.setToolTip("A diffusers folder or an ONNX folder (optimum, Amuse)")
        self.remove_button = remove = QPushButton(icon("trash"), "Remove")
        close = QPushButton("Close")
        buttons = QHBoxLayout()
        for button in (import_file, import_folder, remove):
            buttons.addWidget(button)
        buttons.addStretch(1)
        buttons.addWidget(close)
        layout = QVBoxLayout(self)
        layout.addWidget(self.table)
        layout.addLayout(buttons)
        import_file.clicked.connect(lambda: import_model(self.studio, self, folder=False))
        import_folder.clicked.connect(lambda: import_model(self.studio, self, folder=True))
        remove.clicked.connect(self._remove)
        close.clicked.connect(self.accept)
        # Remove says what it needs instead of doing nothing with no model selected.
        self.table.selectionModel().selectionChanged.connect(self._show_remove)
        studio.models.modelReset.connect(self._show_remove)
        self._show_remove()

    def _show_remove(self) -> None:
        chosen = bool(self.table.selectionModel().selectedRows())
        self.remove_button.setEnabled(chosen)
        self.remove_button.setToolTip("Remove the selected model from this computer" if chosen
                                      else NOTHING_SELECTED)

    def _remove(self) -> None:
        rows = self.table.selectionModel().selectedRows()
        if not rows:
            QMessageBox.information(self, "Models", NOTHING_SELECTED)
            return
        model = self.studio.models.model_at(rows[0].row())
        if model.built_in:
            QMessageBox.information(self, "Models", f"'{model.name}' is built into Easel and "
                                                    "cannot be removed.")
            return
        answer = QMessageBox.question(self, "Remove model",
                                      f"Remove '{model.name}' from this computer?")
        if answer == QMessageBox.StandardButton.Yes:
            self.studio.remove_model(model.name)


def import_model(studio: Studio, parent: QWidget, folder: bool) -> None:
    """Ask for a model file or folder and queue its import (progress and cancel in the
    job queue, like a generation)."""
    if folder:
        chosen = QFileDialog.getExistingDirectory(parent, "Import a model folder")
    else:
        chosen, _ = QFileDialog.getOpenFileName(
            parent, "Import a model file", "",
            "Checkpoints (*.safetensors *.ckpt *.pt *.bin);;All files (*)")
    if chosen:
        studio.import_model(Path(chosen))
