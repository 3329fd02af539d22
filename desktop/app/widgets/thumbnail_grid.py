"""The gallery's grid: a QListView that does not re-lay out every picture when one changes."""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtCore import QModelIndex, QPersistentModelIndex
from PySide6.QtWidgets import QListView

Index = QModelIndex | QPersistentModelIndex


class ThumbnailGrid(QListView):
    """A list view for items that are all the same size (``setUniformItemSizes``).

    QListView answers every ``dataChanged`` by laying out all its items again, in case one
    changed size: with 100,000 pictures that is some 100,000 calls into the Python model for
    each thumbnail that arrives, and it kept the GUI thread busy the whole time a gallery
    scrolled. Items of one size cannot move when their data changes, so only the changed
    cells are repainted. (The grid has no editors to update, which the base class would do.)
    """

    def dataChanged(self, top_left: Index, bottom_right: Index,  # noqa: N802 (Qt's name)
                    roles: Sequence[int] = ()) -> None:
        if not self.uniformItemSizes():
            super().dataChanged(top_left, bottom_right, list(roles))
        elif top_left == bottom_right:
            self.update(top_left)  # that cell's rectangle only
        else:
            self.viewport().update()  # a page of rows: whatever of it is on screen
