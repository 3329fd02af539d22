"""Image rows: what a gallery entry is, and how one is written from a file's metadata."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from desktop.library.metadata import ImageInfo

COLUMNS = ("rowid, id, path, created_at, prompt, negative_prompt, model, model_hash, seed, "
           "width, height, operation, source_id, origin, parameters, favourite, trashed_at, "
           "missing, file_size")


@dataclass(frozen=True)
class ImageEntry:
    """One image in the gallery, as the database knows it."""

    id: str
    path: Path  # absolute
    created_at: float
    prompt: str
    negative_prompt: str
    model: str
    model_hash: str
    seed: int | None
    width: int | None
    height: int | None
    operation: str
    source_id: str | None
    origin: str
    parameters: dict[str, Any]
    favourite: bool
    trashed_at: float | None
    missing: bool  # the row's file is gone (kept so favourites and tags are not lost)
    file_size: int
    rowid: int

    @property
    def trashed(self) -> bool:
        return self.trashed_at is not None


def entry_from_row(row: tuple, images_dir: Path) -> ImageEntry:
    (rowid, image_id, path, created_at, prompt, negative, model, model_hash, seed, width,
     height, operation, source_id, origin, parameters, favourite, trashed_at, missing,
     file_size) = row
    return ImageEntry(
        id=image_id, path=images_dir / path, created_at=created_at, prompt=prompt,
        negative_prompt=negative, model=model, model_hash=model_hash, seed=seed, width=width,
        height=height, operation=operation, source_id=source_id, origin=origin,
        parameters=json.loads(parameters), favourite=bool(favourite), trashed_at=trashed_at,
        missing=bool(missing), file_size=file_size, rowid=rowid)


def insert_row(connection: sqlite3.Connection, image_id: str, relative_path: str,
               info: ImageInfo, created_at: float, file_size: int, *,
               replace_existing: bool) -> bool:
    """Add the row for one file; the caller holds the write transaction.

    The writer of a new image passes ``replace_existing``: another process's reconcile may
    have indexed the file in the moment between its rename and this commit, and the writer's
    row is the authority. Reconcile itself never overwrites. Returns whether a row was written.
    """
    conflict = ("DO UPDATE SET path = excluded.path, missing = 0" if replace_existing
                else "DO NOTHING")
    cursor = connection.execute(
        "INSERT INTO images (rowid, id, path, created_at, prompt, negative_prompt, model, "
        "model_hash, seed, width, height, operation, source_id, origin, parameters, file_size) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        f"ON CONFLICT (id) {conflict}",
        (free_time_key(connection, created_at), image_id, relative_path, created_at,
         info.prompt, info.negative_prompt, info.model,
         info.model_hash, info.seed, info.width, info.height, info.operation, info.source_id,
         info.origin, json.dumps(info.parameters, ensure_ascii=False, sort_keys=True),
         file_size))
    return cursor.rowcount > 0


def time_key(created_at: float) -> int:
    """The rowid order: creation time in microseconds."""
    return int(created_at * 1_000_000)


def free_time_key(connection: sqlite3.Connection, created_at: float) -> int:
    """``time_key``, counted up past rows made in the same microsecond (inside the caller's
    write transaction, so no other writer can take it meanwhile)."""
    key = time_key(created_at)
    while connection.execute("SELECT 1 FROM images WHERE rowid = ?", (key,)).fetchone():
        key += 1
    return key


def update_from_file(connection: sqlite3.Connection, rowid: int, info: ImageInfo,
                     file_size: int) -> None:
    """Refresh what the file says (a rebuild); database-only data is left as it is."""
    connection.execute(
        "UPDATE images SET prompt = ?, negative_prompt = ?, model = ?, model_hash = ?, "
        "seed = ?, width = ?, height = ?, operation = ?, source_id = ?, origin = ?, "
        "parameters = ?, file_size = ?, missing = 0 WHERE rowid = ?",
        (info.prompt, info.negative_prompt, info.model, info.model_hash, info.seed,
         info.width, info.height, info.operation, info.source_id, info.origin,
         json.dumps(info.parameters, ensure_ascii=False, sort_keys=True), file_size, rowid))
