"""Writes that are whole or absent: temp file in the same folder, fsync, rename, fsync folder.

Every file the library writes (images, thumbnails, exports, backups) goes through here, so a
crash at any moment leaves either the old state or the new file, plus at worst a temp file
whose name ``is_temporary`` recognises and the next start removes.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from desktop.files import create_temporary, fsync_folder
from desktop.library.errors import DiskFull

TEMP_SUFFIX = ".tmp"
_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def is_temporary(name: str) -> bool:
    """True for the temp files written here and by ``desktop.image_files.save_png``, and
    for SQLite's companions of a temp database (``.x.tmp-journal``)."""
    return name.startswith(".") and (name.endswith(TEMP_SUFFIX) or f"{TEMP_SUFFIX}-" in name)


def write_atomically(path: Path, write: Callable[[BinaryIO], None], *,
                     overwrite: bool = False) -> Path:
    """Create ``path`` whole, by calling ``write`` on a temp file beside it.

    Without ``overwrite`` an existing file is never replaced (the rename is a hard link,
    which fails if the name is taken), so two writers cannot clobber each other. The file
    gets the user's usual mode (0644 under umask 022), as their other files do.
    """
    path = Path(path)
    with _disk_full_is_said(path):
        descriptor, temporary = create_temporary(
            path.parent, f".{path.stem}-", path.suffix + TEMP_SUFFIX)
        try:
            with os.fdopen(descriptor, "wb") as stream:
                write(stream)
                stream.flush()
                os.fsync(stream.fileno())
            _move_into_place(Path(temporary), path, overwrite)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        fsync_folder(path.parent)
    return path


def is_disk_full(error: BaseException) -> bool:
    if isinstance(error, OSError) and error.errno in _FULL:
        return True
    # SQLite reports SQLITE_FULL as this message; sqlite3 gives no errno.
    return "database or disk is full" in str(error)


@contextlib.contextmanager
def _disk_full_is_said(path: Path) -> Iterator[None]:
    try:
        yield
    except OSError as error:
        if is_disk_full(error):
            raise DiskFull(f"The disk is full: '{path.name}' was not saved and nothing else "
                           "changed; free some space and try again.") from error
        raise


def _move_into_place(temporary: Path, path: Path, overwrite: bool) -> None:
    if overwrite:
        os.replace(temporary, path)
        return
    try:
        os.link(temporary, path)
    except FileExistsError:
        raise
    except OSError:
        # Some file systems (FAT, some network shares) have no hard links; check, then rename.
        if path.exists():
            raise FileExistsError(errno.EEXIST, "File exists", str(path)) from None
        os.replace(temporary, path)
        return
    temporary.unlink()
