"""The window's side of issue 21: Settings › Pictures and content turns Content Credentials,
the prompt in them, the watermark and the filter mode on and off for the next picture, and a
replaced signing key is said once, as a problem."""

# ruff: noqa: F811 (the fixtures imported below are used as arguments)
from __future__ import annotations

from desktop.app.widgets.picture_details import READING
from desktop.app.widgets.settings_dialog import SettingsDialog
from desktop.provenance import keys
from desktop.provenance.reading import NONE, VALID, read_credentials
from desktop.settings import Settings
from tests.test_app import WAIT_MS, library, pipelines, window  # noqa: F401 (fixtures)


def _generate(qtbot, studio, prompt: str = "a quiet harbour"):
    studio.prompt.update(prompt=prompt)
    with qtbot.waitSignal(studio.generated, timeout=WAIT_MS) as done:
        studio.generate()
    return done.args[0]


def test_the_dialog_offers_the_four_choices_with_safe_defaults(qtbot):
    dialog = SettingsDialog(Settings(), [])
    qtbot.addWidget(dialog)
    group = dialog.responsible
    assert group.credentials.isChecked() and not group.prompt.isChecked()
    assert not group.watermark.isChecked()
    assert group.filter.currentData() == "warn"
    group.credentials.setChecked(False)
    assert not group.prompt.isEnabled()  # no credentials, so no prompt in them
    group.filter.setCurrentIndex(group.filter.findData("block"))
    chosen = dialog.chosen()
    assert (chosen.content_credentials, chosen.content_filter) == (False, "block")
    assert chosen.validated() is chosen


def test_turning_credentials_off_applies_to_the_next_picture(qtbot, window):
    studio = window.studio
    signed = _generate(qtbot, studio).entries[0]
    assert read_credentials(signed.path).state == VALID
    studio.apply_settings(Settings(content_credentials=False))
    plain = _generate(qtbot, studio).entries[0]
    assert read_credentials(plain.path).state == NONE
    assert read_credentials(signed.path).state == VALID  # what was made stays as it was


def test_a_replaced_key_is_said_once_as_a_problem(qtbot, window):
    studio = window.studio
    # Damaged before this run first signs (a running Easel keeps the key it read).
    path = keys.identity_path(studio.library.root)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("garbage")
    problems: list[str] = []
    studio.problem.connect(problems.append)
    made = _generate(qtbot, studio).entries[0]
    _generate(qtbot, studio)
    assert len(problems) == 1 and "signing key was damaged" in problems[0]
    assert read_credentials(made.path).state == VALID


def test_picture_details_show_the_fields_and_the_credentials(qtbot, window):
    studio = window.studio
    made = _generate(qtbot, studio, "a red kite over dunes").entries[0]
    window.show_picture_details()  # nothing selected yet: one sentence
    assert window.last_problem == "Select a picture in the gallery to see its details."
    grid = window.gallery.grid
    qtbot.waitUntil(lambda: grid.model().entry(0) is not None, timeout=WAIT_MS)
    grid.setCurrentIndex(grid.model().index(0))
    window.show_picture_details()
    dialog = window.details_dialog
    qtbot.waitUntil(lambda: dialog.text.toPlainText() != READING, timeout=WAIT_MS)
    shown = dialog.text.toPlainText()
    fields = dict(line.split(":", 1) for line in shown.split("\n\n", 1)[0].splitlines())
    assert fields["id"].strip() == made.id
    assert fields["prompt"].strip() == "a red kite over dunes"
    credentials = shown.split("\n\n", 1)[1]
    assert credentials.startswith("Content Credentials: valid")
    assert "Signed by this installation of Easel." in credentials


def test_no_two_window_actions_share_a_shortcut(window):
    from PySide6.QtGui import QKeySequence

    seen: dict[str, str] = {}
    for action in window.findChildren(type(window.generate_action)):
        for shortcut in action.shortcuts():
            key = shortcut.toString(QKeySequence.SequenceFormat.PortableText)
            assert key not in seen or seen[key] == action.text(), (key, seen[key], action.text())
            seen[key] = action.text()
    assert seen["Alt+Return"] == "Picture details…"
