"""Automatic backups of the database with SQLite's online backup API.

Favourites, tags, trash and prompt history live only in the database (the image index can
always be rebuilt from the PNGs), so backups are what protect them. Policy and why:
- a backup is taken when such data changed and the newest backup is older than
  ``INTERVAL_S`` (10 minutes), checked after each change and when the library closes, and
  always before a schema migration: at most 10 minutes of curation can be lost, and a busy
  session costs at most six backups an hour;
- the 10 newest are kept, and beyond those the newest of each of the last 7 days, so a
  problem noticed days later still has a copy from before it;
- each backup is written to a temp file, checked with ``quick_check``, fsynced and renamed
  into place: a backup that exists is whole.
"""

from __future__ import annotations

import os
import sqlite3
import time
from datetime import datetime
from pathlib import Path

from desktop.files import fsync_folder
from desktop.library.atomic import TEMP_SUFFIX, is_disk_full
from desktop.library.errors import DiskFull

INTERVAL_S = 10 * 60
KEEP_NEWEST = 10
KEEP_DAILY_DAYS = 7
_PREFIX = "library-"
_SUFFIX = ".sqlite3"
_STAMP = "%Y%m%d-%H%M%S-%f"


def make_backup(connection: sqlite3.Connection, folder: Path, now: float | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.fromtimestamp(time.time() if now is None else now).strftime(_STAMP)
    target = folder / f"{_PREFIX}{stamp}{_SUFFIX}"
    temporary = folder / f".{target.stem}-{os.getpid()}{_SUFFIX}{TEMP_SUFFIX}"
    try:
        copy = sqlite3.connect(temporary)
        try:
            # No journal while copying (a crash leaves only the temp file to clean up), and a
            # rollback-journal header after, so the backup is one self-contained file.
            copy.execute("PRAGMA journal_mode = OFF")
            connection.backup(copy)
            copy.execute("PRAGMA journal_mode = DELETE")
            if copy.execute("PRAGMA quick_check").fetchall() != [("ok",)]:
                raise sqlite3.DatabaseError("the backup copy failed its check")
        finally:
            copy.close()
        _fsync_file(temporary)
        os.replace(temporary, target)
    except BaseException as error:
        temporary.unlink(missing_ok=True)
        if is_disk_full(error):
            raise DiskFull("The disk is full: the library backup was not made; free some "
                           "space (the library itself is unchanged).") from error
        raise
    fsync_folder(folder)
    prune(folder)
    return target


def backups(folder: Path) -> list[Path]:
    """Whole backups, newest first (the stamp in the name sorts by time)."""
    if not folder.is_dir():
        return []
    found = [path for path in folder.iterdir()
             if path.name.startswith(_PREFIX) and path.name.endswith(_SUFFIX)]
    return sorted(found, key=lambda path: path.name, reverse=True)


def newest_time(folder: Path) -> float | None:
    for path in backups(folder):
        taken = taken_at(path)
        if taken is not None:
            return taken
    return None


def prune(folder: Path, now: float | None = None) -> list[Path]:
    """Delete backups beyond the policy; returns what was deleted."""
    now = time.time() if now is None else now
    kept_days: set[str] = set()
    removed = []
    for index, path in enumerate(backups(folder)):
        taken = taken_at(path)
        day = path.name[len(_PREFIX):len(_PREFIX) + 8]
        recent_day = taken is not None and now - taken < KEEP_DAILY_DAYS * 86400
        if index < KEEP_NEWEST:
            kept_days.add(day)
            continue
        if recent_day and day not in kept_days:
            kept_days.add(day)
            continue
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def is_sound(path: Path) -> bool:
    """A backup that opens and passes ``quick_check`` (read-only; nothing is written)."""
    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return connection.execute("PRAGMA quick_check").fetchall() == [("ok",)]
        finally:
            connection.close()
    except sqlite3.DatabaseError:
        return False


def taken_at(path: Path) -> float | None:
    stamp = path.name[len(_PREFIX):-len(_SUFFIX)]
    try:
        return datetime.strptime(stamp, _STAMP).timestamp()
    except ValueError:
        return None


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as stream:
        os.fsync(stream.fileno())
