"""The library database: connection settings, schema, migrations and checks.

Settings and why:
- WAL journal: readers never block the writer, so the app and ``easel`` commands share one
  library. Checked after asking, because some file systems (network shares) cannot do WAL;
  then the rollback journal is used and a warning says so.
- ``synchronous = FULL``: every commit fsyncs the WAL, so a favourite or tag the user saw
  saved survives a power cut, not only a crash. NORMAL would save one fsync per commit
  (about half a millisecond here) and could drop the last commits on power loss; images
  would come back from their files, but favourites, tags and history would not.
- ``busy_timeout``: a writer waits for another writer instead of failing with "database is
  locked"; every write transaction starts with BEGIN IMMEDIATE so it queues at the start
  rather than failing midway when a reader wants to become a writer.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

from desktop.library.errors import LibraryError, LibraryTooNew

SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 30.0
_HEADER = b"SQLite format 3\x00"

_SCHEMA_1 = """
-- The rowid is the creation time in microseconds (made unique by counting up), so "newest
-- first" is the table's own order and the full-text index's: a search for a common word
-- reads its newest 200 matches and stops, instead of sorting every match.
CREATE TABLE images (
    rowid INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,           -- the image id written in the PNG
    path TEXT NOT NULL UNIQUE,         -- relative to the images folder, '/' separated
    created_at REAL NOT NULL,          -- seconds since the epoch
    prompt TEXT NOT NULL DEFAULT '',
    negative_prompt TEXT NOT NULL DEFAULT '',
    model TEXT NOT NULL DEFAULT '',
    model_hash TEXT NOT NULL DEFAULT '',
    seed INTEGER,
    width INTEGER,
    height INTEGER,
    operation TEXT NOT NULL DEFAULT '',
    source_id TEXT,                    -- lineage: the image this one was made from
    origin TEXT NOT NULL DEFAULT 'easel',  -- easel, a1111, comfyui, invokeai, unknown
    parameters TEXT NOT NULL DEFAULT '{}',
    favourite INTEGER NOT NULL DEFAULT 0,
    trashed_at REAL,
    missing INTEGER NOT NULL DEFAULT 0,
    file_size INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX images_by_model ON images (model);  -- each index ends in rowid: newest first
CREATE INDEX images_by_seed ON images (seed);
CREATE INDEX images_favourites ON images (favourite) WHERE favourite = 1;
CREATE INDEX images_trashed ON images (trashed_at) WHERE trashed_at IS NOT NULL;
CREATE INDEX images_missing ON images (path) WHERE missing = 1;
CREATE INDEX images_source ON images (source_id) WHERE source_id IS NOT NULL;

CREATE VIRTUAL TABLE images_text USING fts5 (
    prompt, negative_prompt, content = 'images', content_rowid = 'rowid',
    tokenize = 'unicode61 remove_diacritics 2'
);
CREATE TRIGGER images_text_insert AFTER INSERT ON images BEGIN
    INSERT INTO images_text (rowid, prompt, negative_prompt)
    VALUES (new.rowid, new.prompt, new.negative_prompt);
END;
CREATE TRIGGER images_text_delete AFTER DELETE ON images BEGIN
    INSERT INTO images_text (images_text, rowid, prompt, negative_prompt)
    VALUES ('delete', old.rowid, old.prompt, old.negative_prompt);
END;
CREATE TRIGGER images_text_update AFTER UPDATE OF prompt, negative_prompt ON images BEGIN
    INSERT INTO images_text (images_text, rowid, prompt, negative_prompt)
    VALUES ('delete', old.rowid, old.prompt, old.negative_prompt);
    INSERT INTO images_text (rowid, prompt, negative_prompt)
    VALUES (new.rowid, new.prompt, new.negative_prompt);
END;

CREATE TABLE tags (
    rowid INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE COLLATE NOCASE
);
CREATE TABLE image_tags (
    image INTEGER NOT NULL REFERENCES images (rowid) ON DELETE CASCADE,
    tag INTEGER NOT NULL REFERENCES tags (rowid) ON DELETE CASCADE,
    PRIMARY KEY (image, tag)
) WITHOUT ROWID;
CREATE INDEX image_tags_by_tag ON image_tags (tag, image);

CREATE TABLE prompts (
    rowid INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,                -- 'prompt' or 'negative'
    key TEXT NOT NULL,                 -- the text with whitespace collapsed: no duplicates
    text TEXT NOT NULL,                -- as last typed
    uses INTEGER NOT NULL DEFAULT 1,
    last_used REAL NOT NULL,
    pinned INTEGER NOT NULL DEFAULT 0,
    UNIQUE (kind, key)
);
CREATE INDEX prompts_recent ON prompts (kind, pinned, last_used);

-- Files whose rows are gone and which are being unlinked; finished at the next start if a
-- crash came between the commit and the unlink, so an emptied trash never comes back.
CREATE TABLE pending_deletions (path TEXT PRIMARY KEY) WITHOUT ROWID;
"""

# Index i holds the script that takes a library from version i to i + 1.
MIGRATIONS: list[str] = [_SCHEMA_1]


def stored_version(path: Path) -> int:
    """The schema version of the database at ``path`` (0 for none), read from the file's
    header without opening it: even a read-only connection would add WAL companion files
    to a library that must be left exactly as it is. (A version raised in a WAL not yet
    checkpointed is caught by ``migrate``, before anything is written.)"""
    if not path.exists() or path.stat().st_size == 0:
        return 0
    with open(path, "rb") as stream:
        header = stream.read(100)
    if len(header) < 100 or not header.startswith(_HEADER):
        raise sqlite3.DatabaseError("file is not a database")
    return int.from_bytes(header[60:64], "big", signed=True)


def refuse_newer(version: int, path: Path) -> None:
    if version > SCHEMA_VERSION:
        raise LibraryTooNew(
            f"The library at '{path.parent}' was made by a newer version of Easel (format "
            f"{version}, this one reads up to {SCHEMA_VERSION}); update Easel to open it. "
            "It was left unchanged.")


def connect(path: Path) -> tuple[sqlite3.Connection, list[str]]:
    """Open the database read-write with the settings above; returns warnings to show."""
    connection = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_S,
                                 check_same_thread=False)
    connection.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
    warnings = []
    if not use_wal(connection):
        warnings.append(
            f"The folder '{path.parent}' cannot hold a write-ahead log (a network share?); "
            "the library works, but the app and the easel command will wait for each other.")
    connection.execute("PRAGMA synchronous = FULL")
    connection.execute("PRAGMA foreign_keys = ON")
    return connection, warnings


def use_wal(connection: sqlite3.Connection) -> bool:
    mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if mode.lower() == "wal":
        return True
    with contextlib.suppress(sqlite3.DatabaseError):
        connection.execute("PRAGMA journal_mode = DELETE")
    return False


@contextlib.contextmanager
def writing(connection: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction: BEGIN IMMEDIATE (waits its turn), COMMIT, or ROLLBACK on error."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield connection
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


@contextlib.contextmanager
def reading(connection: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One consistent snapshot for several SELECTs."""
    connection.execute("BEGIN")
    try:
        yield connection
    finally:
        connection.execute("COMMIT")


def migrate(connection: sqlite3.Connection, back_up: Callable[[], object]) -> int:
    """Bring the schema up to date, each step in one transaction, after a backup of any
    library that already holds data. Returns the version found."""
    found = connection.execute("PRAGMA user_version").fetchone()[0]
    if found > SCHEMA_VERSION:  # checked again here: another process may have upgraded it
        raise LibraryTooNew(f"The library was upgraded by a newer Easel (format {found}) "
                            "while opening; update Easel to open it.")
    if found == SCHEMA_VERSION:
        return found
    if found > 0:
        back_up()
    for version in range(found, SCHEMA_VERSION):
        with writing(connection):
            # Re-read inside the lock: another process may have migrated meanwhile.
            if connection.execute("PRAGMA user_version").fetchone()[0] != version:
                continue
            for statement in _statements(MIGRATIONS[version]):
                connection.execute(statement)
            connection.execute(f"PRAGMA user_version = {version + 1}")
    return found


def quick_check(connection: sqlite3.Connection) -> bool:
    try:
        rows = connection.execute("PRAGMA quick_check").fetchall()
    except sqlite3.DatabaseError:
        return False
    return rows == [("ok",)]


def integrity_check(connection: sqlite3.Connection) -> list[str]:
    return [row[0] for row in connection.execute("PRAGMA integrity_check").fetchall()]


def _statements(script: str) -> list[str]:
    """Split a schema script into statements (executescript would COMMIT on its own)."""
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        if line.lstrip().startswith("--"):
            continue
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    if current.strip():
        raise LibraryError("The library schema script is incomplete.")  # a bug, not input
    return statements
