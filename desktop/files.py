"""Small file-system helpers for writes that must survive a crash, and the one sentence for
a data folder Easel cannot write in at all."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from engine.errors import EaselError

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


# What says a folder cannot be written at all (not one bad file): errno values, and SQLite's
# primary result codes (``sqlite3.Error.sqlite_errorcode``; SQLite gives no errno).
_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
_READ_ONLY = {errno.EROFS, errno.EACCES, errno.EPERM}
_IN_THE_WAY = {errno.ENOTDIR, errno.EEXIST}  # a file where a folder should be
_SQLITE_FULL = 13
_SQLITE_READ_ONLY = {3, 8, 14}  # PERM, READONLY, CANTOPEN


class DataFolderUnusable(EaselError):
    """Easel cannot write in its data folder (read-only, full, or a file in the way);
    nothing was half-written, and the next start with the fault gone is a normal one."""


def unusable_data_folder(folder: Path, error: BaseException) -> DataFolderUnusable | None:
    """The sentence for ``error`` when it means Easel cannot write in ``folder``, its data
    folder; None when it means something else, which travels on as it is."""
    number = getattr(error, "errno", None)
    code = (getattr(error, "sqlite_errorcode", None) or 0) & 0xFF
    if number in _FULL or code == _SQLITE_FULL:
        return DataFolderUnusable(f"The disk holding Easel's data folder '{folder}' is full; "
                                  "free some space, then start Easel again.")
    if number in _READ_ONLY or code in _SQLITE_READ_ONLY:
        denied = number in (errno.EACCES, errno.EPERM) or code == 3
        why = "permission denied" if denied else "it is read-only"
        return DataFolderUnusable(f"Easel cannot write in its data folder '{folder}' ({why}); "
                                  "make it writable, or point EASEL_HOME at another folder.")
    if number in _IN_THE_WAY:
        return DataFolderUnusable(f"Easel cannot make its data folder '{folder}': a file is in "
                                  "the way; move it, or point EASEL_HOME at another folder.")
    return None


@contextlib.contextmanager
def data_folder_writes(folder: Path) -> Iterator[None]:
    """Turn an error that means ``folder`` (the data folder) cannot be written into its one
    sentence (``DataFolderUnusable``); any other error passes unchanged."""
    try:
        yield
    except Exception as error:
        unusable = unusable_data_folder(folder, error)
        if unusable is None:
            raise
        raise unusable from error


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` of this computer still runs (the owner of a leftover temporary
    folder). On Windows it cannot be asked without sending Ctrl+C, so it counts as alive and
    its leftovers stay."""
    if pid == os.getpid() or os.name != "posix":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def make_readable(folder: Path) -> None:
    """Give a folder made by ``tempfile.mkdtemp`` (private to this user) the permissions a
    normal mkdir would: mode 777 less the umask."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
