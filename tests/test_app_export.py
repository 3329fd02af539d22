"""Save as / Export in the window: the File menu and the gallery's context menu copy a picture
into a chosen folder with its prompt and settings, or as pixels only, as `easel gallery
export` does; bad targets get one sentence and leave nothing behind."""

# ruff: noqa: F811 (the fixtures imported below are used as arguments)
from __future__ import annotations

import numpy as np
from PIL import Image
from PySide6.QtWidgets import QFileDialog

from desktop.app.viewmodels.pictures import NOTHING_TO_EXPORT
from desktop.app.widgets.export_actions import WITH_METADATA, WITHOUT_METADATA
from desktop.provenance.reading import NONE, read_credentials

# The window and its scripted engine, as tests/test_app.py makes them (fixtures).
from tests.test_app import _generate, library, pipelines, window  # noqa: F401


def _choose_folder(monkeypatch, folder) -> list[str]:
    """The folder dialog answers ``folder`` (an empty string: the user cancelled)."""
    asked: list[str] = []

    def answer(parent, title, start):  # noqa: ANN001, ANN202
        asked.append(title)
        return str(folder)

    monkeypatch.setattr(QFileDialog, "getExistingDirectory", answer)
    return asked


def test_file_menu_exports_the_canvas_picture_with_and_without_metadata(qtbot, window,
                                                                        tmp_path, monkeypatch):
    entry = _generate(qtbot, window, "a tree on the right").entries[0]
    file_menu = window.menuBar().actions()[0].menu()
    texts = [action.text() for action in file_menu.actions()]
    assert WITH_METADATA in texts and WITHOUT_METADATA in texts
    target = tmp_path / "out"
    asked = _choose_folder(monkeypatch, target)
    window.exports.export_action.trigger()  # nothing selected: the picture on the canvas
    assert asked and (target / entry.path.name).read_bytes() == entry.path.read_bytes()
    with Image.open(target / entry.path.name) as copy:
        assert "a tree on the right" in str(copy.info)

    window.exports.export_bare_action.trigger()  # a second copy, under a new name
    bare = target / f"{entry.path.stem}-1.png"
    with Image.open(bare) as copy, Image.open(entry.path) as original:
        assert np.array_equal(np.asarray(copy), np.asarray(original))
        assert "a tree on the right" not in str(copy.info) and "easel" not in copy.info
    assert "Exported 1 picture" in window.statusBar().currentMessage()


def test_context_menu_exports_the_selected_pictures(qtbot, window, tmp_path, monkeypatch):
    first = _generate(qtbot, window, "a moon on the left").entries[0]
    second = _generate(qtbot, window, "a dog at the top").entries[0]
    grid = window.gallery.grid
    grid.selectAll()
    menu = window.gallery.context_menu()
    bare = next(action for action in menu.actions() if action.text() == WITHOUT_METADATA)
    out = tmp_path / "out"
    _choose_folder(monkeypatch, out)
    bare.trigger()
    names = sorted(path.name for path in out.iterdir())
    assert names == sorted([first.path.name, second.path.name])
    for path in out.iterdir():
        with Image.open(path) as copy:
            assert "parameters" not in copy.info and "easel" not in copy.info
        assert read_credentials(path).state == NONE
    assert window.statusBar().currentMessage().endswith(
        "(the pixels only: no prompt, no settings, no Content Credentials).")


def test_export_cancelled_or_impossible_changes_nothing(qtbot, window, tmp_path, monkeypatch):
    window.last_problem = None
    window.exports.export_action.trigger()  # nothing on the canvas, nothing selected
    assert window.last_problem == NOTHING_TO_EXPORT
    _generate(qtbot, window, "a horse in the centre")
    _choose_folder(monkeypatch, "")  # the dialog cancelled
    assert window.exports.export_action.trigger() is None
    out = tmp_path / "out"
    out.mkdir()
    blocker = out / "a file"
    blocker.write_text("not a folder")
    _choose_folder(monkeypatch, blocker)
    window.last_problem = None
    window.exports.export_action.trigger()
    assert "is a file, not a folder" in window.last_problem and "\n" not in window.last_problem
    assert blocker.read_text() == "not a folder"
    assert sorted(path.name for path in out.iterdir()) == ["a file"]
