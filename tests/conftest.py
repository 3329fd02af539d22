"""Shared fixtures. Model folders are built once and cached on disk (see tests/tiny_models.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

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
