"""Advisory file locks held for a process's lifetime (released by the OS when it dies).

A lock that dies with its process is what lets a library tell "another Easel is using this"
from "an Easel crashed here": a kill -9 leaves no stale lock behind.
"""

from __future__ import annotations

import os
from pathlib import Path

if os.name == "posix":
    import fcntl
else:  # pragma: no cover - exercised on Windows only
    import msvcrt


class FileLock:
    """An open lock file. POSIX uses flock (shared or exclusive); Windows has exclusive only,
    so there ``shared`` is a no-op and ``try_exclusive`` locks the file's first byte."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._file = open(self.path, "a+b")  # noqa: SIM115 - held open until close()

    def try_exclusive(self) -> bool:
        try:
            if os.name == "posix":
                fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            else:  # pragma: no cover
                self._file.seek(0)
                msvcrt.locking(self._file.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def shared(self) -> None:
        """Hold a shared lock (blocks only while another process holds it exclusively)."""
        if os.name == "posix":
            fcntl.flock(self._file.fileno(), fcntl.LOCK_SH)

    def write_text(self, text: str) -> None:
        """Replace the lock file's content (a note for others, such as the holder's pid)."""
        self._file.seek(0)
        self._file.truncate()
        self._file.write(text.encode())
        self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()  # closing the descriptor releases the lock

    def __enter__(self) -> FileLock:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
