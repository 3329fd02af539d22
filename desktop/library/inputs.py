"""The pictures a picture was made from besides its source: control pictures and the reference
pictures of image prompts, kept once each by their key (``engine.control.control.picture_key``,
recorded in the picture's metadata) in ``library/inputs/``, so Reuse parameters can give them
back. Written atomically; a picture used again is not written again.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from desktop.image_files import save_png

FOLDER = "inputs"
_KEY = re.compile(r"[0-9a-f]{8,64}")


def keep_inputs(library_folder: Path, pictures: Mapping[str, np.ndarray]) -> None:
    """Keep each picture under its key, unless one is kept already."""
    folder = Path(library_folder) / FOLDER
    for key, pixels in pictures.items():
        path = _path(folder, key)
        if path is not None and not path.exists():
            folder.mkdir(parents=True, exist_ok=True)
            save_png(pixels, path, None)


def input_path(library_folder: Path, key: object) -> Path | None:
    """The kept picture with this key, or None (never kept, removed, or not a key: the key
    comes from a picture's metadata, which anyone can write)."""
    path = _path(Path(library_folder) / FOLDER, key)
    return path if path is not None and path.is_file() else None


def _path(folder: Path, key: object) -> Path | None:
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        return None
    return folder / f"{key}.png"
