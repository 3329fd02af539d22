"""The prompt history beside the prompt panel: searchable, pinned prompts first."""

from __future__ import annotations

from PySide6.QtCore import QAbstractListModel, QModelIndex, QObject, QPersistentModelIndex, Qt

from desktop.library import HistoryEntry, Library

SHOWN = 300
Index = QModelIndex | QPersistentModelIndex


class HistoryModel(QAbstractListModel):
    def __init__(self, library: Library, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._library = library
        self._entries: list[HistoryEntry] = []
        self.search_text = ""
        self.refresh()

    def refresh(self) -> None:
        self.beginResetModel()
        self._entries = self._library.history(self.search_text, "prompt", SHOWN)
        self.endResetModel()

    def set_search(self, text: str) -> None:
        self.search_text = text
        self.refresh()

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008 (Qt's own default)
        return 0 if parent.isValid() else len(self._entries)

    def prompt_at(self, row: int) -> str:
        return self._entries[row].text

    def is_pinned(self, row: int) -> bool:
        return self._entries[row].pinned

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> object:
        if not index.isValid() or index.row() >= len(self._entries):
            return None
        entry = self._entries[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            text = " ".join(entry.text.split())
            return ("📌 " if entry.pinned else "") + (text if len(text) < 90 else text[:89] + "…")
        if role == Qt.ItemDataRole.ToolTipRole:
            return f"{entry.text}\nused {entry.uses}×"
        return None

    def set_pinned(self, row: int, pinned: bool) -> None:
        self._library.pin_prompt(self._entries[row].text, pinned)
        self.refresh()
