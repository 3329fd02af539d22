"""Models › Get models… in the window, offscreen: the catalogue with size, licence and use; Get
shows the licence first, then downloads from a fake Hub on 127.0.0.1 and imports in the job
queue; Cancel stops within a second and keeps the part, which the next Get resumes; the
keep-downloads setting is honoured; failures are the job's one sentence."""

# ruff: noqa: F811 (the fixtures imported below are used as arguments)
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import replace

import huggingface_hub.constants
import pytest

from desktop.app import downloading
from desktop.app.viewmodels.catalogue import CANCELLED, NOTHING_SELECTED
from desktop.app.viewmodels.jobs import describe
from desktop.app.widgets import get_models_dialog
from desktop.app.widgets.settings_dialog import SettingsDialog
from desktop.catalogue import CATALOGUE_ENV
from desktop.settings import Settings
from tests.fake_hub import FakeHub

# The window and its scripted engine, as tests/test_app.py makes them (fixtures).
from tests.test_app import library, pipelines, window  # noqa: F401

torch = pytest.importorskip("torch")
from tests.test_upscale import rrdb_state  # noqa: E402

REPO = "easel-test/tiny-x4"
JOB_MS = 120_000  # a download and a (tiny) import on two busy cores


def _entry(entry_id: str, repo: str, size: int, sha256: str, commit: str, *,
           non_commercial: bool = False) -> dict:
    return {
        "id": entry_id, "name": f"Tiny {entry_id}", "install_as": entry_id,
        "kind": "upscaler", "task": "upscale", "use": "Tests the downloads.",
        "source": {"hub": repo, "revision": commit}, "file_format": "pickle",
        "files": [{"path": "tiny_x4.pth", "size": size, "sha256": sha256}],
        "import": {"family": None, "prediction": None, "distillation": None},
        "licence": {"name": "Test Licence", "non_commercial": non_commercial,
                    "url": "https://example.invalid/licence",
                    "note": "Commercial use is not allowed." if non_commercial else None},
        "gated": False, "disk": {"during_import": 10_000_000, "after_import": 3_000_000},
    }


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A fake Hub with one tiny Real-ESRGAN repo, a catalogue offering it (and a
    non-commercial twin, and one whose repository is missing), the data folder the window's
    library uses, and huggingface_hub pointed at the fake as HF_ENDPOINT would at start."""
    served = FakeHub(tmp_path / "served")
    weights = tmp_path / "weights.pth"
    # Padding, so a stall can fall mid-file.
    torch.save({"params_ema": rrdb_state(4), "padding": torch.zeros(1024 * 1024)}, weights)
    data = weights.read_bytes()
    commit = served.add_repo(REPO)
    served.add_file(REPO, "tiny_x4.pth", data)
    sha256 = hashlib.sha256(data).hexdigest()
    catalogue = {"format": 1, "entries": [
        _entry("tiny-x4", REPO, len(data), sha256, commit),
        _entry("tiny-nc", REPO, len(data), sha256, commit, non_commercial=True),
        _entry("tiny-gone", "easel-test/gone", len(data), sha256, commit)]}
    (tmp_path / "catalogue.json").write_text(json.dumps(catalogue))
    monkeypatch.setenv(CATALOGUE_ENV, str(tmp_path / "catalogue.json"))
    monkeypatch.setenv("EASEL_HOME", str(tmp_path / "home"))  # the window's library root
    monkeypatch.delenv("HF_TOKEN", raising=False)
    constants = huggingface_hub.constants
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", served.endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        served.endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    served.data = data
    served.downloads = tmp_path / "home" / "downloads"
    yield served
    served.close()


@pytest.fixture
def asked(monkeypatch):
    """The confirmations shown, answered Get."""
    shown: list[tuple[str, str]] = []

    def answer(parent, headline: str, details: str) -> bool:
        shown.append((headline, details))
        return True

    monkeypatch.setattr(get_models_dialog, "confirm", answer)
    return shown


def _dialog(window, row: int):
    dialog = window._get_models()
    dialog.table.selectRow(row)
    return dialog


def _get(qtbot, window, row: int = 0) -> int:
    dialog = _dialog(window, row)
    assert dialog.get_button.isEnabled(), dialog.get_button.toolTip()
    dialog.get_button.click()
    running = window.studio.jobs.find(window.studio.jobs.ids()[-1])
    assert running is not None and running.kind == "download"
    return running.id


def _cells(model, row: int) -> list[str]:
    return [model.index(row, column).data() for column in range(model.columnCount())]


def test_the_dialog_lists_the_catalogue(qtbot, window, hub):
    dialog = _dialog(window, -1)
    model = dialog.table.model()
    assert model.rowCount() == 3 and not dialog.error.isVisible()
    name, use, size, licence, status = _cells(model, 0)
    assert (name, use, licence, status) == ("Tiny tiny-x4", "Tests the downloads.",
                                            "Test Licence", "")
    assert size.endswith("MB")
    assert _cells(model, 1)[3] == "Test Licence (no commercial use)"
    assert not dialog.get_button.isEnabled()
    assert dialog.get_button.toolTip() == NOTHING_SELECTED
    dialog.table.selectRow(0)
    assert dialog.get_button.isEnabled()


def test_a_non_commercial_licence_is_said_before_anything_is_fetched(qtbot, window, hub,
                                                                     monkeypatch):
    shown = []
    monkeypatch.setattr(get_models_dialog, "confirm",
                        lambda parent, headline, details: shown.append(details) or False)
    dialog = _dialog(window, 1)
    dialog.get_button.click()
    assert "Licence: Test Licence (no commercial use)." in shown[0]
    assert "Commercial use is not allowed." in shown[0]
    assert "Download: " in shown[0] and "10.0 MB free while it runs" in shown[0]
    assert window.studio.jobs.rowCount() == 0 and hub.requests == []  # declined: nothing


def test_get_runs_in_the_queue_and_installs(qtbot, window, hub, asked):
    studio = window.studio
    seen: list[str] = []
    studio.progress_changed.connect(
        lambda: (row := studio.jobs.running()) and seen.append(describe(row)))
    with qtbot.waitSignal(studio.runner.finished, timeout=JOB_MS):
        _get(qtbot, window, 0)
        assert _cells(studio.catalogue, 0)[4] == "in the queue"
        assert not window.get_models_dialog.get_button.isEnabled()  # not twice
    assert "Licence: Test Licence." in asked[0][1]
    assert "tiny-x4" in [model.name for model in studio.services.store.upscalers()]
    assert hub.ranges("/lfs/") == [(0, len(hub.data))]
    assert any(text.startswith("Downloading Tiny tiny-x4 · ") and " MB" in text
               for text in seen), seen
    assert not (hub.downloads / "tiny-x4").exists()  # deleted after the import (default)
    dialog = window.get_models_dialog
    assert _cells(studio.catalogue, 0)[4] == "installed"
    assert not dialog.get_button.isEnabled()
    assert "installed already" in dialog.get_button.toolTip()


def test_cancel_keeps_the_part_and_the_next_get_resumes_it(qtbot, window, hub, asked):
    studio = window.studio
    half = len(hub.data) // 2
    hub.stall_at = half
    messages: list[str] = []
    studio.message.connect(messages.append)
    _get(qtbot, window, 0)
    qtbot.waitUntil(hub.stalled.is_set, timeout=JOB_MS)
    # The button turns on once the window has heard the job start; a person clicks then.
    qtbot.waitUntil(window.queue.cancel_button.isEnabled, timeout=5000)
    asked_at = time.monotonic()
    with qtbot.waitSignal(studio.runner.cancelled, timeout=5000):
        window.queue.cancel_button.click()
    assert time.monotonic() - asked_at < 1.0
    assert messages[-1] == CANCELLED
    partial = hub.downloads / "tiny-x4" / "tiny_x4.pth.partial"
    assert partial.stat().st_size == half
    hub.abort()
    hub.reset_switches()

    with qtbot.waitSignal(studio.runner.finished, timeout=JOB_MS):
        job_id = _get(qtbot, window, 0)
        assert "resuming after" in studio.jobs.find(job_id).title
    assert "the download resumes from there" in asked[-1][1]
    assert hub.ranges("/lfs/") == [(0, half), (half, len(hub.data))]  # nothing twice
    assert "tiny-x4" in [model.name for model in studio.services.store.upscalers()]


def test_the_keep_downloads_setting_is_honoured(qtbot, window, hub, asked):
    dialog = SettingsDialog(Settings(), [])
    qtbot.addWidget(dialog)
    assert not dialog.keep_downloads.isChecked()  # the default: deleted after the import
    dialog.keep_downloads.setChecked(True)
    chosen = dialog.chosen()
    assert chosen.keep_downloads
    with pytest.raises(ValueError):
        replace(chosen, keep_downloads="yes").validated()
    window.studio.apply_settings(chosen)
    with qtbot.waitSignal(window.studio.runner.finished, timeout=JOB_MS):
        _get(qtbot, window, 0)
    assert (hub.downloads / "tiny-x4" / "tiny_x4.pth").read_bytes() == hub.data


def test_a_failed_download_is_one_sentence(qtbot, window, hub, asked):
    with qtbot.waitSignal(window.studio.runner.failed, timeout=JOB_MS) as failed:
        _get(qtbot, window, 2)
    sentence = failed.args[1]
    assert "easel-test/gone was not found" in sentence
    assert window.last_problem == sentence and "\n" not in sentence
    assert window.studio.jobs.rowCount() == 0
    assert window.get_models_dialog.get_button.isEnabled()  # it can be tried again


def test_a_damaged_catalogue_is_one_sentence_in_the_dialog(qtbot, window, hub, tmp_path,
                                                          monkeypatch):
    (tmp_path / "damaged.json").write_text('{"format": 1, "entries": [')
    monkeypatch.setenv(CATALOGUE_ENV, str(tmp_path / "damaged.json"))
    dialog = _dialog(window, 0)
    assert dialog.error.isVisible()
    assert dialog.error.text() == "The model catalogue 'damaged.json' is not valid JSON."
    assert dialog.table.model().rowCount() == 0 and not dialog.get_button.isEnabled()


def test_progress_reads_bytes_speed_and_time_left():
    assert downloading.progress_text(1_200_000_000, 4_300_000_000, 45e6) == (
        "1.2/4.3 GB · 45 MB/s · 69 s left")
    assert downloading.progress_text(600_000, 1_200_000, 0) == "0.6/1.2 MB"
    assert downloading.progress_text(10**9, 10**9, 2.5e6) == "1.0/1.0 GB · 2.5 MB/s"
