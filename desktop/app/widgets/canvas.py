"""The canvas: the current picture with zoom and pan, fit and 100 %, live previews, a drop
target for a source picture, and the mask tool (painting over the source, shown as a
translucent overlay)."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QEvent, QPointF, QRect, QRectF, Qt, Signal
from PySide6.QtGui import (
    QBrush,
    QColor,
    QDragEnterEvent,
    QDropEvent,
    QImage,
    QMouseEvent,
    QPainter,
    QPaintEvent,
    QPen,
    QPixmap,
    QResizeEvent,
    QWheelEvent,
)
from PySide6.QtWidgets import QWidget

from desktop.app.viewmodels.mask import MaskModel
from desktop.app.widgets.drops import can_take, read_drop

MIN_ZOOM, MAX_ZOOM = 0.05, 32.0
ZOOM_STEP = 1.25
MASK_COLOUR = QColor(255, 40, 90)  # shown at MASK_OPACITY over the picture
MASK_OPACITY = 0.5
LENT_DIM = QColor(0, 0, 0, 200)  # a control picture's black, the picture faint beneath
# Transparency shows as the thumbnails show it: squares of two light greys (fixed on screen,
# so zooming does not turn them into a blur or a few huge tiles).
CHECKER_GREYS = (QColor(204, 204, 204), QColor(255, 255, 255))
CHECKER_SQUARE = 8
DEFAULT_TIP = "Scroll to zoom, drag to move; drop a picture here to use it as the source image"


class Canvas(QWidget):
    file_dropped = Signal(Path)  # a local file (a file manager, the gallery)
    data_dropped = Signal(bytes, str)  # a picture's bytes from a browser, and its name if known
    web_address_dropped = Signal(str)  # only a link: the picture is not in the drag
    zoom_changed = Signal(float)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setAcceptDrops(True)
        self.setMinimumSize(200, 200)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setToolTip(DEFAULT_TIP)
        self._pixmap: QPixmap | None = None
        self._size: tuple[int, int] | None = None  # the size to draw at (a preview's target)
        self._smooth = True
        self.zoom = 1.0
        self._offset = QPointF(0, 0)  # picture centre relative to the widget centre
        self._fitting = True  # follow the window size until the user zooms
        self._drag_from: QPointF | None = None
        self.hint = "Type a prompt and press Ctrl+Enter"
        self._mask: MaskModel | None = None
        self._mask_overlay: QImage | None = None  # updated where the mask changes
        self.mask_editing = False
        self._painting = False
        self._pointer: QPointF | None = None  # where the brush outline is drawn
        self._frame: tuple[int, int] | None = None  # a tool's layout size (the Region tool)

    # What to show --------------------------------------------------------------------------

    def show_image(self, image: QImage | None, draw_size: tuple[int, int] | None = None,
                   preview: bool = False) -> None:
        """Show ``image``, drawn at ``draw_size`` when given (a small live preview is shown at
        the size the picture will have, so the view does not jump when it ends)."""
        new_size = draw_size or (None if image is None else (image.width(), image.height()))
        size_changed = new_size != self._size
        self._pixmap = None if image is None else QPixmap.fromImage(image)
        self._size = new_size
        self._smooth = not preview  # a preview is blurry anyway; keep it cheap
        if size_changed and self._fitting:
            self.fit()
        self.update()

    @property
    def has_image(self) -> bool:
        return self._pixmap is not None

    # The mask tool -------------------------------------------------------------------------

    def set_mask(self, mask: MaskModel) -> None:
        self._mask = mask
        mask.changed.connect(self._mask_changed)
        mask.tool_changed.connect(self.update)

    def set_mask_editing(self, on: bool) -> None:
        """Show the mask over the picture and paint it with the left button (the middle
        button still moves the picture)."""
        self.mask_editing = on
        self._painting = False
        self.setMouseTracking(on)  # for the brush outline
        if on:
            self.setCursor(Qt.CursorShape.CrossCursor)
            self.setToolTip("Paint over the part to repaint ([ and ] change the brush size); "
                            "the middle button moves the picture")
            self._mask_changed(QRect())
        else:
            self.unsetCursor()
            self.setToolTip(DEFAULT_TIP)
            self._mask_overlay = None
            self.update()

    def set_frame(self, size: tuple[int, int] | None) -> None:
        """Lay the view out at ``size`` (the picture about to be generated) whatever picture
        is shown, which is drawn into that frame; None: back to the picture's own size."""
        if size != self._frame:
            self._frame = size
            self.fit()

    def _shown_size(self) -> tuple[int, int] | None:
        return self._frame or self._size

    def picture_point(self, position: QPointF) -> QPointF:
        """A widget position in the picture's own pixels."""
        rect = self.image_rect()
        return QPointF((position.x() - rect.x()) / self.zoom, (position.y() - rect.y()) / self.zoom)

    def _mask_changed(self, area: QRect) -> None:
        if not self.mask_editing or self._mask is None or self._mask.image.isNull():
            return
        mask = self._mask.image
        if area.isNull() or self._mask_overlay is None or (
                self._mask_overlay.size() != mask.size()):
            self._mask_overlay = _overlay(mask, self._layer_colour())
        else:  # a stroke: redo only what it touched (a 2048 px overlay takes ~30 ms whole)
            area = area.intersected(mask.rect())
            painter = QPainter(self._mask_overlay)
            painter.setCompositionMode(QPainter.CompositionMode.CompositionMode_Source)
            painter.drawImage(area.topLeft(), _overlay(mask.copy(area), self._layer_colour()))
            painter.end()
        self.update()

    def _layer_colour(self) -> QColor:
        """A control picture lent to the mask tool shows as itself, white lines on black."""
        return QColor("white") if self._mask is not None and self._mask.is_lent else MASK_COLOUR

    # Zoom and pan --------------------------------------------------------------------------

    def fit(self) -> None:
        self._fitting = True
        self._offset = QPointF(0, 0)
        if self._shown_size():
            width, height = self._shown_size()
            margin = 16
            scale = min((self.width() - margin) / width, (self.height() - margin) / height)
            self._set_zoom(min(max(scale, MIN_ZOOM), MAX_ZOOM))
        self.update()

    def actual_size(self) -> None:
        self._fitting = False
        self._offset = QPointF(0, 0)
        self._set_zoom(1.0)

    def zoom_by(self, factor: float, around: QPointF | None = None) -> None:
        """Zoom keeping the point under ``around`` (the mouse) still."""
        self._fitting = False
        old = self.zoom
        new = min(max(old * factor, MIN_ZOOM), MAX_ZOOM)
        if around is not None:
            centre = QPointF(self.width() / 2, self.height() / 2)
            point = around - centre - self._offset
            self._offset -= point * (new / old - 1)
        self._set_zoom(new)

    def _set_zoom(self, value: float) -> None:
        self.zoom = value
        self.zoom_changed.emit(value)
        self.update()

    def image_rect(self) -> QRectF:
        size = self._shown_size()
        if not size:
            return QRectF()
        width, height = size[0] * self.zoom, size[1] * self.zoom
        centre = QPointF(self.width() / 2, self.height() / 2) + self._offset
        return QRectF(centre.x() - width / 2, centre.y() - height / 2, width, height)

    # Events --------------------------------------------------------------------------------

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), self.palette().window().color().darker(115))
        if self._pixmap is None:
            if self._frame is None:  # a tool's empty frame says what to do itself
                painter.setPen(QColor("#9ca3af"))
                painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, self.hint)
            return
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform,
                              self._smooth and self.zoom < 1)
        if not self._smooth:  # live previews are tiny: scale them up smoothly
            painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
        if self._pixmap.hasAlphaChannel():  # a cut-out: what is transparent shows as such
            painter.fillRect(self.image_rect(), _checkerboard())
        painter.drawPixmap(self.image_rect(), self._pixmap, QRectF(self._pixmap.rect()))
        if self.mask_editing:
            self._paint_mask(painter)

    def _paint_mask(self, painter: QPainter) -> None:
        if self._mask_overlay is not None:
            lent = self._mask is not None and self._mask.is_lent
            if lent:  # the picture shows through faintly, to trace over
                painter.fillRect(self.image_rect(), LENT_DIM)
            painter.setOpacity(1.0 if lent else MASK_OPACITY)
            painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, False)  # crisp
            painter.drawImage(self.image_rect(), self._mask_overlay,
                              QRectF(self._mask_overlay.rect()))
            painter.setOpacity(1.0)
        if self._pointer is not None and self._mask is not None:
            radius = self._mask.brush_size * self.zoom / 2
            painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
            painter.setBrush(Qt.BrushStyle.NoBrush)
            for colour, width in ((QColor(0, 0, 0, 160), 3), (QColor("white"), 1)):
                painter.setPen(QPen(colour, width))  # seen on light and dark pictures alike
                painter.drawEllipse(self._pointer, radius, radius)

    def resizeEvent(self, event: QResizeEvent) -> None:
        if self._fitting:
            self.fit()
        super().resizeEvent(event)

    def wheelEvent(self, event: QWheelEvent) -> None:
        steps = event.angleDelta().y() / 120
        if steps and self._shown_size():
            self.zoom_by(ZOOM_STEP ** steps, event.position())

    def mousePressEvent(self, event: QMouseEvent) -> None:
        button = event.button()
        if self.mask_editing and button == Qt.MouseButton.LeftButton and self._mask is not None:
            self._painting = True
            self._mask.begin_stroke(self.picture_point(event.position()))
        elif button in (Qt.MouseButton.LeftButton, Qt.MouseButton.MiddleButton):
            self._drag_from = event.position()
            self.setCursor(Qt.CursorShape.ClosedHandCursor)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        if self.mask_editing:
            self._pointer = event.position()
            self.update()
        if self._painting and self._mask is not None:
            self._mask.extend_stroke(self.picture_point(event.position()))
        elif self._drag_from is not None:
            self._fitting = False
            self._offset += event.position() - self._drag_from
            self._drag_from = event.position()
            self.update()

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        if self._painting and self._mask is not None:
            self._mask.end_stroke()
        self._painting = False
        self._drag_from = None
        if self.mask_editing:
            self.setCursor(Qt.CursorShape.CrossCursor)
        else:
            self.unsetCursor()

    def leaveEvent(self, event: QEvent) -> None:
        self._pointer = None
        self.update()
        super().leaveEvent(event)

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:
        if self.mask_editing:
            self.mousePressEvent(event)  # a quick second dab, not a zoom change
            return
        if self._fitting:
            self.actual_size()
        else:
            self.fit()

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if can_take(event.mimeData()):
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        drop = read_drop(event.mimeData())
        if drop.path is not None:
            self.file_dropped.emit(drop.path)
        elif drop.data is not None:
            self.data_dropped.emit(drop.data, drop.name)
        elif drop.web_address is not None:
            self.web_address_dropped.emit(drop.web_address)
        else:
            return
        event.acceptProposedAction()


def _checkerboard() -> QBrush:
    tile = QPixmap(2 * CHECKER_SQUARE, 2 * CHECKER_SQUARE)
    tile.fill(CHECKER_GREYS[1])
    painter = QPainter(tile)
    painter.fillRect(0, 0, CHECKER_SQUARE, CHECKER_SQUARE, CHECKER_GREYS[0])
    painter.fillRect(CHECKER_SQUARE, CHECKER_SQUARE, CHECKER_SQUARE, CHECKER_SQUARE,
                     CHECKER_GREYS[0])
    painter.end()
    return QBrush(tile)


def _overlay(mask: QImage, colour: QColor = MASK_COLOUR) -> QImage:
    """The mask in ``colour``: white (repaint) shows, black (keep) is clear."""
    overlay = QImage(mask.size(), QImage.Format.Format_ARGB32_Premultiplied)
    overlay.fill(colour)
    overlay.setAlphaChannel(mask)
    return overlay
