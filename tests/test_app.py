"""The desktop app, offscreen, driven through its widgets with a scripted fake engine.

The fake makes a picture in ``steps`` steps of ``step_s`` seconds, checks the cancel token
between steps as the real pipeline does, and records what it ran, so queue order and
cancellation can be checked without timing the real model (tests/test_app_starter.py runs it).
For the editing requests it keeps the engine's promises the app relies on: the result has the
source's size (grown when outpainting) and, when inpainting, the source's pixels outside the
mask.
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtWidgets import QDialogButtonBox

from desktop import settings as settings_file
from desktop.app import editing
from desktop.app.editing import Sides
from desktop.app.parameters import ModelChoice, form_for_model, size_presets
from desktop.app.viewmodels.gallery import EntryRole
from desktop.app.viewmodels.mask import MAX_BRUSH, MaskModel
from desktop.app.viewmodels.studio import Studio
from desktop.app.widgets.main_window import MainWindow
from desktop.library import Library
from desktop.settings import Settings
from engine.description import ModelDescription
from engine.errors import Cancelled
from engine.request import (
    GeneratedImage,
    GenerationParameters,
    GenerationResult,
    ImageToImageRequest,
    InpaintRequest,
    OutpaintRequest,
    Progress,
    TextToImageRequest,
)
from engine.runtime import DeviceReport
from engine.runtime.device import Gpu
from tests.app_windows import studio_window
from tests.qt_drops import drag_and_drop

ROOT = Path(__file__).resolve().parent.parent
WAIT_MS = 5000


class ScriptedPipelines:
    """A stand-in for the engine: a flat picture per request, in scripted time."""

    def __init__(self, step_s: float = 0.005) -> None:
        self.step_s = step_s
        self.ran: list[str] = []  # prompts, in the order they started
        self.requests: list[object] = []
        self.steps_done = 0
        self.cancel_seen_at_step: int | None = None
        self.gate = threading.Event()  # cleared: the next job waits before its first step
        self.gate.set()
        self.device = DeviceReport(("cpu",), "cpu", None, 2)  # where the pictures "ran"

    def run(self, model, request, on_progress, cancel) -> GenerationResult:
        self.ran.append(request.prompt)
        self.requests.append(request)
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
            pixels, operation = _fake_picture(request, 40 + 20 * index)
            height, width = pixels.shape[:2]
            parameters = GenerationParameters(
                request.prompt, request.negative_prompt, width, height, steps,
                request.guidance, request.scheduler, request.seed + index, model, "0" * 16,
                "starter", operation=operation, strength=getattr(request, "strength", None))
            images.append(GeneratedImage(pixels, parameters))
        return GenerationResult(tuple(images), (), self.device)


def _fake_picture(request, level: int) -> tuple[np.ndarray, str]:
    """A flat picture of the request's size; an edit's keeps the source outside its mask."""
    if isinstance(request, TextToImageRequest):
        return np.full((request.height, request.width, 3), level, np.uint8), "text_to_image"
    source = np.asarray(request.image, dtype=np.uint8)
    flat = np.full_like(source, level)
    if isinstance(request, ImageToImageRequest):
        return flat, "image_to_image"
    if isinstance(request, InpaintRequest):
        keep = np.asarray(request.mask)[..., np.newaxis] < 128
        return np.where(keep, source, flat), "inpaint"
    assert isinstance(request, OutpaintRequest)
    grown = np.pad(source, ((request.top, request.bottom), (request.left, request.right),
                            (0, 0)), constant_values=level)
    return grown, "outpaint"


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
    with studio_window(qtbot, tmp_path, pipelines, library) as shown:
        yield shown



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


def test_the_status_line_names_the_gpu_and_precision_the_picture_was_made_with(
        qtbot, window, pipelines):
    h100 = Gpu("NVIDIA H100 80GB HBM3", 85_028_896_768)
    pipelines.device = DeviceReport(("cuda", "cpu"), "cuda", None, gpu=h100, precision="fp16")
    _generate(qtbot, window, "a dog at the top")
    assert window.device_label.text() == "CUDA: NVIDIA H100 80GB HBM3, fp16"


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
    return drag_and_drop(canvas, data)


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
    window.studio.pictures.set_favourite([gallery.grid.model().entry(1)], True)
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


# Editing the source picture -----------------------------------------------------------------


def _picture_file(path: Path, size: tuple[int, int] = (64, 48)) -> Path:
    """A picture with different pixels everywhere, so a changed pixel shows."""
    width, height = size
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([x * 255 // width, y * 255 // height, (x * y) % 256], -1).astype(np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def _make_source(qtbot, window: MainWindow, path: Path) -> None:
    with qtbot.waitSignal(window.studio.source_changed, timeout=WAIT_MS):
        assert _drop(window.canvas, path)


def _finish(qtbot, studio: Studio, trigger) -> object:
    with qtbot.waitSignal(studio.generated, timeout=WAIT_MS) as done:
        trigger()
    return done.args[0]


def _tooltip(studio: Studio, row: int) -> str:
    gallery = studio.gallery
    gallery.refresh()
    gallery.entry(row)  # reads the page now, as a view about to paint would
    return gallery.index(row).data(Qt.ItemDataRole.ToolTipRole)


def test_variations_of_a_dropped_picture_are_linked_to_it(qtbot, window, pipelines, tmp_path):
    studio = window.studio
    original = _generate(qtbot, window, "a dog at the top").entries[0]
    # Dragged out of the gallery and dropped back: the id in the PNG keeps the lineage.
    dragged = tmp_path / "dragged.png"
    dragged.write_bytes(original.path.read_bytes())
    _make_source(qtbot, window, dragged)
    assert studio.source.image_id == original.id
    assert studio.canvas_is_source and window.canvas.has_image
    assert window.source_label.text().strip().startswith(f"Source: #{original.id[:6]}")
    studio.prompt.update(prompt="", variations=3, strength=0.5)
    previews = []
    studio.canvas_changed.connect(lambda: previews.append(studio.canvas_is_preview))
    outcome = _finish(qtbot, studio, window.variations_action.trigger)
    assert True in previews and not studio.canvas_is_preview
    request = pipelines.requests[-1]
    assert isinstance(request, ImageToImageRequest) and request.count == 3
    assert request.strength == studio.prompt.form.strength
    assert np.array_equal(request.image, np.asarray(Image.open(dragged).convert("RGB")))
    assert len(outcome.entries) == 3
    assert {(e.operation, e.source_id) for e in outcome.entries} == {
        ("image_to_image", original.id)}
    assert studio.gallery.rowCount() == 4
    assert f"variation of #{original.id[:6]}" in _tooltip(studio, 0)
    studio.prompt.update(strength=0.9)
    studio.reuse(outcome.entries[0])
    assert studio.prompt.form.strength == 0.5  # Reuse parameters brings the strength back
    assert window.prompt_panel.strength.value() == 0.5

    # A picture from elsewhere has no library id to link to, and says so.
    _make_source(qtbot, window, _picture_file(tmp_path / "photo.png"))
    assert studio.source.image_id is None
    studio.prompt.update(variations=1)
    outcome = _finish(qtbot, studio, studio.variations)
    assert outcome.entries[0].source_id is None
    assert "variation of an outside picture" in _tooltip(studio, 0)


def test_paint_a_mask_and_inpaint_changes_only_the_masked_part(qtbot, window, pipelines,
                                                              tmp_path):
    studio, canvas = window.studio, window.canvas
    source_file = _picture_file(tmp_path / "photo.png")
    _make_source(qtbot, window, source_file)
    window.mask_action.trigger()
    assert studio.mask_editing and window.mask_tools.isVisible() and canvas.mask_editing
    studio.mask.set_brush_size(10)
    qtbot.keyClick(canvas, Qt.Key.Key_BracketLeft)  # smaller, from the canvas's own keys
    assert studio.mask.brush_size == window.brush_size.value() == 8

    def at(x: float, y: float) -> QPoint:
        rect = canvas.image_rect()
        return QPoint(round(rect.x() + x * canvas.zoom), round(rect.y() + y * canvas.zoom))

    def stroke(*points: tuple[float, float]) -> None:
        qtbot.mousePress(canvas, Qt.MouseButton.LeftButton, pos=at(*points[0]))
        for point in points[1:]:
            qtbot.mouseMove(canvas, at(*point))
        qtbot.mouseRelease(canvas, Qt.MouseButton.LeftButton, pos=at(*points[-1]))

    stroke((10, 10), (30, 10), (30, 30))
    mask = studio.mask.pixels()
    assert mask.shape == (48, 64)  # the picture's size, whatever the zoom
    assert mask[10, 20] == 255 and mask[20, 30] == 255 and mask[40, 60] == 0
    painted = mask.copy()
    window.eraser_action.trigger()
    stroke((20, 10))
    assert studio.mask.pixels()[10, 20] == 0
    qtbot.keyClick(window, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)  # undo a stroke
    assert np.array_equal(studio.mask.pixels(), painted)
    outcome = _finish(qtbot, studio, window.inpaint_action.trigger)
    assert not studio.mask_editing and not window.mask_tools.isVisible()
    request = pipelines.requests[-1]
    assert isinstance(request, InpaintRequest) and np.array_equal(request.mask, painted)
    entry = outcome.entries[0]
    assert entry.operation == "inpaint" and (entry.width, entry.height) == (64, 48)
    result = np.asarray(Image.open(entry.path).convert("RGB"))
    source = np.asarray(Image.open(source_file).convert("RGB"))
    keep = painted < 128
    assert np.array_equal(result[keep], source[keep])
    assert not np.array_equal(result[~keep], source[~keep])
    # The mask stays for another try, and shows over the source again.
    window.mask_action.trigger()
    assert studio.canvas_is_source and np.array_equal(studio.mask.pixels(), painted)


def test_mask_brush_eraser_invert_clear_and_undo(qtbot):
    mask = MaskModel()
    mask.reset(13, 6)  # an odd width: Qt pads each line, the pixels must not show it
    assert mask.pixels().shape == (6, 13) and mask.is_empty() and not mask.can_undo
    mask.set_brush_size(3)
    mask.begin_stroke(QPointF(2, 2))
    mask.extend_stroke(QPointF(8, 2))
    mask.end_stroke()
    assert mask.pixels()[2, 2:9].min() == 255 and mask.pixels()[5, 12] == 0
    assert set(np.unique(mask.pixels())) <= {0, 255}  # plainly in or out
    mask.invert()
    assert mask.pixels()[2, 5] == 0 and mask.pixels()[5, 12] == 255
    mask.clear()
    assert mask.is_empty()
    mask.undo()
    mask.undo()
    assert mask.pixels()[2, 5] == 255 and mask.pixels()[5, 12] == 0
    mask.undo()
    assert mask.is_empty() and not mask.can_undo
    mask.set_brush_size(10_000)
    assert mask.brush_size == MAX_BRUSH


def test_outpaint_grows_the_picture(qtbot, window, pipelines, tmp_path):
    studio = window.studio
    _make_source(qtbot, window, _picture_file(tmp_path / "photo.png"))
    window.outpaint_action.trigger()
    dialog = window.outpaint_dialog
    for box in dialog.boxes.values():
        box.setValue(0)
    ok = dialog.buttons.button(QDialogButtonBox.StandardButton.Ok)
    assert not ok.isEnabled()  # nothing to add
    dialog.boxes["right"].setValue(64)  # the starter's pixel multiple (the size rule)
    dialog.boxes["top"].setValue(128)
    assert "128 × 176" in dialog.result_size.text()
    outcome = _finish(qtbot, studio, ok.click)
    entry = outcome.entries[0]
    assert (entry.operation, entry.width, entry.height) == ("outpaint", 128, 176)
    assert (studio.canvas_image.width(), studio.canvas_image.height()) == (128, 176)
    request = pipelines.requests[-1]
    assert (request.left, request.top, request.right, request.bottom) == (0, 128, 64, 0)
    assert studio.outpaint_sides == Sides(top=128, right=64)  # offered again next time


def test_gallery_context_menu_makes_variations_of_a_picture(qtbot, window, pipelines):
    studio = window.studio
    first = _generate(qtbot, window, "the moon on the left").entries[0]
    grid = window.gallery.grid
    grid.setCurrentIndex(grid.model().index(0))
    menu = window.gallery.context_menu()
    variations = next(action for action in menu.actions() if action.text() == "Variations")
    studio.prompt.update(variations=2)
    outcome = _finish(qtbot, studio, variations.trigger)  # loads the source, then queues
    assert studio.source.image_id == first.id
    assert [entry.source_id for entry in outcome.entries] == [first.id, first.id]
    assert isinstance(pipelines.requests[-1], ImageToImageRequest)


def test_bad_editing_input_gets_one_sentence_and_changes_nothing(qtbot, window, pipelines,
                                                                 tmp_path):
    studio = window.studio
    form = studio.prompt.form
    for trigger in (window.variations_action.trigger, window.edit_action.trigger,
                    window.inpaint_action.trigger, window.outpaint_action.trigger,
                    window.mask_action.trigger, window.use_source_action.trigger):
        window.last_problem = None
        trigger()
        assert window.last_problem is not None and "\n" not in window.last_problem
        assert window.last_problem in (editing.NO_SOURCE, (
            "Choose a picture in the gallery (or drop one on the canvas) to use as the source."))
    assert not window.mask_action.isChecked() and not studio.mask_editing
    _make_source(qtbot, window, _picture_file(tmp_path / "photo.png"))
    window.inpaint_action.trigger()
    assert window.last_problem == editing.EMPTY_MASK
    window.edit_action.trigger()
    assert window.last_problem == editing.NO_EDIT_PROMPT
    studio.outpaint(Sides())
    assert window.last_problem == editing.NO_SIDES
    assert studio.jobs.rowCount() == 0 and pipelines.requests == []
    assert studio.prompt.form == form  # not even a new seed
    assert studio.gallery.rowCount() == 0


def test_cancelling_an_edit_saves_nothing_and_shows_the_source_again(qtbot, window,
                                                                     pipelines, tmp_path):
    pipelines.step_s = 0.05
    studio = window.studio
    _make_source(qtbot, window, _picture_file(tmp_path / "photo.png"))
    studio.prompt.update(steps=100)
    studio.variations()
    qtbot.waitUntil(lambda: studio.canvas_is_preview, timeout=WAIT_MS)
    with qtbot.waitSignal(studio.runner.cancelled, timeout=WAIT_MS):
        studio.cancel_running()
    assert studio.gallery.rowCount() == 0
    assert studio.canvas_is_source and studio.canvas_image is studio.source_image
