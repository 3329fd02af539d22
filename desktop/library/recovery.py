"""Start-up recovery: a damaged database is moved aside and restored from its newest sound
backup, and the database is reconciled with the image files.

Reconcile reads the rows first and lists the files second. A writer renames its file into
place before committing its row, so any row seen has its file on disk by the time of the
listing (no false "missing"), and a file seen without a row is either new from a crash or
being committed right now, which ``insert_row``'s conflict rules make harmless.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from desktop.files import fsync_folder
from desktop.library import backups
from desktop.library.atomic import TEMP_SUFFIX, is_temporary
from desktop.library.database import reading, writing
from desktop.library.errors import BadImage
from desktop.library.metadata import ImageInfo
from desktop.library.pngs import read_png
from desktop.library.rows import insert_row, update_from_file

log = logging.getLogger(__name__)
_BATCH = 500  # rows per write transaction, so other writers get turns during a long rebuild


@dataclass
class ReconcileReport:
    indexed: int = 0  # files that had no row
    flagged_missing: int = 0  # rows whose file is gone
    found_again: int = 0  # rows flagged missing whose file is back
    refreshed: int = 0  # rows re-read from their files (rebuild only)
    deletions_finished: int = 0  # trash emptied before a crash, unlinked now
    temporary_removed: int = 0
    unreadable: list[str] = field(default_factory=list)  # files left alone, not indexed
    seconds: float = 0.0


def quarantine(database: Path, folder: Path) -> Path:
    """Move a damaged database (with its WAL and shared-memory files) aside; never delete."""
    target = folder / time.strftime("%Y%m%d-%H%M%S")
    while target.exists():
        target = target.with_name(target.name + "-1")
    target.mkdir(parents=True)
    for suffix in ("", "-wal", "-shm", "-journal"):
        companion = database.with_name(database.name + suffix)
        if companion.exists():
            os.replace(companion, target / companion.name)
    fsync_folder(database.parent)
    return target


def restore_newest_backup(folder: Path, database: Path) -> Path | None:
    """Copy the newest sound backup into place; None when there is none."""
    for backup in backups.backups(folder):
        if not backups.is_sound(backup):
            log.warning("backup %s is damaged; trying an older one", backup.name)
            continue
        temporary = database.with_name(f".{database.name}-restore{TEMP_SUFFIX}")
        shutil.copyfile(backup, temporary)
        with open(temporary, "rb+") as stream:
            os.fsync(stream.fileno())
        os.replace(temporary, database)
        fsync_folder(database.parent)
        return backup
    return None


def reconcile(connection: sqlite3.Connection, images_dir: Path, *, refresh: bool = False,
              remove_temporary: bool = False) -> ReconcileReport:
    """Make the rows match the files: index files without rows, flag rows without files.

    ``refresh`` re-reads every file's metadata too (``easel gallery rebuild``);
    ``remove_temporary`` is given only by a process that knows no other writer is alive.
    """
    started = time.perf_counter()
    report = ReconcileReport()
    with reading(connection):
        # Both read from narrow indexes (path, rowid), not the wide rows: a fifth of the time.
        known = {path: (rowid, False) for rowid, path
                 in connection.execute("SELECT rowid, path FROM images")}
        for (path,) in connection.execute("SELECT path FROM images WHERE missing = 1"):
            known[path] = (known[path][0], True)
        pending = {path for (path,) in connection.execute("SELECT path FROM pending_deletions")}
    on_disk, temporary = _scan(images_dir)
    if remove_temporary:
        for path in temporary:
            path.unlink(missing_ok=True)
        report.temporary_removed = len(temporary)
    report.deletions_finished = _finish_deletions(connection, images_dir, pending)

    new = sorted(path for path in on_disk if path not in known and path not in pending)
    _index(connection, images_dir, new, on_disk, report)
    gone = [path for path, (_, missing) in known.items() if not missing and path not in on_disk]
    back = [path for path, (_, missing) in known.items() if missing and path in on_disk]
    with writing(connection):
        # Counted by rows changed: a row that followed its moved file above is not missing.
        report.flagged_missing = connection.executemany(
            "UPDATE images SET missing = 1 WHERE path = ?", [(path,) for path in gone]).rowcount
        report.found_again = connection.executemany(
            "UPDATE images SET missing = 0 WHERE path = ?", [(path,) for path in back]).rowcount
    if refresh:
        _refresh(connection, images_dir, [(known[path][0], path) for path in sorted(on_disk)
                                          if path in known], report)
    report.seconds = time.perf_counter() - started
    return report


def content_id(path: Path) -> str:
    """An id for a file that carries none (a PNG dropped into the folder by hand): derived
    from its bytes, so a rebuild gives it the same id again."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:32]


def _scan(images_dir: Path) -> tuple[set[str], list[Path]]:
    """PNG files (relative '/' paths) and leftover temp files under ``images_dir``."""
    found: set[str] = set()
    temporary: list[Path] = []
    for folder, subfolders, names in os.walk(images_dir):
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        base = Path(folder)
        relative = base.relative_to(images_dir).as_posix()
        prefix = "" if relative == "." else relative + "/"
        for name in names:
            if is_temporary(name):
                temporary.append(base / name)
            elif name.lower().endswith(".png") and not name.startswith("."):
                found.add(prefix + name)
    return found, temporary


def _finish_deletions(connection: sqlite3.Connection, images_dir: Path,
                      pending: set[str]) -> int:
    for path in pending:
        (images_dir / path).unlink(missing_ok=True)
    if pending:
        with writing(connection):
            connection.executemany("DELETE FROM pending_deletions WHERE path = ?",
                                   [(path,) for path in pending])
    return len(pending)


def _index(connection: sqlite3.Connection, images_dir: Path, new: list[str],
           on_disk: set[str], report: ReconcileReport) -> None:
    for start in range(0, len(new), _BATCH):
        read = []
        for relative in new[start:start + _BATCH]:
            path = images_dir / relative
            try:
                read.append((relative, read_png(path), path.stat()))
            except (BadImage, OSError) as error:
                log.warning("not indexed: %s (%s)", relative, error)
                report.unreadable.append(relative)
        with writing(connection):
            for relative, info, stat in read:
                if _index_file(connection, images_dir, relative, info, stat, on_disk):
                    report.indexed += 1


def _index_file(connection: sqlite3.Connection, images_dir: Path, relative: str,
                info: ImageInfo, stat: os.stat_result, on_disk: set[str]) -> bool:
    image_id = info.image_id or content_id(images_dir / relative)
    existing = connection.execute("SELECT rowid, path FROM images WHERE id = ?",
                                  (image_id,)).fetchone()
    if existing is not None:
        if existing[1] == relative:
            return False
        if existing[1] not in on_disk:  # the file was moved within the folder: follow it
            connection.execute("UPDATE images SET path = ?, missing = 0 WHERE rowid = ?",
                               (relative, existing[0]))
            return True
        image_id = content_id(images_dir / relative)  # a copy of another image's file
    created_at = info.created_at if info.created_at is not None else stat.st_mtime
    return insert_row(connection, image_id, relative, info, created_at, stat.st_size,
                      replace_existing=False)


def _refresh(connection: sqlite3.Connection, images_dir: Path, rows: list[tuple[int, str]],
             report: ReconcileReport) -> None:
    for start in range(0, len(rows), _BATCH):
        read = []
        for rowid, relative in rows[start:start + _BATCH]:
            path = images_dir / relative
            try:
                read.append((rowid, read_png(path), path.stat().st_size))
            except (BadImage, OSError) as error:
                log.warning("not refreshed: %s (%s)", relative, error)
                report.unreadable.append(relative)
        with writing(connection):
            for rowid, info, size in read:
                update_from_file(connection, rowid, info, size)
                report.refreshed += 1
    with writing(connection):
        connection.execute("INSERT INTO images_text (images_text) VALUES ('rebuild')")
