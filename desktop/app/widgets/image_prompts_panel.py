"""The Image prompts section of the Controls dock, below the ControlNets: Add ▾ (a picture
file, the canvas's picture), the reference pictures as small thumbnails in one row (each with
×), then one weight for them all and the installed IP-Adapter that reads them. A picture file
dropped on the section adds a reference."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QAction, QDragEnterEvent, QDropEvent, QPixmap
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QMenu,
    QScrollArea,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from desktop.app.viewmodels.image_prompts import ImagePromptsModel, ReferencePicture
from desktop.app.widgets.drops import read_drop
from desktop.app.widgets.icons import icon

THUMBNAIL = 48  # px: eight references scroll in one row beside the gallery's width
PICTURE_FILTER = "Pictures (*.png *.jpg *.jpeg *.webp)"
NONE_INSTALLED = "none installed"


class ImagePromptsPanel(QWidget):
    def __init__(self, image_prompts: ImagePromptsModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.vm = image_prompts
        self._get_more: list[QAction] = []  # the window's Get models… and Import model…
        self.title = QLabel("Image prompts")
        self.title.setToolTip("Reference pictures whose look and subject carry into the next "
                              "picture, through an IP-Adapter")
        self.add_button = self._add_button()
        self.hint = QLabel("Add a reference picture (or drop one here): its look and subject "
                           "carry into the next picture.")
        self.hint.setWordWrap(True)
        self.hint.setEnabled(False)
        strip = QWidget()
        self.strip_layout = QHBoxLayout(strip)
        self.strip_layout.setContentsMargins(0, 0, 0, 0)
        self.strip_layout.setSpacing(4)
        self.strip_layout.addStretch(1)
        self.strip = QScrollArea()
        self.strip.setWidget(strip)
        self.strip.setWidgetResizable(True)
        self.strip.setFrameShape(QFrame.Shape.NoFrame)
        self.strip.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.strip.setFixedHeight(THUMBNAIL + 8 + self.strip.horizontalScrollBar()
                                  .sizeHint().height())
        self.weight = QDoubleSpinBox()
        self.weight.setRange(0.0, 2.0)
        self.weight.setSingleStep(0.05)
        self.weight.setDecimals(2)
        self.weight.setToolTip("How strongly the reference pictures steer, all of them together "
                               "(the IP-Adapter's scale)")
        self.adapter_box = QComboBox()
        self.adapter_box.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.adapter_box.setMinimumContentsLength(6)
        self.reference_widgets: list[ReferenceWidget] = []
        self._layout()
        self.setAcceptDrops(True)
        self._connect()
        self._rebuild()
        self._show_settings()

    def _add_button(self) -> QToolButton:
        button = QToolButton()
        button.setText("Add")
        button.setIcon(icon("import"))
        button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        button.setToolTip("Add a reference picture from a file or from the picture on the "
                          "canvas (or drop a picture file here)")
        menu = QMenu(button)
        self.from_file_action = menu.addAction("From a picture file…", self.add_from_file)
        self.from_canvas_action = menu.addAction("From the canvas picture",
                                                 self.vm.add_from_canvas)
        button.setMenu(menu)
        return button

    def _layout(self) -> None:
        line = QFrame()
        line.setFrameShape(QFrame.Shape.HLine)
        line.setFrameShadow(QFrame.Shadow.Sunken)
        header = QHBoxLayout()
        header.addWidget(self.title)
        header.addStretch(1)
        header.addWidget(self.add_button)
        settings = QHBoxLayout()
        settings.addWidget(QLabel("Weight"))
        settings.addWidget(self.weight)
        settings.addSpacing(8)
        settings.addWidget(QLabel("IP-Adapter"))
        settings.addWidget(self.adapter_box, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 0, 4, 4)
        layout.setSpacing(2)
        layout.addWidget(line)
        layout.addLayout(header)
        layout.addWidget(self.hint)
        layout.addWidget(self.strip)
        layout.addLayout(settings)

    def _connect(self) -> None:
        vm = self.vm
        vm.changed.connect(self._rebuild)
        vm.settings_changed.connect(self._show_settings)
        vm.adapters_changed.connect(self._show_settings)
        self.weight.valueChanged.connect(vm.set_weight)
        self.adapter_box.activated.connect(self._adapter_chosen)

    def offer(self, actions: Sequence[QAction]) -> None:
        """The window's Get models… and Import model…, offered where no IP-Adapter fits."""
        self._get_more = list(actions)
        self._show_settings()

    def add_from_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Add a reference picture", "",
                                              PICTURE_FILTER)
        if path:
            self.vm.add_file(Path(path))

    def _rebuild(self) -> None:
        for widget in self.reference_widgets:
            self.strip_layout.removeWidget(widget)
            widget.hide()
            widget.deleteLater()
        self.reference_widgets = [ReferenceWidget(reference, index, self.vm)
                                  for index, reference in enumerate(self.vm.references)]
        for position, widget in enumerate(self.reference_widgets):
            self.strip_layout.insertWidget(position, widget)
        self.hint.setVisible(not self.vm.references)
        self.strip.setVisible(bool(self.vm.references))

    def _show_settings(self) -> None:
        if self.weight.value() != self.vm.weight:
            self.weight.blockSignals(True)
            self.weight.setValue(self.vm.weight)
            self.weight.blockSignals(False)
        box = self.adapter_box
        box.clear()
        names = self.vm.adapters()
        for name in names:
            box.addItem(name, name)
        if not names:
            box.addItem(f"{NONE_INSTALLED} — " + " / ".join(
                action.text() for action in self._get_more), "")
            for action in self._get_more:
                box.addItem(action.text(), action)
        box.setCurrentIndex(max(0, box.findData(self.vm.adapter)) if names else 0)
        box.setToolTip(f"The IP-Adapter that reads the reference pictures: {box.currentText()} "
                       f"(only those fitting the model are listed)")

    def _adapter_chosen(self, position: int) -> None:
        data = self.adapter_box.itemData(position)
        if isinstance(data, QAction):
            self.adapter_box.setCurrentIndex(0)
            data.trigger()
        elif data:
            self.vm.set_adapter(data)

    # A picture file dropped here adds a reference ------------------------------------------

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if read_drop(event.mimeData()).path is not None:
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        path = read_drop(event.mimeData()).path
        if path is not None:
            event.acceptProposedAction()
            self.vm.add_file(Path(path))


class ReferenceWidget(QFrame):
    """One reference picture's thumbnail, its × in the corner."""

    def __init__(self, reference: ReferencePicture, index: int, image_prompts: ImagePromptsModel,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setFixedSize(THUMBNAIL + 4, THUMBNAIL + 4)
        self.setToolTip(reference.name)
        self.picture = QLabel(self)
        self.picture.setGeometry(2, 2, THUMBNAIL, THUMBNAIL)
        self.picture.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.picture.setPixmap(QPixmap.fromImage(reference.preview).scaled(
            THUMBNAIL, THUMBNAIL, Qt.AspectRatioMode.KeepAspectRatio,
            Qt.TransformationMode.SmoothTransformation))
        self.remove_button = QToolButton(self)
        self.remove_button.setIcon(icon("clear"))
        self.remove_button.setIconSize(QSize(12, 12))
        self.remove_button.setFixedSize(16, 16)
        self.remove_button.move(THUMBNAIL + 4 - 17, 1)
        self.remove_button.setToolTip(f"Remove {reference.name}")
        self.remove_button.clicked.connect(lambda: image_prompts.remove(index))
