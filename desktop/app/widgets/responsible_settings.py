"""The settings' "Pictures and content" group: Content Credentials (on by default), the prompt
in them (off: prompts can be private), the invisible watermark (off), and the prompt filter's
mode with a button that opens its word list in the user's text editor."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QPushButton,
    QWidget,
)

from desktop.settings import Settings

FILTER_MODES = (
    ("Warn: make the picture and label it", "warn"),
    ("Block: refuse the prompt", "block"),
    ("Off", "off"),
)


class ResponsibleSettings(QGroupBox):
    def __init__(self, settings: Settings, open_word_list: Callable[[], None] | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__("Pictures and content", parent)
        self.credentials = QCheckBox("Sign every picture with Content Credentials (C2PA)")
        self.credentials.setChecked(settings.content_credentials)
        self.credentials.setToolTip(
            "Each picture says it was made by Easel with a model, and that it is unchanged "
            "since; signed with this installation's own key, which no authority vouches for")
        self.prompt = QCheckBox("Include the prompt in the credentials")
        self.prompt.setChecked(settings.credentials_prompt)
        self.prompt.setToolTip("Off by default: anyone who checks a shared picture could "
                               "read it")
        self.watermark = QCheckBox("Add an invisible watermark")
        self.watermark.setChecked(settings.watermark)
        self.watermark.setToolTip("Marks new pictures for detectors; it does not survive "
                                  "cropping, heavy compression or regeneration")
        self.filter = QComboBox()
        for label, mode in FILTER_MODES:
            self.filter.addItem(label, mode)
        self.filter.setCurrentIndex(max(self.filter.findData(settings.content_filter), 0))
        self.filter.setToolTip("What a prompt with a term of your word list does")
        self.word_list = QPushButton("Edit word list…")
        self.word_list.setToolTip("Opens the list in your text editor; changes count from the "
                                  "next picture")
        self.word_list.setEnabled(open_word_list is not None)
        if open_word_list is not None:
            self.word_list.clicked.connect(open_word_list)
        self.credentials.toggled.connect(self.prompt.setEnabled)
        self.prompt.setEnabled(settings.content_credentials)
        filter_row = QHBoxLayout()
        filter_row.addWidget(self.filter, 1)
        filter_row.addWidget(self.word_list)
        indented = QHBoxLayout()  # the prompt belongs to the credentials: shown under them
        indented.setContentsMargins(24, 0, 0, 0)
        indented.addWidget(self.prompt)
        layout = QFormLayout(self)
        layout.addRow(self.credentials)
        layout.addRow(indented)
        layout.addRow(self.watermark)
        layout.addRow("Content filter", filter_row)

    def chosen(self) -> dict:
        """The fields of Settings this group sets."""
        return {"content_credentials": self.credentials.isChecked(),
                "credentials_prompt": self.prompt.isChecked(),
                "watermark": self.watermark.isChecked(),
                "content_filter": self.filter.currentData()}
