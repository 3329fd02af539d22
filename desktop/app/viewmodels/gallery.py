"""The gallery as a Qt list model: virtualised over the library, thumbnails made elsewhere.

Only the rows the view asks for are read, a page of ``PAGE`` at a time, and only the pages
near the view stay in memory, so a library of 100,000 pictures costs what one screenful does.
Pages the view paints are read on the worker's pool, from the key each page starts at
(``PageTable``: a jump deep into a big library is an indexed read, not a scan); until one
arrives its rows show placeholders. Thumbnails are
requested the first time a row is painted and arrive through ``JobRunner.image_ready``.
A picture the safety checker flagged (desktop.safety) shows blurred, made on the pool too,
with a small mark, until it is clicked (``reveal``); its file is never changed.
"""

from __future__ import annotations

import shutil
import tempfile
from collections import OrderedDict, deque
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import (
    QAbstractListModel,
    QMimeData,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    QSize,
    Qt,
    QUrl,
    Signal,
)
from PySide6.QtGui import QColor, QImage, QPainter, QPen, QPixmap

from desktop.app.editing import made_from
from desktop.app.worker import JobRunner
from desktop.library import ImageEntry, Library, LibraryError, PageTable
from desktop.safety import flagged_record, hidden_picture

PAGE = 200
PAGES_KEPT = 12
PAGES_WANTED = 8
THUMBNAILS_KEPT = 800  # about 80 MB at 160 px: several screens of a large window
THUMB_PREFIX = "thumb:"
PAGE_PREFIX = "page:"
BLUR_PREFIX = "blur:"
FLAGGED_TIP = "Flagged by the safety checker — click to show"
EntryRole = Qt.ItemDataRole.UserRole + 1
__all__ = ["EntryRole", "GalleryModel", "ImageEntry"]  # widgets know entries through here

Index = QModelIndex | QPersistentModelIndex


class GalleryModel(QAbstractListModel):
    changed = Signal()  # the number of pictures or the filter changed (for the count label)

    def __init__(self, library: Library, runner: JobRunner, thumbnail_px: int = 160,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._library = library
        self._runner = runner
        self.thumbnail_size = QSize(thumbnail_px, thumbnail_px)
        self.search_text = ""
        self.favourites_only = False
        self.embed_metadata = True  # False: pictures dragged out carry pixels only
        self.drag_folder: Path | None = None
        self._count = 0
        self._pages: OrderedDict[int, list[ImageEntry]] = OrderedDict()
        self._thumbnails: OrderedDict[str, QPixmap] = OrderedDict()
        self._asked: set[str] = set()  # image ids, and BLUR_PREFIX + id for blurred ones
        self._blurred: set[str] = set()  # ids whose kept (or coming) thumbnail is blurred
        self._revealed: set[str] = set()  # flagged pictures clicked this session
        self._placeholder = _placeholder(self.thumbnail_size, "#3a3a3a")
        self._missing = _placeholder(self.thumbnail_size, "#5a2a2a")
        self._fetching: set[int] = set()  # page numbers asked of the pool
        self._wanted: deque[int] = deque(maxlen=PAGES_WANTED)  # the pages painted last
        self._generation = 0  # counts refreshes, so a page read before one is not used after
        runner.image_ready.connect(self._thumbnail_ready)
        runner.image_failed.connect(self._thumbnail_failed)
        runner.fetched.connect(self._page_fetched)
        runner.fetched.connect(self._blurred_ready)
        self.refresh()

    # Reading -------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Read the library again (a new picture, a deletion, another process's change)."""
        self.beginResetModel()
        self._pages.clear()
        self._asked.clear()
        self._fetching.clear()
        self._generation += 1
        # Positions moved: page starts learnt before this are wrong now (learnt again lazily,
        # on the pool, as pages are wanted).
        self._table = PageTable(self._library, self.search_text, page_size=PAGE,
                                favourites=self.favourites_only)
        self._count = self._library.count(self.search_text, favourites=self.favourites_only)
        self.endResetModel()
        self.changed.emit()

    def set_search(self, text: str) -> None:
        self.search_text = text
        self._runner.drop_image_requests()  # thumbnails of the old results are not wanted
        self.refresh()

    def set_favourites_only(self, on: bool) -> None:
        self.favourites_only = on
        self._runner.drop_image_requests()
        self.refresh()

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008 (Qt's own default)
        return 0 if parent.isValid() else self._count

    def entry(self, row: int) -> ImageEntry | None:
        if not 0 <= row < self._count:
            return None
        page_number, at = divmod(row, PAGE)
        page = self._page(page_number)
        return page[at] if at < len(page) else None

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> object:
        if not index.isValid() or not 0 <= index.row() < self._count:
            return None
        page_number, at = divmod(index.row(), PAGE)
        page = self._pages.get(page_number)
        if page is None:  # painting must not wait for SQLite: ask the pool, show a placeholder
            self._fetch(page_number)
            return self._placeholder if role == Qt.ItemDataRole.DecorationRole else None
        entry = page[at] if at < len(page) else None
        if entry is None:
            return None
        if role == Qt.ItemDataRole.DecorationRole:
            return self._thumbnail(entry, index.row())
        if role == Qt.ItemDataRole.ToolTipRole:
            size = f"{entry.width} × {entry.height}" if entry.width else ""
            star = "★ " if entry.favourite else ""
            prompt = entry.prompt or "(no prompt)"
            lineage = made_from(entry.operation, entry.source_id)
            return (f"{star}{prompt}\n{entry.model}  seed {entry.seed}  {size}"
                    + (f"\n{lineage}" if lineage else "") + self._flag_line(entry))
        if role == Qt.ItemDataRole.AccessibleTextRole:
            return f"{FLAGGED_TIP}: {entry.prompt}" if self.is_hidden(entry) else entry.prompt
        if role == EntryRole:
            return entry
        return None

    def _page(self, number: int) -> list[ImageEntry]:
        """A page now (read on this thread if it is not in memory: for actions on selected
        rows, which are on screen and so almost always loaded already)."""
        page = self._pages.get(number)
        if page is not None:
            self._pages.move_to_end(number)
            return page
        page = self._read_page(number)()
        self._keep(number, page)
        return page

    def _read_page(self, number: int):  # noqa: ANN202 (a reader to run now or on the pool)
        table = self._table  # this generation's, even if the reader runs after a refresh
        return lambda: table.page(number)

    def _fetch(self, number: int) -> None:
        # Every row painted appends its page, so the deque holds the pages of the last paint
        # or two: while the bar is dragged, only those are read when their turn comes.
        self._wanted.append(number)
        if number in self._fetching:
            return
        self._fetching.add(number)
        read, wanted = self._read_page(number), self._wanted

        def read_if_still_wanted() -> list[ImageEntry] | None:
            # Dragging the scroll bar asks for pages faster than SQLite reads deep ones; a page
            # scrolled past before its turn is skipped (the view asks again if it comes back).
            return read() if number in wanted else None

        self._runner.fetch(f"{PAGE_PREFIX}{self._generation}:{number}", read_if_still_wanted)

    def _page_fetched(self, key: str, page: object) -> None:
        if not key.startswith(PAGE_PREFIX):
            return
        generation, number = (int(part) for part in key[len(PAGE_PREFIX):].split(":"))
        if generation != self._generation:
            return  # read before a refresh: the rows may have moved
        self._fetching.discard(number)
        if page is None:
            return
        self._keep(number, page)
        first = number * PAGE
        last = min(first + PAGE, self._count) - 1
        if last >= first:
            self.dataChanged.emit(self.index(first), self.index(last))

    def _keep(self, number: int, page: list[ImageEntry]) -> None:
        # Nothing here walks the page's rows: a dragged scroll bar brings dozens of pages a
        # second, and the GUI thread's time goes to painting.
        self._pages[number] = page
        while len(self._pages) > PAGES_KEPT:
            self._pages.popitem(last=False)

    # Thumbnails ----------------------------------------------------------------------------

    def is_hidden(self, entry: ImageEntry) -> bool:
        """Whether the picture shows blurred: the safety checker flagged it and it has not
        been clicked this session."""
        return entry.id not in self._revealed and flagged_record(entry.parameters) is not None

    def reveal(self, image_id: str) -> None:
        """Show a flagged picture plainly for the rest of the session (it was clicked, or
        opened on the canvas); for any other picture nothing changes."""
        self._revealed.add(image_id)
        if image_id not in self._blurred:
            return
        self._blurred.discard(image_id)
        self._thumbnails.pop(image_id, None)  # the plain one is asked for when next painted
        self._asked.discard(BLUR_PREFIX + image_id)
        row = self._row_of(image_id)
        if row is not None:
            self._row_changed(self._generation, row)

    def _row_of(self, image_id: str) -> int | None:
        for number, page in self._pages.items():
            for at, entry in enumerate(page):
                if entry.id == image_id:
                    return number * PAGE + at
        return None

    def _flag_line(self, entry: ImageEntry) -> str:
        record = flagged_record(entry.parameters)
        if record is None:
            return ""
        if entry.id not in self._revealed:
            return f"\n{FLAGGED_TIP}"
        score = record.get("score")
        shown = f" (score {score:.3g})" if isinstance(score, int | float) else ""
        return f"\nFlagged by the safety checker{shown}"

    def _thumbnail(self, entry: ImageEntry, row: int) -> QPixmap:
        pixmap = self._thumbnails.get(entry.id)
        if pixmap is not None:
            self._thumbnails.move_to_end(entry.id)
            return pixmap
        if entry.missing:
            return self._missing
        if self.is_hidden(entry):
            self._ask_blurred(entry, row)
        elif entry.id not in self._asked:
            self._asked.add(entry.id)
            cache, image_id, path = self._library.thumbnails, entry.id, entry.path
            # The key names the row to repaint when the thumbnail comes, valid while the
            # generation is the same (rows do not move between refreshes).
            key = f"{THUMB_PREFIX}{self._generation}:{row}:{entry.id}"
            self._runner.load_image(key, lambda: cache.get(image_id, path), self.thumbnail_size)
        return self._placeholder

    def _ask_blurred(self, entry: ImageEntry, row: int) -> None:
        if BLUR_PREFIX + entry.id in self._asked:
            return
        self._asked.add(BLUR_PREFIX + entry.id)
        self._blurred.add(entry.id)
        cache, image_id, path = self._library.thumbnails, entry.id, entry.path
        size = self.thumbnail_size
        key = f"{BLUR_PREFIX}{self._generation}:{row}:{entry.id}"
        # A fetch, not load_image: the blur is made on the pool thread, not decoded as it is.
        self._runner.fetch(key, _blurred_loader(lambda: cache.get(image_id, path), size))

    def _blurred_ready(self, key: str, image: object) -> None:
        if not key.startswith(BLUR_PREFIX) or not isinstance(image, QImage):
            return
        generation, row, image_id = key[len(BLUR_PREFIX):].split(":")
        self._asked.discard(BLUR_PREFIX + image_id)
        if image_id in self._revealed:
            return  # clicked while it was being made: the plain one is wanted now
        self._keep_thumbnail(image_id, _marked(QPixmap.fromImage(image)))
        self._row_changed(int(generation), int(row))

    def _thumbnail_ready(self, key: str, image: QImage) -> None:
        if not key.startswith(THUMB_PREFIX):
            return
        generation, row, image_id = key[len(THUMB_PREFIX):].split(":")
        self._asked.discard(image_id)
        self._keep_thumbnail(image_id, QPixmap.fromImage(image))
        self._row_changed(int(generation), int(row))

    def _keep_thumbnail(self, image_id: str, pixmap: QPixmap) -> None:
        self._thumbnails[image_id] = pixmap
        while len(self._thumbnails) > THUMBNAILS_KEPT:
            self._thumbnails.popitem(last=False)

    def _thumbnail_failed(self, key: str, _message: str) -> None:
        for prefix in (THUMB_PREFIX, BLUR_PREFIX):
            if key.startswith(prefix):
                generation, row, image_id = key[len(prefix):].split(":")
                self._asked.discard(image_id if prefix == THUMB_PREFIX else prefix + image_id)
                self._thumbnails[image_id] = self._missing
                self._row_changed(int(generation), int(row))

    def _row_changed(self, generation: int, row: int) -> None:
        # After a refresh the row may hold another picture; the refresh repainted every row,
        # and a row painted since then found the thumbnail in memory or asked again.
        if generation == self._generation and row < self._count:
            index = self.index(row)
            self.dataChanged.emit(index, index, [Qt.ItemDataRole.DecorationRole])

    # Dragging out --------------------------------------------------------------------------

    def flags(self, index: Index) -> Qt.ItemFlag:
        base = super().flags(index)
        return base | Qt.ItemFlag.ItemIsDragEnabled if index.isValid() else base

    def mimeTypes(self) -> list[str]:
        return ["text/uri-list"]

    def mimeData(self, indexes: list[QModelIndex]) -> QMimeData:
        """The picture files themselves, so a file manager, browser or editor takes them;
        with metadata turned off, pixel-only copies made for the drag."""
        data = QMimeData()
        entries = [self.entry(index.row()) for index in indexes]
        paths = [entry.path for entry in entries if entry is not None and not entry.missing]
        if paths and not self.embed_metadata:
            ids = [entry.id for entry in entries if entry is not None and not entry.missing]
            try:
                paths = self._library.export(ids, self._drag_folder(), strip_metadata=True)
            except (LibraryError, OSError):
                paths = []  # no copy without metadata: better no drag than a leaky one
        data.setUrls([QUrl.fromLocalFile(str(path)) for path in paths])
        return data

    def _drag_folder(self) -> Path:
        if self.drag_folder is None:
            self.drag_folder = Path(tempfile.mkdtemp(prefix="easel-drag-"))
        return self.drag_folder

    def forget_drag_copies(self) -> None:
        """Delete the copies made for drags (at close: the drops have been taken by then)."""
        if self.drag_folder is not None:
            shutil.rmtree(self.drag_folder, ignore_errors=True)
            self.drag_folder = None


def _blurred_loader(find: Callable[[], Path], size: QSize) -> Callable[[], QImage]:
    """What the pool runs for a flagged picture: its thumbnail blurred (desktop.safety), as a
    QImage (safe off the GUI thread, unlike a QPixmap)."""

    def load() -> QImage:
        try:
            picture = hidden_picture(find(), size.width(), size.height())
        except OSError as error:  # the thumbnail cache's file is gone or damaged
            raise LibraryError("The picture could not be read.") from error
        data = picture.tobytes()
        return QImage(data, picture.width, picture.height, 3 * picture.width,
                      QImage.Format.Format_RGB888).copy()  # its own pixels, not ``data``'s

    return load


def _marked(pixmap: QPixmap) -> QPixmap:
    """The blurred thumbnail with a small crossed-out eye in a corner: hidden, not broken."""
    side = max(12, min(pixmap.width(), pixmap.height()) // 7)
    margin = side // 4
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setPen(Qt.PenStyle.NoPen)
    painter.setBrush(QColor(0, 0, 0, 150))
    top = pixmap.height() - margin - side
    painter.drawEllipse(margin, top, side, side)
    pen = QPen(QColor("white"))
    pen.setWidthF(max(1.0, side / 12))
    painter.setPen(pen)
    painter.setBrush(Qt.BrushStyle.NoBrush)
    eye = side * 0.6
    painter.drawEllipse(round(margin + (side - eye) / 2), round(top + side * 0.35),
                        round(eye), round(side * 0.3))
    painter.drawLine(margin + side // 4, top + side * 3 // 4, margin + side * 3 // 4,
                     top + side // 4)
    painter.end()
    return pixmap


def _placeholder(size: QSize, colour: str) -> QPixmap:
    pixmap = QPixmap(size)
    pixmap.fill(QColor(colour))
    return pixmap
