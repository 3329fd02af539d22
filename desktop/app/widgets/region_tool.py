"""The Region tool in the window: the layout drawn over the canvas (the frame of the picture
to be generated, its boxes with their prompts) and the panel listing the boxes, each with an
editable prompt, and the region weight.

Both only turn the user's input into calls on the view-model (``RegionsModel``), which keeps
the boxes in picture pixels; the overlay asks the canvas where the picture lies on screen.
"""

from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, QPointF, QRectF, Qt
from PySide6.QtGui import (
    QColor,
    QFontMetrics,
    QKeyEvent,
    QMouseEvent,
    QPainter,
    QPaintEvent,
    QPen,
)
from PySide6.QtWidgets import (
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QScrollArea,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from desktop.app.viewmodels.regions import (
    INSIDE,
    MAX_BOXES,
    MAX_WEIGHT,
    MIN_WEIGHT,
    RegionsModel,
)
from desktop.app.widgets.canvas import Canvas
from desktop.app.widgets.icons import icon

# One colour per box, told apart on light and dark pictures; the panel's rows use the same.
BOX_COLOURS = tuple(QColor(name) for name in (
    "#f59e0b", "#38bdf8", "#f472b6", "#4ade80", "#a78bfa", "#fb7185", "#facc15", "#2dd4bf"))
HANDLE_REACH = 6  # screen pixels from an edge that still grab it, at any zoom
HANDLE_SIZE = 7
DIM = QColor(0, 0, 0, 120)  # over the current picture: the layout is what is being made
TIP = ("Drag to draw a box; drag a box to move it, its edges or corners to resize it; Delete "
       "removes the selected box. The middle button moves the view.")
CURSORS = {(-1, -1): Qt.CursorShape.SizeFDiagCursor, (1, 1): Qt.CursorShape.SizeFDiagCursor,
           (-1, 1): Qt.CursorShape.SizeBDiagCursor, (1, -1): Qt.CursorShape.SizeBDiagCursor,
           (-1, 0): Qt.CursorShape.SizeHorCursor, (1, 0): Qt.CursorShape.SizeHorCursor,
           (0, -1): Qt.CursorShape.SizeVerCursor, (0, 1): Qt.CursorShape.SizeVerCursor,
           INSIDE: Qt.CursorShape.SizeAllCursor}


def box_colour(index: int) -> QColor:
    return BOX_COLOURS[index % len(BOX_COLOURS)]


class RegionOverlay(QWidget):
    """A see-through layer over the whole canvas, shown while the Region tool is on. The
    wheel and the middle button pass through to the canvas, which zooms and pans."""

    def __init__(self, regions: RegionsModel, canvas: Canvas) -> None:
        super().__init__(canvas)
        self.regions = regions
        self.canvas = canvas
        self.setVisible(False)
        self.setMouseTracking(True)  # for the cursor over edges and corners
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setToolTip(TIP)
        self.setCursor(Qt.CursorShape.CrossCursor)
        canvas.installEventFilter(self)  # to cover the canvas whatever its size
        canvas.zoom_changed.connect(self.update)
        regions.changed.connect(self.update)
        regions.selection_changed.connect(self.update)
        regions.size_changed.connect(self._show_frame)
        regions.editing_changed.connect(self._show_frame)

    def _show_frame(self) -> None:
        on = self.regions.editing
        self.setGeometry(self.canvas.rect())
        self.setVisible(on)
        self.raise_()
        self.canvas.set_frame(self.regions.size if on else None)
        if on:
            self.setFocus()  # for Delete

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if watched is self.canvas and event.type() == QEvent.Type.Resize:
            self.setGeometry(self.canvas.rect())
        return False

    # Geometry ------------------------------------------------------------------------------

    def picture_point(self, position: QPointF) -> QPointF:
        return self.canvas.picture_point(position)  # the overlay lies exactly on the canvas

    def screen_rect(self, box: tuple[int, int, int, int]) -> QRectF:
        frame, zoom = self.canvas.image_rect(), self.canvas.zoom
        x, y, width, height = box
        return QRectF(frame.x() + x * zoom, frame.y() + y * zoom, width * zoom, height * zoom)

    def _reach(self) -> float:
        return HANDLE_REACH / max(self.canvas.zoom, 1e-6)

    # Mouse and keys ------------------------------------------------------------------------

    def mousePressEvent(self, event: QMouseEvent) -> None:
        if event.button() != Qt.MouseButton.LeftButton:
            event.ignore()  # the canvas pans with the middle button
            return
        self.setFocus()
        point = self.picture_point(event.position())
        self.regions.begin_drag(point.x(), point.y(), self._reach())

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        point = self.picture_point(event.position())
        if self.regions.dragging:
            self.regions.drag_to(point.x(), point.y())
            return
        found = self.regions.hit(point.x(), point.y(), self._reach())
        self.setCursor(CURSORS[found[1]] if found else Qt.CursorShape.CrossCursor)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.MouseButton.LeftButton:
            self.regions.end_drag()
        else:
            event.ignore()

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:
        self.mousePressEvent(event)  # a second click on a box, not the canvas's zoom toggle

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if event.key() in (Qt.Key.Key_Delete, Qt.Key.Key_Backspace):
            self.regions.remove_selected()
        else:
            super().keyPressEvent(event)

    # Painting ------------------------------------------------------------------------------

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        frame = self.canvas.image_rect()
        if self.canvas.has_image:
            painter.fillRect(frame, DIM)
        else:
            painter.fillRect(frame, self.palette().base().color())
        painter.setPen(QPen(QColor("#9ca3af"), 1, Qt.PenStyle.DashLine))
        painter.drawRect(frame)
        width, height = self.regions.size
        painter.drawText(frame.adjusted(4, 4, -4, -4),
                         Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignBottom,
                         f"{width} × {height}")
        for index in range(len(self.regions.boxes)):
            self._paint_box(painter, index, index == self.regions.selected)

    def _paint_box(self, painter: QPainter, index: int, selected: bool) -> None:
        box = self.regions.boxes[index]
        rect = self.screen_rect(box.rect)
        colour = box_colour(index)
        fill = QColor(colour)
        fill.setAlpha(70 if selected else 40)
        painter.fillRect(rect, fill)
        painter.setPen(QPen(colour, 3 if selected else 2))
        painter.drawRect(rect)
        label = f"{index + 1}  {box.prompt.strip() or '(no prompt)'}"
        metrics = QFontMetrics(painter.font())
        text = metrics.elidedText(label, Qt.TextElideMode.ElideRight, max(int(rect.width()) - 8, 8))
        text_rect = QRectF(rect.x() + 2, rect.y() + 2, metrics.horizontalAdvance(text) + 6,
                           metrics.height() + 2)
        painter.fillRect(text_rect.intersected(rect), QColor(0, 0, 0, 160))
        painter.setPen(QColor("white"))
        painter.drawText(text_rect, Qt.AlignmentFlag.AlignCenter, text)
        if selected:
            painter.setPen(QPen(QColor("black"), 1))
            painter.setBrush(QColor("white"))
            for x in (rect.left(), rect.center().x(), rect.right()):
                for y in (rect.top(), rect.center().y(), rect.bottom()):
                    if (x, y) != (rect.center().x(), rect.center().y()):
                        painter.drawRect(QRectF(x - HANDLE_SIZE / 2, y - HANDLE_SIZE / 2,
                                                HANDLE_SIZE, HANDLE_SIZE))
            painter.setBrush(Qt.BrushStyle.NoBrush)


class RegionPanel(QWidget):
    """The boxes as a list: each one's prompt (typed here), size and a delete button, and
    the weight of the boxes' prompts against the global one."""

    def __init__(self, regions: RegionsModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.regions = regions
        self.prompts: list[QLineEdit] = []  # one per box, in order (tests type into them)
        self.sizes: list[QLabel] = []
        hint = QLabel(f"Drag on the canvas to draw up to {MAX_BOXES} boxes, each with its "
                      "own prompt; Generate follows them while this tool is on.")
        hint.setWordWrap(True)
        self.weight = QDoubleSpinBox()
        self.weight.setRange(MIN_WEIGHT, MAX_WEIGHT)
        self.weight.setSingleStep(0.5)
        self.weight.setDecimals(1)
        self.weight.setValue(regions.weight)
        self.weight.setToolTip("How much a box's prompt outweighs the whole picture's prompt "
                               "inside the box")
        self.weight.setAccessibleName("Region weight")
        self.weight.valueChanged.connect(regions.set_weight)
        self.clear_button = QPushButton(icon("clear"), "Delete all boxes")
        self.clear_button.clicked.connect(regions.clear)
        form = QFormLayout()
        form.addRow("Region weight", self.weight)
        rows = QWidget()
        self._rows = QVBoxLayout(rows)
        self._rows.setContentsMargins(0, 0, 0, 0)
        self._rows.setSpacing(4)
        self._rows.setAlignment(Qt.AlignmentFlag.AlignTop)
        scroll = QScrollArea()  # eight rows keep their height in a short dock
        scroll.setWidget(rows)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        layout = QVBoxLayout(self)
        layout.addWidget(hint)
        layout.addLayout(form)
        layout.addWidget(scroll, 1)
        layout.addWidget(self.clear_button)
        regions.changed.connect(self._show)
        regions.selection_changed.connect(self._show_selection)
        regions.drawn.connect(self._type_prompt)
        self._show()

    def _show(self) -> None:
        if len(self.prompts) != len(self.regions.boxes):
            self._rebuild()
        for index, box in enumerate(self.regions.boxes):
            if self.prompts[index].text() != box.prompt:  # leave the cursor of one being typed
                self.prompts[index].setText(box.prompt)
            x, y, width, height = box.rect
            self.sizes[index].setText(f"{width} × {height} at {x}, {y}")
        if self.weight.value() != self.regions.weight:
            self.weight.setValue(self.regions.weight)
        self.clear_button.setEnabled(bool(self.regions.boxes))
        self._show_selection()

    def _rebuild(self) -> None:
        while self._rows.count():
            row = self._rows.takeAt(0).widget()
            # Hidden and deleted in place: without a parent it would be a window of its own
            # until the event loop deletes it (seen on X11 as a stray box over the menu bar).
            row.hide()
            row.deleteLater()
        self.prompts, self.sizes = [], []
        for index in range(len(self.regions.boxes)):
            self._rows.addWidget(self._row(index))

    def _row(self, index: int) -> QWidget:
        row = QWidget()
        number = QLabel(str(index + 1))
        number.setFixedWidth(22)
        number.setAlignment(Qt.AlignmentFlag.AlignCenter)
        number.setStyleSheet(f"background: {box_colour(index).name()}; color: black; "
                             "border-radius: 3px;")
        prompt = QLineEdit()
        prompt.setPlaceholderText(f"What box {index + 1} shows")
        prompt.setAccessibleName(f"Prompt of box {index + 1}")
        prompt.textEdited.connect(lambda text, at=index: self.regions.set_prompt(at, text))
        prompt.installEventFilter(self)  # focusing a prompt selects its box
        size = QLabel()
        size.setStyleSheet("color: gray;")
        delete = QToolButton()
        delete.setIcon(icon("trash"))
        delete.setToolTip(f"Delete box {index + 1}")
        delete.clicked.connect(lambda _=False, at=index: self.regions.remove(at))
        top = QHBoxLayout()
        top.setContentsMargins(0, 0, 0, 0)
        top.addWidget(number)
        top.addWidget(prompt, 1)
        top.addWidget(delete)
        column = QVBoxLayout(row)
        column.setContentsMargins(0, 0, 0, 0)
        column.setSpacing(0)
        column.addLayout(top)
        column.addWidget(size)
        self.prompts.append(prompt)
        self.sizes.append(size)
        return row

    def _show_selection(self) -> None:
        for index, prompt in enumerate(self.prompts):
            prompt.setStyleSheet("font-weight: bold;" if index == self.regions.selected else "")

    def _type_prompt(self, index: int) -> None:
        if 0 <= index < len(self.prompts):
            self.prompts[index].setFocus()  # a new box: type what it shows straight away

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() == QEvent.Type.FocusIn and watched in self.prompts:
            self.regions.select(self.prompts.index(watched))
        return False
