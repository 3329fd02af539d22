"""File › Run batch… and the comparison grid in the window, offscreen, on the real engine with
the built-in starter model (a picture takes a fraction of a second).

A gate in the engine holds a chosen job until the test opens it (or the job is cancelled), so
what the window shows in the middle of a batch is checked without timing anything.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from desktop.app.generation import EnginePipelines
from desktop.app.viewmodels import batch as batch_model
from desktop.app.viewmodels.jobs import describe
from desktop.app.widgets import batch_dialogs
from desktop.batch.grid import Axis, Grid
from desktop.batch.lines import read_batch_file
from engine.runtime import RuntimeOptions
from tests.app_windows import studio_window

WAIT_MS = 60_000


class GatedEngine(EnginePipelines):
    """The real engine; runs after the first ``gate_after`` wait until ``gate`` is set,
    checking the cancel token as the engine's steps do."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.gate_after: int | None = None
        self.gate = threading.Event()
        self.runs = 0

    def run(self, model, request, on_progress, cancel):
        self.runs += 1
        if self.gate_after is not None and self.runs > self.gate_after:
            while not self.gate.is_set():
                cancel.raise_if_cancelled()
                time.sleep(0.01)
        return super().run(model, request, on_progress, cancel)


@pytest.fixture
def window(qtbot, tmp_path):
    with studio_window(qtbot, tmp_path, lambda store: GatedEngine(
            store, RuntimeOptions(providers=("cpu",)))) as shown:
        yield shown


def _batch_file(folder: Path, jobs: list[dict], name: str = "jobs.jsonl") -> Path:
    path = folder / name
    path.write_text("".join(json.dumps(job) + "\n" for job in jobs), encoding="utf-8")
    return path


def _choose(monkeypatch, path: Path | None) -> None:
    """The file dialog answers ``path`` (None: the user closed it)."""
    monkeypatch.setattr(batch_dialogs.QFileDialog, "getOpenFileName",
                        lambda *_: (str(path) if path else "", ""))


def _batch_pictures(studio, file_name: str) -> list[dict]:
    """The batch records of the library's pictures from ``file_name``."""
    records = []
    for entry in studio.library.search().entries:
        record = entry.parameters.get("batch")
        if isinstance(record, dict) and record.get("file") == file_name:
            records.append(record)
    return records


def _job(prompt: str, count: int = 1) -> dict:
    return {"prompt": prompt, "steps": 2, "width": 64, "height": 64, "count": count}


def test_a_batch_file_runs_from_the_file_menu_and_its_pictures_show_as_they_are_saved(
        qtbot, window, tmp_path, monkeypatch):
    studio, engine = window.studio, window.studio.services.pipelines
    path = _batch_file(tmp_path, [_job("a red fox", count=2), _job("a blue boat")])
    _choose(monkeypatch, path)
    engine.gate_after = 1  # the second job waits
    lines = []
    studio.jobs.dataChanged.connect(lambda *_: lines.append(describe(studio.jobs.running())
                                                            if studio.jobs.running() else ""))
    file_menu = window.menuBar().actions()[0].menu()
    next(action for action in file_menu.actions() if action.text() == "Run batch…").trigger()
    assert [row.title for row in (studio.jobs.find(i) for i in studio.jobs.ids())] == [
        "Batch: jobs.jsonl"]
    # The first job's two pictures reach the gallery while the batch still runs.
    qtbot.waitUntil(lambda: studio.gallery.rowCount() == 2, timeout=WAIT_MS)
    assert studio.jobs.running() is not None
    qtbot.waitUntil(lambda: any("1/2 jobs" in line for line in lines), timeout=WAIT_MS)
    line = next(line for line in lines if "1/2 jobs" in line)
    assert "2/3 pictures" in line and "pictures/min" in line and "left" in line
    with qtbot.waitSignal(studio.runner.finished, timeout=WAIT_MS):
        engine.gate.set()
    qtbot.waitUntil(lambda: studio.gallery.rowCount() == 3, timeout=WAIT_MS)
    records = _batch_pictures(studio, "jobs.jsonl")
    assert sorted((record["line"], record["picture"]) for record in records) == [
        (1, 0), (1, 1), (2, 0)]
    qtbot.waitUntil(lambda: "Batch: jobs.jsonl: Done: 3 pictures made" in
                    window.statusBar().currentMessage(), timeout=WAIT_MS)
    assert window.last_problem is None
    assert studio.jobs.rowCount() == 0
    # The status line says where the batch ran, as after a generation ("CPU (2 threads)").
    assert "thread" in studio.device.summary


def test_a_bad_line_is_its_one_sentence_and_nothing_is_queued(qtbot, window, tmp_path,
                                                                monkeypatch):
    studio = window.studio
    path = _batch_file(tmp_path, [_job("a red fox"), {"prompt": "a cat", "steps": "many"}])
    with pytest.raises(Exception) as raised:
        read_batch_file(path)
    _choose(monkeypatch, path)
    window.batches.batch_action.trigger()
    assert window.last_problem == str(raised.value)
    assert window.last_problem.startswith("Line 2:")
    assert studio.jobs.rowCount() == 0 and studio.runner.is_idle()
    assert studio.services.pipelines.runs == 0


def test_a_line_naming_a_model_that_is_not_installed_queues_nothing(qtbot, window, tmp_path,
                                                                     monkeypatch):
    studio = window.studio
    path = _batch_file(tmp_path, [_job("a red fox"), {**_job("a cat"), "model": "nowhere"}])
    _choose(monkeypatch, path)
    window.batches.batch_action.trigger()
    assert window.last_problem.startswith("Line 2:") and "nowhere" in window.last_problem
    assert studio.jobs.rowCount() == 0 and studio.runner.is_idle()


def test_closing_the_file_dialog_queues_nothing(qtbot, window, monkeypatch):
    _choose(monkeypatch, None)
    window.batches.batch_action.trigger()
    assert window.studio.jobs.rowCount() == 0 and window.last_problem is None


def test_cancel_mid_batch_keeps_what_was_made_and_running_again_resumes(
        qtbot, window, tmp_path, monkeypatch):
    studio, engine = window.studio, window.studio.services.pipelines
    path = _batch_file(tmp_path, [_job("a red fox"), _job("a blue boat"), _job("a green hat")])
    _choose(monkeypatch, path)
    engine.gate_after = 1
    window.batches.batch_action.trigger()
    qtbot.waitUntil(lambda: studio.gallery.rowCount() == 1, timeout=WAIT_MS)
    with qtbot.waitSignal(studio.runner.cancelled, timeout=WAIT_MS):
        window.queue.cancel_button.click()
    assert [record["line"] for record in _batch_pictures(studio, "jobs.jsonl")] == [1]
    assert window.statusBar().currentMessage() == batch_model.CANCEL_NOTE
    assert studio.gallery.rowCount() == 1

    engine.gate.set()
    runs_before = engine.runs
    with qtbot.waitSignal(studio.runner.finished, timeout=WAIT_MS):
        window.batches.batch_action.trigger()
    assert engine.runs - runs_before == 2  # the first line is not made again
    assert sorted(record["line"] for record in _batch_pictures(studio, "jobs.jsonl")) == [
        1, 2, 3]
    assert "1 job already done before" in window.statusBar().currentMessage()


def test_a_failing_line_is_summed_up_by_line_and_the_others_are_made(qtbot, window, tmp_path,
                                                                      monkeypatch):
    studio, engine = window.studio, window.studio.services.pipelines

    real_run = EnginePipelines.run

    def failing(model, request, on_progress, cancel):  # line 2 fails in the engine
        from engine.errors import BadRequest

        if request.prompt == "a pink boat":
            raise BadRequest("The engine refused this one.")
        return real_run(engine, model, request, on_progress, cancel)

    monkeypatch.setattr(engine, "run", failing)
    path = _batch_file(tmp_path, [_job("a red fox"), _job("a pink boat"), _job("a green hat")])
    _choose(monkeypatch, path)
    with qtbot.waitSignal(studio.runner.finished, timeout=WAIT_MS):
        window.batches.batch_action.trigger()
    qtbot.waitUntil(lambda: window.last_problem is not None, timeout=WAIT_MS)
    assert "line 2: The engine refused this one." in window.last_problem
    assert "1 line failed" in window.last_problem
    assert sorted(record["line"] for record in _batch_pictures(studio, "jobs.jsonl")) == [1, 3]


def test_the_grid_dialog_makes_a_2x2_grid_and_shows_its_sheet(qtbot, window):
    studio = window.studio
    studio.prompt.update(prompt="a red boat", width=64, height=64, steps=2, seed=11,
                         seed_locked=True)
    file_menu = window.menuBar().actions()[0].menu()
    next(action for action in file_menu.actions() if action.text() == "Comparison grid…"
         ).trigger()
    dialog = window.batches.grid_dialog
    assert dialog is not None
    x, y, z = dialog.axes.values()
    assert (x.chosen(), y.chosen(), z.chosen()) == ("steps", "guidance", None)
    assert x.values.text() and y.values.text()  # suggested from the panel's values
    assert dialog.run_button.isDefault()  # Return runs it
    x.values.setText("2,3")
    y.values.setText("1.5,4")
    assert dialog.count.text().startswith("2 × 2 = 4 pictures")
    with qtbot.waitSignal(studio.generated, timeout=WAIT_MS) as shown:
        dialog.run_button.click()
    (sheet,) = shown.args[0].entries
    assert sheet.operation == "grid"
    assert studio.canvas_entry is not None and studio.canvas_entry.id == sheet.id
    assert not studio.canvas_is_preview
    expected = Grid(studio.batches.base(), Axis("steps", (2, 3)), Axis("guidance", (1.5, 4)))
    cells = _batch_pictures(studio, "grid")
    assert sorted(record["line"] for record in cells if record["picture"] != "sheet") == [
        line.number for line in expected.lines()]
    with Image.open(sheet.path) as picture:
        assert picture.width > 2 * 64 and picture.height > 2 * 64
    qtbot.waitUntil(lambda: studio.gallery.rowCount() == 5, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: "Grid: steps × guidance (4 pictures): Done: 4 pictures made"
                    in window.statusBar().currentMessage(), timeout=WAIT_MS)


def test_the_grid_dialog_says_what_is_wrong_and_will_not_run(qtbot, window):
    window.studio.prompt.update(prompt="a red boat")
    window.batches.grid_action.trigger()
    dialog = window.batches.grid_dialog
    x, y, _ = dialog.axes.values()
    x.values.setText("2,two")
    assert "steps" in dialog.count.text() and "'two'" in dialog.count.text()
    assert not dialog.run_button.isEnabled()
    x.values.setText("2,3")
    y.setting.setCurrentText("steps")  # two axes on one setting
    assert not dialog.run_button.isEnabled()
    y.setting.setCurrentText(batch_dialogs.NO_AXIS)
    assert dialog.run_button.isEnabled()
    assert dialog.count.text().startswith("2 = 2 pictures")
