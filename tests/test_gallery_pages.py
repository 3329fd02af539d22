"""The gallery model over pages read off the GUI thread: the right pictures at every row after
jumps and after changes, stale replies ignored, pages scrolled past not read."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest
from PySide6.QtCore import QAbstractListModel, QModelIndex, QSize, Qt
from PySide6.QtGui import QColor, QImage
from PySide6.QtWidgets import QListView

from desktop.app.viewmodels import gallery
from desktop.app.viewmodels.gallery import EntryRole, GalleryModel
from desktop.app.widgets.thumbnail_grid import ThumbnailGrid
from desktop.app.worker import JobRunner
from desktop.library import Library
from engine.request import GenerationParameters

PARAMETERS = GenerationParameters(
    prompt="a chair", negative_prompt="", width=8, height=8, steps=1, guidance=1.0,
    scheduler="euler", seed=0, model_name="tiny", model_hash="0123", model_family="sd1")
WAIT_MS = 10_000


def add(library: Library, number: int, created_at: float) -> str:
    parameters = replace(PARAMETERS, prompt=f"picture {number}", seed=number)
    pixels = np.full((8, 8, 3), number % 256, dtype=np.uint8)
    return library.add_generated(pixels, parameters, created_at=created_at).id


@pytest.fixture
def library(tmp_path):
    with Library.open(tmp_path / "home", backup_interval_s=10**9) as opened:
        start = time.time() - 1000
        for number in range(37):
            add(opened, number, start + number)
        yield opened


@pytest.fixture
def runner(qtbot):
    runner = JobRunner()
    yield runner
    runner.shutdown()


@pytest.fixture
def model(monkeypatch, library, runner):
    monkeypatch.setattr(gallery, "PAGE", 3)  # more pages than PAGES_WANTED from a few pictures
    return GalleryModel(library, runner)


def newest_first(library: Library) -> list[str]:
    return [entry.id for entry in library.search(limit=1000).entries]


def shown(qtbot, model: GalleryModel, row: int) -> str:
    """The picture the view gets at ``row`` once its page has come (asked as painting asks)."""
    index = model.index(row)
    qtbot.waitUntil(lambda: index.data(EntryRole) is not None, timeout=WAIT_MS)
    return index.data(EntryRole).id


def hold_page_reads(monkeypatch, runner: JobRunner) -> list[tuple[str, object]]:
    """Page reads kept instead of run, so a test decides when (and in what order) each one
    is read and answered."""
    held: list[tuple[str, object]] = []
    monkeypatch.setattr(runner, "fetch", lambda key, read: held.append((key, read)))
    return held


def test_rows_are_right_after_jumps_across_the_library(qtbot, model, library):
    expected = newest_first(library)
    assert model.rowCount() == 37
    for row in (36, 0, 20, 35, 7, 19, 24, 1):  # deep first, then back and forth
        assert shown(qtbot, model, row) == expected[row], row
    assert [shown(qtbot, model, row) for row in range(37)] == expected


def test_rows_are_right_after_adds_trash_and_deletes(qtbot, model, library):
    for row in (30, 3):  # pages read before the changes
        shown(qtbot, model, row)
    before = newest_first(library)
    add(library, 100, time.time())  # the newest
    add(library, 101, time.time() - 1000 + 10.5)  # in the middle
    library.trash(before[4:9])
    library.trash(before[20:22])
    library.empty_trash()
    library.trash(before[30:31])
    model.refresh()  # as the studio does after each change
    expected = newest_first(library)
    assert model.rowCount() == len(expected) == 37 + 2 - 8
    for row in (len(expected) - 1, 0, 17, 5, 29, 11):
        assert shown(qtbot, model, row) == expected[row], row


def test_a_page_read_before_a_refresh_is_ignored(qtbot, monkeypatch, model, library):
    held = hold_page_reads(monkeypatch, model._runner)
    assert model.index(12).data(EntryRole) is None  # not read yet: a placeholder
    [(old_key, old_read)] = held
    old_rows = old_read()  # read before the library changes...
    for number in range(3):
        add(library, 200 + number, time.time())
    model.refresh()
    model._runner.fetched.emit(old_key, old_rows)  # ...and answered after: rows have moved
    assert model.index(12).data(EntryRole) is None  # not shown; asked again instead
    key, read = held[-1]
    assert key != old_key
    model._runner.fetched.emit(key, read())
    assert model.index(12).data(EntryRole).id == newest_first(library)[12]


def test_pages_scrolled_past_before_their_turn_are_not_read(qtbot, monkeypatch, model, library):
    held = hold_page_reads(monkeypatch, model._runner)
    for row in range(0, 37, 3):  # a dragged bar: every page asked once, none read yet
        model.index(row).data(EntryRole)
    assert len(held) == 13 > gallery.PAGES_WANTED
    first_key, first_read = held[0]
    last_key, last_read = held[-1]
    # Only the pages painted last are still wanted; an earlier one is skipped when its turn
    # comes (and asked again if the view comes back to it).
    assert first_read() is None
    model._runner.fetched.emit(first_key, None)
    assert model.index(0).data(EntryRole) is None
    assert len(held) == 14 and held[-1][0] != last_key
    model._runner.fetched.emit(last_key, last_read())
    assert model.index(36).data(EntryRole).id == newest_first(library)[36]


class CountingModel(QAbstractListModel):
    """Many same-size rows; counts how often the view calls in."""

    def __init__(self, rows: int) -> None:
        super().__init__()
        self.rows = rows
        self.row_counts = 0
        self.painted: list[int] = []

    def rowCount(self, parent=QModelIndex()) -> int:  # noqa: B008, N802 (Qt's names)
        self.row_counts += 1
        return 0 if parent.isValid() else self.rows

    def data(self, index, role=Qt.ItemDataRole.DisplayRole) -> object:
        if role == Qt.ItemDataRole.DecorationRole:
            self.painted.append(index.row())
        return QSize(32, 32) if role == Qt.ItemDataRole.SizeHintRole else None


@pytest.mark.parametrize("uniform", [True, False])
def test_a_new_thumbnail_repaints_its_cell_without_laying_out_every_picture(qtbot, uniform):
    model = CountingModel(20_000)
    grid = ThumbnailGrid()
    qtbot.addWidget(grid)
    grid.setFlow(QListView.Flow.LeftToRight)
    grid.setWrapping(True)
    grid.setUniformItemSizes(uniform)
    grid.setGridSize(QSize(40, 40))
    grid.setVerticalScrollMode(QListView.ScrollMode.ScrollPerPixel)
    grid.setModel(model)
    grid.resize(300, 300)
    grid.show()
    qtbot.waitUntil(lambda: grid.verticalScrollBar().maximum() > 10_000, timeout=WAIT_MS)
    qtbot.wait(200)  # the first layout, in batches
    model.row_counts, model.painted = 0, []
    model.dataChanged.emit(model.index(1), model.index(1), [Qt.ItemDataRole.DecorationRole])
    qtbot.waitUntil(lambda: 1 in model.painted, timeout=WAIT_MS)  # the cell is repainted
    qtbot.wait(200)
    if uniform:
        assert model.row_counts < 1000  # not one call per picture
    else:  # items that may change size still get QListView's full layout
        assert model.row_counts >= 20_000


def test_a_thumbnail_repaints_the_row_it_was_asked_for(qtbot, monkeypatch, model, library):
    asked: list[str] = []
    monkeypatch.setattr(model._runner, "load_image", lambda key, find, size: asked.append(key))
    shown(qtbot, model, 4)
    placeholder = model.index(4).data(Qt.ItemDataRole.DecorationRole)
    [key] = asked
    changed: list[tuple[int, list[int]]] = []
    model.dataChanged.connect(lambda first, _last, roles=(): changed.append((first.row(), roles)))
    image = QImage(8, 8, QImage.Format.Format_RGB888)
    image.fill(QColor("orange"))
    model._runner.image_ready.emit(key, image)
    assert changed == [(4, [Qt.ItemDataRole.DecorationRole])]
    thumbnail = model.index(4).data(Qt.ItemDataRole.DecorationRole)
    assert thumbnail.cacheKey() != placeholder.cacheKey()
    assert thumbnail.toImage().pixelColor(0, 0) == QColor("orange")


def test_a_thumbnail_asked_before_a_refresh_repaints_no_row(qtbot, monkeypatch, model, library):
    asked: list[str] = []
    monkeypatch.setattr(model._runner, "load_image", lambda key, find, size: asked.append(key))
    picture = shown(qtbot, model, 4)
    model.index(4).data(Qt.ItemDataRole.DecorationRole)
    [key] = asked
    add(library, 300, time.time())  # every row moves down by one
    model.refresh()
    changed: list[int] = []
    model.dataChanged.connect(lambda first, _last, roles=(): changed.append(first.row()))
    image = QImage(8, 8, QImage.Format.Format_RGB888)
    image.fill(QColor("orange"))
    model._runner.image_ready.emit(key, image)
    assert changed == []  # row 4 is another picture now
    assert shown(qtbot, model, 5) == picture  # kept, and shown where the picture is now
    thumbnail = model.index(5).data(Qt.ItemDataRole.DecorationRole)
    assert thumbnail.toImage().pixelColor(0, 0) == QColor("orange")
