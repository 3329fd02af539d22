"""Outpaint handles: the pixels to add on each side of the source, set by dragging its edges
on the canvas. The Outpaint dialog edits the same value (``Studio.outpaint_sides`` reads and
writes it here), so the handles and the four spin boxes always agree.

Sides are in source pixels, so the zoom changes nothing, and a drag snaps them to the model's
pixel multiple: a grown picture whose sides the model cannot take would be refused.
"""

from __future__ import annotations

from dataclasses import replace

from PySide6.QtCore import QObject, Signal

from desktop.app.editing import Sides
from desktop.app.viewmodels.prompt import PromptViewModel

MAX_EXTEND = 2048  # as the dialog's spin boxes


def snap_side(pixels: float, multiple: int) -> int:
    """Pixels to add on a side, rounded to the model's multiple and kept within 0..MAX_EXTEND
    (the outpaint handles and the Outpaint dialog round the same way)."""
    return min(max(round(pixels / multiple) * multiple, 0), MAX_EXTEND)


SIDES = ("left", "top", "right", "bottom")
# Which way each side grows, in picture axes: dragging the left edge leftwards adds pixels.
OUTWARD = {"left": (-1, 0), "top": (0, -1), "right": (1, 0), "bottom": (0, 1)}


class OutpaintModel(QObject):
    changed = Signal()  # the sides
    editing_changed = Signal()  # the handles were shown or hidden

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.sides = Sides()
        self.multiple = 8
        self.source_size: tuple[int, int] | None = None
        self.editing = False
        self._drag: tuple[str, tuple[float, float], int] | None = None  # side, start, value

    def follow(self, prompt: PromptViewModel) -> None:
        """Snap to the chosen model's pixel multiple."""
        def take_model() -> None:
            model = prompt.model()
            self.multiple = model.size_multiple if model is not None else 8

        prompt.form_changed.connect(take_model)
        prompt.models_changed.connect(take_model)
        take_model()

    def set_editing(self, on: bool) -> None:
        if on != self.editing:
            self.editing = on
            self._drag = None
            self.editing_changed.emit()

    def set_source_size(self, size: tuple[int, int] | None) -> None:
        if size != self.source_size:
            self.source_size = size
            self._drag = None
            self.changed.emit()

    def set_sides(self, sides: Sides) -> None:
        if sides != self.sides:
            self.sides = sides
            self.changed.emit()

    def set_side(self, side: str, pixels: float) -> None:
        """One side, snapped to the model's multiple and kept within 0..MAX_EXTEND."""
        self.set_sides(replace(self.sides, **{side: snap_side(pixels, self.multiple)}))

    def grown_size(self) -> tuple[int, int] | None:
        return None if self.source_size is None else self.sides.grown(*self.source_size)

    # Gestures, in source pixels (0, 0 at the source's top-left corner) ---------------------

    def handle_at(self, x: float, y: float, reach: float) -> str | None:
        """The side whose outer edge (of the grown frame) is within ``reach`` of the point."""
        if self.source_size is None:
            return None
        width, height = self.source_size
        left, top = -self.sides.left, -self.sides.top
        right, bottom = width + self.sides.right, height + self.sides.bottom
        along_x = left - reach <= x <= right + reach
        along_y = top - reach <= y <= bottom + reach
        distances = {"left": abs(x - left) if along_y else None,
                     "right": abs(x - right) if along_y else None,
                     "top": abs(y - top) if along_x else None,
                     "bottom": abs(y - bottom) if along_x else None}
        near = [(distance, side) for side, distance in distances.items()
                if distance is not None and distance <= reach]
        return min(near)[1] if near else None

    def begin_drag(self, x: float, y: float, reach: float = 4.0) -> bool:
        """Grab the edge at (x, y); False when there is none there."""
        side = self.handle_at(x, y, reach)
        if side is None:
            return False
        self._drag = (side, (x, y), getattr(self.sides, side))
        return True

    def drag_to(self, x: float, y: float) -> None:
        if self._drag is None:
            return
        side, (start_x, start_y), value = self._drag
        across, down = OUTWARD[side]
        self.set_side(side, value + (x - start_x) * across + (y - start_y) * down)

    def end_drag(self) -> None:
        self._drag = None

    @property
    def dragging(self) -> bool:
        return self._drag is not None
