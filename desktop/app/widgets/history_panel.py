"""The prompt history: a search box and the list; click a prompt to use it again."""

from __future__ import annotations

from PySide6.QtCore import QModelIndex, QPoint, Qt
from PySide6.QtWidgets import QLineEdit, QListView, QMenu, QVBoxLayout, QWidget

from desktop.app.viewmodels.history import HistoryModel
from desktop.app.viewmodels.prompt import PromptViewModel


class HistoryPanel(QWidget):
    def __init__(self, history: HistoryModel, prompt: PromptViewModel,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.history = history
        self.prompt = prompt
        self.search = QLineEdit()
        self.search.setPlaceholderText("Search earlier prompts")
        self.search.setClearButtonEnabled(True)
        self.list = QListView()
        self.list.setModel(history)
        # One line each, cut with "…" (the tooltip has it all): wrapped text in rows of the
        # same height was cut off halfway through its second line.
        self.list.setWordWrap(False)
        self.list.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.list.setUniformItemSizes(True)
        self.list.setSpacing(1)
        self.list.setToolTip("Click a prompt to use it again; right-click to pin it on top")
        self.list.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.search)
        layout.addWidget(self.list)
        self.search.textChanged.connect(history.set_search)
        self.list.clicked.connect(self._use)
        self.list.activated.connect(self._use)
        self.list.customContextMenuRequested.connect(self._menu)

    def _use(self, index: QModelIndex) -> None:
        self.prompt.use_prompt(self.history.prompt_at(index.row()))

    def _menu(self, point: QPoint) -> None:
        index = self.list.indexAt(point)
        if not index.isValid():
            return
        row = index.row()
        pinned = self.history.is_pinned(row)
        menu = QMenu(self)
        menu.addAction("Use this prompt", lambda: self._use(index))
        menu.addAction("Unpin" if pinned else "Pin on top",
                       lambda: self.history.set_pinned(row, not pinned))
        menu.exec(self.list.viewport().mapToGlobal(point))
