"""Free disk space, checked before the first byte of a download is fetched."""

from __future__ import annotations

import shutil
from pathlib import Path

from desktop.downloads.errors import DownloadError


def check_free_space(folder: Path, needed_bytes: int, what: str) -> None:
    """Raise one sentence with the numbers when ``folder``'s disk has less than
    ``needed_bytes`` free; ``what`` names what the space is for ("the download of x")."""
    where = _existing(Path(folder))
    free = shutil.disk_usage(where).free
    if needed_bytes > free:
        raise DownloadError(
            f"There is not enough free space for {what}: it needs {size_text(needed_bytes)} "
            f"and {where} has {size_text(free)} free.")


def _existing(folder: Path) -> Path:
    """The folder itself or its nearest existing parent (a download may create the folder)."""
    folder = folder.expanduser().absolute()
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    return folder


def size_text(size: int) -> str:
    """A byte count in decimal units, as disks and file managers count them ("4.3 GB")."""
    if size >= 100e6:
        return f"{size / 1e9:.1f} GB"
    return f"{size / 1e6:.1f} MB"
