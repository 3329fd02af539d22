"""A second start brings the open window forward (desktop/app/single_window.py, launch.py).

Server and client live in this one test process: the client waits on a local event loop,
so the server answers meanwhile.
"""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import pytest
from PySide6.QtCore import QDir
from PySide6.QtNetwork import QLocalServer
from PySide6.QtWidgets import QWidget

from desktop.app import launch
from desktop.app.single_window import WindowServer, ask_to_show, bring_forward, server_name
from desktop.library.instance import claim_window


def test_a_second_start_asks_the_window_to_come_forward(server):
    asked = []
    server.show_requested.connect(lambda: asked.append(True))
    assert ask_to_show(server.name)
    assert asked == [True]
    assert ask_to_show(server.name)  # and again, for a third start
    assert asked == [True, True]


def test_nobody_listening_is_answered_quickly(qapp, tmp_path):
    started = time.monotonic()
    assert not ask_to_show(server_name(tmp_path / "nobody"))
    assert time.monotonic() - started < 0.5


def test_a_listener_that_never_answers_is_given_up_on(qapp, tmp_path):
    silent = QLocalServer()  # an older or hung window: it accepts but says nothing
    name = server_name(tmp_path / "silent")
    QLocalServer.removeServer(name)
    assert silent.listen(name)
    started = time.monotonic()
    assert not ask_to_show(name, timeout_ms=200)
    assert 0.15 < time.monotonic() - started < 2
    silent.close()


@pytest.mark.skipif(sys.platform == "win32", reason="named pipes leave no file behind")
def test_a_socket_left_by_a_crashed_window_is_replaced(qapp, tmp_path):
    name = server_name(tmp_path / "crashed")
    leftover = socket.socket(socket.AF_UNIX)
    path = Path(QDir.tempPath()) / name
    path.unlink(missing_ok=True)
    leftover.bind(str(path))  # bound, never listening: what a killed process leaves
    leftover.close()
    assert path.exists()
    assert not ask_to_show(name)
    replacement = WindowServer(name)
    assert replacement.listen()  # its owner holds the window lock, so the file is stale
    assert ask_to_show(name)
    replacement.close()


def test_names_differ_by_data_folder_and_agree_on_one(tmp_path):
    first, second = tmp_path / "one", tmp_path / "two"
    first.mkdir()
    assert server_name(first) != server_name(second)
    assert server_name(first) == server_name(first / ".." / "one")
    assert len(server_name(first)) < 40  # fits a Unix socket path under a long TMPDIR


def test_a_different_data_folder_does_not_reach_the_window(server, tmp_path):
    asked = []
    server.show_requested.connect(lambda: asked.append(True))
    assert not ask_to_show(server_name(tmp_path / "other data"))
    assert asked == []


def test_bring_forward_restores_a_minimised_window(qtbot):
    window = QWidget()
    qtbot.addWidget(window)
    window.showMinimized()
    bring_forward(window)
    assert window.isVisible() and not window.isMinimized()


# Through the launcher -----------------------------------------------------------------------

@pytest.fixture
def home(qapp, tmp_path, monkeypatch):
    monkeypatch.setenv("EASEL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("EASEL_CONFIG", str(tmp_path / "config"))
    shown = []
    monkeypatch.setattr(launch.QMessageBox, "information",
                        lambda parent, title, text: shown.append(text))
    return tmp_path / "home", shown


def test_launching_again_brings_the_open_window_forward_and_exits_quietly(home):
    folder, dialogs = home
    lock = claim_window(folder / "library")  # the open window
    window = WindowServer(server_name(folder))
    assert window.listen()
    asked = []
    window.show_requested.connect(lambda: asked.append(True))
    try:
        assert launch.main(["easel"]) == 0
    finally:
        window.close()
        lock.close()
    assert asked == [True] and dialogs == []


def test_launching_again_says_the_library_is_in_use_when_the_window_does_not_answer(home):
    folder, dialogs = home
    lock = claim_window(folder / "library")  # a window without a listener (an older build)
    try:
        assert launch.main(["easel"]) == 1
    finally:
        lock.close()
    assert len(dialogs) == 1 and "already open" in dialogs[0]
