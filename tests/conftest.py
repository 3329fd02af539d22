"""Shared fixtures. Model folders are built once and cached on disk (see tests/tiny_models.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from engine.manifest import write_manifest
from tests import tiny_models


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
