"""The settings and models dialogs as a new user meets them (issue 14, item 6): Settings says
where the data really is, EASEL_HOME included; Remove needs a selected model and says so."""

# ruff: noqa: F811 (the fixtures imported below are used as arguments)
from __future__ import annotations

from pathlib import Path

from desktop.app.widgets.models_dialog import NOTHING_SELECTED, ModelsDialog
from desktop.app.widgets.settings_dialog import SettingsDialog
from desktop.settings import Settings, data_location

# The window and its scripted engine, as tests/test_app.py makes them (fixtures).
from tests.test_app import library, pipelines, window  # noqa: F401


def test_settings_say_where_the_data_really_is(qtbot, tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    monkeypatch.setenv("EASEL_HOME", str(elsewhere))
    dialog = SettingsDialog(Settings(), [], None, elsewhere)
    qtbot.addWidget(dialog)
    words = dialog.location.text()
    assert str(elsewhere) in words and "EASEL_HOME" in words
    assert dialog.location.isVisibleTo(dialog)
    # A data folder chosen in the settings that EASEL_HOME overrides: the real place wins.
    chosen = Settings(data_folder=str(tmp_path / "chosen"))
    assert "EASEL_HOME" in data_location(chosen, elsewhere)
    assert str(tmp_path / "chosen") not in data_location(chosen, elsewhere)
    # The launcher sets EASEL_HOME from the setting when the environment has none.
    monkeypatch.setenv("EASEL_HOME", str(tmp_path / "chosen"))
    assert data_location(chosen, tmp_path / "chosen") == (
        f"In use now: {tmp_path / 'chosen'} (this setting).")
    monkeypatch.delenv("EASEL_HOME")
    standard = Path("/somewhere/standard")
    assert "the standard place" in data_location(Settings(), standard)
    assert str(standard) in data_location(Settings(), standard)


def test_settings_dialog_from_the_window_names_its_data_folder(qtbot, window, monkeypatch):
    shown = []
    monkeypatch.setattr(SettingsDialog, "exec", lambda dialog: shown.append(dialog) or 0)
    window._settings()
    assert str(window.studio.library.root) in shown[0].location.text()


def test_remove_needs_a_selected_model_and_says_so(qtbot, window):
    dialog = ModelsDialog(window.studio, window)
    qtbot.addWidget(dialog)
    assert not dialog.remove_button.isEnabled()
    assert dialog.remove_button.toolTip() == NOTHING_SELECTED
    dialog.table.selectRow(0)
    assert dialog.remove_button.isEnabled()
    dialog.table.clearSelection()
    assert not dialog.remove_button.isEnabled()
