"""The installed safety checker at work (issue 21): ``easel generate`` and ``easel edit`` keep
its verdict in each picture's metadata and say which pictures it flagged; without one nothing
changes. In the window (offscreen, a scripted engine with a real checker), a flagged picture's
thumbnail is blurred until it is clicked or chosen as the source, a picture not flagged never
is, and the picture file is never touched."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import Qt
from PySide6.QtGui import QImage

from desktop.app.viewmodels.gallery import FLAGGED_TIP, EntryRole
from desktop.cli import main
from desktop.library import Library
from desktop.model_store import ModelStore
from engine.request import GeneratedImage, GenerationResult
from engine.runtime import RuntimeOptions
from tests.app_windows import studio_window
from tests.test_app import WAIT_MS, ScriptedPipelines, _generate

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
from tests.test_safety_checker import TinyClassifier, export_classifier  # noqa: E402

PROMPT = "a dog on the left, on a green background"


class FlagsAll(torch.nn.Module):
    """A two-class classifier whose "unsafe" class always wins: logits (-4, 4)."""

    def forward(self, picture):
        zero = picture.mean(dim=(1, 2, 3)) * 0  # tied to the input, so the batch stays free
        return torch.stack([zero - 4, zero + 4], dim=1)


def easel_metadata(path: Path) -> dict:
    with Image.open(path) as image:
        return json.loads(image.text["easel"])


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- the command line -------------------------------------------------------------------------

@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("EASEL_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_easel_generate_and_edit_keep_the_verdict_and_say_what_was_flagged(home, tmp_path,
                                                                          capsys):
    graph = export_classifier(FlagsAll(), tmp_path / "flags-all.onnx")
    assert main(["models", "import", str(graph), "--name", "flags-all"]) == 0
    capsys.readouterr()
    unsafe = float(1 / (1 + np.exp(-8.0)))  # softmax((-4, 4))[1]

    assert main(["generate", PROMPT, "--seed", "3", "--count", "2"]) == 0
    said = capsys.readouterr()
    made = said.out.split()
    assert len(made) == 2
    for path in made:
        record = easel_metadata(Path(path))["safety_check"]
        assert record["checker"] == "flags-all" and record["flagged"] is True
        assert record["score"] == pytest.approx(unsafe, abs=1e-5)
        assert (f"easel: warning: the safety checker flags-all flagged {path} (score "
                f"{unsafe:.3g}); it is kept, blurred in the window's gallery."
                ) in said.err.splitlines()
    assert said.err.count("the safety checker flags-all flagged") == 2

    copy = tmp_path / "variation.png"
    assert main(["variations", made[0], "--seed", "5", "--count", "1", "-o", str(copy)]) == 0
    said = capsys.readouterr()
    assert said.out.split() == [str(copy)]
    assert easel_metadata(copy)["safety_check"]["flagged"] is True
    assert f"flags-all flagged {copy} (score" in said.err
    with Library.open(home) as library:  # the gallery reads it from the library's row
        entries = library.search().entries
        assert len(entries) == 3
        assert all(entry.parameters["safety_check"]["flagged"] is True for entry in entries)
    assert main(["gallery", "show", entries[0].id]) == 0
    assert f"safety check:    flagged by flags-all, score {unsafe:.3g}" in (
        capsys.readouterr().out.splitlines())


def test_a_checker_that_cannot_run_loses_no_picture(home, tmp_path, capsys):
    graph = export_classifier(FlagsAll(), tmp_path / "flags-all.onnx")
    assert main(["models", "import", str(graph), "--name", "flags-all"]) == 0
    [installed] = [path for path in (home / "models" / "flags-all").rglob("*.onnx")]
    installed.write_bytes(b"not a graph any more")  # damaged after the import
    capsys.readouterr()
    assert main(["generate", PROMPT, "--seed", "3"]) == 0
    said = capsys.readouterr()
    record = easel_metadata(Path(said.out.split()[0]))["safety_check"]
    assert record["checker"] == "flags-all" and "flagged" not in record
    assert record["error"] and "\n" not in record["error"]
    warnings = [line for line in said.err.splitlines() if "could not check" in line]
    assert warnings == [f"easel: warning: The safety checker flags-all could not check the "
                        f"pictures, so they were saved unchecked: {record['error']}"]


def test_without_a_checker_nothing_is_checked_or_said(home, capsys):
    assert main(["generate", PROMPT, "--seed", "3"]) == 0
    said = capsys.readouterr()
    assert "safety_check" not in easel_metadata(Path(said.out.split()[0]))
    assert "safety checker" not in said.err


# --- the window -------------------------------------------------------------------------------

class CheckedPipelines(ScriptedPipelines):
    """The scripted engine with the window's store, so the installed checker runs on what it
    makes: blocks of red (the tiny classifier flags warm pictures) or of blue (it does not),
    sharp enough that a blurred thumbnail is told from a plain one."""

    def __init__(self, store: ModelStore) -> None:
        super().__init__()
        self.store = store
        self.runtime = RuntimeOptions(providers=("cpu",))

    def run(self, model, request, on_progress, cancel) -> GenerationResult:
        result = super().run(model, request, on_progress, cancel)
        channel = 0 if "red" in request.prompt else 2
        images = tuple(GeneratedImage(blocks(image.pixels.shape[:2], channel), image.parameters)
                       for image in result.images)
        return replace(result, images=images)


def blocks(shape: tuple[int, ...], channel: int) -> np.ndarray:
    """A 16×16 board of bright and dark squares in one colour channel."""
    height, width = shape
    y, x = np.mgrid[0:height, 0:width]
    board = ((y * 16 // height + x * 16 // width) % 2).astype(bool)
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[..., channel] = np.where(board, 250, 30)
    return pixels


@pytest.fixture
def window(qtbot, tmp_path):
    graph = export_classifier(TinyClassifier(), tmp_path / "warm-detector.onnx")
    ModelStore(tmp_path / "models").import_model(graph)
    with studio_window(qtbot, tmp_path, CheckedPipelines) as shown:
        yield shown


def decoration(gallery, row: int) -> np.ndarray:
    return rgb(gallery.index(row).data(Qt.ItemDataRole.DecorationRole).toImage())


def rgb(image: QImage) -> np.ndarray:
    image = image.convertToFormat(QImage.Format.Format_RGB888)
    bits = np.frombuffer(image.constBits(), np.uint8).reshape(image.height(),
                                                              image.bytesPerLine())
    return bits[:, :image.width() * 3].reshape(image.height(), image.width(), 3).copy()


def variation(pixels: np.ndarray) -> float:
    """How much the pixels vary, each colour channel about its own mean."""
    return float(pixels.reshape(-1, 3).astype(np.float64).var(axis=0).sum())


def row_of(gallery, image_id: str) -> int:
    return next(row for row in range(gallery.rowCount()) if gallery.entry(row).id == image_id)


def wait_for_thumbnail(qtbot, gallery, image_id: str) -> None:
    """Until the row's thumbnail has come (painting the row is what asks for it)."""

    def arrived() -> bool:
        gallery.data(gallery.index(row_of(gallery, image_id)), Qt.ItemDataRole.DecorationRole)
        return image_id in gallery._thumbnails

    qtbot.waitUntil(arrived, timeout=WAIT_MS)


def test_a_flagged_picture_is_blurred_until_clicked_and_others_never(qtbot, window):
    studio, gallery = window.studio, window.gallery.model
    red = _generate(qtbot, window, "a red board")
    # Not shown on the canvas unasked either: the new flagged picture is blurred there too.
    assert studio.canvas_entry.id == red.entries[0].id
    assert variation(rgb(studio.canvas_image)) < variation(red.pixels[0]) / 10
    blue = _generate(qtbot, window, "a blue board")
    assert np.array_equal(rgb(studio.canvas_image), blue.pixels[0])  # not flagged: as made
    flagged, kept = red.entries[0], blue.entries[0]
    assert flagged.parameters["safety_check"]["checker"] == "warm-detector"
    assert flagged.parameters["safety_check"]["flagged"] is True
    assert kept.parameters["safety_check"]["flagged"] is False
    assert any("flagged 1 picture" in warning for warning in red.warnings)
    assert not blue.warnings
    before = digest(flagged.path)

    for entry in (flagged, kept):
        wait_for_thumbnail(qtbot, gallery, entry.id)
    red_row, blue_row = row_of(gallery, flagged.id), row_of(gallery, kept.id)
    blurred = decoration(gallery, red_row)
    plain_blue = decoration(gallery, blue_row)
    assert gallery.is_hidden(flagged) and not gallery.is_hidden(kept)
    assert FLAGGED_TIP in gallery.index(red_row).data(Qt.ItemDataRole.ToolTipRole)
    assert FLAGGED_TIP not in gallery.index(blue_row).data(Qt.ItemDataRole.ToolTipRole)
    assert variation(plain_blue) > 3000  # the picture not flagged shows its squares

    grid = window.gallery.grid
    grid.scrollTo(gallery.index(red_row))
    qtbot.mouseClick(grid.viewport(), Qt.MouseButton.LeftButton,
                     pos=grid.visualRect(gallery.index(red_row)).center())
    assert not gallery.is_hidden(flagged)
    assert studio.canvas_entry.id == flagged.id  # the click also opened it on the canvas
    qtbot.waitUntil(lambda: variation(rgb(studio.canvas_image)) > 3000, timeout=WAIT_MS)
    wait_for_thumbnail(qtbot, gallery, flagged.id)
    plain = decoration(gallery, red_row)
    assert plain.shape == blurred.shape
    # Blurred, the squares cannot be made out: almost no variation left (the small mark
    # in its corner is most of what there is).
    assert variation(blurred) < variation(plain) / 10
    assert np.abs(plain.astype(int) - blurred.astype(int)).mean() > 20
    assert FLAGGED_TIP not in gallery.index(red_row).data(Qt.ItemDataRole.ToolTipRole)

    gallery.refresh()  # revealed for the rest of the session, not only until a refresh
    qtbot.waitUntil(lambda: gallery.index(red_row).data(EntryRole) is not None,
                    timeout=WAIT_MS)
    assert not gallery.is_hidden(flagged)
    assert np.array_equal(decoration(gallery, red_row), plain)
    assert not [key for key in gallery._asked if key.startswith("blur:")]
    assert digest(flagged.path) == before and flagged.path.is_file()


def test_choosing_a_flagged_picture_as_the_source_counts_as_the_click(qtbot, window):
    studio, gallery = window.studio, window.gallery.model
    flagged = _generate(qtbot, window, "a red board").entries[0]
    wait_for_thumbnail(qtbot, gallery, flagged.id)
    assert gallery.is_hidden(flagged)
    entry = gallery.index(0).data(EntryRole)
    with qtbot.waitSignal(studio.source_changed, timeout=WAIT_MS):
        studio.use_as_source(entry)
    assert not gallery.is_hidden(flagged)
    assert flagged.id not in gallery._thumbnails  # the blurred one is gone; the plain one next
