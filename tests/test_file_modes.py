"""Pictures, exports and copies get the mode the user's umask gives any new file (0644 under
022), though they are written through a temp file; settings stay private (0600)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from desktop import settings as settings_file
from desktop.image_files import save_png
from desktop.library import Library
from desktop.library.atomic import write_atomically
from engine.request import GenerationParameters

pytestmark = pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")

PARAMETERS = GenerationParameters(
    prompt="a red chair", negative_prompt="", width=8, height=8, steps=1, guidance=7.5,
    scheduler="euler", seed=1, model_name="tiny", model_hash="0123", model_family="sd1")
PIXELS = np.full((8, 8, 3), 200, dtype=np.uint8)


@pytest.fixture(params=[0o022, 0o077, 0o002], ids=["022", "077", "002"])
def umask(request):
    """Run the test under this umask; the expected mode of a new file is 0666 less it."""
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_library_pictures_imports_and_exports_follow_the_umask(tmp_path, umask):
    expected = 0o666 & ~umask
    outside = tmp_path / "elsewhere.png"
    Image.new("RGB", (8, 8), "blue").save(outside)
    with Library.open(tmp_path / "home") as library:
        made = library.add_generated(PIXELS, PARAMETERS)
        imported = library.import_file(outside)
        exported = library.export([made.id], tmp_path / "out")
        stripped = library.export([imported.id], tmp_path / "out", strip_metadata=True)
        written = [made.path, imported.path, *exported, *stripped]
        assert [oct(mode(path)) for path in written] == [oct(expected)] * 4
    # Nothing left beside them: the temp files were renamed, not copied.
    assert not [path for path in (tmp_path / "out").iterdir() if path.name.startswith(".")]


def test_copies_written_with_o_follow_the_umask(tmp_path, umask):
    target = save_png(PIXELS, tmp_path / "avocado.png", PARAMETERS)
    assert oct(mode(target)) == oct(0o666 & ~umask)
    with Image.open(target) as image:
        assert image.text["parameters"].startswith("a red chair")


def test_atomic_writes_never_clobber_and_keep_the_mode(tmp_path, umask):
    target = write_atomically(tmp_path / "a.bin", lambda stream: stream.write(b"one"))
    with pytest.raises(FileExistsError):
        write_atomically(target, lambda stream: stream.write(b"two"))
    assert target.read_bytes() == b"one" and oct(mode(target)) == oct(0o666 & ~umask)
    write_atomically(target, lambda stream: stream.write(b"three"), overwrite=True)
    assert target.read_bytes() == b"three" and oct(mode(target)) == oct(0o666 & ~umask)
    assert [path.name for path in tmp_path.iterdir()] == ["a.bin"]


def test_settings_stay_private(tmp_path, umask):
    path = tmp_path / "settings.json"
    settings_file.save(settings_file.Settings(), path)
    assert oct(mode(path)) == oct(0o600)
