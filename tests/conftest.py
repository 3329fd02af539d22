"""Shared fixtures. Model folders are built once and cached on disk (see tests/tiny_models.py)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from engine.manifest import write_manifest
from tests import tiny_models


@pytest.fixture(autouse=True)
def _own_settings_file(tmp_path, monkeypatch):
    """Tests never read (or write) the settings of the person running them: a content filter
    set to block, or credentials turned off, would change what the tests see."""
    monkeypatch.setenv("EASEL_CONFIG", str(tmp_path / "config"))


@pytest.fixture(scope="session")
def tiny_sd1_diffusers() -> Path:
    """A tiny random SD 1.x diffusers folder (epsilon, PNDM, pad <|endoftext|>)."""
    return tiny_models.tiny_diffusers("sd1")


@pytest.fixture(scope="session")
def tiny_sd2_diffusers() -> Path:
    """A tiny random SD 2.x diffusers folder (v_prediction, DDIM, linear projections, pad "!")."""
    return tiny_models.tiny_diffusers("sd2")


@pytest.fixture(scope="session")
def tiny_sd1_onnx() -> Path:
    """``tiny_sd1_diffusers`` exported by engine.export (read-only: copy before changing)."""
    return tiny_models.tiny_onnx("sd1")


@pytest.fixture(scope="session")
def tiny_sd2_onnx() -> Path:
    """``tiny_sd2_diffusers`` exported by engine.export (read-only: copy before changing)."""
    return tiny_models.tiny_onnx("sd2")


def _installed(source: Path, destination: Path) -> Path:
    """A copy of an exported folder with its manifest, as the model store would install it."""
    shutil.copytree(source, destination)
    write_manifest(destination)
    return destination


@pytest.fixture(scope="session")
def installed_tiny_sd1(tiny_sd1_onnx, tmp_path_factory) -> Path:
    return _installed(tiny_sd1_onnx, tmp_path_factory.mktemp("models") / "tiny-sd1")


@pytest.fixture(scope="session")
def installed_tiny_sd2(tiny_sd2_onnx, tmp_path_factory) -> Path:
    return _installed(tiny_sd2_onnx, tmp_path_factory.mktemp("models") / "tiny-sd2")


@pytest.fixture
def server(qapp, tmp_path):
    """A window's single-window server, listening for a second start (Qt imported here, so
    tests that never open a window never load it)."""
    from desktop.app.single_window import WindowServer, server_name

    listening = WindowServer(server_name(tmp_path / "data"))
    assert listening.listen()
    yield listening
    listening.close()


# --- the end of the run ----------------------------------------------------------------------

def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config.stash[_EXIT_STATUS] = int(exitstatus)


_EXIT_STATUS = pytest.StashKey[int]()


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """End the test process once every report is written, without the interpreter's teardown.

    With torch, Qt and ONNX Runtime loaded into one process for 1,500 tests, tearing down
    their native objects at exit crashed (SIGSEGV, no Python frame) after a run in which
    every test passed, so the run's exit status said "failed". The app and the command line
    never hold all three: their own exits are checked in the tests that run them as separate
    processes (test_installed_wheel, test_offline, the Linux package checks).
    EASEL_TESTS_NORMAL_EXIT=1 keeps the normal teardown, to look for the crash.
    """
    status = config.stash.get(_EXIT_STATUS, None)
    if status is None or os.environ.get("EASEL_TESTS_NORMAL_EXIT") == "1":
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
