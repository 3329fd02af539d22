"""The machinery of tests/test_offline.py: running Easel with no network, in two layers.

- The Python layer: a child process whose sockets refuse every internet connection (IPv4 or
  IPv6) and every name lookup, and write each attempt down. It sees what Python code tries.
- The system layer: the same child inside a network namespace with no interfaces at all
  (``unshare --net --map-root-user``), where any connection fails, native code's included
  (c2pa-python's Rust library, ONNX Runtime): a command that still succeeds there needed
  nothing from the network. ``strace`` then shows that nothing was even tried.

Local sockets (AF_UNIX: the window's single-instance socket, D-Bus) are not the network and
stay allowed in both.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# A library that phones home does not always do it at once: onnxruntime 1.29+ (Linux, macOS)
# starts a telemetry uploader whose first name lookup comes about 9 s after it loads. A traced
# case that stands for a long-lived process (the window) lives at least this long.
NATIVE_SETTLE_S = 15.0

ATTEMPTS_ENV = "EASEL_TEST_CONNECTIONS"  # the file the Python layer writes each attempt to
WINDOW_REPORT_ENV = "EASEL_TEST_WINDOW_REPORT"  # where the scripted person writes what came

# Runs first in the child: every internet connection is refused and recorded.
GUARD = r"""
import os, socket, sys

attempts = os.environ["EASEL_TEST_CONNECTIONS"]

def refuse(kind, address):
    with open(attempts, "a") as log:
        log.write(f"{kind} {address!r}\n")
    raise ConnectionRefusedError(f"offline test: no connection to {address!r}")

original_connect, original_connect_ex = socket.socket.connect, socket.socket.connect_ex
original_sendto = socket.socket.sendto

def connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        refuse("connect", address)
    return original_connect(self, address)

def connect_ex(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        refuse("connect_ex", address)
    return original_connect_ex(self, address)

def sendto(self, data, *rest):
    if self.family in (socket.AF_INET, socket.AF_INET6):  # UDP needs no connect to leave
        refuse("sendto", rest[-1])
    return original_sendto(self, data, *rest)

def lookup(host, *args, **kwargs):
    refuse("name lookup", host)  # a name lookup already leaves the machine

socket.socket.connect, socket.socket.connect_ex = connect, connect_ex
socket.socket.sendto = sendto
socket.getaddrinfo = socket.gethostbyname = socket.gethostbyname_ex = lookup
"""

# The `easel` command, guarded.
EASEL = GUARD + r"""
from desktop.cli import main
sys.exit(main(sys.argv[1:]))
"""

# The window as plain `easel` opens it, with a scripted person who types a prompt, asks for a
# picture and closes the window once it came and a while went by (argv[2], seconds), or at
# once when the window said a problem.
WINDOW_FIRST_PICTURE = GUARD + r"""
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from desktop.app.widgets.main_window import MainWindow

app = QApplication(sys.argv[:1])  # the window's start takes this one, as a platform's would
prompt, linger_ms = sys.argv[1], int(float(sys.argv[2]) * 1000)

def say(line):
    with open(os.environ["EASEL_TEST_WINDOW_REPORT"], "a") as report:
        report.write(line + "\n")

def person():
    shown = [w for w in app.topLevelWidgets() if isinstance(w, MainWindow) and w.isVisible()]
    if not shown:
        QTimer.singleShot(50, person)
        return
    window = shown[0]
    studio = window.studio

    def finish(line, after_ms=0):
        say(line)
        QTimer.singleShot(after_ms, window.close)

    studio.generated.connect(lambda outcome: finish(
        "picture " + " ".join(str(entry.path) for entry in outcome.entries), linger_ms))
    studio.problem.connect(lambda sentence: finish("problem " + sentence))
    studio.prompt.update(prompt=prompt, seed=5, seed_locked=True)
    if studio.generate() is None:
        finish("problem: Generate queued nothing")

QTimer.singleShot(0, person)
QTimer.singleShot(120_000 + linger_ms, lambda: (say("timeout"), app.quit()))
from desktop.cli import main
sys.exit(main([]))
"""


@dataclass(frozen=True)
class Layer:
    """One way of cutting Easel off: the words put before the guarded child's command, and
    whether the child is also traced system call by system call (where strace can)."""

    name: str
    prefix: tuple[str, ...] = ()
    traced: bool = False


PYTHON_SOCKETS = Layer("python-sockets")
# In the namespace a native attempt fails instead of being refused by the guard; a command
# that swallowed that failure would still succeed, so the trace is what shows it never tried.
NO_NETWORK = Layer("no-network-namespace", ("unshare", "--net", "--map-root-user"),
                   traced=True)


@functools.cache
def namespace_refusal() -> str | None:
    """Why this machine cannot give a process a network namespace of its own, or None."""
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    try:
        tried = subprocess.run([*NO_NETWORK.prefix, "true"], capture_output=True, text=True,
                               timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"unshare could not run ({error})"
    if tried.returncode != 0:
        return ("this machine refuses an unprivileged network namespace "
                f"(unshare -rn: {tried.stderr.strip() or tried.returncode})")
    return None


@functools.cache
def strace_refusal() -> str | None:
    """Why system calls cannot be traced here (no strace, or ptrace forbidden), or None."""
    if shutil.which("strace") is None:
        return "strace is not installed"
    tried = subprocess.run(["strace", "-f", "-e", "trace=connect", "-o", "/dev/null", "true"],
                           capture_output=True, text=True, timeout=30)
    if tried.returncode != 0:
        return f"strace cannot trace here ({tried.stderr.strip()})"
    return None


def traced(trace: Path, command: Sequence[str]) -> list[str]:
    """``command`` under strace, every process and thread, writing the calls that can reach
    another machine (a connect, or a datagram sent to an address) to ``trace``."""
    return ["strace", "-f", "-qq", "-e", "trace=connect,sendto,sendmsg", "-o", str(trace),
            *command]


_INTERNET = re.compile(r"sa_family=AF_INET6?\b")


def internet_calls(trace: Path) -> list[str]:
    """The traced calls that named an IPv4 or IPv6 address (AF_UNIX and netlink are local)."""
    return [line for line in trace.read_text().splitlines() if _INTERNET.search(line)]


def guarded(script: str, arguments: Sequence[str], layer: Layer) -> list[str]:
    """The command line of a guarded child running ``script`` with ``arguments``."""
    return [*layer.prefix, sys.executable, "-c", script, *arguments]


@dataclass(frozen=True)
class Offline:
    """An `easel` cut off from the network by ``layer``, over the data folder ``home``, with
    its own record of attempted connections (and, in a traced layer, of system calls)."""

    home: Path
    config: Path
    attempts: Path
    layer: Layer

    def environment(self, **more: str) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items()
               if key not in ("EASEL_HOME", "EASEL_CONFIG")}
        # Nothing may be switched off by these either: the promise holds without them.
        for variable in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE",
                         "ORT_DISABLE_TELEMETRY"):
            env.pop(variable, None)
        env.update(EASEL_HOME=str(self.home), EASEL_CONFIG=str(self.config),
                   QT_QPA_PLATFORM="offscreen", **{ATTEMPTS_ENV: str(self.attempts)}, **more)
        return env

    @property
    def traces(self) -> Path:
        return self.attempts.with_name(self.attempts.stem + "-traces")

    def run(self, script: str, *arguments: str, timeout: float = 600,
            **env: str) -> subprocess.CompletedProcess:
        """The guarded child running ``script`` with ``arguments``, finished."""
        command = guarded(script, arguments, self.layer)
        if self.layer.traced and strace_refusal() is None:
            self.traces.mkdir(exist_ok=True)
            command = traced(self.traces / f"{len(list(self.traces.iterdir()))}.txt", command)
        return subprocess.run(command, env=self.environment(**env), capture_output=True,
                              text=True, timeout=timeout)

    def easel(self, *arguments: str) -> subprocess.CompletedProcess:
        """The `easel` command with ``arguments``, finished."""
        return self.run(EASEL, *arguments)

    def attempted(self) -> str:
        """Every attempt to reach another machine: the guard's record, then the traced calls
        that named an internet address; empty when there was none."""
        lines = self.attempts.read_text().splitlines() if self.attempts.exists() else []
        if self.traces.is_dir():
            for trace in sorted(self.traces.iterdir()):
                lines += internet_calls(trace)
        return "\n".join(lines)


def offline_in(folder: Path, layer: Layer, attempts: Path | None = None) -> Offline:
    """Easel cut off by ``layer`` over ``folder``'s data folder (home/) and settings (config/);
    its attempts written to ``attempts`` (beside them unless given)."""
    return Offline(folder / "home", folder / "config", attempts or folder / "connections.log",
                   layer)
