"""The first-run page: what Easel does, how to add a model, and a start with the starter."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from desktop.app.widgets.icons import icon

TEXT = """
<h2>Welcome to Easel</h2>
<p>Easel makes pictures from a description, on this computer, without the internet.</p>
<p>It comes with a small <b>starter model</b> that draws simple emoji scenes (a dog, a
rocket, the moon, a tree, … on a coloured background) at 256 × 256 pixels: try
<i>“a moon on the left and a tree on the right, on a black background”</i>.</p>
<p>For real pictures, add a Stable Diffusion model (1.x, 2.x or XL): a single
<code>.safetensors</code> file, a diffusers folder, or an ONNX folder. Use
<b>Import model…</b> below or in the Models menu; the import runs in the background.</p>
"""


class WelcomePage(QWidget):
    start = Signal()
    import_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        text = QLabel(TEXT)
        text.setWordWrap(True)
        text.setTextFormat(Qt.TextFormat.RichText)
        text.setMaximumWidth(560)
        start = QPushButton(icon("generate"), "Start with the starter model")
        start.setDefault(True)
        importing = QPushButton(icon("import"), "Import model…")
        start.clicked.connect(self.start)
        importing.clicked.connect(self.import_requested)
        buttons = QHBoxLayout()
        buttons.addWidget(start)
        buttons.addWidget(importing)
        buttons.addStretch(1)
        column = QVBoxLayout()
        column.addStretch(1)
        column.addWidget(text)
        column.addLayout(buttons)
        column.addStretch(2)
        outer = QHBoxLayout(self)
        outer.addStretch(1)
        outer.addLayout(column)
        outer.addStretch(1)
