"""The desktop app with the real engine and the built-in starter model (256 px, ~0.4 s)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent

from desktop.app.editing import Sides
from desktop.app.generation import EnginePipelines
from engine.runtime import RuntimeOptions
from tests.app_windows import studio_window

WAIT_MS = 60_000


class CountingPipelines(EnginePipelines):
    """The real engine, counting the steps it reports after a cancel was asked for."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.steps_after_cancel = 0
        self.steps = 0

    def run(self, model, request, on_progress, cancel):
        def counted(progress):
            self.steps += 1
            if cancel.cancelled:
                self.steps_after_cancel += 1
            on_progress(progress)

        return super().run(model, request, counted, cancel)


@pytest.fixture
def window(qtbot, tmp_path):
    with studio_window(qtbot, tmp_path, lambda store: CountingPipelines(
            store, RuntimeOptions(providers=("cpu",)))) as shown:
        yield shown


def test_the_starter_model_makes_a_picture_in_the_window(qtbot, window):
    studio = window.studio
    box = window.prompt_panel.prompt
    qtbot.keyClicks(box, "a small dog at the top, on a green background")
    with qtbot.waitSignal(studio.generated, timeout=WAIT_MS) as done:
        qtbot.keyClick(box, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    entry = done.args[0].entries[0]
    assert (studio.canvas_image.width(), studio.canvas_image.height()) == (256, 256)
    assert (entry.width, entry.height, entry.model) == (256, 256, "starter")
    assert studio.gallery.rowCount() == 1
    assert studio.history.prompt_at(0) == "a small dog at the top, on a green background"
    assert window.device_label.text().startswith("CPU")


def test_cancelling_the_starter_model_stops_within_one_step(qtbot, window):
    studio = window.studio
    pipelines = studio.services.pipelines
    studio.prompt.update(prompt="a rocket at the top", steps=400)
    studio.generate()
    qtbot.waitUntil(lambda: pipelines.steps >= 3, timeout=WAIT_MS)
    with qtbot.waitSignal(studio.runner.cancelled, timeout=WAIT_MS):
        studio.cancel_running()
    assert pipelines.steps_after_cancel <= 1
    assert pipelines.steps < 400
    assert studio.gallery.rowCount() == 0


def _scene(path: Path) -> Path:
    """A 256 px picture with detail everywhere, so a repainted pixel shows."""
    y, x = np.mgrid[0:256, 0:256]
    pixels = np.stack([x, y, (x + y) // 2], -1).astype(np.uint8)
    picture = Image.fromarray(pixels)
    ImageDraw.Draw(picture).ellipse((90, 60, 170, 140), fill=(240, 240, 40))
    picture.save(path)
    return path


def _drop(qtbot, window, path: Path) -> None:
    data = QMimeData()
    data.setUrls([QUrl.fromLocalFile(str(path))])
    with qtbot.waitSignal(window.studio.source_changed, timeout=WAIT_MS):
        window.canvas.dropEvent(QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, data,
                                           Qt.MouseButton.LeftButton,
                                           Qt.KeyboardModifier.NoModifier))


def test_inpainting_with_the_starter_model_keeps_every_unmasked_pixel(qtbot, window, tmp_path):
    studio = window.studio
    source_file = _scene(tmp_path / "scene.png")
    _drop(qtbot, window, source_file)
    window.mask_action.trigger()
    studio.mask.set_brush_size(60)
    studio.mask.begin_stroke(QPointF(60, 180))
    studio.mask.extend_stroke(QPointF(200, 180))
    studio.mask.end_stroke()
    painted = studio.mask.pixels()
    studio.prompt.update(prompt="a small dog on a green background", steps=8)
    with qtbot.waitSignal(studio.generated, timeout=WAIT_MS) as done:
        window.inpaint_action.trigger()
    entry = done.args[0].entries[0]
    assert (entry.operation, entry.width, entry.height) == ("inpaint", 256, 256)
    result = np.asarray(Image.open(entry.path).convert("RGB")).astype(int)
    source = np.asarray(Image.open(source_file).convert("RGB")).astype(int)
    keep = painted < 128
    assert np.array_equal(result[keep], source[keep])  # exactly, after saving and reading
    assert np.abs(result[~keep] - source[~keep]).mean() > 10  # the masked part was repainted


def test_variations_and_outpaint_with_the_starter_model(qtbot, window):
    studio = window.studio
    studio.prompt.update(prompt="a moon on the left, on a black background", steps=8, count=1)
    with qtbot.waitSignal(studio.generated, timeout=WAIT_MS) as done:
        studio.generate()
    original = done.args[0].entries[0]
    grid = window.gallery.grid
    grid.setCurrentIndex(grid.model().index(0))
    menu = window.gallery.context_menu()
    variations = next(action for action in menu.actions() if action.text() == "Variations")
    studio.prompt.update(variations=2)
    with qtbot.waitSignal(studio.generated, timeout=WAIT_MS) as done:
        variations.trigger()
    made = done.args[0]
    assert [(e.source_id, e.operation, e.width) for e in made.entries] == [
        (original.id, "image_to_image", 256)] * 2
    assert not np.array_equal(made.pixels[0], made.pixels[1])  # seed and seed + 1
    studio.prompt.update(count=1)
    with qtbot.waitSignal(studio.generated, timeout=WAIT_MS) as done:
        studio.outpaint(Sides(right=64))
    grown = done.args[0]
    entry = grown.entries[0]
    assert (entry.operation, entry.width, entry.height, entry.source_id) == (
        "outpaint", 320, 256, original.id)
    source = np.asarray(Image.open(original.path).convert("RGB"))
    assert np.array_equal(grown.pixels[0][:, :256], source)  # the original part is kept
