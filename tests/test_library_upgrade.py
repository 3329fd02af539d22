"""Upgrades keep data: a library written by an earlier release opens with today's code, with
its pictures, prompts, lineage, favourites, tags and prompt history (issue 15, item 7).

Each ``tests/fixtures/library-v<N>/`` is a library in format N, written by the release that
introduced it (``tests/fixtures/make_library_fixture.py`` says which and how to add the next
one). It is opened from a copy: opening may migrate, back up and write a log.

A library in a format newer than the code knows is refused in one sentence and left as it
was: ``test_a_library_from_a_newer_easel_is_refused_and_left_unchanged`` in
tests/test_library_recovery.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from desktop.library import Library, backups, database
from desktop.library.store import DATABASE_NAME
from tests.fixtures.make_library_fixture import CHAIR, LIGHTHOUSE, SECOND_AT, TAG

FIXTURES = Path(__file__).resolve().parent / "fixtures"
RELEASED = sorted(FIXTURES.glob("library-v*"), key=lambda folder: int(folder.name[9:]))


def test_there_is_a_fixture_of_the_current_format():
    """Made when the format is released, so the next format's code is tested against it."""
    current = f"library-v{database.SCHEMA_VERSION}"
    assert [folder.name for folder in RELEASED][-1] == current, (
        f"make {current}: .venv/bin/python -m tests.fixtures.make_library_fixture")


@pytest.fixture(params=RELEASED, ids=[folder.name for folder in RELEASED])
def old_library(request, tmp_path) -> tuple[Path, int]:
    """A copy of one released library (its data folder) and the format it was written in."""
    home = tmp_path / "home"
    shutil.copytree(request.param, home)
    version = database.stored_version(home / "library" / DATABASE_NAME)
    assert f"library-v{version}" == request.param.name  # the folder is what it says it is
    return home, version


def test_a_released_library_opens_with_its_pictures_and_prompts(old_library):
    home, version = old_library
    with Library.open(home) as library:
        assert library.report.warnings == [] and library.report.quarantined is None
        reconciled = library.report.reconcile  # rows and files agreed as they were left
        assert (reconciled.indexed, reconciled.flagged_missing, reconciled.unreadable) == (
            0, 0, [])
        newest_first = library.search().entries
        assert [(e.prompt, e.negative_prompt, e.seed, e.model, e.operation)
                for e in newest_first] == [
            (p.prompt, p.negative_prompt, p.seed, p.model_name, p.operation)
            for p in (CHAIR, LIGHTHOUSE)]
        chair, lighthouse = newest_first
        assert chair.created_at == SECOND_AT and (chair.width, chair.height) == (16, 16)
        assert chair.source_id == lighthouse.id  # lineage
        assert [e.id for e in library.lineage(chair.id)] == [chair.id, lighthouse.id]
        assert all(e.path.is_file() and not e.missing for e in newest_first)
        # Search runs on the full-text index the old release built.
        assert [e.id for e in library.search("lighthouse").entries] == [lighthouse.id]
        assert [e.id for e in library.search("empty ro").entries] == [chair.id]
        assert [e.id for e in library.search("blurry").entries] == [chair.id, lighthouse.id]
        # What lives only in the database.
        assert [e.id for e in library.search(favourites=True).entries] == [lighthouse.id]
        assert library.tags_of(lighthouse.id) == [TAG]
        prompts = {entry.text: entry.pinned for entry in library.history()}
        assert prompts == {LIGHTHOUSE.prompt: True, CHAIR.prompt: False}
        assert [entry.text for entry in library.history(kind="negative")] == ["blurry, text"]
        stored = library.connection.execute("PRAGMA user_version").fetchone()[0]
    assert stored == database.SCHEMA_VERSION  # migrated, if it was older
    taken = backups.backups(home / "library" / "backups")
    assert (len(taken) >= 1) == (version < database.SCHEMA_VERSION)  # backed up first


def test_a_released_library_takes_new_pictures_and_keeps_its_old_ones(old_library):
    home, _ = old_library
    with Library.open(home) as library:
        [lighthouse] = library.search("lighthouse").entries
        with Image.open(lighthouse.path) as picture:
            assert picture.size == (16, 16)
            added = library.add_generated(np.asarray(picture.convert("RGB")), LIGHTHOUSE)
    with Library.open(home) as library:  # and the next start still reads both
        assert [e.id for e in library.search("lighthouse").entries] == [added.id, lighthouse.id]
        assert library.count() == 3 and library.history()[0].uses == 2
