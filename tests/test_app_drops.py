"""Dropping a picture from a browser onto the canvas: its bytes (or a picture Qt decoded, or
a data: address) become the source with the same limits as a file; a bare web link gets one
sentence (Easel works offline) and changes nothing."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import QMimeData, QUrl
from PySide6.QtGui import QColor, QImage

from desktop.app.viewmodels.studio import Services, Studio
from desktop.app.widgets.main_window import MainWindow
from desktop.library import Library
from desktop.library.images import MAX_SIDE
from desktop.model_store import ModelStore
from desktop.settings import Settings
from tests.qt_drops import drag_and_drop

WAIT_MS = 5000
OFFLINE = ("Easel works offline, so it does not download the picture from example.com: "
           "save it from the browser, then drop the saved file here.")


class NoEngine:
    def run(self, *args, **kwargs):
        raise AssertionError("no picture is generated in these tests")


def _encoded(size=(40, 30), mode="RGB", colour="orange", kind="PNG") -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, colour).save(out, kind)
    return out.getvalue()


@pytest.fixture
def studio(qtbot, tmp_path):
    library = Library.open(tmp_path / "home")
    made = Studio(Services(library, ModelStore(tmp_path / "models"), NoEngine(), Settings()))
    problems, messages = [], []
    made.problem.connect(problems.append)
    made.message.connect(messages.append)
    made.problems, made.messages = problems, messages
    yield made
    made.shutdown()
    library.close()


@pytest.fixture
def window(qtbot, studio):
    shown = MainWindow(studio)
    qtbot.addWidget(shown)
    shown.show()
    yield shown
    shown.close()


# The view-model ----------------------------------------------------------------------------

def test_picture_data_becomes_the_source_with_no_file_and_no_library_id(qtbot, studio):
    with qtbot.waitSignal(studio.source_changed, timeout=WAIT_MS):
        assert studio.drops.drop_image_data(_encoded(mode="RGBA", colour=(255, 0, 0, 128)))
    assert studio.source.size == (40, 30)
    assert studio.source.pixels.shape == (30, 40, 3)  # converted as a file's would be
    assert studio.source.image_id is None and studio.source_path is None
    assert studio.messages[-1] == "'dropped picture' is the source now."
    assert studio.problems == []


@pytest.mark.parametrize("data, words", [
    (b"<html>not a picture</html>", "'cat.png' is not an image Easel can read."),
    (_encoded(kind="GIF"), "'cat.png' is a GIF file; Easel takes PNG, JPEG or WEBP here."),
    (_encoded(size=(MAX_SIDE + 1, 1), mode="L"),
     f"'cat.png' is {MAX_SIDE + 1}x1; Easel takes images up to {MAX_SIDE} pixels a side."),
])
def test_bad_picture_data_is_refused_in_one_sentence_and_changes_nothing(studio, data, words):
    assert not studio.drops.drop_image_data(data, "cat.png")
    assert studio.problems == [words]
    assert studio.source is None


def test_damaged_picture_data_is_refused_after_the_full_decode(qtbot, studio):
    with qtbot.waitSignal(studio.problem, timeout=WAIT_MS) as refused:
        assert studio.drops.drop_image_data(_encoded()[:60])  # a good header: only decoding tells
    assert refused.args == ["'dropped picture' is damaged or incomplete and cannot be read."]
    assert studio.source is None


def test_a_web_address_alone_is_explained_and_changes_nothing(studio):
    studio.drops.drop_web_address("https://example.com/pictures/cat.png")
    assert studio.problems == [OFFLINE]
    assert studio.source is None


# Through the canvas ------------------------------------------------------------------------



def _browser_drag(picture: bytes | None, kind: str = "image/png") -> QMimeData:
    data = QMimeData()
    data.setUrls([QUrl("https://example.com/pictures/cat.png")])
    if picture is not None:
        data.setData(kind, picture)
    return data


def test_a_browsers_picture_bytes_become_the_source(qtbot, window):
    studio = window.studio
    with qtbot.waitSignal(studio.source_changed, timeout=WAIT_MS):
        assert drag_and_drop(window.canvas, _browser_drag(_encoded(kind="JPEG"), "image/jpeg"))
    assert studio.source.size == (40, 30)
    assert studio.messages[-1] == "'cat.png' is the source now."  # named after its address
    assert window.canvas.has_image and studio.canvas_is_source


def test_a_picture_qt_decoded_becomes_the_source(qtbot, window):
    image = QImage(24, 16, QImage.Format.Format_RGB32)
    image.fill(QColor("blue"))
    data = QMimeData()
    data.setImageData(image)
    with qtbot.waitSignal(window.studio.source_changed, timeout=WAIT_MS):
        assert drag_and_drop(window.canvas, data)
    source = window.studio.source
    assert source.size == (24, 16)
    assert tuple(source.pixels[0, 0]) == (0, 0, 255)


def test_an_inline_data_address_becomes_the_source(qtbot, window):
    address = "data:image/png;base64," + base64.b64encode(_encoded(size=(8, 6))).decode()
    data = QMimeData()
    data.setUrls([QUrl(address)])
    with qtbot.waitSignal(window.studio.source_changed, timeout=WAIT_MS):
        assert drag_and_drop(window.canvas, data)
    assert window.studio.source.size == (8, 6)


def test_a_bare_web_link_gets_the_offline_sentence(window):
    assert drag_and_drop(window.canvas, _browser_drag(None))
    assert window.last_problem == OFFLINE
    assert window.studio.source is None


def test_bytes_that_are_no_picture_are_refused(window):
    assert drag_and_drop(window.canvas, _browser_drag(b"\x00\x01 definitely not a png"))
    assert window.last_problem == "'cat.png' is not an image Easel can read."
    assert window.studio.source is None


def test_text_is_not_taken(window):
    data = QMimeData()
    data.setText("a red chair")
    assert not drag_and_drop(window.canvas, data)
    assert window.last_problem is None


def test_a_local_file_still_wins_over_picture_data(qtbot, window, tmp_path):
    path = tmp_path / "photo.png"
    Image.fromarray(np.full((12, 10, 3), 200, np.uint8)).save(path)
    data = _browser_drag(_encoded())
    data.setUrls([QUrl.fromLocalFile(str(path)), QUrl("https://example.com/cat.png")])
    with qtbot.waitSignal(window.studio.source_changed, timeout=WAIT_MS):
        assert drag_and_drop(window.canvas, data)
    assert window.studio.source_path == path and window.studio.source.size == (10, 12)
