"""Outpaint handles over the canvas: the source's four edges, dragged outwards to say how many
pixels to add on each side, with the grown frame and its size shown. The Outpaint dialog
keeps working from the keyboard; both edit the same sides (``OutpaintModel``)."""

from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QMouseEvent, QPainter, QPainterPath, QPaintEvent, QPen
from PySide6.QtWidgets import QWidget

from desktop.app.viewmodels.outpaint import OutpaintModel
from desktop.app.widgets.canvas import Canvas

HANDLE_REACH = 8  # screen pixels from an edge that still grab it, at any zoom
HANDLE_LENGTH, HANDLE_WIDTH = 28, 8
GROWN_COLOUR = QColor(56, 189, 248, 60)
CURSORS = {"left": Qt.CursorShape.SizeHorCursor, "right": Qt.CursorShape.SizeHorCursor,
           "top": Qt.CursorShape.SizeVerCursor, "bottom": Qt.CursorShape.SizeVerCursor}
MARGIN = 24  # screen pixels around the grown frame when the view zooms out to show it


class OutpaintOverlay(QWidget):
    """A see-through layer over the canvas while the handles are on; a press away from the
    edges passes through, so the canvas still pans and zooms."""

    def __init__(self, frame: OutpaintModel, canvas: Canvas) -> None:
        super().__init__(canvas)
        self.frame = frame
        self.canvas = canvas
        self.setVisible(False)
        self.setMouseTracking(True)
        self.setToolTip("Drag an edge outwards to add pixels on that side (snapped to the "
                        "model's multiple); Outpaint… runs it")
        canvas.installEventFilter(self)
        canvas.zoom_changed.connect(self.update)
        frame.changed.connect(self.update)
        frame.editing_changed.connect(self._show)

    def _show(self) -> None:
        on = self.frame.editing
        self.setGeometry(self.canvas.rect())
        self.setVisible(on)
        self.raise_()
        if on:
            self._zoom_to_fit()

    def _zoom_to_fit(self) -> None:
        """Zoom out, if need be, so the grown frame shows around the centred source."""
        if self.frame.source_size is None:
            return
        width, height = self.frame.source_size
        sides = self.frame.sides
        across = width + 2 * max(sides.left, sides.right)  # the source stays centred
        down = height + 2 * max(sides.top, sides.bottom)
        scale = min((self.canvas.width() - MARGIN) / across,
                    (self.canvas.height() - MARGIN) / down)
        if 0 < scale < self.canvas.zoom:
            self.canvas.fit()
            self.canvas.zoom_by(min(scale / self.canvas.zoom, 1.0))

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if watched is self.canvas and event.type() == QEvent.Type.Resize:
            self.setGeometry(self.canvas.rect())
        return False

    def grown_rect(self) -> QRectF:
        """The grown picture on screen."""
        rect, zoom, sides = self.canvas.image_rect(), self.canvas.zoom, self.frame.sides
        return rect.adjusted(-sides.left * zoom, -sides.top * zoom, sides.right * zoom,
                             sides.bottom * zoom)

    def _reach(self) -> float:
        return HANDLE_REACH / max(self.canvas.zoom, 1e-6)

    def mousePressEvent(self, event: QMouseEvent) -> None:
        point = self.canvas.picture_point(event.position())
        if event.button() != Qt.MouseButton.LeftButton or not self.frame.begin_drag(
                point.x(), point.y(), self._reach()):
            event.ignore()  # the canvas pans

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        point = self.canvas.picture_point(event.position())
        if self.frame.dragging:
            self.frame.drag_to(point.x(), point.y())
            return
        side = self.frame.handle_at(point.x(), point.y(), self._reach())
        if side is None:
            self.unsetCursor()
        else:
            self.setCursor(CURSORS[side])
        event.ignore()

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        if self.frame.dragging:
            self.frame.end_drag()
        else:
            event.ignore()

    def paintEvent(self, event: QPaintEvent) -> None:
        if self.frame.source_size is None:
            return
        painter = QPainter(self)
        source, grown = self.canvas.image_rect(), self.grown_rect()
        border = QPainterPath()
        border.addRect(grown)
        border.addRect(source)  # odd-even: only the added border is filled
        painter.fillPath(border, GROWN_COLOUR)
        painter.setPen(QPen(QColor("#38bdf8"), 1, Qt.PenStyle.DashLine))
        painter.drawRect(grown)
        painter.setPen(QPen(QColor("black"), 1))
        painter.setBrush(QColor("white"))
        centre = grown.center()
        for x, y, across in ((grown.left(), centre.y(), False), (grown.right(), centre.y(), False),
                             (centre.x(), grown.top(), True), (centre.x(), grown.bottom(), True)):
            width, height = (HANDLE_LENGTH, HANDLE_WIDTH) if across else (
                HANDLE_WIDTH, HANDLE_LENGTH)
            painter.drawRect(QRectF(x - width / 2, y - height / 2, width, height))
        width, height = self.frame.source_size
        new_width, new_height = self.frame.grown_size()
        painter.setPen(self.palette().windowText().color())  # on the canvas's backdrop
        painter.drawText(grown.topLeft() + QPointF(4, -6),
                         f"{width} × {height}  →  {new_width} × {new_height}")
