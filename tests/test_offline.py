"""Easel's offline promise: nothing connects to the network unless the user asks for a download.

Each case runs the real `easel` command in a process whose sockets refuse every connection to
an internet address (IPv4 or IPv6) and write the attempt down; the test then shows the command
worked and that no connection was even attempted. Local sockets (the window's single-instance
socket) are not internet connections and stay allowed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest

from tests import tiny_models

# Runs before Easel in the child: every internet connection is refused and recorded.
REFUSE_NETWORK = r"""
import os, socket, sys

attempts = os.environ["EASEL_TEST_CONNECTIONS"]

def refuse(kind, address):
    with open(attempts, "a") as log:
        log.write(f"{kind} {address!r}\n")
    raise ConnectionRefusedError(f"offline test: no connection to {address!r}")

original_connect, original_connect_ex = socket.socket.connect, socket.socket.connect_ex

def connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        refuse("connect", address)
    return original_connect(self, address)

def connect_ex(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        refuse("connect_ex", address)
    return original_connect_ex(self, address)

def getaddrinfo(host, *args, **kwargs):
    refuse("getaddrinfo", host)  # a name lookup already leaves the machine

socket.socket.connect, socket.socket.connect_ex = connect, connect_ex
socket.getaddrinfo = getaddrinfo

from desktop.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture
def offline(tmp_path) -> dict:
    """The environment of an `easel` with no network, and its record of attempts."""
    attempts = tmp_path / "connections.log"
    attempts.touch()
    env = {key: value for key, value in os.environ.items() if key != "EASEL_HOME"}
    env.update(EASEL_HOME=str(tmp_path / "home"), EASEL_TEST_CONNECTIONS=str(attempts),
               QT_QPA_PLATFORM="offscreen")
    # Nothing may be switched off by these either: the promise holds without them.
    for variable in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        env.pop(variable, None)
    return {"env": env, "attempts": attempts, "home": tmp_path / "home", "tmp": tmp_path}


def _easel(offline: dict, *arguments: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", REFUSE_NETWORK, *arguments],
                          env=offline["env"], capture_output=True, text=True, timeout=timeout)


def _attempts(offline: dict) -> str:
    return offline["attempts"].read_text()


def test_the_guard_records_and_refuses_a_connection(offline):
    # The guard itself must work, or the cases below would prove nothing.
    probe = subprocess.run(
        [sys.executable, "-c", REFUSE_NETWORK.replace(
            "from desktop.cli import main",
            "import urllib.request\ntry:\n    urllib.request.urlopen('http://93.184.215.14/')\n"
            "except OSError:\n    pass\nmain = lambda argv: 0")],
        env=offline["env"], capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0, probe.stderr
    assert "93.184.215.14" in _attempts(offline)


def test_generating_a_picture_connects_to_nothing(offline):
    made = _easel(offline, "generate", "a red apple on a table", "--count", "1")
    assert made.returncode == 0, made.stderr + made.stdout
    assert len(list((offline["home"] / "images").rglob("*.png"))) == 1
    assert _attempts(offline) == ""


@pytest.mark.slow
def test_importing_a_model_connects_to_nothing(offline):
    source = offline["tmp"] / "tiny"
    shutil.copytree(tiny_models.tiny_diffusers("sd1"), source)
    imported = _easel(offline, "models", "import", str(source), "--name", "tiny")
    assert imported.returncode == 0, imported.stderr + imported.stdout
    assert (offline["home"] / "models" / "tiny").is_dir() or "tiny" in _easel(
        offline, "models", "list").stdout
    assert _attempts(offline) == ""


def test_the_window_starts_without_connecting(offline):
    window = subprocess.Popen([sys.executable, "-c", REFUSE_NETWORK], env=offline["env"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        # The window opens the library before it shows; then give its start-up time to run.
        while time.monotonic() < deadline and not (offline["home"] / "library").exists():
            assert window.poll() is None, window.communicate()[1]
            time.sleep(0.2)
        time.sleep(4)
        assert window.poll() is None, window.communicate()[1]
    finally:
        window.terminate()
        _, errors = window.communicate(timeout=30)
    assert "Traceback" not in errors, errors
    assert _attempts(offline) == ""

