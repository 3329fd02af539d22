"""A second start brings the running window forward instead of opening another one.

The window lock (``desktop.library.instance.claim_window``) stays the one source of truth
for "a window is open on this library"; this module is only its messenger. The window that
holds the lock listens on a local socket (a Unix socket or a named pipe) whose name comes
from the user and the data folder, so two users, or two data folders, never reach each
other's window. A start that cannot take the lock asks over that socket; when nobody answers
in time (an older Easel without a listener, a socket left by a crash) the caller falls back to
saying the library is in use.

The conversation is one line each way: ``show`` (come forward) or ``open PATH`` (come forward
with this picture as the source: "Open with Easel" while the window is open), answered
``ok``. The path is absolute and percent-encoded bytes, so any file name (spaces, newlines,
bytes that are no UTF-8) travels whole. Both sides run on the GUI thread's event loop, so a
test can hold the server and the client in one process.
"""

from __future__ import annotations

import getpass
import hashlib
import logging
import os
from pathlib import Path
from urllib.parse import quote_from_bytes, unquote_to_bytes

from PySide6.QtCore import QEventLoop, QObject, Qt, QTimer, Signal
from PySide6.QtNetwork import QLocalServer, QLocalSocket
from PySide6.QtWidgets import QWidget

log = logging.getLogger(__name__)

SHOW = b"show\n"
OPEN = b"open "  # then the picture's path, percent-encoded, and a newline
OK = b"ok\n"
ANSWER_MS = 2000  # a busy window still answers in well under a second
# A picture may come while the window is still starting: it listens from the moment it holds
# the lock but answers only once its event loop runs, about 3 s into a cold start. Several
# pictures opened at once from a file manager start that way, one start each.
OPEN_ANSWER_MS = 15_000
MAX_LINE = 16 * 1024  # a word, or a path (4096 bytes at most, each at most 3 when encoded)


def server_name(data_folder: Path) -> str:
    """The socket name for the window on ``data_folder``, for the current user.

    Hashed, because the name becomes a file name under the temporary folder (Unix) or a
    pipe name (Windows), both limited in length and characters.
    """
    key = f"{_user()}\0{Path(data_folder).expanduser().resolve()}"
    return "easel-window-" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:20]


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name in the environment or the password database
        return str(os.getuid()) if hasattr(os, "getuid") else ""


def ask_to_show(name: str, timeout_ms: int = ANSWER_MS) -> bool:
    """Ask the window listening on ``name`` to come forward; True once it said it will.

    False quickly when nothing listens there, and after ``timeout_ms`` when something
    connects but does not answer. Runs a local event loop, so the caller's own server (in
    tests) keeps working meanwhile.
    """
    return _ask(name, SHOW, timeout_ms)


def ask_to_open(name: str, picture: Path, timeout_ms: int = OPEN_ANSWER_MS) -> bool:
    """Ask the window listening on ``name`` to come forward and take ``picture`` (an absolute
    path) as its source; True once it said it will, False as ``ask_to_show``. An older
    window, which knows only ``show``, does not answer ``ok``: the picture is never dropped
    without the caller hearing of it."""
    return _ask(name, open_request(picture), timeout_ms)


def open_request(picture: Path) -> bytes:
    return OPEN + quote_from_bytes(os.fsencode(picture), safe="/").encode("ascii") + b"\n"


def _ask(name: str, request: bytes, timeout_ms: int) -> bool:
    socket = QLocalSocket()
    loop = QEventLoop()
    answer = bytearray()
    sent = False

    def send() -> None:
        nonlocal sent
        if not sent:
            sent = True
            socket.write(request)
            socket.flush()

    def read() -> None:
        answer.extend(socket.readAll().data())
        if b"\n" in answer or len(answer) > MAX_LINE:
            loop.quit()

    def ended() -> None:
        answer.extend(socket.readAll().data())  # the answer may come with the hang-up
        loop.quit()

    socket.connected.connect(send)
    socket.readyRead.connect(read)
    socket.disconnected.connect(ended)
    socket.errorOccurred.connect(lambda _error: ended())
    timer = QTimer()
    timer.setSingleShot(True)
    timer.timeout.connect(loop.quit)
    socket.connectToServer(name)
    # A missing server is reported at once, before the loop would run: a quit asked for
    # then is lost, so look at the state instead of waiting out the timer.
    if socket.state() == QLocalSocket.LocalSocketState.UnconnectedState:
        return False
    if socket.state() == QLocalSocket.LocalSocketState.ConnectedState:
        send()
    if b"\n" not in answer:
        timer.start(timeout_ms)
        loop.exec()
    timer.stop()
    socket.abort()
    return answer.split(b"\n", 1)[0] == OK.strip()


class WindowServer(QObject):
    """Listens for later starts on the same data folder: ``show_requested`` when one asks the
    window to come forward, ``open_requested(Path)`` when one brings a picture."""

    show_requested = Signal()
    open_requested = Signal(object)  # the picture's absolute Path

    def __init__(self, name: str, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.name = name
        self._server = QLocalServer(self)
        # Only this user may connect (the socket file's or pipe's permissions).
        self._server.setSocketOptions(QLocalServer.SocketOption.UserAccessOption)
        self._server.newConnection.connect(self._accept)

    def listen(self) -> bool:
        """Start listening; call only while holding the window lock, which makes any socket
        already under this name a leftover of a window that died. False (logged) when the
        socket cannot be made: the app still runs, later starts just say it is in use."""
        QLocalServer.removeServer(self.name)
        if self._server.listen(self.name):
            return True
        log.warning("A second start cannot bring this window forward: %s",
                    self._server.errorString())
        return False

    def close(self) -> None:
        self._server.close()

    def _accept(self) -> None:
        while self._server.hasPendingConnections():
            socket = self._server.nextPendingConnection()
            socket.readyRead.connect(lambda socket=socket: self._read(socket))
            socket.disconnected.connect(socket.deleteLater)
            self._read(socket)  # the request may have come with the connection

    def _read(self, socket: QLocalSocket) -> None:
        if not socket.canReadLine():
            if socket.bytesAvailable() > MAX_LINE:
                socket.abort()
            return
        request = socket.readLine(MAX_LINE).data()
        if request == SHOW:
            self._agree(socket)
            self.show_requested.emit()
        elif (picture := _picture_in(request)) is not None:
            self._agree(socket)
            self.open_requested.emit(picture)
        socket.disconnectFromServer()

    @staticmethod
    def _agree(socket: QLocalSocket) -> None:
        socket.write(OK)
        socket.flush()


def _picture_in(request: bytes) -> Path | None:
    """The picture an ``open`` request names; None for anything else (a relative path means
    nothing to this window, whose working folder is not the caller's)."""
    if not (request.startswith(OPEN) and request.endswith(b"\n")):
        return None
    picture = Path(os.fsdecode(unquote_to_bytes(request[len(OPEN):-1])))
    return picture if picture.is_absolute() else None


def bring_forward(window: QWidget) -> None:
    """Show ``window`` in front, restored if it was minimised, with the keyboard focus.

    Some desktops refuse focus to a window that did not get user input (Windows flashes its
    taskbar button instead); that is the most they allow.
    """
    if window.isMinimized():
        window.setWindowState(window.windowState() & ~Qt.WindowState.WindowMinimized)
    window.show()
    window.raise_()
    window.activateWindow()
