"""The Picture details window: the library's fields for one picture and its Content
Credentials, as selectable text (so a prompt or a hash can be copied)."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QVBoxLayout,
    QWidget,
)

from desktop.app.viewmodels.picture_details import Details, PictureDetailsModel


class PictureDetailsDialog(QDialog):
    def __init__(self, model: PictureDetailsModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Picture details")
        self.setMinimumWidth(520)
        self._image_id: str | None = None
        self.fields = QFormLayout()
        self.credentials = _text("")
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(self.fields)
        layout.addWidget(self.credentials)
        layout.addWidget(buttons)
        model.ready.connect(self._show)
        model.failed.connect(self._show_failure)

    def expect(self, image_id: str) -> None:
        """Wait for this picture's details (an answer for another one is not shown)."""
        self._image_id = image_id
        while self.fields.rowCount():
            self.fields.removeRow(0)
        self.credentials.setText("Reading…")

    def _show(self, details: Details) -> None:
        if details.image_id != self._image_id:
            return
        for name, value in details.fields:
            self.fields.addRow(f"{name}:", _text(value))
        self.credentials.setText("\n".join(details.credentials))

    def _show_failure(self, sentence: str) -> None:
        self.credentials.setText(sentence)


def _text(value: str) -> QLabel:
    label = QLabel(value)
    label.setWordWrap(True)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return label
