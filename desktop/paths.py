"""Where Easel keeps the user's data. ``EASEL_HOME`` overrides the platform's data folder."""

from __future__ import annotations

import os
from pathlib import Path

from platformdirs import user_data_dir

from desktop.files import data_folder_writes
from engine.resource_files import resource_path


def standard_data_dir() -> Path:
    """Where data lives when ``EASEL_HOME`` says nothing: the platform's user data folder."""
    return Path(user_data_dir("Easel", False))


def data_dir() -> Path:
    """The data folder, made if missing; one sentence (``DataFolderUnusable``) when it
    cannot be: read-only, full, or a file in the way."""
    override = os.environ.get("EASEL_HOME")
    folder = Path(override).expanduser() if override else standard_data_dir()
    with data_folder_writes(folder):
        folder.mkdir(parents=True, exist_ok=True)
    return folder


def models_dir() -> Path:
    return _subfolder("models")


def built_in_models_dir() -> Path:
    """Models that ship with Easel (the starter model), read-only, in its resources."""
    override = os.environ.get("EASEL_BUILT_IN_MODELS")
    if override:
        return Path(override).expanduser()
    return resource_path("models")


def icons_dir() -> Path:
    """The app's SVG icons, in Easel's resources."""
    return resource_path("icons")


def images_dir() -> Path:
    return _subfolder("images")


def downloads_dir() -> Path:
    """Model downloads in progress (partial files resume from here) and, where the user keeps
    them, finished ones."""
    return _subfolder("downloads")


def optimized_graphs_dir() -> Path:
    """ONNX graphs optimised for one provider, so the next start loads faster."""
    return _subfolder("cache/optimized")


def _subfolder(name: str) -> Path:
    root = data_dir()
    with data_folder_writes(root):
        (root / name).mkdir(parents=True, exist_ok=True)
    return root / name
