"""Never losing data: corruption, full disks, newer libraries, migrations, backups,
reconciling rows with files, and two processes writing at once."""

from __future__ import annotations

import errno
import hashlib
import os
import sqlite3
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from desktop.library import DiskFull, Library, LibraryTooNew, backups, database
from desktop.library.database import integrity_check, use_wal
from engine.request import GenerationParameters

ROOT = Path(__file__).resolve().parent.parent
PARAMETERS = GenerationParameters(
    prompt="a red chair", negative_prompt="", width=16, height=16, steps=4, guidance=7.5,
    scheduler="euler", seed=3, model_name="tiny", model_hash="0123", model_family="sd1")


def add(library: Library, prompt: str, seed: int = 0):
    pixels = np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    return library.add_generated(pixels, replace(PARAMETERS, prompt=prompt, seed=seed))


def files_under(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file()}


def test_settings_took_effect(tmp_path):
    with Library.open(tmp_path) as library:
        connection = library.connection
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert connection.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL
        assert connection.execute("PRAGMA busy_timeout").fetchone()[0] >= 10_000
    # Where WAL cannot be had (here: an in-memory database) the answer is checked, not hoped.
    assert use_wal(sqlite3.connect(":memory:")) is False


def corrupt(path: Path) -> None:
    """Overwrite the middle of the file with noise, as a failing disk or a bad copy would."""
    data = bytearray(path.read_bytes())
    noise = np.random.default_rng(0).integers(0, 256, len(data) // 2, dtype=np.uint8)
    data[len(data) // 4:len(data) // 4 + len(noise)] = noise.tobytes()
    path.write_bytes(bytes(data))


def test_a_corrupt_database_is_quarantined_restored_and_reconciled(tmp_path):
    with Library.open(tmp_path, backup_interval_s=3600) as library:
        before = [add(library, f"before backup {index}", index) for index in range(5)]
        library.set_favourite([before[0].id, before[1].id])
        library.add_tags([before[2].id], ["kept"])
        backup = library.backup_now()
        after = [add(library, f"after backup {index}", 10 + index) for index in range(3)]
        library.set_favourite([before[3].id, after[0].id])  # newer than the last backup
        library.close(back_up=False)
    database_path = tmp_path / "library" / "library.sqlite3"
    corrupt(database_path)
    damaged = hashlib.sha256(database_path.read_bytes()).hexdigest()

    with Library.open(tmp_path) as library:
        report = library.report
        assert report.restored_from == backup
        quarantined = report.quarantined / "library.sqlite3"
        assert hashlib.sha256(quarantined.read_bytes()).hexdigest() == damaged  # kept as is
        assert "was damaged" in report.warnings[0] and "\n" not in report.warnings[0]
        assert report.reconcile.indexed == 3  # the images made after the backup
        entries = library.search(limit=100).entries
        assert {e.id for e in entries} == {e.id for e in before + after}  # every image
        assert {e.id for e in entries if e.favourite} == {before[0].id, before[1].id}
        assert library.tags_of(before[2].id) == ["kept"]
        history = {entry.text for entry in library.history()}
        assert history == {f"before backup {index}" for index in range(5)}  # as backed up
        assert integrity_check(library.connection) == ["ok"]


def test_without_any_backup_the_index_is_rebuilt_from_the_files(tmp_path):
    with Library.open(tmp_path) as library:
        made = [add(library, f"image {index}", index) for index in range(4)]
        library.close(back_up=False)
    for backup in backups.backups(tmp_path / "library" / "backups"):
        backup.unlink()
    (tmp_path / "library" / "library.sqlite3").write_bytes(b"this is not a database at all")
    with Library.open(tmp_path) as library:
        assert library.report.restored_from is None
        assert "rebuilt from the image files" in library.report.warnings[0]
        entries = library.search().entries
        assert {(e.id, e.prompt, e.seed) for e in entries} == {
            (e.id, e.prompt, e.seed) for e in made}
        assert [e.created_at for e in entries] == sorted((e.created_at for e in made),
                                                         reverse=True)


def test_a_library_from_a_newer_easel_is_refused_and_left_unchanged(tmp_path):
    folder = tmp_path / "library"
    folder.mkdir()
    connection = sqlite3.connect(folder / "library.sqlite3")
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("CREATE TABLE future (x)")
    connection.execute(f"PRAGMA user_version = {database.SCHEMA_VERSION + 1}")
    connection.commit()
    connection.close()
    before = {name: (folder / name).read_bytes() for name in files_under(folder)}
    with pytest.raises(LibraryTooNew, match="newer version of Easel") as caught:
        Library.open(tmp_path)
    assert "\n" not in str(caught.value)
    after = {name: (folder / name).read_bytes() for name in files_under(folder)
             if name != "writers.lock"}
    assert after == before


def test_a_migration_backs_up_first_and_a_failed_one_changes_nothing(tmp_path, monkeypatch):
    with Library.open(tmp_path) as library:
        add(library, "old image")
    backups_dir = tmp_path / "library" / "backups"
    for backup in backups.backups(backups_dir):
        backup.unlink()
    monkeypatch.setattr(database, "SCHEMA_VERSION", 2)
    monkeypatch.setattr(database, "MIGRATIONS", [
        database.MIGRATIONS[0],
        "ALTER TABLE images ADD COLUMN rating INTEGER;\nSELECT no_such_function();"])
    with pytest.raises(sqlite3.OperationalError):
        Library.open(tmp_path)
    [backup] = backups.backups(backups_dir)
    monkeypatch.setattr(database, "SCHEMA_VERSION", 1)
    with Library.open(tmp_path) as library:  # still version 1, the half-migration undone
        columns = [row[1] for row in library.connection.execute("PRAGMA table_info(images)")]
        assert "rating" not in columns and library.count() == 1

    monkeypatch.setattr(database, "SCHEMA_VERSION", 2)
    monkeypatch.setattr(database, "MIGRATIONS", [
        database.MIGRATIONS[0], "ALTER TABLE images ADD COLUMN rating INTEGER;"])
    with Library.open(tmp_path) as library:
        assert library.connection.execute("PRAGMA user_version").fetchone() == (2,)
        assert library.count() == 1
    assert len(backups.backups(backups_dir)) == 2  # one more, taken before migrating


def test_disk_full_while_writing_an_image(tmp_path, monkeypatch):
    with Library.open(tmp_path) as library:
        kept = add(library, "kept")
        before = files_under(tmp_path)

        def full(descriptor):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(os, "fsync", full)
        with pytest.raises(DiskFull, match="disk is full") as caught:
            add(library, "lost", 1)
        monkeypatch.undo()
        assert "\n" not in str(caught.value)
        assert files_under(tmp_path) == before  # no temp file, no half image
        assert [e.id for e in library.search().entries] == [kept.id]
        assert library.get(kept.id).path.read_bytes()


def test_disk_full_while_committing_the_row(tmp_path):
    with Library.open(tmp_path) as library:
        kept = add(library, "kept")
        images_before = files_under(library.images_dir)
        pages = library.connection.execute("PRAGMA page_count").fetchone()[0]
        library.connection.execute(f"PRAGMA max_page_count = {pages}")  # SQLITE_FULL
        with pytest.raises(DiskFull, match="library is unchanged"):
            add(library, "a long prompt " * 2000, 1)
        assert files_under(library.images_dir) == images_before  # the written PNG went too
        assert [e.id for e in library.search().entries] == [kept.id]
        assert integrity_check(library.connection) == ["ok"]


def test_disk_full_during_an_export_leaves_no_partial_export(tmp_path, monkeypatch):
    with Library.open(tmp_path / "home") as library:
        entries = [add(library, f"image {index}", index) for index in range(3)]
        calls = []
        real_fsync = os.fsync

        def full_on_third(descriptor):
            calls.append(descriptor)
            if len(calls) == 3:
                raise OSError(errno.ENOSPC, "No space left on device")
            real_fsync(descriptor)

        monkeypatch.setattr(os, "fsync", full_on_third)
        with pytest.raises(DiskFull):
            library.export([entry.id for entry in entries], tmp_path / "out")
        monkeypatch.undo()
        assert list((tmp_path / "out").iterdir()) == []


def test_backups_follow_the_interval_and_the_retention_policy(tmp_path):
    with Library.open(tmp_path, backup_interval_s=3600) as library:
        entry = add(library, "x")  # the first change with no backup yet makes one
        folder = library.backups_dir
        assert len(backups.backups(folder)) == 1
        library.set_favourite([entry.id])
        library.add_tags([entry.id], ["t"])
        assert len(backups.backups(folder)) == 1  # within the interval: none more
        assert backups.is_sound(backups.backups(folder)[0])

    now = time.time()
    folder = tmp_path / "ten-days"
    with sqlite3.connect(":memory:") as source:
        for hours in range(30):  # one every 8 hours, for ten days, oldest last
            backups.make_backup(source, folder, now=now - hours * 8 * 3600)
    taken = [backups.taken_at(path) for path in backups.backups(folder)]
    assert taken[:10] == pytest.approx([now - hours * 8 * 3600 for hours in range(10)],
                                       abs=1e-3)
    # Beyond the ten newest: the newest of each of the last seven days, nothing older.
    older_days = [time.strftime("%Y%m%d", time.localtime(t)) for t in taken[10:]]
    assert older_days and len(set(older_days)) == len(older_days)
    assert all(now - t < backups.KEEP_DAILY_DAYS * 86400 for t in taken[10:])
    assert len(taken) < 30


def test_reconcile_indexes_strays_flags_missing_and_follows_moves(tmp_path):
    with Library.open(tmp_path) as library:
        moved, lost = add(library, "moved", 1), add(library, "lost", 2)
        images = library.images_dir
    stray = images / "dropped by hand.png"
    Image.new("RGB", (8, 8), "red").save(stray)
    (images / "notes.png").write_bytes(b"not really a png")
    os.replace(moved.path, images / "elsewhere.png")
    lost_bytes = lost.path.read_bytes()
    lost.path.unlink()
    (images / ".half-written.png.tmp").write_bytes(b"\x89PNG")

    with Library.open(tmp_path) as library:
        report = library.report.reconcile
        assert (report.indexed, report.flagged_missing, report.temporary_removed) == (2, 1, 1)
        assert report.unreadable == ["notes.png"]  # left alone, not deleted
        assert (images / "notes.png").exists()
        assert library.get(moved.id).path == images / "elsewhere.png"
        assert library.get(lost.id).missing
        [hand] = [e for e in library.search().entries if e.origin == "unknown"]
        assert hand.width == 8 and hand.path == stray
    lost.path.write_bytes(lost_bytes)
    with Library.open(tmp_path) as library:
        assert library.report.reconcile.found_again == 1
        assert not library.get(lost.id).missing
        hand_id = [e for e in library.search().entries if e.origin == "unknown"][0].id
        library.rebuild()
        assert hand_id in {e.id for e in library.search().entries}  # same id from the bytes


def test_temp_files_of_a_live_writer_are_left_alone(tmp_path):
    with Library.open(tmp_path) as first:
        in_progress = first.images_dir / ".being-written.png.tmp"
        in_progress.write_bytes(b"...")
        with Library.open(tmp_path) as second:
            assert second.report.reconcile.temporary_removed == 0
        assert in_progress.exists()
    with Library.open(tmp_path) as alone:
        assert alone.report.reconcile.temporary_removed == 1


WRITER = r'''
import sys
from dataclasses import replace
from pathlib import Path
import numpy as np
from desktop.library import Library
from tests.test_library_recovery import PARAMETERS
with Library.open(Path(sys.argv[1])) as library:
    for index in range(int(sys.argv[2])):
        pixels = np.full((16, 16, 3), index % 256, dtype=np.uint8)
        entry = library.add_generated(pixels, replace(PARAMETERS, seed=index))
        print(entry.id, flush=True)
'''

READER_DELETER = r'''
import sys, time
from pathlib import Path
from desktop.library import Library
deleted = []
deadline = time.monotonic() + 60
with Library.open(Path(sys.argv[1])) as library:
    while time.monotonic() < deadline:
        entries = library.search(limit=50).entries
        if len(entries) >= 2:
            library.trash([entries[-1].id])
            deleted.append(entries[-1].id)
            library.empty_trash()
        library.count("chair")
        if len(deleted) >= int(sys.argv[2]):
            break
print("\n".join(deleted))
'''


def test_two_processes_write_read_and_delete_at_once(tmp_path):
    Library.open(tmp_path).close()
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), "120"], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=environment)
    deleter = subprocess.Popen([sys.executable, "-c", READER_DELETER, str(tmp_path), "40"],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=environment)
    written, writer_errors = writer.communicate(timeout=120)
    deleted, deleter_errors = deleter.communicate(timeout=120)
    assert writer.returncode == 0 and deleter.returncode == 0, writer_errors + deleter_errors
    assert "locked" not in writer_errors + deleter_errors
    written_ids, deleted_ids = set(written.split()), set(deleted.split())
    assert len(written_ids) == 120 and deleted_ids <= written_ids and deleted_ids
    with Library.open(tmp_path) as library:
        remaining = {entry.id for entry in library.search(limit=1000).entries}
        assert remaining == written_ids - deleted_ids  # nothing lost, nothing resurrected
        assert not any(entry.missing for entry in library.search(limit=1000).entries)
