"""Outpaint: how many pixels to add on each side, with the size the picture will have.

Four spin boxes rather than handles on the canvas edges: the numbers are exact (a model
wants multiples of its grid, and people ask for "128 on the right"), they work from the
keyboard, and the dialog is the same at any zoom. A number typed between multiples of the
model's pixel multiple is rounded to the nearest one (the size rule, ``engine.size_rule``).
"""

from __future__ import annotations

from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from desktop.app.editing import Sides
from desktop.app.viewmodels.outpaint import MAX_EXTEND, snap_side


class OutpaintDialog(QDialog):
    def __init__(self, picture_size: tuple[int, int], sides: Sides, step: int,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Outpaint")
        self._size = picture_size
        self._step = step
        self.boxes: dict[str, QSpinBox] = {}
        form = QFormLayout()
        for side in ("left", "top", "right", "bottom"):
            box = QSpinBox()
            box.setRange(0, MAX_EXTEND)
            box.setSingleStep(step)  # the model's grid, so the steps land on sizes it likes
            box.setSuffix(" px")
            box.setValue(getattr(sides, side))
            box.setAccessibleName(f"Pixels to add on the {side}")
            box.valueChanged.connect(self._show_size)
            box.editingFinished.connect(lambda box=box: box.setValue(self._snapped(box)))
            form.addRow(side.capitalize(), box)
            self.boxes[side] = box
        self.result_size = QLabel()
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok
                                        | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Outpaint")
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel(f"Pixels to add on each side, multiples of {step} for this "
                                f"model; the prompt says what fills them."))
        layout.addLayout(form)
        layout.addWidget(self.result_size)
        layout.addWidget(self.buttons)
        self._show_size()

    def sides(self) -> Sides:
        return Sides(**{side: self._snapped(box) for side, box in self.boxes.items()})

    def _snapped(self, box: QSpinBox) -> int:
        """The box's value rounded to the nearest multiple of the model's pixel multiple."""
        return snap_side(box.value(), self._step)

    def _show_size(self) -> None:
        width, height = self._size
        new_width, new_height = self.sides().grown(width, height)
        self.result_size.setText(f"{width} × {height}  →  {new_width} × {new_height} pixels")
        ok = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        ok.setEnabled((new_width, new_height) != (width, height))
