"""Dragging mime data onto a widget in tests, the way a file manager or a browser would."""

from __future__ import annotations

from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QWidget


def drag_and_drop(widget: QWidget, data: QMimeData) -> bool:
    """Drag ``data`` into the middle of ``widget`` and drop it; False when it was refused."""
    middle = QPoint(widget.width() // 2, widget.height() // 2)
    # Qt gives the enter event whole pixels and the drop event fractional ones.
    enter = QDragEnterEvent(middle, Qt.DropAction.CopyAction, data,
                            Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    widget.dragEnterEvent(enter)
    if not enter.isAccepted():
        return False
    widget.dropEvent(QDropEvent(QPointF(middle), Qt.DropAction.CopyAction, data,
                                Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier))
    return True
