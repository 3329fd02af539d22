"""`easel generate` saves into the library; `easel gallery` and `easel history` use it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from desktop.cli import main
from desktop.library import Library

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def home(tmp_path, monkeypatch, installed_tiny_sd1):
    home = tmp_path / "home"
    shutil.copytree(installed_tiny_sd1, home / "models" / "tiny")
    monkeypatch.setenv("EASEL_HOME", str(home))
    return home


def generate(*extra: str) -> int:
    return main(["generate", "a red chair", "--model", "tiny", "--width", "64", "--height",
                 "48", "--steps", "2", *extra])


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_generate_saves_into_the_library_and_keeps_the_output_copy(home, tmp_path, capsys):
    assert generate("--seed", "7", "-o", str(tmp_path / "copy.png")) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "copy.png")
    assert generate("--seed", "8", "--negative-prompt", "fog") == 0
    printed = Path(capsys.readouterr().out.strip())
    with Library.open(home) as library:
        entries = library.search().entries
        assert [entry.seed for entry in entries] == [8, 7]
        assert entries[0].path == printed and printed.parent.parent == home / "images"
        history = library.history()
        assert [(entry.text, entry.uses) for entry in history] == [("a red chair", 2)]
    with Image.open(tmp_path / "copy.png") as copy, Image.open(entries[1].path) as saved:
        assert json.loads(copy.text["easel"])["image_id"] == entries[1].id  # one image, one id
        assert np.array_equal(np.asarray(copy), np.asarray(saved))


def test_gallery_commands(home, tmp_path, capsys):
    for seed in (1, 2):
        assert generate("--seed", str(seed)) == 0
    other = tmp_path / "castle.png"
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a castle\nSteps: 20, Seed: 5, Size: 8x8, Model: dreamy")
    Image.new("RGB", (8, 8), "blue").save(other, pnginfo=info)
    assert main(["gallery", "import", str(other)]) == 0
    capsys.readouterr()

    assert main(["gallery", "list"]) == 0
    listed = capsys.readouterr()
    rows = lines(listed.out)
    assert len(rows) == 3 and "a castle" in rows[0] and "3 of 3 pictures" in listed.err
    castle, second, first = (row.split()[0] for row in rows)

    assert main(["gallery", "search", "chai", "--seed", "2"]) == 0
    assert [row.split()[0] for row in lines(capsys.readouterr().out)] == [second]
    assert main(["gallery", "list", "--model", "dreamy", "--paths"]) == 0
    assert str(home / "images") in capsys.readouterr().out

    assert main(["gallery", "favourite", first]) == 0
    assert main(["gallery", "tag", "keep", first, second]) == 0
    assert main(["gallery", "show", first]) == 0
    shown = capsys.readouterr().out
    assert "favourite:       yes" in shown and "tags:            keep" in shown
    assert "seed:            1" in shown

    assert main(["gallery", "export", "--favourites", "--to", str(tmp_path / "out")]) == 0
    [exported] = [Path(line) for line in lines(capsys.readouterr().out)]
    assert exported.parent == tmp_path / "out" and "easel" in Image.open(exported).text
    assert main(["gallery", "export", second, "--strip-metadata", "--to",
                 str(tmp_path / "bare")]) == 0
    [bare] = [Path(line) for line in lines(capsys.readouterr().out)]
    assert not Image.open(bare).text

    assert main(["gallery", "delete", second]) == 0
    assert main(["gallery", "list", "--trash"]) == 0
    assert [row.split()[0] for row in lines(capsys.readouterr().out)[1:]] == [second]
    assert main(["gallery", "restore", second]) == 0
    assert main(["gallery", "delete", castle]) == 0
    assert main(["gallery", "empty-trash"]) == 0
    assert "Deleted 1 picture for good." in capsys.readouterr().out

    assert main(["gallery", "rebuild"]) == 0
    assert "2 pictures in the library" in capsys.readouterr().out
    assert main(["history", "list", "red"]) == 0
    assert "2x" in capsys.readouterr().out and main(["history", "pin", "a red chair"]) == 0
    assert main(["history", "list"]) == 0
    assert capsys.readouterr().out.startswith("pinned")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["gallery", "show", "abcdef"], "No image in the library has the id"),
        (["gallery", "show", "xy"], "is not an image id"),
        (["gallery", "list", "--since", "last week"], "--since takes a date like"),
        (["gallery", "list", "--limit", "0"], "--limit takes 1 to 10000"),
        (["gallery", "export", "--to", "out"], "Name the pictures to export"),
        (["gallery", "export", "--favourites", "--to", "out"], "No pictures match"),
        (["gallery", "import", "missing.png"], "does not exist"),
        (["gallery", "tag", " ", "abcd"], "A tag needs at least one visible character"),
        (["history", "pin", "never typed"], "not in the history"),
    ],
)
def test_bad_gallery_input_is_one_sentence(home, tmp_path, capsys, arguments, message):
    os.chdir(tmp_path)
    assert main(arguments) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("easel: error: ") and message in error
    assert len(error.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_a_jpeg_import_is_refused_in_one_sentence(home, tmp_path, capsys):
    photo = tmp_path / "photo.png"  # named to mislead: the content decides
    Image.new("RGB", (8, 8)).save(photo, format="JPEG")
    assert main(["gallery", "import", str(photo)]) == 1
    assert capsys.readouterr().err.strip() == (
        "easel: error: 'photo.png' is a JPEG file; Easel takes PNG here.")


DELETER = r'''
import sys, time
from pathlib import Path
from desktop.library import Library
home, stop = Path(sys.argv[1]), Path(sys.argv[2])
deleted = []
with Library.open(home) as library:
    while not stop.exists():
        entries = library.search(limit=50).entries
        if len(entries) >= 2:  # delete the oldest, keep the newest
            library.trash([entries[-1].id])
            library.empty_trash()
            deleted.append(str(entries[-1].path))
        library.count("red")
        time.sleep(0.005)
print("\n".join(deleted))
'''


def test_generate_while_another_process_reads_and_deletes(home, tmp_path):
    environment = {**os.environ, "EASEL_HOME": str(home)}
    stop = tmp_path / "stop"
    deleter = subprocess.Popen([sys.executable, "-c", DELETER, str(home), str(stop)],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=environment)
    try:
        generating = subprocess.run(
            [sys.executable, "-m", "desktop.cli", "generate", "a red chair", "--model", "tiny",
             "--width", "64", "--height", "48", "--steps", "1", "--count", "8", "--seed", "1"],
            cwd=ROOT, capture_output=True, text=True, env=environment, timeout=300)
    finally:
        time.sleep(0.1)
        stop.touch()
        deleted, deleter_errors = deleter.communicate(timeout=60)
    assert generating.returncode == 0, generating.stderr
    assert deleter.returncode == 0, deleter_errors
    assert "locked" not in generating.stderr + deleter_errors
    saved, deleted = set(lines(generating.stdout)), set(lines(deleted))
    assert len(saved) == 8 and deleted <= saved and deleted  # it really ran alongside
    with Library.open(home) as library:
        remaining = {str(entry.path) for entry in library.search(trash="include").entries}
    assert remaining == saved - deleted
    assert all(Path(path).exists() for path in remaining)
