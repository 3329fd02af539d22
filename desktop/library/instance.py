"""One desktop window per library. The easel command never takes this lock: it shares the
library with the window through WAL; only a second window is refused."""

from __future__ import annotations

import os
from pathlib import Path

from desktop.files import data_folder_writes
from desktop.library.errors import LibraryInUse
from desktop.library.locks import FileLock

WINDOW_LOCK = "window.lock"


def claim_window(library_folder: Path) -> FileLock:
    """Hold the window lock for the app's lifetime (the OS drops it if the app dies); the
    library folder is under the data folder, whose fault (read-only, full) is one sentence.

    The holder's process id is written in the lock file so a second start can ask that
    window to come forward instead (the GUI's job).
    """
    with data_folder_writes(library_folder.parent):  # read-only or full: one sentence
        library_folder.mkdir(parents=True, exist_ok=True)
        lock = FileLock(library_folder / WINDOW_LOCK)
    if not lock.try_exclusive():
        lock.close()
        raise LibraryInUse(f"Easel is already open on the library in '{library_folder}'; "
                           "use that window (or close it first).")
    try:
        with data_folder_writes(library_folder.parent):
            lock.write_text(str(os.getpid()))
    except BaseException:
        lock.close()
        raise
    return lock


def window_owner(library_folder: Path) -> int | None:
    """The process id written by the window holding the lock, if any is recorded."""
    try:
        return int((library_folder / WINDOW_LOCK).read_text().strip())
    except (OSError, ValueError):
        return None
