""""Open with Easel": ``easel open PICTURE`` starts the window with that picture as the source
picture; a bad path is one sentence and no window; with a window already open on the library,
the picture is handed to it (desktop/app/open_picture.py, launch.py, single_window.py).

The window tests run the real launcher (``app.exec``) and steer it from a timer: a script of
steps, each waiting for what the window should show before the next.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import QTimer
from PySide6.QtGui import QFileOpenEvent
from PySide6.QtWidgets import QApplication

import desktop.cli
from desktop.app import launch, open_picture
from desktop.app.single_window import (
    MAX_LINE,
    WindowServer,
    ask_to_open,
    open_request,
    server_name,
)
from desktop.app.widgets.main_window import MainWindow
from desktop.library.instance import claim_window

STEP_MS = 50
DEADLINE_S = 60  # a window left open by a failing step is closed by then

Script = Callable[[MainWindow], Iterator[Callable[[], bool]]]


def picture(path: Path, size=(24, 16), colour=(200, 40, 40), kind="PNG") -> Path:
    pixels = np.empty((size[1], size[0], 3), np.uint8)
    pixels[:] = colour
    Image.fromarray(pixels).save(path, kind)
    return path


@pytest.fixture
def home(qapp, tmp_path, monkeypatch):
    """A data folder and config of the test's own; the launcher's dialogs are collected."""
    monkeypatch.setenv("EASEL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("EASEL_CONFIG", str(tmp_path / "config"))
    monkeypatch.setattr(launch, "settle_memory", lambda: None)  # gc.freeze: not in tests
    dialogs = []
    for kind in ("information", "critical"):
        monkeypatch.setattr(launch.QMessageBox, kind,
                            lambda parent, title, text: dialogs.append(text))
    return tmp_path / "home", dialogs


def run_window(script: Script, start: Callable[[], int]) -> tuple[int, list[BaseException]]:
    """Call ``start`` (which runs the window until it closes) while ``script`` steers the
    window it shows; the exit status and any error a step raised. The window is closed when
    the script ends, fails, or runs past the deadline."""
    errors: list[BaseException] = []
    state: dict = {}
    deadline = time.monotonic() + DEADLINE_S

    def tick() -> None:
        window = next((widget for widget in QApplication.topLevelWidgets()
                       if isinstance(widget, MainWindow) and widget.isVisible()), None)
        if window is None:
            return
        try:
            if "steps" not in state:
                state["steps"], state["ready"] = script(window), lambda: True
            if time.monotonic() > deadline:
                raise TimeoutError("the window never showed what the step waited for")
            if state["ready"]():
                state["ready"] = next(state["steps"])
        except StopIteration:
            timer.stop()
            window.close()
        except BaseException as error:  # noqa: BLE001 - reported after the window closed
            errors.append(error)
            timer.stop()
            window.close()

    timer = QTimer()
    timer.setInterval(STEP_MS)
    timer.timeout.connect(tick)
    timer.start()
    try:
        status = start()
    finally:
        timer.stop()
    return status, errors


# The window ---------------------------------------------------------------------------------

def test_the_window_opened_with_a_picture_shows_it_as_the_source(home, tmp_path):
    first = picture(tmp_path.resolve() / "holiday photo.png", size=(24, 16))
    seen = {}

    def script(window: MainWindow):
        studio = window.studio
        yield lambda: studio.source is not None
        seen["path"], seen["size"] = studio.source_path, studio.source.size
        seen["on canvas"] = window.canvas.has_image and studio.canvas_is_source

    status, errors = run_window(script, lambda: launch.main(["easel"], first))
    assert errors == [] and status == 0
    assert seen == {"path": first, "size": (24, 16), "on canvas": True}
    assert home[1] == []  # no dialog


def test_a_file_open_event_gives_the_window_its_source(home, tmp_path):
    """macOS's Finder sends "Open with" to the running app as a FileOpen event."""
    opened = picture(tmp_path.resolve() / "from finder.webp", size=(12, 20), kind="WEBP")
    seen = {}

    def script(window: MainWindow):
        studio = window.studio
        QApplication.sendEvent(QApplication.instance(), QFileOpenEvent(str(opened)))
        yield lambda: studio.source_path == opened
        seen["size"] = studio.source.size

    status, errors = run_window(script, lambda: launch.main(["easel"]))
    assert errors == [] and status == 0
    assert seen == {"size": (12, 20)}


def test_a_second_open_hands_the_picture_to_the_open_window(home, tmp_path, monkeypatch):
    first = picture(tmp_path.resolve() / "first.png", size=(24, 16))
    second = picture(tmp_path.resolve() / "second.jpg", size=(10, 30), kind="JPEG")
    monkeypatch.chdir(tmp_path)  # the second start names it relative to its own folder
    seen = {}

    def script(window: MainWindow):
        studio = window.studio
        yield lambda: studio.source_path == first
        # What the desktop entry runs for the next picture, while this window is open.
        seen["second start"] = desktop.cli.main(["open", "second.jpg"])
        yield lambda: studio.source_path == second
        seen["size"] = studio.source.size
        seen["windows"] = sum(isinstance(widget, MainWindow) and widget.isVisible()
                              for widget in QApplication.topLevelWidgets())

    status, errors = run_window(script, lambda: desktop.cli.main(["open", str(first)]))
    assert errors == [] and status == 0
    assert seen == {"second start": 0, "size": (10, 30), "windows": 1}
    assert home[1] == []


# Bad input: one sentence, no window ---------------------------------------------------------

def _unreadable(tmp_path: Path, monkeypatch) -> Path:
    path = picture(tmp_path / "private.png")
    path.chmod(0)
    if os.access(path, os.R_OK):  # root reads anything: refuse the read another way
        def refused(file, *args, **kwargs):
            if Path(file) == path:
                raise PermissionError(13, "Permission denied", str(file))
            return open(file, *args, **kwargs)

        monkeypatch.setattr(open_picture, "open", refused, raising=False)
    return path


BAD = {
    "missing": (lambda tmp, _: tmp / "nowhere.png", "' does not exist or is not a file."),
    "a folder": (lambda tmp, _: tmp, "' does not exist or is not a file."),
    "not a picture": (lambda tmp, _: _written(tmp / "notes.png", b"shopping: eggs, milk\n"),
                      "'notes.png' is not an image Easel can read."),
    "another format": (lambda tmp, _: picture(tmp / "old.gif", kind="GIF"),
                       "'old.gif' is a GIF file; Easel takes PNG, JPEG or WEBP here."),
    "unreadable": (_unreadable, "private.png' cannot be read (Permission denied)."),
}


def _written(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("case", BAD)
def test_a_bad_picture_is_refused_in_one_sentence_before_any_window(case, tmp_path, monkeypatch,
                                                                    capsys):
    make, ending = BAD[case]
    path = make(tmp_path, monkeypatch)
    monkeypatch.setenv("EASEL_HOME", str(tmp_path / "home"))
    monkeypatch.setitem(sys.modules, "desktop.app.launch", None)  # importing it would fail
    monkeypatch.setattr(desktop.app, "_has_terminal", lambda: True)  # run from a terminal
    assert desktop.cli.main(["open", str(path)]) == 1
    said = capsys.readouterr()
    assert said.out == ""
    assert said.err.startswith("easel: error: '") and said.err.endswith(ending + "\n")
    assert said.err.count("\n") == 1
    assert not (tmp_path / "home").exists()  # nothing was made, so nothing half-made


def test_without_a_terminal_the_refusal_is_said_in_a_box(tmp_path, monkeypatch, capsys):
    # "Open with Easel" from a file manager: nobody reads stderr, so the sentence goes in a
    # message box too, and still no window opens.
    shown = []
    monkeypatch.setenv("EASEL_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(desktop.app, "_has_terminal", lambda: False)
    monkeypatch.setattr(launch.QMessageBox, "warning",
                        lambda parent, title, text: shown.append((title, text)))
    path = _written(tmp_path / "notes.png", b"shopping: eggs, milk\n")
    assert desktop.cli.main(["open", str(path)]) == 1
    assert shown == [("Easel", "'notes.png' is not an image Easel can read.")]
    assert capsys.readouterr().err.startswith("easel: error: '")
    assert not (tmp_path / "home").exists()


# The hand-over ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["plain.png", "two words & 100%.png", "новый\nрисунок.webp",
                                  os.fsdecode(b"latin-\xe9.png")])
def test_any_file_name_reaches_the_open_window_whole(server, tmp_path, name):
    opened, shown = [], []
    server.open_requested.connect(opened.append)
    server.show_requested.connect(lambda: shown.append(True))
    path = tmp_path / name
    assert ask_to_open(server.name, path)
    assert opened == [path] and shown == []


def test_the_longest_path_fits_one_request(tmp_path):
    deepest = Path("/" + "/".join(["%"] * 2047) + "/x")  # 4096 bytes, each one encoded
    assert len(os.fsencode(deepest)) == 4096
    assert len(open_request(deepest)) < MAX_LINE


def test_a_relative_path_is_not_taken(server):
    opened = []
    server.open_requested.connect(opened.append)
    assert not ask_to_open(server.name, Path("relative.png"), timeout_ms=500)
    assert opened == []


def test_a_window_that_cannot_take_the_picture_makes_the_start_say_so(home, tmp_path):
    """An older window answers only ``show``: the picture is not dropped silently."""
    folder, dialogs = home
    lock = claim_window(folder / "library")
    older = WindowServer(server_name(folder))
    older._read = lambda socket: socket.disconnectFromServer()  # says nothing to "open"
    assert older.listen()
    try:
        assert launch.main(["easel"], picture(tmp_path / "a.png")) == 1
    finally:
        older.close()
        lock.close()
    assert len(dialogs) == 1 and "already open" in dialogs[0]
