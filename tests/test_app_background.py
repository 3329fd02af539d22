"""The window's background tools, offscreen, through the real engine: Remove background (the
flood fill, no segmenter installed), Replace background… with the tiny SD 1.x, the subject or
background as the mask tool's mask, refusals and Cancel."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from PIL import Image

from desktop.app.background import NO_FLAT_BACKGROUND
from engine.request import GenerationParameters
from tests import installed_homes
from tests.app_windows import real_engine, studio_window, tiny_studio

WAIT_MS = 120_000
SIZE = (64, 48)


def _subject_on_white() -> np.ndarray:
    """A picture as the starter model draws one: a red subject on a flat white ground."""
    width, height = SIZE
    pixels = np.full((height, width, 3), 255, np.uint8)
    pixels[12:36, 20:44] = (200, 30, 40)
    return pixels


def _subject() -> np.ndarray:
    alpha = np.zeros((SIZE[1], SIZE[0]), np.uint8)
    alpha[12:36, 20:44] = 255
    return alpha


def _matches(alpha: np.ndarray, expected: np.ndarray) -> bool:
    """The same away from the subject's edge (the cut's edge is soft, a pixel or two)."""
    edge = np.zeros_like(expected, bool)
    edge[10:38, 18:46] = True
    edge[14:34, 22:42] = False
    return bool((alpha[~edge] == expected[~edge]).all())


def _add(studio, pixels: np.ndarray):
    parameters = GenerationParameters("a red box", "", SIZE[0], SIZE[1], 4, 7.0, "euler", 7,
                                      "starter", "0" * 16, "starter")
    entry = studio.library.add_generated(pixels, parameters)
    studio.gallery.refresh()
    return entry


def _gallery_action(window, text: str):
    grid = window.gallery.grid
    grid.setCurrentIndex(grid.model().index(0))
    menu = window.gallery.context_menu()
    return next(action for action in menu.actions() if action.text() == text)


def _source(qtbot, window, entry) -> None:
    with qtbot.waitSignal(window.studio.source_changed, timeout=WAIT_MS):
        window.studio.use_as_source(entry)


@pytest.fixture
def window(qtbot, tmp_path):
    with studio_window(qtbot, tmp_path, real_engine) as shown:
        yield shown


def test_remove_background_saves_a_transparent_cut_out_shown_on_a_checkerboard(qtbot, window):
    studio = window.studio
    source = _add(studio, _subject_on_white())
    with qtbot.waitSignal(studio.generated, timeout=WAIT_MS) as done:
        _gallery_action(window, "Remove background").trigger()
    (entry,) = done.args[0].entries
    assert (entry.operation, entry.source_id) == ("remove_background", source.id)
    with Image.open(entry.path) as saved:
        assert saved.mode == "RGBA"
        alpha = np.asarray(saved.getchannel("A"))
    assert _matches(alpha, _subject())  # the ground transparent, the subject opaque
    # The flood fill was used, and the status line says so.
    assert "flat background" in window.statusBar().currentMessage()
    # The canvas shows the cut-out over a checkerboard, not over the window's dark grey.
    assert studio.canvas_image.hasAlphaChannel()
    shown = window.canvas.grab().toImage()
    rect = window.canvas.image_rect()
    corner = shown.pixelColor(int(rect.x()) + 2, int(rect.y()) + 2)
    beside = shown.pixelColor(int(rect.x()) + 10, int(rect.y()) + 2)
    assert {corner.red(), beside.red()} == {204, 255}  # two squares of the checkerboard


def test_the_background_as_the_mask_puts_the_inverted_subject_in_the_mask_tool(qtbot, window):
    studio = window.studio
    _source(qtbot, window, _add(studio, _subject_on_white()))
    with qtbot.waitSignal(studio.mask.changed, timeout=WAIT_MS):
        window.background.background_mask_action.trigger()
    qtbot.waitUntil(lambda: studio.mask_editing and not studio.mask.is_empty(), timeout=WAIT_MS)
    assert _matches(studio.mask.pixels(), 255 - _subject())
    window.background.subject_mask_action.trigger()
    qtbot.waitUntil(lambda: _matches(studio.mask.pixels(), _subject()), timeout=WAIT_MS)


def test_no_segmenter_and_no_flat_background_is_one_sentence_and_nothing_queued(qtbot, window):
    studio = window.studio
    y, x = np.mgrid[0:SIZE[1], 0:SIZE[0]]
    busy = np.stack([x * 4, y * 5, (x * y) % 256], -1).astype(np.uint8)
    _source(qtbot, window, _add(studio, busy))
    window.background.remove_action.trigger()
    assert window.last_problem == NO_FLAT_BACKGROUND
    assert studio.jobs.rowCount() == 0 and studio.runner.is_idle()


def test_a_queued_remove_background_cancelled_saves_nothing(qtbot, window):
    studio = window.studio
    _source(qtbot, window, _add(studio, _subject_on_white()))
    release = threading.Event()
    blocker = studio.runner.submit(lambda context: release.wait(30))  # the worker is busy
    job_id = studio.background.remove()
    assert job_id is not None and studio.jobs.find(job_id) is not None
    with qtbot.waitSignal(studio.runner.cancelled, timeout=WAIT_MS):
        studio.cancel(job_id)
    release.set()
    qtbot.waitUntil(lambda: studio.runner.running_id() != blocker, timeout=WAIT_MS)
    qtbot.waitUntil(studio.runner.is_idle, timeout=WAIT_MS)
    assert studio.library.count() == 1 and studio.jobs.rowCount() == 0


# Replace background with the tiny SD 1.x -------------------------------------------------------


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    template = tmp_path_factory.mktemp("background") / "home"
    with installed_homes.filling(template):
        pass  # the tiny SD 1.x alone
    return template


@pytest.fixture
def tiny_window(qtbot, installed, tmp_path, monkeypatch):
    home = installed_homes.copied_home(installed, tmp_path / "home", monkeypatch)
    with tiny_studio(qtbot, home, "a red box", SIZE) as shown:
        yield shown


def test_replace_background_keeps_the_subjects_pixels_exactly(qtbot, tiny_window):
    window, studio = tiny_window, tiny_window.studio
    pixels = _subject_on_white()
    source = _add(studio, pixels)
    _source(qtbot, window, source)
    window.background.replace_action.trigger()
    dialog = window.background.replace_dialog
    dialog.setTextValue("a beach at sunset")
    with qtbot.waitSignal(studio.generated, timeout=WAIT_MS) as done:
        dialog.accept()
    (entry,) = done.args[0].entries
    assert (entry.operation, entry.source_id) == ("replace_background", source.id)
    result = np.asarray(Image.open(entry.path).convert("RGB"))
    inside = (slice(14, 34), slice(22, 42))  # the subject within its soft edge
    assert (result[inside] == pixels[inside]).all()  # bit for bit
    assert (result[:8] != 255).any()  # the white ground was painted over
