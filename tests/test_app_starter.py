"""The desktop app with the real engine and the built-in starter model (256 px, ~0.4 s)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from desktop.app.generation import EnginePipelines
from desktop.app.settings import Settings
from desktop.app.viewmodels.studio import Services, Studio
from desktop.app.widgets.main_window import MainWindow
from desktop.library import Library
from desktop.model_store import ModelStore
from engine.runtime import RuntimeOptions

BUILT_IN = Path(__file__).resolve().parent.parent / "resources" / "models"
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
    library = Library.open(tmp_path / "home")
    store = ModelStore(tmp_path / "models", BUILT_IN)
    pipelines = CountingPipelines(store, RuntimeOptions(providers=("cpu",)))
    studio = Studio(Services(library, store, pipelines, Settings()))
    shown = MainWindow(studio)
    qtbot.addWidget(shown)
    shown.show()
    yield shown
    shown.close()
    library.close()
    assert studio.runner._thread.isFinished()


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
