"""Outpaint handles: the source's edges dragged on the canvas set the sides to add, snapped
to the model's pixel multiple, and the Outpaint dialog shows and edits the same sides."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QPoint, Qt
from PySide6.QtWidgets import QDialogButtonBox

from desktop.app.editing import Sides
from desktop.app.viewmodels.outpaint import MAX_EXTEND, OutpaintModel

# The window and its scripted engine, as tests/test_app.py makes them (fixtures).
from tests.test_app import (  # noqa: F401
    _make_source,
    _picture_file,
    library,
    pipelines,
    window,
)

WAIT_MS = 5000


def test_sides_snap_to_the_multiple_and_edges_drag_outwards(qtbot):
    frame = OutpaintModel()
    frame.multiple = 64
    frame.set_source_size((256, 192))
    frame.set_side("right", 70)
    assert frame.sides == Sides(right=64)
    frame.set_side("top", 97)
    assert frame.sides.top == 128
    frame.set_side("left", -40)
    assert frame.sides.left == 0
    frame.set_side("bottom", 10**6)
    assert frame.sides.bottom == MAX_EXTEND
    frame.set_sides(Sides(right=64))

    # The right edge of the grown frame is at 256 + 64; the left at the source's own edge.
    assert frame.handle_at(320, 100, reach=4) == "right"
    assert frame.handle_at(1, 100, reach=4) == "left"
    assert frame.handle_at(100, 100, reach=4) is None
    assert frame.begin_drag(320, 100, reach=4)
    frame.drag_to(320 + 100, 130)  # 100 more pixels: 164, snapped to 192
    frame.end_drag()
    assert frame.sides == Sides(right=192)
    assert frame.begin_drag(0, 100, reach=4)
    frame.drag_to(-60, 100)  # leftwards adds on the left
    frame.end_drag()
    assert frame.sides == Sides(left=64, right=192)
    assert frame.grown_size() == (256 + 64 + 192, 192)


def test_handles_on_the_canvas_and_the_dialog_share_the_sides(qtbot, window, pipelines,  # noqa: F811
                                                              tmp_path):
    studio, canvas = window.studio, window.canvas
    _make_source(qtbot, window, _picture_file(tmp_path / "photo.png", (128, 64)))
    window.outpaint_handles_action.trigger()
    frame = studio.outpaint_frame
    assert frame.editing and window.outpaint_overlay.isVisible()
    assert frame.source_size == (128, 64) and frame.multiple == 64  # the starter model's
    studio.outpaint_sides = Sides()
    canvas.zoom_by(1.5)

    def at(x: float, y: float) -> QPoint:
        rect = canvas.image_rect()
        return QPoint(round(rect.x() + x * canvas.zoom), round(rect.y() + y * canvas.zoom))

    overlay = window.outpaint_overlay
    qtbot.mousePress(overlay, Qt.MouseButton.LeftButton, pos=at(128, 32))  # the right edge
    qtbot.mouseMove(overlay, at(160, 32))
    qtbot.mouseMove(overlay, at(200, 40))  # 72 px out: snapped to 64
    qtbot.mouseRelease(overlay, Qt.MouseButton.LeftButton, pos=at(200, 40))
    qtbot.mousePress(overlay, Qt.MouseButton.LeftButton, pos=at(64, 0))  # the top edge
    qtbot.mouseMove(overlay, at(64, -100))
    qtbot.mouseRelease(overlay, Qt.MouseButton.LeftButton, pos=at(64, -100))
    assert studio.outpaint_sides == Sides(top=128, right=64)

    # A press away from the edges moves the view, not the sides.
    before = canvas.image_rect()
    qtbot.mousePress(overlay, Qt.MouseButton.LeftButton, pos=at(64, 32))
    qtbot.mouseMove(overlay, at(90, 40))
    qtbot.mouseRelease(overlay, Qt.MouseButton.LeftButton, pos=at(90, 40))
    assert studio.outpaint_sides == Sides(top=128, right=64)
    assert canvas.image_rect().topLeft() != before.topLeft()

    window.outpaint_action.trigger()
    dialog = window.outpaint_dialog
    assert {side: box.value() for side, box in dialog.boxes.items()} == {
        "left": 0, "top": 128, "right": 64, "bottom": 0}
    dialog.boxes["bottom"].setValue(64)
    with qtbot.waitSignal(studio.generated, timeout=WAIT_MS):
        dialog.buttons.button(QDialogButtonBox.StandardButton.Ok).click()
    request = pipelines.requests[-1]
    assert (request.left, request.top, request.right, request.bottom) == (0, 128, 64, 64)
    assert frame.sides == studio.outpaint_sides == Sides(top=128, right=64, bottom=64)
    assert not frame.editing and not window.outpaint_handles_action.isChecked()


def test_outpaint_handles_need_a_source(qtbot, window):  # noqa: F811
    window.outpaint_handles_action.trigger()
    assert not window.studio.outpaint_frame.editing
    assert not window.outpaint_handles_action.isChecked()
    assert window.last_problem.startswith("There is no source picture")


@pytest.mark.parametrize("tool", ["mask_action", "regions_action"])
def test_one_canvas_tool_at_a_time(qtbot, window, tmp_path, tool):  # noqa: F811
    studio = window.studio
    _make_source(qtbot, window, _picture_file(tmp_path / "photo.png"))
    window.outpaint_handles_action.trigger()
    assert studio.outpaint_frame.editing
    getattr(window, tool).trigger()
    assert not studio.outpaint_frame.editing and not window.outpaint_overlay.isVisible()
    window.outpaint_handles_action.trigger()
    assert studio.outpaint_frame.editing
    assert not studio.mask_editing and not studio.regions.editing
