"""Prompt history: every prompt used, once, with its use count and last use; pins on top."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass

from desktop.library.database import writing

KINDS = ("prompt", "negative")


@dataclass(frozen=True)
class HistoryEntry:
    text: str
    kind: str
    uses: int
    last_used: float
    pinned: bool


def history_key(text: str) -> str:
    """Prompts that differ only in spacing are one prompt."""
    return " ".join(text.split())


def record_use(connection: sqlite3.Connection, text: str, kind: str = "prompt",
               when: float | None = None) -> None:
    """Count one use; the caller holds the write transaction."""
    key = history_key(text)
    if not key:
        return
    connection.execute(
        "INSERT INTO prompts (kind, key, text, uses, last_used) VALUES (?, ?, ?, 1, ?) "
        "ON CONFLICT (kind, key) DO UPDATE SET uses = uses + 1, text = excluded.text, "
        "last_used = max(last_used, excluded.last_used)",
        (kind, key, text.strip(), time.time() if when is None else when))


def entries(connection: sqlite3.Connection, search: str = "", kind: str = "prompt",
            limit: int = 100) -> list[HistoryEntry]:
    """Pinned first, then most recent; ``search`` matches any part of the text."""
    rows = connection.execute(
        "SELECT text, kind, uses, last_used, pinned FROM prompts "
        "WHERE kind = ? AND key LIKE ? ESCAPE '\\' "
        "ORDER BY pinned DESC, last_used DESC, rowid DESC LIMIT ?",
        (kind, f"%{_escape_like(history_key(search))}%", limit)).fetchall()
    return [HistoryEntry(text, kind_, uses, last, bool(pinned))
            for text, kind_, uses, last, pinned in rows]


def set_pinned(connection: sqlite3.Connection, text: str, pinned: bool,
               kind: str = "prompt") -> bool:
    """Pin or unpin; False when the prompt is not in the history."""
    with writing(connection):
        cursor = connection.execute("UPDATE prompts SET pinned = ? WHERE kind = ? AND key = ?",
                                    (int(pinned), kind, history_key(text)))
    return cursor.rowcount > 0


def forget(connection: sqlite3.Connection, text: str, kind: str = "prompt") -> bool:
    with writing(connection):
        cursor = connection.execute("DELETE FROM prompts WHERE kind = ? AND key = ?",
                                    (kind, history_key(text)))
    return cursor.rowcount > 0


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
