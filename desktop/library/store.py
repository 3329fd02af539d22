"""The library: every image Easel made or imported, its prompt history, favourites and tags.

Layout under the data folder (``desktop.paths.data_dir``)::

    images/YYYY-MM/*.png          the pictures; each carries its id and parameters
    library/library.sqlite3       the index, favourites, tags, trash, prompt history
    library/backups/              automatic backups (see ``backups``)
    library/quarantine/           damaged databases moved aside, never deleted
    cache/thumbnails/             made lazily, bounded in size

The order of every change is what keeps images safe: a new image is written whole (temp
file, fsync, rename, fsync the folder) before its row is committed; a row is deleted (with
its path noted in ``pending_deletions``) before its file is unlinked. A crash between the two
steps leaves a file without a row, which the next start indexes, or a noted deletion, which
the next start finishes. Nothing committed is ever lost to a crash.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, ParamSpec, TypeVar

import numpy as np

from desktop.files import data_folder_writes, unusable_data_folder
from desktop.image_files import new_image_id
from desktop.library import backups, history, inputs
from desktop.library.atomic import is_disk_full, is_temporary, write_atomically
from desktop.library.changes import ChangeNotice
from desktop.library.database import (
    connect,
    migrate,
    quick_check,
    refuse_newer,
    stored_version,
    writing,
)
from desktop.library.errors import (
    DiskFull,
    LibraryError,
    UnknownImage,
)
from desktop.library.images import load_pixels, open_image
from desktop.library.locks import FileLock
from desktop.library.metadata import from_easel, read_info
from desktop.library.pngs import (
    generated_metadata,
    imported_metadata,
    read_png,
    write_generated,
    write_imported,
    write_without_metadata,
)
from desktop.library.recovery import (
    ReconcileReport,
    quarantine,
    reconcile,
    restore_newest_backup,
)
from desktop.library.rows import COLUMNS, ImageEntry, entry_from_row, insert_row, time_key
from desktop.library.thumbnails import DEFAULT_MAX_BYTES, ThumbnailCache
from desktop.provenance.policy import Provenance, ProvenanceSettings
from engine.request import GenerationParameters

log = logging.getLogger(__name__)

DATABASE_NAME = "library.sqlite3"
PAGE_SIZE = 200
# At close, a backup is skipped if the newest is younger than this: a run of short
# `easel` commands should not copy the database every time.
CLOSE_BACKUP_GAP_S = 60.0
MIN_ID_PREFIX = 4

Trash = Literal["exclude", "only", "include"]
_P = ParamSpec("_P")
_R = TypeVar("_R")


@dataclass
class OpenReport:
    """What happened while opening: shown to the user when not empty."""

    warnings: list[str] = field(default_factory=list)
    quarantined: Path | None = None  # where a damaged database was moved
    restored_from: Path | None = None  # the backup it was restored from
    reconcile: ReconcileReport = field(default_factory=ReconcileReport)
    seconds: float = 0.0


@dataclass(frozen=True)
class Page:
    entries: list[ImageEntry]
    next_cursor: str | None  # give to ``search(cursor=...)`` for the next page; None at end


def _locked(method: Callable[_P, _R]) -> Callable[_P, _R]:
    """One connection, shared by the GUI thread and workers: one call at a time."""

    @functools.wraps(method)
    def call(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)

    return call


class Library:
    """A library folder opened for reading and writing. Open with ``Library.open``."""

    def __init__(self, root: Path, *, backup_interval_s: float = backups.INTERVAL_S,
                 thumbnail_bytes: int | None = None,
                 provenance: ProvenanceSettings | None = None) -> None:
        self.root = Path(root)
        # Content Credentials (and the watermark, when asked) on every picture made here;
        # on unless the settings say otherwise.
        self.provenance = Provenance(self.root, provenance)
        self.images_dir = self.root / "images"
        self.folder = self.root / "library"
        self.database_path = self.folder / DATABASE_NAME
        self.backups_dir = self.folder / "backups"
        self.quarantine_dir = self.folder / "quarantine"
        self.thumbnails = ThumbnailCache(self.root / "cache" / "thumbnails",
                                         thumbnail_bytes or DEFAULT_MAX_BYTES)
        self.backup_interval_s = backup_interval_s
        self.report = OpenReport()
        self._lock = threading.RLock()
        self._curated_since_backup = False
        self._connection: sqlite3.Connection | None = None
        self._writers: FileLock | None = None

    @classmethod
    def open(cls, root: Path, **options: Any) -> Library:
        """Open (creating, migrating or repairing as needed) the library under ``root``. A
        data folder that cannot be written (read-only, full) is one sentence
        (``DataFolderUnusable``), and nothing is moved aside as damaged."""
        library = cls(root, **options)
        try:
            with data_folder_writes(library.root):
                library._start()
        except BaseException:
            library.close(back_up=False)
            raise
        return library

    # Opening -------------------------------------------------------------------------------

    def _start(self) -> None:
        started = time.perf_counter()
        for folder in (self.images_dir, self.folder):
            folder.mkdir(parents=True, exist_ok=True)
        # Every open process holds this shared; one that gets it exclusively knows no other
        # Easel is writing here, so leftover temp files are a crash's and can go.
        self._writers = FileLock(self.folder / "writers.lock")
        alone = self._writers.try_exclusive()
        self._connection = self._open_database(alone)
        migrate(self._connection, self.backup_now)
        if alone:
            self._remove_temporary(self.folder, self.backups_dir)
        self.report.reconcile = reconcile(self._connection, self.images_dir,
                                          remove_temporary=alone)
        if alone:
            self._writers.shared()
        self._changes = ChangeNotice(self._connection)
        self.report.seconds = time.perf_counter() - started

    def _open_database(self, alone: bool) -> sqlite3.Connection:
        try:
            return self._connect_checked()
        except sqlite3.DatabaseError as error:
            if unusable_data_folder(self.root, error) is not None:
                raise  # a read-only or full disk, not damage: there is nothing to repair
            if not alone:
                raise LibraryError(
                    "The library database is damaged and another Easel is using it; close "
                    "every Easel window and command, then start Easel again to repair it."
                ) from error
            log.warning("library database damaged (%s); repairing", error)
        self.report.quarantined = quarantine(self.database_path, self.quarantine_dir)
        self.report.restored_from = restore_newest_backup(self.backups_dir, self.database_path)
        restored = (f"restored from the backup of {_backup_time(self.report.restored_from)}"
                    if self.report.restored_from else "rebuilt from the image files")
        self.report.warnings.append(
            f"The library database was damaged: it was moved to '{self.report.quarantined}' "
            f"and {restored}; favourites, tags and history made since then are not in it.")
        return self._connect_checked()

    def _connect_checked(self) -> sqlite3.Connection:
        version = stored_version(self.database_path)
        refuse_newer(version, self.database_path)
        connection, warnings = connect(self.database_path)
        if version and not quick_check(connection):
            connection.close()
            raise sqlite3.DatabaseError("quick_check found damage")
        self.report.warnings.extend(warnings)
        return connection

    @staticmethod
    def _remove_temporary(*folders: Path) -> None:
        for folder in folders:
            if folder.is_dir():
                for path in folder.iterdir():
                    if is_temporary(path.name):
                        path.unlink(missing_ok=True)

    # Closing -------------------------------------------------------------------------------

    def close(self, back_up: bool = True) -> None:
        """Close, taking a backup first if favourites, tags, trash or history changed."""
        with self._lock:
            if self._connection is not None:
                if back_up and self._curated_since_backup:
                    self._back_up_if_older_than(CLOSE_BACKUP_GAP_S)
                self._connection.close()
                self._connection = None
            if self._writers is not None:
                self._writers.close()
                self._writers = None

    def __enter__(self) -> Library:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @property
    def connection(self) -> sqlite3.Connection:
        if self._connection is None:
            raise LibraryError("The library is closed.")
        return self._connection

    # Adding --------------------------------------------------------------------------------

    @_locked
    def add_generated(self, pixels: np.ndarray, parameters: GenerationParameters, *,
                      operation: str | None = None, source_id: str | None = None,
                      created_at: float | None = None,
                      settings: Mapping[str, Any] | None = None,
                      checks: Mapping[str, Any] | None = None,
                      batch: Mapping[str, Any] | None = None) -> ImageEntry:
        """Save a generated image into the library and count its prompt in the history.
        ``pixels`` are RGB, or RGBA for a cut-out (its alpha kept exactly), or grey (H, W)
        for a mask. ``operation`` defaults to the one the parameters name (text to image,
        inpaint…). ``settings`` are the operation's own, for those the parameters have no
        field for (background removal: the segmenter, refine), kept under the operation's
        name in the picture's metadata. ``checks``: what the content checks said, kept under
        their own names ({"content_filter": …, "safety_check": …}). ``batch``: which batch job
        and picture it is ({"job": id, "picture": index, …}), for ``batch_pictures``."""
        operation = operation or parameters.operation
        image_id = new_image_id()
        created_at = time.time() if created_at is None else created_at
        relative = self._new_path(created_at, f"{parameters.seed}-{image_id[:8]}")
        metadata = generated_metadata(parameters, image_id, created_at, operation, source_id)
        if settings:
            metadata[operation] = dict(settings)
        metadata.update(checks or {})
        if batch:
            metadata["batch"] = dict(batch)
        path = write_generated(self.images_dir / relative, pixels, parameters, metadata,
                               self.provenance, self._source_file(source_id))
        info = from_easel(json.dumps(metadata))

        def commit(connection: sqlite3.Connection) -> None:
            insert_row(connection, image_id, relative, info, created_at, path.stat().st_size,
                       replace_existing=True)
            history.record_use(connection, parameters.prompt, "prompt", created_at)
            history.record_use(connection, parameters.negative_prompt, "negative", created_at)

        self._commit_new_file(path, commit)
        self._curated()  # the history changed
        return self.get(image_id)

    def _source_file(self, source_id: str | None) -> Path | None:
        """The file of the library picture an edit started from, if it is still there."""
        if source_id is None:
            return None
        row = self.connection.execute("SELECT path FROM images WHERE id = ?",
                                      (source_id,)).fetchone()
        return None if row is None else self.images_dir / row[0]

    def keep_inputs(self, pictures: Mapping[str, np.ndarray]) -> None:
        """Keep the control and reference pictures a picture was made from, by the keys its
        metadata records (desktop.library.inputs)."""
        inputs.keep_inputs(self.folder, pictures)

    def input_path(self, key: object) -> Path | None:
        """A kept control or reference picture, by the key a picture's metadata records."""
        return inputs.input_path(self.folder, key)

    @_locked
    def import_file(self, source: Path) -> ImageEntry:
        """Copy a PNG from another tool (or another Easel) into the library; its prompt and
        settings become searchable. EXIF is dropped; the other tool's text chunks are kept."""
        source = Path(source)
        with open_image(source, ("PNG",)) as image:
            load_pixels(image, source.name)
            text = {key: value for key, value in image.text.items() if isinstance(value, str)}
            info = read_info(text, image.size)
            if info.image_id is not None and self._exists(info.image_id):
                raise LibraryError(f"'{source.name}' is already in the library "
                                   f"(image {info.image_id[:10]}).")
            image_id = info.image_id or new_image_id()
            created_at = time.time()
            relative = self._new_path(created_at, f"{_safe_stem(source.stem)}-{image_id[:8]}")
            if info.origin == "easel" and info.image_id:
                metadata = json.loads(text["easel"])  # another Easel's image: keep it whole
            else:
                metadata = imported_metadata(image_id, created_at, source.name)
            path = write_imported(self.images_dir / relative, image, text, metadata)
        # Taken from the written file, so the row says exactly what a rebuild would.
        info = read_png(path)
        self._commit_new_file(path, lambda connection: insert_row(
            connection, image_id, relative, info, info.created_at or created_at,
            path.stat().st_size, replace_existing=True))
        return self.get(image_id)

    def _commit_new_file(self, path: Path, commit: Callable[[sqlite3.Connection], None]) -> None:
        """Commit the row of a file already written; if that fails, the file goes too, so
        the library is as it was (an error, not a half-added image)."""
        try:
            with writing(self.connection) as connection:
                commit(connection)
        except BaseException as error:
            path.unlink(missing_ok=True)
            if is_disk_full(error):
                raise DiskFull("The disk is full: the image was not saved and the library "
                               "is unchanged; free some space and try again.") from error
            if isinstance(error, sqlite3.Error):
                raise LibraryError(f"The image could not be added to the library ({error}); "
                                   "nothing was saved.") from error
            raise

    def _new_path(self, when: float, stem: str) -> str:
        moment = datetime.fromtimestamp(when)
        folder = self.images_dir / moment.strftime("%Y-%m")
        folder.mkdir(parents=True, exist_ok=True)
        return f"{moment:%Y-%m}/{moment:%Y%m%d-%H%M%S}-{stem}.png"

    # Reading -------------------------------------------------------------------------------

    @_locked
    def get(self, image_id: str) -> ImageEntry:
        """The image with this id, or with the only id starting with it (4+ characters)."""
        text = image_id.strip().lower()
        if len(text) < MIN_ID_PREFIX or not re.fullmatch(r"[0-9a-f]+", text):
            raise UnknownImage(f"'{image_id}' is not an image id (give at least "
                               f"{MIN_ID_PREFIX} of its hexadecimal characters).")
        rows = self.connection.execute(
            f"SELECT {COLUMNS} FROM images WHERE id >= ? AND id < ? ORDER BY id LIMIT 2",
            (text, text + "g")).fetchall()
        exact = [row for row in rows if row[1] == text]
        if exact:
            rows = exact
        if not rows:
            raise UnknownImage(f"No image in the library has the id '{image_id}'.")
        if len(rows) > 1:
            raise UnknownImage(f"'{image_id}' starts more than one image id; give more "
                               "characters.")
        return entry_from_row(rows[0], self.images_dir)

    @_locked
    def search(self, text: str = "", *, model: str | None = None, seed: int | None = None,
               since: float | None = None, until: float | None = None,
               favourites: bool = False, tag: str | None = None, trash: Trash = "exclude",
               limit: int = PAGE_SIZE, cursor: str | None = None,
               offset: int = 0, from_key: int | None = None) -> Page:
        """Newest first (by creation time). ``text`` is matched against prompt and negative
        prompt, word by word (the last word as a prefix, for search as you type). Page on
        with ``cursor`` (cheap at any depth) or ``offset``; ``from_key`` starts at the picture
        with that key (``key_after``), also cheap at any depth."""
        if not 1 <= limit <= 10_000:
            raise LibraryError("A page holds between 1 and 10000 images.")
        where, parameters, tables, key = _filters(text, model, seed, since, until, favourites,
                                                  tag, trash)
        if cursor is not None:
            where.append(f"{key} < ?")
            parameters.append(_parse_cursor(cursor))
        if from_key is not None:
            where.append(f"{key} <= ?")
            parameters.append(from_key)
        sql = (f"SELECT {_prefixed(COLUMNS)} FROM {tables}"
               f"{' WHERE ' + ' AND '.join(where) if where else ''}"
               f" ORDER BY {key} DESC LIMIT ? OFFSET ?")
        rows = self.connection.execute(sql, (*parameters, limit + 1, max(offset, 0))).fetchall()
        entries = [entry_from_row(row, self.images_dir) for row in rows[:limit]]
        more = len(rows) > limit
        return Page(entries, str(entries[-1].rowid) if more else None)

    @_locked
    def batch_pictures(self, job_ids: Iterable[str]) -> dict[str, dict[Any, str]]:
        """The pictures already made for these batch jobs: job id → picture → image id, trash
        included (a picture the user threw away was made; emptying the trash lets a batch make
        it again). Read from the metadata each picture carries, so a picture saved just before
        a crash counts as soon as the library has indexed its file."""
        wanted = set(job_ids)
        made: dict[str, dict[Any, str]] = {}
        rows = self.connection.execute(
            "SELECT id, json_extract(parameters, '$.batch.job'), "
            "json_extract(parameters, '$.batch.picture') FROM images "
            "WHERE json_extract(parameters, '$.batch.job') IS NOT NULL")
        for image_id, job, picture in rows:
            if job in wanted:
                made.setdefault(job, {})[picture] = image_id
        return made

    @_locked
    def key_after(self, text: str = "", *, key: int | None = None, skip: int = 0,
                  trash: Trash = "exclude", **filters: Any) -> int | None:
        """The key of the picture ``skip`` places after the one with ``key`` (after the
        newest when None) in a search's newest-first order; None past the last. Each call is
        one short scan, so a caller stepping through a big library holds the lock briefly."""
        where, parameters, tables, order = _filters(
            text, filters.get("model"), filters.get("seed"), filters.get("since"),
            filters.get("until"), filters.get("favourites", False), filters.get("tag"), trash)
        if key is not None:
            where.append(f"{order} <= ?")
            parameters.append(key)
        sql = (f"SELECT {order} FROM {tables}"
               f"{' WHERE ' + ' AND '.join(where) if where else ''}"
               f" ORDER BY {order} DESC LIMIT 1 OFFSET ?")
        row = self.connection.execute(sql, (*parameters, max(skip, 0))).fetchone()
        return None if row is None else row[0]

    @_locked
    def count(self, text: str = "", *, trash: Trash = "exclude", **filters: Any) -> int:
        if trash == "exclude":
            # "Not in the trash" has no index, so counting it reads every row (70 ms at
            # 100,000 images); all minus the trashed ones is read from narrow indexes (1 ms).
            return self._count(text, "include", filters) - self._count(text, "only", filters)
        return self._count(text, trash, filters)

    def _count(self, text: str, trash: Trash, filters: dict[str, Any]) -> int:
        where, parameters, tables, _ = _filters(
            text, filters.get("model"), filters.get("seed"), filters.get("since"),
            filters.get("until"), filters.get("favourites", False), filters.get("tag"), trash)
        sql = (f"SELECT count(*) FROM {tables}"
               f"{' WHERE ' + ' AND '.join(where) if where else ''}")
        return self.connection.execute(sql, parameters).fetchone()[0]

    @_locked
    def lineage(self, image_id: str) -> list[ImageEntry]:
        """The image and the images it was made from, newest first (as far as they exist)."""
        chain = [self.get(image_id)]
        seen = {chain[0].id}
        while chain[-1].source_id and chain[-1].source_id not in seen:
            try:
                chain.append(self.get(chain[-1].source_id))
            except UnknownImage:
                break
            seen.add(chain[-1].id)
        return chain

    def changed_elsewhere(self) -> bool:
        """True when another process committed since the last call (poll ~1/s from a GUI).

        While another thread is reading (a gallery page), the answer is False rather than a
        wait: a GUI thread must not stall on it, and the next poll still sees the change."""
        if not self._lock.acquire(blocking=False):
            return False
        try:
            return self._changes.changed()
        finally:
            self._lock.release()

    @_locked
    def has_image(self, image_id: str) -> bool:
        """Whether the library holds the picture with exactly this id (e.g. one a PNG carries)."""
        return self._exists(image_id)

    def _exists(self, image_id: str) -> bool:
        return self.connection.execute("SELECT 1 FROM images WHERE id = ?",
                                        (image_id,)).fetchone() is not None

    # Favourites and tags -------------------------------------------------------------------

    @_locked
    def set_favourite(self, image_ids: Iterable[str], favourite: bool = True) -> int:
        rowids = self._rowids(image_ids)
        with writing(self.connection) as connection:
            connection.executemany("UPDATE images SET favourite = ? WHERE rowid = ?",
                                   [(int(favourite), rowid) for rowid in rowids])
        self._curated()
        return len(rowids)

    @_locked
    def add_tags(self, image_ids: Iterable[str], tags: Iterable[str]) -> None:
        names = _tag_names(tags)
        rowids = self._rowids(image_ids)
        with writing(self.connection) as connection:
            for name in names:
                connection.execute("INSERT INTO tags (name) VALUES (?) ON CONFLICT DO NOTHING",
                                   (name,))
                connection.executemany(
                    "INSERT OR IGNORE INTO image_tags (image, tag) "
                    "SELECT ?, rowid FROM tags WHERE name = ?",
                    [(rowid, name) for rowid in rowids])
        self._curated()

    @_locked
    def remove_tags(self, image_ids: Iterable[str], tags: Iterable[str]) -> None:
        names = _tag_names(tags)
        rowids = self._rowids(image_ids)
        with writing(self.connection) as connection:
            for name in names:
                connection.executemany(
                    "DELETE FROM image_tags WHERE image = ? AND "
                    "tag = (SELECT rowid FROM tags WHERE name = ?)",
                    [(rowid, name) for rowid in rowids])
            connection.execute("DELETE FROM tags WHERE rowid NOT IN "
                               "(SELECT DISTINCT tag FROM image_tags)")
        self._curated()

    @_locked
    def tags_of(self, image_id: str) -> list[str]:
        rowid = self.get(image_id).rowid
        return [name for (name,) in self.connection.execute(
            "SELECT t.name FROM tags AS t JOIN image_tags AS it ON it.tag = t.rowid "
            "WHERE it.image = ? ORDER BY t.name COLLATE NOCASE", (rowid,))]

    @_locked
    def all_tags(self) -> list[tuple[str, int]]:
        return list(self.connection.execute(
            "SELECT t.name, count(it.image) FROM tags AS t LEFT JOIN image_tags AS it "
            "ON it.tag = t.rowid GROUP BY t.rowid ORDER BY t.name COLLATE NOCASE"))

    # Trash ---------------------------------------------------------------------------------

    @_locked
    def trash(self, image_ids: Iterable[str]) -> int:
        """Move to the trash (undo with ``restore``); files stay until the trash is emptied."""
        rowids = self._rowids(image_ids)
        with writing(self.connection) as connection:
            connection.executemany(
                "UPDATE images SET trashed_at = ? WHERE rowid = ? AND trashed_at IS NULL",
                [(time.time(), rowid) for rowid in rowids])
        self._curated()
        return len(rowids)

    @_locked
    def restore(self, image_ids: Iterable[str]) -> int:
        rowids = self._rowids(image_ids)
        with writing(self.connection) as connection:
            connection.executemany("UPDATE images SET trashed_at = NULL WHERE rowid = ?",
                                   [(rowid,) for rowid in rowids])
        self._curated()
        return len(rowids)

    @_locked
    def empty_trash(self) -> int:
        """Delete the trashed images for good: rows first (noting the paths), then files."""
        with writing(self.connection) as connection:
            doomed = connection.execute(
                "SELECT id, path FROM images WHERE trashed_at IS NOT NULL").fetchall()
            connection.executemany("INSERT OR IGNORE INTO pending_deletions (path) VALUES (?)",
                                   [(path,) for _, path in doomed])
            connection.execute("DELETE FROM images WHERE trashed_at IS NOT NULL")
        for image_id, path in doomed:
            (self.images_dir / path).unlink(missing_ok=True)
            self.thumbnails.forget(image_id)
        with writing(self.connection) as connection:
            connection.executemany("DELETE FROM pending_deletions WHERE path = ?",
                                   [(path,) for _, path in doomed])
        self._curated()
        return len(doomed)

    # Export --------------------------------------------------------------------------------

    @_locked
    def export(self, image_ids: Sequence[str], folder: Path, *,
               strip_metadata: bool = False) -> list[Path]:
        """Copy images to ``folder`` under their own names (never overwriting). With
        ``strip_metadata`` only the pixels go: no prompt, no parameters. All or nothing."""
        entries = [self.get(image_id) for image_id in image_ids]
        missing = [entry for entry in entries if not entry.path.is_file()]
        if missing:
            raise LibraryError(f"The file of image {missing[0].id[:10]} is missing, so "
                               "nothing was exported.")
        folder = Path(folder)
        if folder.exists() and not folder.is_dir():
            raise LibraryError(f"'{folder}' is a file, not a folder; nothing was exported.")
        folder.mkdir(parents=True, exist_ok=True)
        written: list[Path] = []
        try:
            for entry in entries:
                written.append(self._export_one(entry, folder, strip_metadata))
        except BaseException:
            for path in written:  # all or nothing: a half export is not left behind
                path.unlink(missing_ok=True)
            raise
        return written

    @staticmethod
    def _export_one(entry: ImageEntry, folder: Path, strip_metadata: bool) -> Path:
        data = None if strip_metadata else entry.path.read_bytes()  # ours: never EXIF
        for number in range(1000):
            name = entry.path.name if number == 0 else f"{entry.path.stem}-{number}.png"
            target = folder / name
            if target.exists():
                continue
            try:
                if strip_metadata:
                    with open_image(entry.path, ("PNG",)) as image:
                        return write_without_metadata(target, load_pixels(image, name))
                return write_atomically(target, functools.partial(_write_bytes, data=data))
            except FileExistsError:  # taken meanwhile by someone else: next name
                continue
        raise LibraryError(f"Too many files named like '{entry.path.name}' in '{folder}'.")

    # Prompt history ------------------------------------------------------------------------

    @_locked
    def history(self, search: str = "", kind: str = "prompt",
                limit: int = 100) -> list[history.HistoryEntry]:
        return history.entries(self.connection, search, kind, limit)

    @_locked
    def pin_prompt(self, text: str, pinned: bool = True, kind: str = "prompt") -> None:
        if not history.set_pinned(self.connection, text, pinned, kind):
            raise LibraryError("That prompt is not in the history.")
        self._curated()

    # Maintenance ---------------------------------------------------------------------------

    @_locked
    def rebuild(self) -> ReconcileReport:
        """Re-read every file: index new ones, flag lost ones, refresh rows and search."""
        return reconcile(self.connection, self.images_dir, refresh=True)

    @_locked
    def backup_now(self) -> Path:
        path = backups.make_backup(self.connection, self.backups_dir)
        self._curated_since_backup = False
        return path

    def _curated(self) -> None:
        """Data that lives only in the database changed: back it up if the newest backup is
        older than the interval. A failed backup is a warning, not a failed action."""
        self._curated_since_backup = True
        self._back_up_if_older_than(self.backup_interval_s)

    def _back_up_if_older_than(self, age_s: float) -> None:
        newest = backups.newest_time(self.backups_dir)
        if newest is not None and time.time() - newest < age_s:
            return
        try:
            self.backup_now()
        except (OSError, sqlite3.Error, LibraryError) as error:
            log.warning("library backup failed: %s", error)
            self.report.warnings.append(str(error))

    def _rowids(self, image_ids: Iterable[str]) -> list[int]:
        return [self.get(image_id).rowid for image_id in image_ids]


def _write_bytes(stream: Any, data: bytes) -> None:
    stream.write(data)


def _filters(text: str, model: str | None, seed: int | None, since: float | None,
             until: float | None, favourites: bool, tag: str | None,
             trash: Trash) -> tuple[list[str], list[Any], str, str]:
    """WHERE clauses and their parameters, the tables to read, and the newest-first key.

    With words to find, the full-text index drives: it yields matches newest first (rowids
    are creation times) and the query stops at the page's end.
    """
    where: list[str] = []
    parameters: list[Any] = []
    match = fts_query(text)
    if match:
        tables = "images_text JOIN images AS i ON i.rowid = images_text.rowid"
        key = "images_text.rowid"
        where.append("images_text MATCH ?")
        parameters.append(match)
    else:
        tables, key = "images AS i", "i.rowid"
    for clause, value in (("i.model = ?", model), ("i.seed = ?", seed),
                          (f"{key} >= ?", None if since is None else time_key(since)),
                          (f"{key} < ?", None if until is None else time_key(until))):
        if value is not None:
            where.append(clause)
            parameters.append(value)
    if favourites:
        where.append("i.favourite = 1")
    if tag:
        where.append("i.rowid IN (SELECT it.image FROM image_tags AS it JOIN tags AS t "
                     "ON t.rowid = it.tag WHERE t.name = ?)")
        parameters.append(tag.strip())
    if trash == "exclude":
        where.append("i.trashed_at IS NULL")
    elif trash == "only":
        where.append("i.trashed_at IS NOT NULL")
    return where, parameters, tables, key


def fts_query(text: str) -> str:
    """The user's words as an FTS5 query that cannot be a syntax error: every word quoted,
    all required, the last one also matching as a prefix."""
    words = re.findall(r"\w+", text)
    if not words:
        return ""
    quoted = [f'"{word}"' for word in words]
    quoted[-1] += "*"
    return " ".join(quoted)


def _prefixed(columns: str) -> str:
    return ", ".join(f"i.{name.strip()}" for name in columns.split(","))


def _parse_cursor(cursor: str) -> int:
    try:
        return int(cursor)
    except ValueError:
        raise LibraryError("That page marker is not valid; start again from the first "
                           "page.") from None


def _tag_names(tags: Iterable[str]) -> list[str]:
    names = [" ".join(tag.split()) for tag in tags]
    if not names or not all(names):
        raise LibraryError("A tag needs at least one visible character.")
    if any(len(name) > 100 for name in names):
        raise LibraryError("A tag can be at most 100 characters long.")
    return list(dict.fromkeys(names))


def _safe_stem(stem: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-.")
    return cleaned[:40] or "imported"


def _backup_time(path: Path) -> str:
    taken = backups.taken_at(path)
    return path.name if taken is None else f"{datetime.fromtimestamp(taken):%Y-%m-%d %H:%M}"


