"""The Picture details window: the library's fields for one picture and its Content
Credentials, as read-only text (so a prompt or a hash can be selected and copied)."""

from __future__ import annotations

from PySide6.QtWidgets import QDialog, QDialogButtonBox, QPlainTextEdit, QVBoxLayout, QWidget

from desktop.app.viewmodels.picture_details import Details, PictureDetailsModel

READING = "Reading…"


class PictureDetailsDialog(QDialog):
    def __init__(self, model: PictureDetailsModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Picture details")
        self.resize(640, 420)
        self._image_id: str | None = None
        self.text = QPlainTextEdit()
        self.text.setReadOnly(True)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.text)
        layout.addWidget(buttons)
        model.ready.connect(self._show)
        model.failed.connect(self._show_failure)

    def expect(self, image_id: str) -> None:
        """Wait for this picture's details (an answer for another one is not shown)."""
        self._image_id = image_id
        self.text.setPlainText(READING)

    def _show(self, details: Details) -> None:
        if details.image_id != self._image_id:
            return
        lines = [f"{name}: {value}" for name, value in details.fields]
        self.text.setPlainText("\n".join([*lines, "", *details.credentials]))

    def _show_failure(self, sentence: str) -> None:
        self.text.setPlainText(sentence)
