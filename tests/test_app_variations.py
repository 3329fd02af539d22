"""Variations in the window (issue 14, item 6): a picture's variations use its own prompt
unless the user typed a new one for it, and one click makes as many as `easel variations`;
the prompt panel shows Strength and the number of variations only with a source picture."""

# ruff: noqa: F811 (the fixtures imported below are used as arguments)
from __future__ import annotations

from PySide6.QtCore import Qt

from desktop.app.parameters import Form
from desktop.cli import _parser
from engine.request import ImageToImageRequest

# The window and its scripted engine, as tests/test_app.py makes them (fixtures).
from tests.test_app import (  # noqa: F401
    _finish,
    _generate,
    _make_source,
    _picture_file,
    library,
    pipelines,
    window,
)


def _cli_variations_count() -> int:
    return _parser().parse_args(["variations", "picture.png"]).count


def _gallery_variations(window):  # noqa: ANN202 (the menu's action)
    grid = window.gallery.grid
    grid.setCurrentIndex(grid.model().index(0))
    menu = window.gallery.context_menu()
    return next(action for action in menu.actions() if action.text() == "Variations")


def _type_prompt(qtbot, window, text: str) -> None:
    box = window.prompt_panel.prompt
    box.selectAll()
    qtbot.keyClicks(box, text)


def test_the_window_makes_as_many_variations_as_the_command_line():
    assert Form().variations == _cli_variations_count() > 1


def test_gallery_variations_use_the_pictures_own_prompt_not_the_leftover_text(
        qtbot, window, pipelines):
    studio = window.studio
    picture = _generate(qtbot, window, "a moon on the left").entries[0]
    _type_prompt(qtbot, window, "words the model never learned")  # meant for another picture
    assert window.prompt_panel.variations.value() == _cli_variations_count()
    outcome = _finish(qtbot, studio, _gallery_variations(window).trigger)
    request = pipelines.requests[-1]
    assert isinstance(request, ImageToImageRequest)
    assert request.prompt == "a moon on the left" and request.count == _cli_variations_count()
    assert [entry.source_id for entry in outcome.entries] == [picture.id] * request.count
    assert window.prompt_panel.prompt.toPlainText() == "words the model never learned"


def test_a_prompt_typed_for_the_source_steers_its_variations(qtbot, window, pipelines,
                                                             tmp_path):
    studio = window.studio
    _generate(qtbot, window, "a dog at the top")
    with qtbot.waitSignal(studio.source_changed):
        studio.use_as_source(studio.gallery.entry(0))
    _finish(qtbot, studio, window.variations_action.trigger)  # nothing typed: its own
    assert pipelines.requests[-1].prompt == "a dog at the top"
    _type_prompt(qtbot, window, "a dog at the top, in the snow")
    window.prompt_panel.variations.setValue(2)
    _finish(qtbot, studio, window.variations_action.trigger)
    request = pipelines.requests[-1]
    assert (request.prompt, request.count) == ("a dog at the top, in the snow", 2)
    # An outside picture that carries no prompt: none, unless one is typed for it.
    _make_source(qtbot, window, _picture_file(tmp_path / "photo.png"))
    _finish(qtbot, studio, window.variations_action.trigger)
    assert pipelines.requests[-1].prompt == ""


def test_strength_and_variations_show_only_with_a_source(qtbot, window, tmp_path):
    panel = window.prompt_panel
    rows = panel.form_layout
    assert not rows.isRowVisible(panel.strength) and not rows.isRowVisible(panel.variations)
    assert not panel.strength.isVisible()
    _make_source(qtbot, window, _picture_file(tmp_path / "photo.png"))
    assert rows.isRowVisible(panel.strength) and rows.isRowVisible(panel.variations)
    assert panel.strength.isVisible()


def test_schedulers_show_the_names_users_know_and_keep_the_engines(qtbot, window):
    box = window.prompt_panel.scheduler
    studio = window.studio
    assert studio.prompt.form.scheduler == "flow_euler"  # the starter model's
    assert box.currentText() == "Euler (flow matching)" and box.currentData() == "flow_euler"
    names = [box.itemText(row) for row in range(box.count())]
    assert all("_" not in name for name in names)
    # A model with the usual samplers: A1111's names on screen, the engine's in the form.
    studio.prompt.models[0] = _usual_model(studio.prompt.models[0])
    window.prompt_panel.show_form()
    names = [box.itemText(row) for row in range(box.count())]
    assert {"Euler", "Euler a", "DPM++ 2M", "DPM++ 2M Karras", "DDIM"} <= set(names)
    row = names.index("DPM++ 2M Karras")
    box.setCurrentIndex(row)
    box.activated.emit(row)
    assert studio.prompt.form.scheduler == "dpmpp_2m_karras"
    assert box.itemData(row, Qt.ItemDataRole.UserRole) == "dpmpp_2m_karras"


def _usual_model(choice):  # noqa: ANN001, ANN202
    """The starter model's choice as if it predicted noise, as SD 1.5 does."""
    from dataclasses import replace

    return replace(choice, description=replace(choice.description, prediction_type="epsilon",
                                               default_scheduler="euler"))
