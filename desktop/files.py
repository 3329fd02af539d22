"""Small file-system helpers for writes that must survive a crash."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

# O_EXCL: a name someone else took is never opened; O_NOFOLLOW: nor a link planted there.
_CREATE = (os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
           | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0))


def create_temporary(folder: Path, prefix: str, suffix: str) -> tuple[int, Path]:
    """A new file in ``folder`` opened for writing: (descriptor, path).

    Unlike ``tempfile.mkstemp`` (always 0600), the file gets the mode any other new file of
    the user's gets (0644 under umask 022; the kernel takes the umask off 0666), and the
    rename keeps it: pictures and exports must be readable as the user's other files are.
    What should stay private (settings) is written through ``mkstemp``.
    """
    for _ in range(100):
        path = Path(folder) / f"{prefix}{secrets.token_hex(4)}{suffix}"
        try:
            return os.open(path, _CREATE, 0o666), path
        except FileExistsError:
            continue
    raise FileExistsError(f"No free temporary name in '{folder}'.")


def fsync_folder(folder: Path) -> None:
    """Make a rename inside ``folder`` durable (POSIX; Windows cannot open folders for fsync)."""
    if os.name != "posix":
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
