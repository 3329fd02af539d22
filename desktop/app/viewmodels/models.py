"""The models view: what is installed, its family and size on disk."""

from __future__ import annotations

from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    Qt,
)

from desktop.model_store import InstalledModel, ModelStore
from desktop.units import size_text

Index = QModelIndex | QPersistentModelIndex
HEADERS = ("Model", "Family", "Size on disk", "")


class ModelListModel(QAbstractTableModel):
    def __init__(self, store: ModelStore, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._store = store
        self._models: list[InstalledModel] = []
        self.refresh()

    def refresh(self) -> None:
        self.beginResetModel()
        self._models = self._store.list()
        self.endResetModel()

    def model_at(self, row: int) -> InstalledModel:
        return self._models[row]

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008 (Qt's own default)
        return 0 if parent.isValid() else len(self._models)

    def columnCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(HEADERS)

    def headerData(self, section: int, orientation: Qt.Orientation,
                   role: int = Qt.ItemDataRole.DisplayRole) -> object:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return HEADERS[section]
        return None

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> object:
        if not index.isValid() or role != Qt.ItemDataRole.DisplayRole:
            return None
        model = self._models[index.row()]
        return (model.name, model.family, size_text(model.size_bytes),
                "built in" if model.built_in else "")[index.column()]
