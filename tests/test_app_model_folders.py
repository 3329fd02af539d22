"""The user's other model folders in the window: the settings list them, the model picker
offers what they hold (told by content), and a model picked from one is imported in the queue
and then used, its file only read."""

# ruff: noqa: F811 (the fixtures imported below are used as arguments)
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from desktop import settings as settings_file
from desktop.app.model_folders import folder_choices, install_name
from desktop.settings import Settings
from tests import tiny_models
from tests.test_app import library, pipelines, window  # noqa: F401

JOB_MS = 120_000


def _fingerprint(folder: Path) -> dict[str, str]:
    return {str(path): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.fixture
def comfy(tmp_path) -> Path:
    """A ComfyUI models folder holding one ONNX model (quick to import) and an upscaler."""
    root = tmp_path / "ComfyUI" / "models"
    (root / "upscale_models").mkdir(parents=True)
    shutil.copytree(tiny_models.tiny_onnx("sd1"), root / "checkpoints" / "tiny sd1 [v2]")
    (root / "upscale_models" / "x4.safetensors").write_bytes(_upscaler_header())
    return root


def _upscaler_header() -> bytes:
    header = json.dumps({"conv_first.weight": {"dtype": "F32", "shape": [1],
                                               "data_offsets": [0, 4]}}).encode()
    return len(header).to_bytes(8, "little") + header + bytes(4)


def test_folder_choices_offer_models_not_yet_imported(comfy, tmp_path):
    choices, problems = folder_choices([str(comfy), str(tmp_path / "unplugged")], set())
    assert [(choice.name, choice.app) for choice in choices] == [("tiny sd1 -v2", "ComfyUI")]
    assert choices[0].path == comfy / "checkpoints" / "tiny sd1 [v2]"
    assert "imported when chosen" in choices[0].label
    assert len(problems) == 1 and "unplugged" in problems[0] and "does not exist" in problems[0]
    assert folder_choices([str(comfy)], {"tiny sd1 -v2"}) == ([], [])  # already imported
    assert install_name(Path("/x/Dream Shaper (8).safetensors")) == "Dream Shaper -8"


def test_the_folders_setting_is_saved_and_checked(tmp_path):
    path = tmp_path / "settings.json"
    settings_file.save(replace(Settings(), model_folders=("/models/comfy",)), path)
    assert settings_file.load(path).settings.model_folders == ("/models/comfy",)
    data = json.loads(path.read_text())
    data["model_folders"] = "/models/comfy"  # not a list
    path.write_text(json.dumps(data))
    loaded = settings_file.load(path)
    assert loaded.settings.model_folders == () and loaded.message


def test_a_model_picked_from_a_folder_is_imported_then_used(qtbot, window, comfy):
    studio, prompt = window.studio, window.studio.prompt
    before = _fingerprint(comfy)
    with qtbot.waitSignal(prompt.models_changed, timeout=JOB_MS,
                          check_params_cb=lambda *args: bool(prompt.folder_models)):
        studio.apply_settings(replace(studio.settings, model_folders=(str(comfy),)))
    assert [choice.name for choice in prompt.folder_models] == ["tiny sd1 -v2"]
    using = prompt.form.model

    prompt.choose_model("tiny sd1 -v2")
    assert prompt.form.model == using  # kept until the import is in
    assert studio.jobs.find(studio.jobs.ids()[-1]).kind == "import"
    qtbot.waitUntil(lambda: prompt.form.model == "tiny sd1 -v2", timeout=JOB_MS)
    assert "tiny sd1 -v2" in [choice.name for choice in prompt.models]
    qtbot.waitUntil(lambda: prompt.folder_models == [], timeout=JOB_MS)
    assert _fingerprint(comfy) == before  # read in place, never changed


def test_the_settings_dialog_edits_the_folders(qtbot):
    from desktop.app.widgets.settings_dialog import SettingsDialog

    dialog = SettingsDialog(replace(Settings(), model_folders=("/a", "/b")))
    qtbot.addWidget(dialog)
    assert dialog.chosen().model_folders == ("/a", "/b")
    dialog.model_folders.setCurrentRow(0)
    dialog.remove_folder.click()
    assert dialog.chosen().model_folders == ("/b",)


def test_the_picker_lists_folder_models_after_the_installed_ones(qtbot, window, comfy):
    studio, box = window.studio, window.prompt_panel.model_box
    with qtbot.waitSignal(studio.prompt.models_changed, timeout=JOB_MS,
                          check_params_cb=lambda *args: bool(studio.prompt.folder_models)):
        studio.apply_settings(replace(studio.settings, model_folders=(str(comfy),)))
    names = [box.itemData(row) for row in range(box.count())]
    assert names[-1] == "tiny sd1 -v2" and names[-2] is None  # after a separator
    assert "imported when chosen" in box.itemText(box.count() - 1)
    box.setCurrentIndex(box.count() - 1)  # the user picks it
    box.activated.emit(box.count() - 1)
    qtbot.waitUntil(lambda: box.currentData() == "tiny sd1 -v2", timeout=JOB_MS)
