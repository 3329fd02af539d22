"""Noticing rows committed by another process (the app while ``easel`` runs, or the reverse).

``PRAGMA data_version`` changes on a connection whenever another connection commits, and
costs no I/O to read, so a GUI can poll it about once a second and reload only when told.
"""

from __future__ import annotations

import sqlite3


class ChangeNotice:
    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection
        self._seen = self._version()

    def changed(self) -> bool:
        """True once after each commit made by another connection since the last call."""
        version = self._version()
        if version == self._seen:
            return False
        self._seen = version
        return True

    def _version(self) -> int:
        return self._connection.execute("PRAGMA data_version").fetchone()[0]
