"""The window at its default 1280 × 800 (issue 14, item 6), offscreen: no toolbar action hides
behind the overflow "»", the canvas gets most of the height, the idle queue is one line,
the gallery's count keeps clear of the edge and the prompt history shows whole lines."""

# ruff: noqa: F811 (the fixtures imported below are used as arguments)
from __future__ import annotations

from PySide6.QtCore import QPoint
from PySide6.QtWidgets import QToolBar, QToolButton

# The window and its scripted engine, as tests/test_app.py makes them (fixtures).
from tests.test_app import WAIT_MS, _generate, library, pipelines, window  # noqa: F401

SIZE = (1280, 800)


def _at_default_size(qtbot, window) -> None:  # noqa: ANN001
    window.resize(*SIZE)
    window.studio.dismiss_welcome()
    qtbot.waitUntil(lambda: window.size().toTuple() == SIZE, timeout=WAIT_MS)
    qtbot.wait(50)  # the docks and toolbars settle


def _overflowing(toolbar: QToolBar) -> list[str]:
    """The actions a toolbar could not fit (they wait behind its "»" button)."""
    extension = toolbar.findChild(QToolButton, "qt_toolbar_ext_button")
    if extension is None or not extension.isVisible():
        return []
    return [action.text() for action in toolbar.actions()
            if not action.isSeparator() and toolbar.widgetForAction(action) is not None
            and not toolbar.widgetForAction(action).isVisible()]


def test_every_toolbar_action_fits_at_1280_by_800(qtbot, window):
    _at_default_size(qtbot, window)
    toolbars = [bar for bar in window.findChildren(QToolBar) if bar.isVisible()]
    assert window.edit_tools in toolbars
    for bar in toolbars:
        assert _overflowing(bar) == []
    shown = {action.text() for action in window.edit_tools.actions()
             if window.edit_tools.widgetForAction(action) is not None
             and window.edit_tools.widgetForAction(action).isVisible()}
    assert {"Variations", "Edit", "Inpaint", "Outpaint…", "Mask tool", "Regions",
            "Fit", "Zoom in"} <= shown
    # The mask's own row, shown while painting, fits above the canvas too.
    window.mask_tools.setVisible(True)
    qtbot.wait(50)
    assert _overflowing(window.mask_tools) == []


def test_the_canvas_gets_most_of_the_height_and_the_idle_queue_one_line(qtbot, window):
    _at_default_size(qtbot, window)
    assert window.canvas.height() >= 0.75 * SIZE[1]
    assert window.canvas.width() >= 0.4 * SIZE[0]
    assert window.queue_dock.height() <= 3 * window.queue.bar.height()
    assert not window.queue.list.isVisible()


def test_the_queue_list_shows_while_jobs_wait(qtbot, window, pipelines):
    _at_default_size(qtbot, window)
    studio = window.studio
    pipelines.gate.clear()  # the first job waits before its first step
    studio.prompt.update(prompt="a dog at the top")
    studio.generate()
    assert not window.queue.list.isVisible()  # one job: the bar names it
    studio.generate()
    assert window.queue.list.isVisible() and window.queue.remove_button.isVisible()
    qtbot.waitUntil(lambda: window.queue.list.height() >= 3 * window.queue.list.sizeHintForRow(0),
                    timeout=WAIT_MS)
    pipelines.gate.set()
    qtbot.waitUntil(lambda: studio.jobs.rowCount() == 0, timeout=WAIT_MS)
    assert not window.queue.list.isVisible()
    qtbot.waitUntil(lambda: window.queue_dock.height() <= 3 * window.queue.bar.height(),
                    timeout=WAIT_MS)  # and the dock gives the height back


def test_the_gallery_count_and_the_history_are_not_cut(qtbot, window):
    _at_default_size(qtbot, window)
    for prompt in ("a moon on the left and a tree on the right, on a black background",
                   "a dog at the top"):
        _generate(qtbot, window, prompt)
    count = window.gallery.count
    qtbot.waitUntil(lambda: count.width() >= count.sizeHint().width(), timeout=WAIT_MS)
    right = count.mapTo(window, QPoint(count.width(), 0)).x()
    assert count.text() == "2 pictures" and right <= window.width() - 4
    history = window.history_panel.list
    row = history.sizeHintForRow(0)
    assert row >= history.fontMetrics().height()  # a whole line per prompt
    assert not history.wordWrap()  # ... not the start of a second one, cut in half
    assert history.viewport().height() >= 8 * row  # and room for several
