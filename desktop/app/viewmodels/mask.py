"""The inpainting mask: what the mask tool paints, kept at the source picture's size.

White repaints, black keeps, as the engine reads it. Strokes are drawn without
antialiasing, so every pixel is plainly in or out and what the overlay shows is exactly what
the engine repaints. Sizes are in picture pixels, so zooming the canvas does not change
what a stroke covers.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QObject, QPointF, QRect, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QImage, QPainter, QPen

MAX_UNDO = 30  # a 1024 × 1024 mask is 1 MB, so 30 steps cost at most about 30 MB
MIN_BRUSH, MAX_BRUSH = 1, 512
DEFAULT_BRUSH = 32
PAINT, KEEP = 255, 0


class MaskModel(QObject):
    # The part of the mask that changed, in picture pixels; an empty QRect: all of it (or
    # its size). A stroke reports only what it touched, so a large mask redraws quickly.
    changed = Signal(QRect)
    tool_changed = Signal()  # brush or eraser, or the brush size

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.image = QImage()  # Grayscale8 at the source's size; null without a source
        self.brush_size = DEFAULT_BRUSH
        self.erasing = False
        self._undo: list[QImage] = []
        self._last: QPointF | None = None  # the stroke's previous point
        self._lent: tuple[QImage, list[QImage]] | None = None  # the mask while a layer is lent

    # The mask as a whole -------------------------------------------------------------------

    def reset(self, width: int, height: int) -> None:
        """An empty mask for a new source picture of this size (the old one's undo goes)."""
        self.image = QImage(width, height, QImage.Format.Format_Grayscale8)
        self.image.fill(KEEP)
        self._undo.clear()
        self._last = None
        self._lent = None  # the old source's mask is no use now; a lent layer's edit ends too
        self.changed.emit(QRect())

    @property
    def size(self) -> tuple[int, int] | None:
        return None if self.image.isNull() else (self.image.width(), self.image.height())

    def pixels(self) -> np.ndarray:
        """uint8 (H, W): 255 repaint, 0 keep; a copy, safe to hand to the worker."""
        if self.image.isNull():
            return np.zeros((0, 0), np.uint8)
        rows = np.frombuffer(self.image.constBits(), np.uint8).reshape(
            self.image.height(), self.image.bytesPerLine())
        return rows[:, :self.image.width()].copy()  # lines are padded to 4 bytes

    def is_empty(self) -> bool:
        return not self.pixels().any()

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    def clear(self) -> None:
        if self.image.isNull() or self.is_empty():
            return  # nothing to clear: no undo step for it either
        self._remember()
        self.image.fill(KEEP)
        self.changed.emit(QRect())

    def invert(self) -> None:
        if self.image.isNull():
            return
        self._remember()
        self.image.invertPixels()
        self.changed.emit(QRect())

    def undo(self) -> None:
        if self._undo:
            self.image = self._undo.pop()
            self.changed.emit(QRect())

    def _remember(self) -> None:
        self._undo.append(self.image.copy())
        del self._undo[:-MAX_UNDO]

    # A lent layer: another grey picture painted with the same tools ------------------------

    def lend(self, layer: np.ndarray) -> None:
        """Paint ``layer`` (uint8 (H, W) at the mask's size) in place of the mask, with the
        same brush, eraser and undo, until ``take_back``; the mask and its undo wait as they
        are. Greys are kept (the image is Grayscale8): only strokes become 255 or 0."""
        if self._lent is None:
            self._lent = (self.image, self._undo)
        layer = np.ascontiguousarray(layer, dtype=np.uint8)
        height, width = layer.shape
        self.image = QImage(layer.data, width, height, width,
                            QImage.Format.Format_Grayscale8).copy()  # owns its pixels
        self._undo, self._last = [], None
        self.changed.emit(QRect())

    @property
    def is_lent(self) -> bool:
        return self._lent is not None

    def take_back(self) -> np.ndarray | None:
        """The lent layer as painted, the mask back as it was; None when nothing is lent (a
        new source picture ended it)."""
        if self._lent is None:
            return None
        layer = self.pixels()
        (self.image, self._undo), self._lent = self._lent, None
        self._last = None
        self.changed.emit(QRect())
        return layer

    # The tool ------------------------------------------------------------------------------

    def set_brush_size(self, size: int) -> None:
        size = min(max(int(size), MIN_BRUSH), MAX_BRUSH)
        if size != self.brush_size:
            self.brush_size = size
            self.tool_changed.emit()

    def set_erasing(self, erasing: bool) -> None:
        if erasing != self.erasing:
            self.erasing = erasing
            self.tool_changed.emit()

    # Strokes, in picture pixels ------------------------------------------------------------

    def begin_stroke(self, point: QPointF) -> None:
        if self.image.isNull():
            return
        self._remember()  # one undo step per stroke
        self._last = point
        self._draw(point, point)

    def extend_stroke(self, point: QPointF) -> None:
        if self._last is not None:
            self._draw(self._last, point)
            self._last = point

    def end_stroke(self) -> None:
        self._last = None

    def _draw(self, start: QPointF, end: QPointF) -> None:
        painter = QPainter(self.image)
        value = KEEP if self.erasing else PAINT
        colour = QColor(value, value, value)
        if start == end:  # a dab: Qt draws nothing for a line of no length
            radius = self.brush_size / 2
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(colour)
            painter.drawEllipse(start, radius, radius)
            painter.fillRect(QRect(int(start.x()), int(start.y()), 1, 1), colour)  # 1 px too
        else:
            painter.setPen(QPen(colour, self.brush_size, Qt.PenStyle.SolidLine,
                                Qt.PenCapStyle.RoundCap, Qt.PenJoinStyle.RoundJoin))
            painter.drawLine(start, end)
        painter.end()
        reach = self.brush_size / 2 + 2
        self.changed.emit(QRectF(start, end).normalized().adjusted(
            -reach, -reach, reach, reach).toAlignedRect())
