"""The desktop app, offscreen, driven through its widgets with a scripted fake engine.

The fake makes a picture in ``steps`` steps of ``step_s`` seconds, checks the cancel token
between steps as the real pipeline does, and records what it ran, so queue order and
cancellation can be checked without timing the real model (tests/test_app_starter.py runs it).
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import QMimeData, QPointF, Qt, QTimer, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent

from desktop.app import settings as settings_file
from desktop.app.parameters import ModelChoice, form_for_model, size_presets
from desktop.app.settings import Settings
from desktop.app.viewmodels.gallery import EntryRole
from desktop.app.viewmodels.studio import Services, Studio
from desktop.app.widgets.main_window import MainWindow
from desktop.library import Library
from desktop.model_store import ModelStore
from engine.description import ModelDescription
from engine.errors import Cancelled
from engine.request import (
    GeneratedImage,
    GenerationParameters,
    GenerationResult,
    Progress,
    TextToImageRequest,
)
from engine.runtime import DeviceReport

ROOT = Path(__file__).resolve().parent.parent
BUILT_IN = ROOT / "resources" / "models"
WAIT_MS = 5000


class ScriptedPipelines:
    """A stand-in for the engine: a flat picture per request, in scripted time."""

    def __init__(self, step_s: float = 0.005) -> None:
        self.step_s = step_s
        self.ran: list[str] = []  # prompts, in the order they started
        self.steps_done = 0
        self.cancel_seen_at_step: int | None = None
        self.gate = threading.Event()  # cleared: the next job waits before its first step
        self.gate.set()

    def run(self, model, request: TextToImageRequest, on_progress, cancel) -> GenerationResult:
        self.ran.append(request.prompt)
        self.gate.wait(10)
        steps = request.steps or 4
        images = []
        for index in range(request.count):
            for step in range(1, steps + 1):
                if cancel.cancelled:
                    self.cancel_seen_at_step = self.steps_done
                    raise Cancelled("Cancelled.")
                time.sleep(self.step_s)
                self.steps_done += 1
                latents = np.full((1, 3, 8, 8), step / steps, dtype=np.float32)
                on_progress(Progress(index, request.count, step, steps, latents))
            pixels = np.full((request.height, request.width, 3), 40 + 20 * index, np.uint8)
            parameters = GenerationParameters(
                request.prompt, request.negative_prompt, request.width, request.height, steps,
                request.guidance, request.scheduler, request.seed + index, model, "0" * 16,
                "starter")
            images.append(GeneratedImage(pixels, parameters))
        return GenerationResult(tuple(images), (), DeviceReport(("cpu",), "cpu", None, 2))


@pytest.fixture
def library(tmp_path):
    opened = Library.open(tmp_path / "home")
    yield opened
    opened.close()


@pytest.fixture
def pipelines():
    return ScriptedPipelines()


@pytest.fixture
def window(qtbot, tmp_path, library, pipelines):
    store = ModelStore(tmp_path / "models", BUILT_IN)
    studio = Studio(Services(library, store, pipelines, Settings()))
    shown = MainWindow(studio)
    qtbot.addWidget(shown)
    shown.show()
    yield shown
    shown.close()
    _nothing_left_behind(studio)


def _nothing_left_behind(studio: Studio) -> None:
    """Closing cancels the job and waits: no worker, pool thread or timer may outlive it."""
    runner = studio.runner
    assert runner._thread.isFinished()
    assert runner._pool.activeThreadCount() == 0
    assert not [timer for timer in studio.findChildren(QTimer) if timer.isActive()]
    assert not [thread for thread in threading.enumerate()
                if thread.name.startswith(("easel", "Qt", "QThread"))]


def _generate(qtbot, window: MainWindow, prompt: str) -> object:
    box = window.prompt_panel.prompt
    box.setFocus()
    box.selectAll()
    qtbot.keyClicks(box, prompt)
    with qtbot.waitSignal(window.studio.generated, timeout=WAIT_MS) as done:
        qtbot.keyClick(box, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    return done.args[0]


def test_generate_puts_the_picture_on_the_canvas_in_the_gallery_and_history(qtbot, window):
    studio = window.studio
    previews = []
    studio.canvas_changed.connect(lambda: previews.append(studio.canvas_is_preview))
    outcome = _generate(qtbot, window, "a dog at the top")
    assert True in previews  # live previews came before the picture
    assert window.canvas.has_image and not studio.canvas_is_preview
    assert studio.canvas_image.width() == outcome.pixels[0].shape[1]
    assert studio.canvas_entry.id == outcome.entries[0].id
    assert outcome.entries[0].path.is_file()
    gallery = window.gallery.grid.model()
    assert gallery.rowCount() == 1
    assert gallery.entry(0).prompt == "a dog at the top"
    qtbot.waitUntil(lambda: gallery.index(0).data(EntryRole) is not None, timeout=WAIT_MS)
    assert window.history_panel.list.model().prompt_at(0) == "a dog at the top"
    assert window.gallery.count.text() == "1 picture"
    assert window.device_label.text() == "CPU (2 threads)"
    # The thumbnail is made on a pool thread and arrives later.
    qtbot.waitUntil(lambda: len(gallery._thumbnails) == 1, timeout=WAIT_MS)


def test_cancel_stops_within_one_step(qtbot, window, pipelines):
    pipelines.step_s = 0.05
    studio = window.studio
    studio.prompt.update(prompt="slow", steps=100)
    job = studio.generate()
    qtbot.waitUntil(lambda: pipelines.steps_done >= 2, timeout=WAIT_MS)
    with qtbot.waitSignal(studio.runner.cancelled, timeout=WAIT_MS):
        steps_at_cancel = pipelines.steps_done
        qtbot.keyClick(window, Qt.Key.Key_Escape)
    assert pipelines.cancel_seen_at_step - steps_at_cancel <= 1
    assert studio.jobs.rowCount() == 0 and job not in studio.runner.queued_ids()
    assert window.gallery.grid.model().rowCount() == 0  # nothing saved
    assert not studio.canvas_is_preview


def test_queue_runs_in_order_and_a_removed_job_never_runs(qtbot, window, pipelines):
    studio = window.studio
    pipelines.gate.clear()  # the first job waits, so the others stay queued
    ids = []
    for prompt in ("first", "second", "third"):
        studio.prompt.update(prompt=prompt)
        ids.append(studio.generate())
    qtbot.waitUntil(lambda: studio.jobs.running() is not None, timeout=WAIT_MS)
    assert studio.jobs.ids() == ids
    assert "queued" in window.queue.list.model().index(1).data()
    window.queue.list.setCurrentIndex(window.queue.list.model().index(1))
    window.queue.remove_button.click()
    assert studio.jobs.ids() == [ids[0], ids[2]]
    pipelines.gate.set()
    qtbot.waitUntil(lambda: studio.jobs.rowCount() == 0, timeout=WAIT_MS)
    assert pipelines.ran == ["first", "third"]
    assert window.gallery.grid.model().rowCount() == 2


def _drop(canvas, path: Path) -> bool:
    data = QMimeData()
    data.setUrls([QUrl.fromLocalFile(str(path))])
    where = QPointF(canvas.width() / 2, canvas.height() / 2)
    enter = QDragEnterEvent(where, Qt.DropAction.CopyAction, data,
                            Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    canvas.dragEnterEvent(enter)
    if not enter.isAccepted():
        return False
    canvas.dropEvent(QDropEvent(where, Qt.DropAction.CopyAction, data,
                                Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier))
    return True


def test_dropping_a_good_and_a_bad_file(qtbot, window, tmp_path):
    studio = window.studio
    good = tmp_path / "photo.png"
    Image.new("RGB", (64, 48), "orange").save(good)
    with qtbot.waitSignal(studio.source_changed, timeout=WAIT_MS):
        assert _drop(window.canvas, good)
    assert studio.source_path == good and studio.source_image.width() == 64

    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("shopping list")
    assert _drop(window.canvas, not_an_image)
    assert window.last_problem == "'notes.png' is not an image Easel can read."
    assert studio.source_path == good  # nothing changed

    truncated = tmp_path / "cut.png"  # a good header, so only the full decode can tell
    truncated.write_bytes(good.read_bytes()[:60])
    with qtbot.waitSignal(studio.problem, timeout=WAIT_MS):
        _drop(window.canvas, truncated)
    assert "cut.png" in window.last_problem
    assert studio.source_path == good


def test_reuse_parameters_fills_the_panel(qtbot, window):
    studio, panel = window.studio, window.prompt_panel
    studio.prompt.update(steps=7, guidance=3.5, seed=1234, seed_locked=True,
                         negative_prompt="blurry")
    _generate(qtbot, window, "a rocket at the top")
    studio.prompt.update(prompt="something else", steps=20, guidance=1.0, seed=9,
                         seed_locked=False, negative_prompt="")
    panel.show_form()
    grid = window.gallery.grid
    grid.setCurrentIndex(grid.model().index(0))
    window.gallery.reuse_selected()
    assert panel.prompt.toPlainText() == "a rocket at the top"
    assert panel.negative.toPlainText() == "blurry"
    assert (panel.steps.value(), panel.guidance.value()) == (7, 3.5)
    assert panel.seed.text() == "1234" and panel.seed_lock.isChecked()
    assert studio.prompt.form.seed == 1234


def test_up_in_an_empty_prompt_walks_the_history(qtbot, window):
    _generate(qtbot, window, "older prompt")
    _generate(qtbot, window, "newer prompt")
    box = window.prompt_panel.prompt
    box.clear()
    qtbot.keyClick(box, Qt.Key.Key_Up)
    assert box.toPlainText() == "newer prompt"
    qtbot.keyClick(box, Qt.Key.Key_Up)
    assert box.toPlainText() == "older prompt"
    qtbot.keyClick(box, Qt.Key.Key_Down)
    assert box.toPlainText() == "newer prompt"


def test_delete_to_trash_and_undo(qtbot, window):
    _generate(qtbot, window, "keep me")
    grid = window.gallery.grid
    grid.setFocus()
    grid.setCurrentIndex(grid.model().index(0))
    qtbot.keyClick(grid, Qt.Key.Key_Delete)
    assert grid.model().rowCount() == 0
    qtbot.keyClick(window, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert grid.model().rowCount() == 1


def test_dragging_out_gives_the_files_with_or_without_metadata(qtbot, window):
    _generate(qtbot, window, "a tree on the right")
    model = window.gallery.grid.model()
    entry = model.entry(0)
    assert [url.toLocalFile() for url in model.mimeData([model.index(0)]).urls()] == [
        str(entry.path)]
    window.studio.apply_settings(Settings(embed_metadata=False))
    copy = Path(model.mimeData([model.index(0)]).urls()[0].toLocalFile())
    assert copy != entry.path and "parameters" not in Image.open(copy).info
    window.close()
    assert not copy.exists()  # the drag copies go when the window closes


def test_welcome_page_on_first_run_starts_with_the_starter_model(qtbot, window):
    assert window.pages.currentWidget() is window.welcome
    assert window.studio.prompt.form.model == "starter"
    window.welcome.findChild(type(window.prompt_panel.generate_button)).click()
    assert window.pages.currentWidget() is not window.welcome


def test_gallery_search_and_favourites(qtbot, window):
    _generate(qtbot, window, "a horse on the right")
    _generate(qtbot, window, "the moon on the left")
    gallery = window.gallery
    qtbot.keyClicks(gallery.search, "moo")
    assert gallery.grid.model().rowCount() == 1
    gallery.search.clear()
    window.studio.set_favourite([gallery.grid.model().entry(1)], True)
    gallery.favourites.click()
    assert [gallery.grid.model().entry(0).prompt] == ["a horse on the right"]


def test_only_the_worker_module_crosses_threads():
    words = re.compile(r"\b(threading|QThread|QThreadPool|QRunnable|concurrent|moveToThread)\b")
    app = ROOT / "desktop" / "app"
    offenders = [path.relative_to(app).as_posix() for path in app.rglob("*.py")
                 if path.name != "worker.py" and words.search(path.read_text())]
    assert offenders == []


# Plain data: no window needed --------------------------------------------------------------

def _choice(**description) -> ModelChoice:
    base = dict(family="sd1", latent_channels=4, vae_scale_factor=8, latent_scaling_factor=0.18,
                prediction_type="epsilon", default_width=512, default_height=512,
                default_steps=25, default_guidance=7.5, default_scheduler="euler")
    return ModelChoice("m", "sd1", 1, False, ModelDescription(**{**base, **description}))


def test_size_presets_fit_the_model():
    sd1 = {(preset.width, preset.height) for preset in size_presets(_choice())}
    assert {(512, 512), (768, 768)} <= sd1 and (1024, 1024) not in sd1
    assert all(width % 8 == 0 and height % 8 == 0 for width, height in sd1)
    xl = {(p.width, p.height) for p in size_presets(
        _choice(default_width=1024, default_height=1024))}
    assert (1024, 1024) in xl and (512, 512) not in xl


def test_a_turbo_model_starts_with_few_steps_and_no_guidance():
    from desktop.app.parameters import Form

    turbo = _choice(default_steps=1, default_guidance=0.0, distillation="turbo")
    form = form_for_model(Form(prompt="kept", seed=5), turbo)
    assert (form.steps, form.guidance, form.prompt, form.seed) == (1, 0.0, "kept", 5)


def test_settings_round_trip_and_damaged_file(tmp_path):
    path = tmp_path / "settings.json"
    assert settings_file.load(path).settings == Settings()  # first run: defaults, no message
    chosen = Settings(providers=("cuda", "cpu"), embed_metadata=False, theme="dark")
    settings_file.save(chosen, path)
    assert settings_file.load(path) == settings_file.LoadedSettings(chosen)
    path.write_text('{"schema": 1, "theme": 42')
    loaded = settings_file.load(path)
    assert loaded.settings == Settings() and "damaged" in loaded.message
    assert (tmp_path / "settings.json.damaged").is_file() and not path.exists()
    path.write_text('{"schema": 1, "providers": ["warp-drive"]}')
    assert "damaged" in settings_file.load(path).message
    path.write_text('{"schema": 99}')
    assert "newer Easel" in settings_file.load(path).message and path.exists()
