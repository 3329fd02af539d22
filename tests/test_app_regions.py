"""The Region tool in the window: boxes with prompts of their own, drawn, moved, resized and
deleted through the view-model and with the mouse, at any zoom; Generate lays the picture out
with them (a scripted engine, then the real starter model) and the library records them."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from PIL import Image
from PySide6.QtCore import QPoint, Qt

from desktop.app.viewmodels.regions import MAX_BOXES, TOO_MANY, Box, RegionsModel
from engine.request import (
    GeneratedImage,
    GenerationResult,
    RegionsRequest,
    TextToImageRequest,
)
from engine.runtime import DeviceReport
from tests.app_windows import real_engine, studio_window
from tests.test_app import ScriptedPipelines

WAIT_MS = 5000
REAL_WAIT_MS = 60_000


class LayoutPipelines(ScriptedPipelines):
    """The scripted engine, answering a regions request as the engine does: a picture of
    the request's size whose parameters carry the boxes and their weight."""

    def run(self, model, request, on_progress, cancel) -> GenerationResult:
        if not isinstance(request, RegionsRequest):
            return super().run(model, request, on_progress, cancel)
        plain = TextToImageRequest(request.prompt, request.negative_prompt, request.width,
                                   request.height, steps=request.steps, guidance=request.guidance,
                                   scheduler=request.scheduler, seed=request.seed,
                                   count=request.count)
        result = super().run(model, plain, on_progress, cancel)
        self.requests[-1] = request  # what the app asked for, not the stand-in
        images = tuple(GeneratedImage(image.pixels, replace(
            image.parameters, operation="regions", regions=tuple(request.regions),
            region_weight=request.region_weight)) for image in result.images)
        return GenerationResult(images, (), DeviceReport(("cpu",), "cpu", None, 2))


@pytest.fixture
def pipelines():
    return LayoutPipelines()


@pytest.fixture
def window(qtbot, tmp_path, pipelines):
    with studio_window(qtbot, tmp_path, pipelines) as shown:
        yield shown


# The view-model, without a mouse ----------------------------------------------------------


def test_boxes_stay_inside_the_picture_and_keep_a_smallest_size(qtbot):
    regions = RegionsModel(256, 256)
    regions.min_side = 32
    assert regions.add(10, 20, 50, 40, "a moon") == 0
    assert regions.boxes[0] == Box(10, 20, 50, 40, "a moon")
    assert regions.selected == 0  # a new box is the one being worked on
    regions.add(-30, 250, 5, 5, "a star")
    assert regions.boxes[1].rect == (0, 224, 32, 32)  # grown to 32, pushed inside
    regions.set_box(0, 230, -4, 50, 400)
    assert regions.boxes[0].rect == (206, 0, 50, 256)
    regions.set_prompt(1, "a horse")
    assert regions.regions() == (((206, 0, 50, 256), "a moon"), ((0, 224, 32, 32), "a horse"))


def test_draw_move_resize_select_and_delete_by_gestures(qtbot):
    regions = RegionsModel(256, 256)
    regions.min_side = 32
    drawn = []
    regions.drawn.connect(drawn.append)

    # A click on nothing draws nothing.
    regions.begin_drag(100, 100, reach=4)
    regions.drag_to(101, 102)
    regions.end_drag()
    assert regions.boxes == [] and drawn == []

    # Drawn up and to the left of where the button went down.
    regions.begin_drag(200, 200, reach=4)
    regions.drag_to(150.4, 120.2)
    regions.end_drag()
    assert regions.boxes[0].rect == (150, 120, 50, 80) and drawn == [0]

    # A tiny drag still makes a box of the smallest size, the way the pointer went.
    regions.begin_drag(20, 20, reach=4)
    regions.drag_to(26, 30)
    regions.end_drag()
    assert regions.boxes[1].rect == (20, 20, 32, 32)

    # Moved by its inside, and stopped at the picture's edge.
    regions.begin_drag(170, 160, reach=4)
    assert regions.selected == 0
    regions.drag_to(200, -400)
    regions.end_drag()
    assert regions.boxes[0].rect == (180, 0, 50, 80)

    # Resized by its bottom-right corner, then by its left edge past the right one.
    regions.begin_drag(230, 80, reach=4)
    regions.drag_to(250, 100)
    regions.end_drag()
    assert regions.boxes[0].rect == (180, 0, 70, 100)
    regions.begin_drag(180, 50, reach=4)
    regions.drag_to(300, 50)
    regions.end_drag()
    assert regions.boxes[0].rect == (218, 0, 32, 100)  # the right edge stayed at 250

    # Clicking a box selects it; clicking nothing clears the selection; Delete removes.
    regions.begin_drag(30, 30, reach=4)
    regions.end_drag()
    assert regions.selected == 1
    regions.remove_selected()
    assert [box.rect for box in regions.boxes] == [(218, 0, 32, 100)]
    assert regions.selected is None
    regions.begin_drag(100, 200, reach=4)
    regions.end_drag()
    assert regions.selected is None and len(regions.boxes) == 1


def test_a_ninth_box_is_refused_in_one_sentence(qtbot, window):
    studio = window.studio
    regions = studio.regions
    studio.set_regions_editing(True)
    for number in range(MAX_BOXES):
        assert regions.add(number * 20, number * 20, 40, 40, f"thing {number}") == number
    assert regions.add(0, 0, 40, 40, "one too many") is None
    assert window.last_problem == TOO_MANY
    window.last_problem = None
    regions.begin_drag(200, 10)  # drawing a ninth is refused as well
    regions.drag_to(240, 60)
    regions.end_drag()
    assert len(regions.boxes) == MAX_BOXES and window.last_problem == TOO_MANY
    assert len(window.region_panel.prompts) == MAX_BOXES


def test_boxes_scale_with_the_size_chosen_in_the_prompt_panel(qtbot, window):
    studio, panel = window.studio, window.prompt_panel
    regions = studio.regions
    assert regions.size == (studio.prompt.form.width, studio.prompt.form.height) == (256, 256)
    assert regions.min_side == 32  # two cells of the starter model's 16-pixel grid
    regions.add(64, 128, 64, 64, "a moon")
    # The starter is offered its 256 x 256 and whole enlargements of it (the size rule).
    larger = next(index for index in range(panel.size_box.count())
                  if panel.size_box.itemData(index) == (512, 512))
    panel.size_box.setCurrentIndex(larger)
    panel.size_box.activated.emit(larger)  # what choosing it in the list does
    width, height = panel.size_box.itemData(larger)
    assert regions.size == (width, height) == (studio.prompt.form.width,
                                               studio.prompt.form.height)
    x, y, box_width, box_height = regions.boxes[0].rect
    assert (x, box_width) == (round(64 * width / 256), round(128 * width / 256) - x)
    assert (y, box_height) == (round(128 * height / 256), round(192 * height / 256) - y)


# The window, with the mouse --------------------------------------------------------------


def _screen(window, x: float, y: float) -> QPoint:
    canvas = window.canvas
    rect = canvas.image_rect()
    return QPoint(round(rect.x() + x * canvas.zoom), round(rect.y() + y * canvas.zoom))


def _drag(qtbot, window, start: tuple[float, float], *points: tuple[float, float]) -> None:
    overlay = window.region_overlay
    qtbot.mousePress(overlay, Qt.MouseButton.LeftButton, pos=_screen(window, *start))
    for point in points:
        qtbot.mouseMove(overlay, _screen(window, *point))
    qtbot.mouseRelease(overlay, Qt.MouseButton.LeftButton, pos=_screen(window, *points[-1]))


def test_the_mouse_draws_moves_resizes_and_deletes_boxes_at_any_zoom(qtbot, window, pipelines):
    studio, canvas = window.studio, window.canvas
    regions = studio.regions
    window.regions_action.trigger()
    assert regions.editing and window.regions_action.isChecked()
    assert window.region_overlay.isVisible() and window.regions_dock.isVisible()
    assert canvas.image_rect().width() == pytest.approx(256 * canvas.zoom)  # the empty frame

    canvas.zoom_by(1.7)  # picture pixels are not screen pixels any more
    canvas.zoom_by(1.3)
    assert canvas.zoom != pytest.approx(1.0)
    tolerance = 1 / canvas.zoom + 1  # a screen pixel's rounding, in picture pixels

    _drag(qtbot, window, (40, 30), (60, 50), (120, 100))
    (box,) = regions.boxes
    assert box.rect == pytest.approx((40, 30, 80, 70), abs=tolerance)
    assert window.region_panel.prompts[0].hasFocus()  # ready to say what the box shows
    qtbot.keyClicks(window.region_panel.prompts[0], "a moon")
    assert regions.boxes[0].prompt == "a moon"

    _drag(qtbot, window, (150, 150), (200, 210))  # a second box
    _drag(qtbot, window, (80, 60), (100, 70), (110, 80))  # move the first by its inside
    first = regions.boxes[0].rect
    assert first == pytest.approx((70, 50, 80, 70), abs=2 * tolerance)
    right, bottom = first[0] + first[2], first[1] + first[3]
    _drag(qtbot, window, (right, bottom), (right + 20, bottom + 10))  # its corner
    resized = regions.boxes[0].rect
    assert resized[:2] == first[:2]
    assert resized[2:] == pytest.approx((first[2] + 20, first[3] + 10), abs=2 * tolerance)

    # Zooming or panning afterwards changes nothing about the boxes.
    kept = [box.rect for box in regions.boxes]
    canvas.zoom_by(0.5)
    canvas.fit()
    assert [box.rect for box in regions.boxes] == kept

    # Click the second box, delete it with the Delete key.
    _drag(qtbot, window, (175, 180), (175, 180))
    assert regions.selected == 1
    qtbot.keyClick(window.region_overlay, Qt.Key.Key_Delete)
    assert [box.rect for box in regions.boxes] == kept[:1]
    assert len(window.region_panel.prompts) == 1
    assert pipelines.requests == []  # nothing was generated by drawing


def test_generate_with_regions_records_the_boxes_in_the_saved_picture(qtbot, window,
                                                                      pipelines):
    studio = window.studio
    regions = studio.regions
    window.regions_action.trigger()
    window.prompt_panel.prompt.setPlainText("on a blue background")
    _drag(qtbot, window, (10, 10), (90, 70))
    qtbot.keyClicks(window.region_panel.prompts[0], "a moon")
    window.canvas.zoom_by(2.5)  # the request is in picture pixels whatever the zoom
    _drag(qtbot, window, (200, 220), (120, 150))
    qtbot.keyClicks(window.region_panel.prompts[1], "a horse")
    window.region_panel.weight.setValue(6.5)
    assert window.prompt_panel.generate_button.text() == "Generate with regions"
    expected = regions.regions()
    assert expected[0][0] == pytest.approx((10, 10, 80, 60), abs=1)
    assert expected[1][0] == pytest.approx((120, 150, 80, 70), abs=1)
    assert [text for _, text in expected] == ["a moon", "a horse"]

    with qtbot.waitSignal(studio.generated, timeout=WAIT_MS) as finished:
        window.generate_action.trigger()
    request = pipelines.requests[-1]
    assert isinstance(request, RegionsRequest)
    assert tuple(request.regions) == expected
    assert (request.width, request.height) == (256, 256)
    assert request.region_weight == 6.5 and request.prompt == "on a blue background"

    (entry,) = finished.args[0].entries
    assert entry.operation == "regions"
    assert entry.parameters["regions"] == [{"box": list(box), "prompt": text}
                                           for box, text in expected]
    assert entry.parameters["region_weight"] == 6.5
    with Image.open(entry.path) as saved:
        assert json.loads(saved.text["easel"])["regions"][1]["prompt"] == "a horse"

    # Reusing the picture's parameters brings its layout back, with the tool on.
    regions.clear()
    regions.set_weight(2)
    studio.set_regions_editing(False)
    studio.reuse(entry)
    assert regions.editing and regions.regions() == expected and regions.weight == 6.5


def test_generate_is_plain_text_to_image_without_the_tool_or_its_boxes(qtbot, window,
                                                                        pipelines):
    studio = window.studio
    regions = studio.regions
    studio.prompt.update(prompt="a field")
    studio.set_regions_editing(True)  # on, but no boxes yet
    with qtbot.waitSignal(studio.generated, timeout=WAIT_MS):
        studio.generate()
    assert type(pipelines.requests[-1]) is TextToImageRequest

    regions.add(0, 0, 64, 64)  # a box with no prompt: said, and nothing queued
    assert studio.generate() is None
    assert window.last_problem.startswith("Box 1 has no prompt")
    assert len(pipelines.requests) == 1

    regions.set_prompt(0, "a tree")
    studio.set_regions_editing(False)  # the boxes are kept, but Generate ignores them
    assert not window.regions_dock.isVisible() and not window.region_overlay.isVisible()
    assert window.prompt_panel.generate_button.text() == "Generate"
    with qtbot.waitSignal(studio.generated, timeout=WAIT_MS):
        studio.generate()
    assert type(pipelines.requests[-1]) is TextToImageRequest
    assert regions.boxes[0].prompt == "a tree"


def test_the_mask_tool_and_the_region_tool_take_turns(qtbot, window, tmp_path):
    from tests.test_app import _make_source, _picture_file

    studio = window.studio
    _make_source(qtbot, window, _picture_file(tmp_path / "photo.png"))
    window.regions_action.trigger()
    assert studio.regions.editing
    window.mask_action.trigger()
    assert studio.mask_editing and not studio.regions.editing
    assert not window.regions_action.isChecked() and window.canvas.mask_editing
    window.regions_action.trigger()
    assert studio.regions.editing and not studio.mask_editing
    assert not window.mask_action.isChecked()


# The real engine ----------------------------------------------------------------------------


@pytest.fixture
def real_window(qtbot, tmp_path):
    with studio_window(qtbot, tmp_path, real_engine) as shown:
        yield shown


def test_the_starter_model_lays_out_regions_in_the_window(qtbot, real_window):
    window = real_window
    studio = window.studio
    studio.prompt.update(prompt="a green field", steps=4)
    window.regions_action.trigger()
    _drag(qtbot, window, (0, 0), (128, 96))
    qtbot.keyClicks(window.region_panel.prompts[0], "a red sun")
    _drag(qtbot, window, (140, 150), (250, 250))
    qtbot.keyClicks(window.region_panel.prompts[1], "a horse")
    expected = studio.regions.regions()
    with qtbot.waitSignal(studio.generated, timeout=REAL_WAIT_MS) as finished:
        window.generate_action.trigger()
    outcome = finished.args[0]
    (entry,) = outcome.entries
    assert outcome.pixels[0].shape == (256, 256, 3)
    assert entry.operation == "regions"
    assert [tuple(region["box"]) for region in entry.parameters["regions"]] == [
        box for box, _ in expected]
    assert [region["prompt"] for region in entry.parameters["regions"]] == ["a red sun",
                                                                             "a horse"]
    assert studio.library.get(entry.id).operation == "regions"
