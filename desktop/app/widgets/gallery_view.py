"""The gallery: a virtualised thumbnail grid with search, a favourites filter, multi-select,
delete with undo, reuse, copy, open folder, dragging pictures out, and the editing actions
(use as source, variations, edit), export."""

from __future__ import annotations

from PySide6.QtCore import QModelIndex, QPoint, QSize, Qt, QUrl
from PySide6.QtGui import QDesktopServices, QKeySequence
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListView,
    QMenu,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from desktop.app.instructing import is_instruct_model, wrong_model
from desktop.app.upscaling import UPSCALE_SCALES
from desktop.app.viewmodels.gallery import EntryRole, ImageEntry
from desktop.app.viewmodels.studio import Studio
from desktop.app.widgets.export_actions import ExportActions
from desktop.app.widgets.icons import icon
from desktop.app.widgets.thumbnail_grid import ThumbnailGrid

SPACING = 6


class GalleryView(QWidget):
    def __init__(self, studio: Studio, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.studio = studio
        self.model = studio.gallery
        self.exports: ExportActions | None = None  # the window's Export actions, for the menu
        self.background = None  # the window's BackgroundActions, for the menu
        self.search = QLineEdit()
        self.search.setPlaceholderText("Search the gallery by prompt")
        self.search.setClearButtonEnabled(True)
        self.favourites = QToolButton()
        self.favourites.setIcon(icon("favourite"))
        self.favourites.setCheckable(True)
        self.favourites.setToolTip("Show only favourites")
        self.count = QLabel()
        self.grid = ThumbnailGrid()
        # List mode with wrapping lays out uniform items arithmetically; icon mode would keep
        # a rectangle per item, which is slow and large with 100,000 pictures.
        self.grid.setViewMode(QListView.ViewMode.ListMode)
        self.grid.setFlow(QListView.Flow.LeftToRight)
        self.grid.setWrapping(True)
        self.grid.setResizeMode(QListView.ResizeMode.Adjust)
        self.grid.setUniformItemSizes(True)
        self.grid.setLayoutMode(QListView.LayoutMode.Batched)
        self.grid.setBatchSize(500)
        self.grid.setSpacing(SPACING)
        size = self.model.thumbnail_size
        self.grid.setIconSize(size)
        self.grid.setGridSize(size + QSize(SPACING, SPACING))
        self.grid.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.grid.setDragEnabled(True)
        self.grid.setDragDropMode(QAbstractItemView.DragDropMode.DragOnly)
        self.grid.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.grid.verticalScrollBar().setSingleStep(size.height() // 3)
        self.grid.setModel(self.model)
        self.grid.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.grid.setToolTip("Click to show on the canvas; drag pictures out to other programs")
        top = QHBoxLayout()
        top.setContentsMargins(0, 0, 6, 0)  # the count clear of the window's edge
        top.addWidget(self.search, 1)
        top.addWidget(self.favourites)
        top.addWidget(self.count)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(top)
        layout.addWidget(self.grid)
        self.search.textChanged.connect(self.model.set_search)
        self.favourites.toggled.connect(self.model.set_favourites_only)
        self.model.changed.connect(self._show_count)
        self.grid.clicked.connect(self._show)
        self.grid.activated.connect(self._show)
        studio.canvas_changed.connect(self._reveal_source)
        self.grid.customContextMenuRequested.connect(self._menu)
        self._add_shortcuts()
        self._show_count()

    def _add_shortcuts(self) -> None:
        for keys, handler, tip in (
                (QKeySequence.StandardKey.Delete, self.delete_selected, "Move to the trash"),
                (QKeySequence.StandardKey.Copy, self.copy_selected, "Copy the picture"),
                (QKeySequence("Ctrl+R"), self.reuse_selected, "Reuse parameters")):
            action = self.grid.addAction(tip)
            action.setShortcut(keys)
            action.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            action.triggered.connect(handler)

    def _show_count(self) -> None:
        total = self.model.rowCount()
        self.count.setText(f"{total:,} picture{'s' if total != 1 else ''}")

    def selected(self) -> list[ImageEntry]:
        rows = sorted(index.row() for index in self.grid.selectionModel().selectedIndexes())
        entries = [self.model.entry(row) for row in rows]
        return [entry for entry in entries if entry is not None]

    def _show(self, index: QModelIndex) -> None:
        entry = index.data(EntryRole)
        if entry is not None:
            # Clicking a picture the safety checker flagged is the choice to see it: its
            # thumbnail stops being blurred as it opens on the canvas.
            self.model.reveal(entry.id)
            self.studio.show_entry(entry)

    def _reveal_source(self) -> None:
        # A library picture chosen as the source (Use as source, Variations, Edit…) is open on
        # the canvas: that counts as the click. A result shown after its job does not.
        entry = self.studio.canvas_entry
        if self.studio.canvas_is_source and entry is not None:
            self.model.reveal(entry.id)

    def delete_selected(self) -> None:
        self.studio.pictures.trash(self.selected())

    def copy_selected(self) -> None:
        entries = self.selected()
        if entries:
            self.studio.pictures.copy(entries[0])

    def reuse_selected(self, seed_only: bool = False) -> None:
        entries = self.selected()
        if entries:
            self.studio.reuse(entries[0], seed_only)

    def _menu(self, point: QPoint) -> None:
        menu = self.context_menu()
        if menu is not None:
            menu.exec(self.grid.viewport().mapToGlobal(point))
            menu.deleteLater()

    def _upscaler(self, entry: ImageEntry, scale: int):  # noqa: ANN202 (a slot)
        return lambda: self.studio.upscale_of(entry, scale)

    def context_menu(self) -> QMenu | None:
        """The menu for the selected pictures (None when none is selected)."""
        entries = self.selected()
        if not entries:
            return None
        one = entries[0]
        favourite = not all(entry.favourite for entry in entries)
        menu = QMenu(self)
        menu.addAction(icon("source"), "Use as source", lambda: self.studio.use_as_source(one))
        menu.addAction(icon("variations"), "Variations",
                       lambda: self.studio.variations_of(one))
        menu.addAction(icon("edit"), "Edit with the prompt", lambda: self.studio.edit_of(one))
        instruct = menu.addAction(icon("instruct"), "Instruct",
                                  lambda: self.studio.instruct_of(one))
        model = self.studio.prompt.model()
        if not is_instruct_model(model):  # as the toolbar's: greyed, saying what it needs
            instruct.setEnabled(False)
            instruct.setToolTip(wrong_model(model))
        menu.setToolTipsVisible(True)
        for scale in UPSCALE_SCALES:
            menu.addAction(icon("upscale"), f"Upscale {scale}×", self._upscaler(one, scale))
        if self.background is not None:
            self.background.add_to_gallery_menu(menu, one)
        menu.addSeparator()
        menu.addAction(icon("reuse"), "Reuse parameters", self.reuse_selected)
        menu.addAction(icon("seed"), "Reuse this image's seed",
                       lambda: self.reuse_selected(seed_only=True))
        menu.addAction(icon("favourite"), "Mark as favourite" if favourite else "Unmark",
                       lambda: self.studio.pictures.set_favourite(entries, favourite))
        menu.addAction(icon("copy"), "Copy picture", self.copy_selected)
        if self.exports is not None:
            self.exports.add_to(menu, entries)
        menu.addAction(icon("folder"), "Open folder", lambda: QDesktopServices.openUrl(
            QUrl.fromLocalFile(str(one.path.parent))))
        menu.addSeparator()
        menu.addAction(icon("trash"), "Move to trash", self.delete_selected)
        return menu
