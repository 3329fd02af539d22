"""The Controls dock (below the gallery: the left column has no room to spare at 800 px): guess
mode and Add ▾ (a picture file, the canvas's picture, the mask tool's strokes as a scribble),
then one row per control, scrolling inside the dock: its control picture's preview (its ▾:
another picture, edit it on the canvas, save it), type, ControlNet, weight, the share of the
steps it steers, and canny's thresholds; while its picture is edited on the canvas, Use and
Cancel. A picture file dropped on the dock adds a control (dropped on a row: that control's
picture)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QAction, QDragEnterEvent, QDropEvent, QIcon, QPixmap
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QMenu,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from desktop.app.viewmodels.controls import ControlRow, ControlsModel
from desktop.app.widgets.drops import read_drop
from desktop.app.widgets.icons import icon

PREVIEW = 64  # px: the edges are readable and four rows fit beside the history
PICTURE_FILTER = "Pictures (*.png *.jpg *.jpeg *.webp)"
PNG_FILTER = "PNG pictures (*.png)"
NONE_INSTALLED = "none installed"


class ControlsPanel(QWidget):
    def __init__(self, controls: ControlsModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.vm = controls
        self._get_more: list[QAction] = []  # the window's Get models… and Import model…
        self.guess_mode = QCheckBox("ControlNet is more important")
        self.guess_mode.setToolTip("Guess mode: the controls steer without the prompt's help "
                                   "(A1111's Control Mode), for every control")
        self.add_button = QToolButton()
        self.add_button.setText("Add")
        self.add_button.setIcon(icon("import"))
        self.add_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.add_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.add_button.setToolTip("Add a control from a picture file, the picture on the "
                                   "canvas or the mask tool's strokes (or drop a picture file "
                                   "here)")
        menu = QMenu(self.add_button)
        self.from_file_action = menu.addAction("From a picture file…", self.add_from_file)
        self.from_canvas_action = menu.addAction("From the canvas picture",
                                                 controls.add_from_canvas)
        self.from_mask_action = menu.addAction("Scribble from the mask tool's strokes",
                                               controls.add_scribble_from_mask)
        self.from_mask_action.setToolTip("The lines painted with the mask tool (Ctrl+M) "
                                         "become a scribble control; the mask is kept")
        menu.setToolTipsVisible(True)
        self.add_button.setMenu(menu)
        rows = QWidget()
        self.rows_layout = QVBoxLayout(rows)
        self.rows_layout.setContentsMargins(0, 0, 0, 0)
        self.rows_layout.setSpacing(4)
        self.rows_layout.addStretch(1)
        self.body = QScrollArea()
        self.body.setWidget(rows)
        self.body.setWidgetResizable(True)
        self.body.setFrameShape(QFrame.Shape.NoFrame)
        self.body.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.hint = QLabel("Add a picture (or drop one here): its edges or lines steer the "
                           "next picture through a ControlNet.")
        self.hint.setWordWrap(True)
        self.hint.setEnabled(False)
        self.row_widgets: list[ControlRowWidget] = []
        self._layout()
        self.setAcceptDrops(True)
        controls.changed.connect(self._rebuild)
        controls.row_changed.connect(lambda index: self.row_widgets[index].show_row())
        controls.controlnets_changed.connect(self._show_controlnets)
        controls.editing_changed.connect(self._show_editing)
        controls.guess_mode_changed.connect(
            lambda: self.guess_mode.setChecked(controls.guess_mode))
        self.guess_mode.toggled.connect(controls.set_guess_mode)
        self._rebuild()

    def _layout(self) -> None:
        header = QHBoxLayout()
        header.setContentsMargins(0, 0, 0, 0)
        header.addWidget(self.guess_mode)
        header.addStretch(1)
        header.addWidget(self.add_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 0, 4, 4)
        layout.addLayout(header)
        layout.addWidget(self.hint)
        layout.addWidget(self.body, 1)

    def offer(self, actions: Sequence[QAction]) -> None:
        """The window's Get models… and Import model…, offered where no ControlNet fits."""
        self._get_more = list(actions)
        self._show_controlnets()

    def add_from_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Add a control picture", "", PICTURE_FILTER)
        if path:
            self.vm.add_file(Path(path))

    def wanted_height(self) -> int:
        """Room for the header and every row (the window gives the dock that much)."""
        rows = sum(widget.sizeHint().height() + 4 for widget in self.row_widgets)
        return self.add_button.sizeHint().height() + 16 + (rows or self.hint.sizeHint().height())

    def _rebuild(self) -> None:
        for widget in self.row_widgets:
            self.rows_layout.removeWidget(widget)
            widget.hide()
            widget.deleteLater()
        self.row_widgets = [ControlRowWidget(self.vm, index, self._get_more)
                            for index in range(len(self.vm.rows))]
        for position, widget in enumerate(self.row_widgets):
            self.rows_layout.insertWidget(position, widget)
        self.guess_mode.setChecked(self.vm.guess_mode)
        self.hint.setVisible(not self.vm.rows)
        self.body.setVisible(bool(self.vm.rows))

    def _show_editing(self) -> None:
        for widget in self.row_widgets:
            widget.show_editing()

    def _show_controlnets(self) -> None:
        for widget in self.row_widgets:
            widget.get_more = self._get_more
            widget.show_row()

    # A picture file dropped here adds a control ------------------------------------------

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if read_drop(event.mimeData()).path is not None:
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        path = read_drop(event.mimeData()).path
        if path is None:
            return
        event.acceptProposedAction()
        target = self.childAt(event.position().toPoint())
        while target is not None and not isinstance(target, ControlRowWidget):
            target = target.parentWidget()
        if target is not None:
            self.vm.set_picture(target.index, Path(path))
        else:
            self.vm.add_file(Path(path))


class ControlRowWidget(QFrame):
    """One control; it shows ``vm.rows[index]`` and writes the user's edits back."""

    def __init__(self, controls: ControlsModel, index: int, get_more: list[QAction],
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.vm = controls
        self.index = index
        self.get_more = get_more
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.preview = QToolButton()
        self.preview.setIconSize(QSize(PREVIEW, PREVIEW))
        self.preview.setFixedSize(PREVIEW + 22, PREVIEW + 8)  # and the menu's arrow
        self.preview.clicked.connect(self._choose_picture)
        self.preview.setPopupMode(QToolButton.ToolButtonPopupMode.MenuButtonPopup)
        picture_menu = QMenu(self.preview)
        picture_menu.addAction("Choose another picture…", self._choose_picture)
        self.edit_action = picture_menu.addAction(
            "Edit on the canvas…", lambda: controls.edit_on_canvas(self.index))
        self.save_action = picture_menu.addAction("Save control picture…", self._save_picture)
        self.preview.setMenu(picture_menu)
        self.use_button = QPushButton("Use as control picture")
        self.use_button.setToolTip("This control reads the picture as painted on the canvas, "
                                   "as it is; the mask tool goes back as it was")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Leave the control picture as it was")
        self.type_box = QComboBox()
        self.type_box.setToolTip("What the ControlNet reads from the picture")
        for choice in controls.type_choices():
            self.type_box.addItem(choice.name, choice.name)
            item = self.type_box.model().item(self.type_box.count() - 1)
            item.setToolTip(choice.missing or choice.description)
            item.setEnabled(not choice.missing)  # an annotator model to import first
        self.controlnet_box = QComboBox()
        self.controlnet_box.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.controlnet_box.setMinimumContentsLength(4)  # room for the preview's ▾
        self.controlnet_box.setToolTip("The installed ControlNet that reads this control; "
                                       "only those fitting the model and the type are listed")
        self.remove_button = QToolButton()
        self.remove_button.setIcon(icon("clear"))
        self.remove_button.setAutoRaise(True)
        self.remove_button.setToolTip("Remove this control")
        self.weight = _number_box(0.0, 2.0, 0.05, "How strongly the control steers (A1111's "
                                  "Control Weight)")
        self.start = _number_box(0.0, 1.0, 0.05, "The share of the steps after which the "
                                 "control starts steering")
        self.end = _number_box(0.0, 1.0, 0.05, "The share of the steps after which the "
                               "control stops steering")
        self.low = _threshold_box("Edges weaker than this are dropped")
        self.high = _threshold_box("Edges stronger than this are always kept")
        self.edges_label = QLabel("Edges")
        self._layout()
        self.show_row()
        self._connect()

    def _layout(self) -> None:
        grid = QGridLayout(self)
        grid.setContentsMargins(4, 4, 4, 4)
        grid.setHorizontalSpacing(4)
        grid.setVerticalSpacing(2)
        grid.addWidget(self.preview, 0, 0, 3, 1, Qt.AlignmentFlag.AlignTop)
        top = QHBoxLayout()
        top.addWidget(self.type_box)
        top.addWidget(self.controlnet_box, 1)
        top.addWidget(self.remove_button)
        grid.addLayout(top, 0, 1, 1, 2)
        grid.addWidget(QLabel("Weight"), 1, 1)
        grid.addWidget(self.weight, 1, 2)
        grid.addWidget(QLabel("Steps"), 2, 1)
        grid.addLayout(_pair(self.start, self.end), 2, 2)
        grid.addWidget(self.edges_label, 3, 1)
        self.edges = _pair(self.low, self.high)
        grid.addLayout(self.edges, 3, 2)
        editing = QHBoxLayout()
        editing.addWidget(self.use_button, 1)
        editing.addWidget(self.cancel_button)
        grid.addLayout(editing, 4, 0, 1, 3)
        grid.setColumnStretch(2, 1)

    def _connect(self) -> None:
        vm, index = self.vm, self.index
        self.type_box.activated.connect(
            lambda _: vm.set_type(index, self.type_box.currentData()))
        self.controlnet_box.activated.connect(self._controlnet_chosen)
        self.remove_button.clicked.connect(lambda: vm.remove(index))
        self.use_button.clicked.connect(vm.use_edit)
        self.cancel_button.clicked.connect(vm.cancel_edit)
        self.weight.valueChanged.connect(lambda value: vm.update(index, weight=value))
        self.start.valueChanged.connect(lambda value: vm.update(index, start=value))
        self.end.valueChanged.connect(lambda value: vm.update(index, end=value))
        # Canny runs again at each new pair (about 0.1 s for 1024²; the row keeps the last).
        self.low.valueChanged.connect(self._thresholds)
        self.high.valueChanged.connect(self._thresholds)

    def show_row(self) -> None:
        row: ControlRow = self.vm.rows[self.index]
        self._show_preview(row)
        self.type_box.setCurrentIndex(self.type_box.findData(row.control_type))
        self._fill_controlnets(row)
        for box, value in ((self.weight, row.weight), (self.start, row.start),
                           (self.end, row.end), (self.low, row.low), (self.high, row.high)):
            if box.value() != value:
                box.blockSignals(True)
                box.setValue(value)
                box.blockSignals(False)
        canny = row.control_type == "canny"
        self.edges_label.setVisible(canny)
        self.low.setVisible(canny)
        self.high.setVisible(canny)
        self.save_action.setEnabled(row.made is not None)
        self.show_editing()

    def show_editing(self) -> None:
        """Use and Cancel while this control's picture is on the canvas; no other control
        can go there meanwhile."""
        row = self.vm.rows[self.index]
        here = self.vm.edited is row
        for widget in (self.use_button, self.cancel_button):
            widget.setVisible(here)
        self.edit_action.setEnabled(self.vm.edited is None and row.made is not None)

    def _show_preview(self, row: ControlRow) -> None:
        if row.preview is not None:
            pixmap = QPixmap.fromImage(row.preview).scaled(
                PREVIEW, PREVIEW, Qt.AspectRatioMode.KeepAspectRatio,
                Qt.TransformationMode.SmoothTransformation)
            self.preview.setIcon(QIcon(pixmap))
            self.preview.setText("")
            self.preview.setToolTip(f"{row.picture_name}: click to choose another picture; "
                                    f"▾ to edit it on the canvas or save it")
        else:
            self.preview.setIcon(QIcon())
            self.preview.setText("Picture…")
            self.preview.setToolTip(row.problem or "Click to choose this control's picture, "
                                    "or drop a picture file on this row")

    def _fill_controlnets(self, row: ControlRow) -> None:
        box = self.controlnet_box
        box.clear()
        names = self.vm.controlnets(row.control_type)
        for name in names:
            box.addItem(name, name)
        if not names:
            box.addItem(f"{NONE_INSTALLED} — " + " / ".join(
                action.text() for action in self.get_more), "")
            for action in self.get_more:
                box.addItem(action.text(), action)
        box.setCurrentIndex(max(0, box.findData(row.controlnet)) if names else 0)
        box.setToolTip(box.currentText())  # a long name is cut short in the box

    def _controlnet_chosen(self, position: int) -> None:
        data = self.controlnet_box.itemData(position)
        if isinstance(data, QAction):
            self.controlnet_box.setCurrentIndex(0)
            data.trigger()
        elif data:
            self.vm.update(self.index, controlnet=data)

    def _thresholds(self, _value: int = 0) -> None:
        low, high = self.low.value(), self.high.value()
        row = self.vm.rows[self.index]
        if (low, high) != (row.low, row.high):
            self.vm.update(self.index, low=low, high=max(low, high))

    def _choose_picture(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose the control picture", "",
                                              PICTURE_FILTER)
        if path:
            self.vm.set_picture(self.index, Path(path))


    def _save_picture(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save control picture",
                                              f"control-{self.index + 1}.png", PNG_FILTER)
        if path:
            self.vm.save_picture(self.index, Path(path))


def _number_box(low: float, high: float, step: float, tip: str) -> QDoubleSpinBox:
    box = QDoubleSpinBox()
    box.setRange(low, high)
    box.setSingleStep(step)
    box.setDecimals(2)
    box.setToolTip(tip)
    return box


def _threshold_box(tip: str) -> QSpinBox:
    box = QSpinBox()
    box.setRange(0, 2040)  # canny's gradient sizes reach 2040 (engine.control.canny)
    box.setSingleStep(10)
    box.setToolTip(tip)
    return box


def _pair(first: QWidget, second: QWidget) -> QHBoxLayout:
    pair = QHBoxLayout()
    pair.setContentsMargins(0, 0, 0, 0)
    pair.addWidget(first, 1)
    pair.addWidget(QLabel("to"))
    pair.addWidget(second, 1)
    return pair
