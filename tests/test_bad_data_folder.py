"""First start on a data folder Easel cannot write in (read-only, full, a file in the way): one
sentence, from ``easel generate`` on stderr and from the window in a message box, and nothing
half-written: the next start, with the fault gone, is a normal one (issue 15, bad input).

A read-only folder is made with chmod where that stops writes; as root it does not, so the
same faults are also made the way the kernel and SQLite report them: ``os.mkdir`` failing with
EROFS or ENOSPC, and SQLite running out of pages (``max_page_count``) as on a full disk.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

import pytest
from PySide6.QtWidgets import QApplication

import desktop.cli
from desktop.app import launch
from desktop.app.widgets.main_window import MainWindow
from desktop.library import Library
from desktop.library.database import stored_version
from desktop.library.store import DATABASE_NAME

READ_ONLY = ("Easel cannot write in its data folder '{home}' ({why}); make it writable, or "
             "point EASEL_HOME at another folder.")
FULL = ("The disk holding Easel's data folder '{home}' is full; free some space, then start "
        "Easel again.")
IN_THE_WAY = ("Easel cannot make its data folder '{home}': a file is in the way; move it, or "
              "point EASEL_HOME at another folder.")


def _chmod_read_only(tmp_path: Path, monkeypatch) -> tuple[Path, str]:
    home = tmp_path / "home"
    home.mkdir()
    home.chmod(0o555)
    try:
        (home / "probe").touch()
    except PermissionError:
        return home, READ_ONLY.format(home=home, why="permission denied")
    (home / "probe").unlink()
    home.chmod(0o755)
    pytest.skip("chmod does not stop this user (root) from writing; the simulated faults "
                "stand in")


def _mkdir_fails(number: int, existing: bool):
    def make(tmp_path: Path, monkeypatch) -> tuple[Path, str]:
        home = tmp_path / "home"
        if existing:
            home.mkdir()
        real_mkdir = os.mkdir

        def mkdir(path, *args, **kwargs):
            if Path(path).is_relative_to(home) and not Path(path).exists():
                raise OSError(number, os.strerror(number), str(path))
            return real_mkdir(path, *args, **kwargs)

        monkeypatch.setattr(os, "mkdir", mkdir)
        said = FULL if number == errno.ENOSPC else READ_ONLY
        return home, said.format(home=home, why="it is read-only")
    return make


def _below_a_file(tmp_path: Path, monkeypatch) -> tuple[Path, str]:
    (tmp_path / "notes.txt").write_text("not a folder")
    home = tmp_path / "notes.txt" / "home"
    return home, IN_THE_WAY.format(home=home)


def _database_full(tmp_path: Path, monkeypatch) -> tuple[Path, str]:
    """Folders can be made, but the library database gets no room (SQLITE_FULL, as a full
    disk gives): the one fault that reaches SQLite, not only mkdir."""
    home = tmp_path / "home"
    real_connect = sqlite3.connect

    def connect(database, *args, **kwargs):
        connection = real_connect(database, *args, **kwargs)
        if str(database).startswith(str(home)):
            connection.execute("PRAGMA max_page_count = 1")
        return connection

    monkeypatch.setattr(sqlite3, "connect", connect)
    return home, FULL.format(home=home)


FAULTS = {
    "read-only (chmod)": _chmod_read_only,
    "read-only": _mkdir_fails(errno.EROFS, existing=False),
    "read-only, the folder there": _mkdir_fails(errno.EROFS, existing=True),
    "full": _mkdir_fails(errno.ENOSPC, existing=False),
    "full, the folder there": _mkdir_fails(errno.ENOSPC, existing=True),
    "full database": _database_full,
    "a file in the way": _below_a_file,
}


@pytest.fixture(params=FAULTS)
def fault(request, tmp_path, monkeypatch):
    """(the data folder, the sentence expected); ``undo`` takes the fault away again."""
    monkeypatch.setenv("EASEL_CONFIG", str(tmp_path / "config"))
    home, sentence = FAULTS[request.param](tmp_path, monkeypatch)
    monkeypatch.setenv("EASEL_HOME", str(home))
    before = _contents(tmp_path)
    yield home, sentence, before, monkeypatch.undo
    if home.is_dir():
        home.chmod(0o755)


def _contents(folder: Path) -> dict[str, int]:
    """Every file under ``folder`` with its size (folders as -1)."""
    return {str(path.relative_to(folder)): -1 if path.is_dir() else path.stat().st_size
            for path in sorted(folder.rglob("*")) if "config" not in path.parts}


def nothing_half_written(tmp_path: Path, before: dict[str, int], home: Path, undo) -> None:
    """No file with content appeared (empty folders and lock files may: a lock holds at most
    its holder's pid, a note that every start replaces), nothing was moved aside as damaged,
    and the next start, with the fault gone, opens the library with nothing to say. SQLite may
    leave the database's first page: format 0, no tables, which the next start treats as no
    database (the schema and its version commit together)."""
    database = home / "library" / DATABASE_NAME
    if database.is_file():
        assert stored_version(database) == 0
    made = {name: size for name, size in _contents(tmp_path).items()
            if name not in before and tmp_path / name != database and not name.endswith(".lock")}
    assert all(size <= 0 for size in made.values()), sorted(made.items())
    assert not any("quarantine" in name or "backups" in name for name in made)
    undo()
    if home.is_dir():
        home.chmod(0o755)
    if home.parent.is_dir():
        with Library.open(home) as library:
            assert library.report.warnings == [] and library.report.quarantined is None
            assert library.count() == 0


def test_easel_generate_says_it_in_one_sentence(fault, tmp_path, capsys):
    home, sentence, before, undo = fault
    assert desktop.cli.main(["generate", "a red chair", "--steps", "1"]) == 1
    said = capsys.readouterr()
    assert said.err.splitlines()[-1] == f"easel: error: {sentence}", said.err
    assert "Traceback" not in said.err and said.out == ""
    nothing_half_written(tmp_path, before, home, undo)


def test_the_window_says_it_in_a_message_box(fault, tmp_path, qapp, monkeypatch):
    home, sentence, before, undo = fault
    monkeypatch.setattr(launch, "settle_memory", lambda: None)
    dialogs = []
    for kind in ("critical", "information", "warning"):
        monkeypatch.setattr(launch.QMessageBox, kind,
                            lambda parent, title, text: dialogs.append(text))
    assert launch.main(["easel"]) == 1
    assert dialogs == [sentence]
    assert not [widget for widget in QApplication.topLevelWidgets()
                if isinstance(widget, MainWindow) and widget.isVisible()]
    nothing_half_written(tmp_path, before, home, undo)
