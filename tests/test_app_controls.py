"""The window's Controls section (issue 18): a control added from a file shows its canny
picture, only the ControlNets that fit the model and the type are offered, Generate carries
the control into the picture's record and stops carrying it once removed, a bad control is
one sentence with nothing queued, and Reuse parameters brings the numbers back (not the
picture, which a picture does not keep). The mask tool's strokes become a scribble control,
a control picture is edited on the canvas with the mask tool and comes back used as it is,
and a control picture is saved as a PNG."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import QPointF

from desktop.app.viewmodels.controls import (
    EDIT_FIRST,
    NO_CANVAS_PICTURE,
    NO_STROKES,
    NOT_GREY,
    PICTURES_NOT_KEPT,
)
from desktop.app.widgets.controls_panel import NONE_INSTALLED
from desktop.cli import main
from engine.control.pictures import canny_edges
from tests import installed_homes
from tests.app_windows import tiny_studio

pytest.importorskip("torch")
pytest.importorskip("diffusers")

CONTROLNET = "control_v11p_sd15_canny"
WAIT_MS = 120_000


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A data folder with the tiny SD 1.x model and a canny ControlNet that fits it."""
    from tests.tiny_controlnets import tiny_sd1_controlnet

    template = tmp_path_factory.mktemp("controls") / "home"
    tiny_sd1_controlnet(seed=0).save_pretrained(template.parent / CONTROLNET)
    with installed_homes.filling(template):
        if main(["models", "import", str(template.parent / CONTROLNET)]) != 0:
            _install_directly(template.parent / CONTROLNET, template / "models" / CONTROLNET)
    return template


def _install_directly(source, folder) -> None:
    """The installed folder as the store lays it out, for while importing a diffusers
    ControlNet folder is being finished (the same export, description and manifest)."""
    from diffusers import ControlNetModel

    from engine.control.description import ControlNetDescription
    from engine.export.controlnet import export_controlnet
    from engine.manifest import write_manifest

    controlnet = ControlNetModel.from_pretrained(source)
    export_controlnet(controlnet, folder)
    residuals = len(controlnet.controlnet_down_blocks)
    ControlNetDescription("sd1", "canny", residuals, source.name).save(folder)
    write_manifest(folder)


@pytest.fixture
def window(qtbot, installed, tmp_path, monkeypatch):
    home = installed_homes.copied_home(installed, tmp_path / "home", monkeypatch)
    with tiny_studio(qtbot, home) as shown:
        yield shown


@pytest.fixture
def shapes(tmp_path):
    return installed_homes.save_shapes(tmp_path / "shapes.png")


def _generate(qtbot, studio) -> dict:
    """Generate with the form as it is; the saved PNG's own record."""
    with qtbot.waitSignal(studio.generated, timeout=WAIT_MS) as done:
        assert studio.generate() is not None
    with Image.open(done.args[0].entries[0].path) as image:
        return json.loads(image.text["easel"])


def _refused(window, words: str) -> None:
    """Generate says ``words`` in one sentence and queues nothing."""
    studio = window.studio
    assert studio.generate() is None
    assert words in window.last_problem and studio.jobs.rowCount() == 0


def test_a_control_from_a_file_shows_its_canny_edges(window, shapes):
    controls, panel = window.studio.controls, window.controls_panel
    assert controls.add_file(shapes)
    (row,) = controls.rows
    edges = canny_edges(np.asarray(Image.open(shapes)))
    assert edges.any() and np.array_equal(row.made, edges)
    preview = panel.row_widgets[0].preview
    assert not preview.icon().isNull() and preview.isVisible()
    # Other thresholds make another edge map, once.
    panel.row_widgets[0].low.setValue(400)
    panel.row_widgets[0].high.setValue(900)
    assert np.array_equal(row.made, canny_edges(np.asarray(Image.open(shapes)), 400, 900))
    made = row.made
    controls.update(0, weight=0.5)
    assert row.made is made


def test_only_the_controlnets_that_fit_are_offered(window, shapes):
    studio, panel = window.studio, window.controls_panel
    studio.controls.add_file(shapes)
    box = panel.row_widgets[0].controlnet_box
    assert [box.itemText(i) for i in range(box.count())] == [CONTROLNET]
    studio.controls.set_type(0, "scribble")  # a canny ControlNet does not read scribbles
    assert box.itemText(0).startswith(NONE_INSTALLED) and box.currentData() == ""
    _refused(window, "no installed ControlNet reads scribble")
    studio.controls.set_type(0, "canny")
    assert box.currentText() == CONTROLNET
    studio.prompt.choose_model("starter")  # another family: nothing fits
    assert panel.row_widgets[0].controlnet_box.itemText(0).startswith(NONE_INSTALLED)
    types = panel.row_widgets[0].type_box
    depth = types.model().item(types.findData("depth"))
    assert not depth.isEnabled() and "depth annotator" in depth.toolTip()


def test_generate_records_the_control_and_a_removed_one_is_gone(qtbot, window, shapes):
    studio, panel = window.studio, window.controls_panel
    plain = _generate(qtbot, studio)
    assert "controls" not in plain
    studio.controls.add_file(shapes)
    row = panel.row_widgets[0]
    row.weight.setValue(0.9)
    row.end.setValue(0.5)
    steered = _generate(qtbot, studio)
    (control,) = steered["controls"]
    assert (control["controlnet"], control["control"]) == (CONTROLNET, "canny")
    assert (control["weight"], control["start"], control["end"]) == (0.9, 0.0, 0.5)
    assert not control["guess_mode"]
    row.remove_button.click()
    assert not studio.controls.rows
    assert "controls" not in _generate(qtbot, studio)


def test_a_control_that_would_stop_before_it_starts_is_refused(qtbot, window, shapes):
    window.studio.controls.add_file(shapes)
    row = window.controls_panel.row_widgets[0]
    row.start.setValue(0.6)
    row.end.setValue(0.4)
    _refused(window, "must be less than its end")


def test_an_unreadable_file_or_no_canvas_picture_is_one_sentence(qtbot, window, tmp_path):
    controls = window.studio.controls
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a picture")
    assert not controls.add_file(broken)
    assert "broken.png" in window.last_problem and not controls.rows
    assert not controls.add_from_canvas()
    assert window.last_problem == NO_CANVAS_PICTURE


def test_reuse_brings_back_the_settings_and_the_kept_control_picture(qtbot, window, shapes):
    studio, panel = window.studio, window.controls_panel
    studio.controls.add_file(shapes)
    made = studio.controls.rows[0].made.copy()  # the canny edges
    row = panel.row_widgets[0]
    row.weight.setValue(0.7)
    row.start.setValue(0.25)
    row.end.setValue(0.75)
    panel.guess_mode.setChecked(True)
    with qtbot.waitSignal(studio.generated, timeout=WAIT_MS) as done:
        studio.generate()
    entry = done.args[0].entries[0]
    row.remove_button.click()
    panel.guess_mode.setChecked(False)
    with qtbot.waitSignal(studio.message) as said:
        studio.reuse(entry)
    assert said.args[0] == "Parameters reused."
    (restored,) = studio.controls.rows
    assert (restored.controlnet, restored.weight, restored.start, restored.end) == \
        (CONTROLNET, 0.7, 0.25, 0.75)
    # The control picture the library kept, used as it is (never canny of the edges).
    assert restored.control_type == "picture" and np.array_equal(restored.made, made)
    assert studio.controls.guess_mode and panel.guess_mode.isChecked()
    shown = panel.row_widgets[0]
    assert (shown.weight.value(), shown.start.value(), shown.end.value()) == (0.7, 0.25, 0.75)
    again = _generate(qtbot, studio)
    assert again["controls"][0]["weight"] == 0.7 and again["controls"][0]["guess_mode"]
    assert again["controls"][0]["picture"] == entry.parameters["controls"][0]["picture"]


def test_reuse_of_a_picture_whose_control_picture_is_gone_asks_for_it(qtbot, window, shapes):
    studio, panel = window.studio, window.controls_panel
    studio.controls.add_file(shapes)
    with qtbot.waitSignal(studio.generated, timeout=WAIT_MS) as done:
        studio.generate()
    entry = done.args[0].entries[0]
    studio.library.input_path(entry.parameters["controls"][0]["picture"]).unlink()
    panel.row_widgets[0].remove_button.click()
    with qtbot.waitSignal(studio.message) as said:
        studio.reuse(entry)
    assert said.args[0].endswith(PICTURES_NOT_KEPT)
    assert studio.controls.rows[0].picture is None
    _refused(window, "Control 1 has no picture")
    assert studio.controls.set_picture(0, shapes)  # the picture again: it steers as before
    assert _generate(qtbot, studio)["controls"][0]["controlnet"] == CONTROLNET


# The mask tool: scribbles and edited control pictures --------------------------------------

def _source(qtbot, window, path) -> None:
    """``path`` becomes the source picture (the mask tool paints over it)."""
    with qtbot.waitSignal(window.studio.source_changed, timeout=WAIT_MS):
        assert window.studio.drops.drop_file(path)


def _stroke(mask, start: tuple[int, int], end: tuple[int, int], size: int = 3) -> None:
    """One stroke of the mask tool's brush, in picture pixels."""
    mask.set_brush_size(size)
    mask.begin_stroke(QPointF(*start))
    mask.extend_stroke(QPointF(*end))
    mask.end_stroke()


def test_the_mask_tools_strokes_become_a_scribble_control(qtbot, window, shapes):
    studio, panel = window.studio, window.controls_panel
    panel.from_mask_action.trigger()  # nothing painted: one sentence, nothing added
    assert window.last_problem == NO_STROKES and not studio.controls.rows
    _source(qtbot, window, shapes)
    studio.set_mask_editing(True)
    _stroke(studio.mask, (5, 10), (40, 10))
    painted = studio.mask.pixels() == 255
    panel.from_mask_action.trigger()
    (row,) = studio.controls.rows
    assert row.control_type == "scribble" and row.made.shape == (48, 64, 3)
    assert painted.any() and (row.made[painted] == 255).all() and (row.made[~painted] == 0).all()
    assert np.array_equal(studio.mask.pixels() == 255, painted)  # kept for Inpaint


def test_a_canny_control_picture_is_edited_on_the_canvas(qtbot, window, shapes):
    studio, controls, panel = window.studio, window.studio.controls, window.controls_panel
    controls.add_file(shapes)
    edges = controls.rows[0].made.copy()
    _source(qtbot, window, shapes)
    studio.set_mask_editing(True)
    _stroke(studio.mask, (2, 2), (2, 30))  # the user's own mask, for Inpaint
    studio.set_mask_editing(False)
    own_mask = studio.mask.pixels()
    panel.row_widgets[0].edit_action.trigger()
    assert studio.mask_editing and np.array_equal(studio.mask.pixels(), edges[..., 0])
    assert panel.row_widgets[0].use_button.isVisible()
    assert studio.inpaint() is None and window.last_problem == EDIT_FIRST
    _stroke(studio.mask, (50, 2), (60, 2))  # a new line
    studio.mask.set_erasing(True)
    _stroke(studio.mask, (0, 0), (63, 47), size=1)  # a line of the edges taken away
    studio.mask.set_erasing(False)
    layer = studio.mask.pixels()
    assert layer[2, 55] == 255 and ((edges[..., 0] == 255) & (layer == 0)).any()
    panel.row_widgets[0].use_button.click()
    (row,) = controls.rows
    assert row.control_type == "picture" and np.array_equal(row.made[..., 0], layer)
    assert row.controlnet == CONTROLNET and not panel.row_widgets[0].use_button.isVisible()
    assert np.array_equal(studio.mask.pixels(), own_mask) and not studio.mask_editing
    kept = studio.library.input_path(_generate(qtbot, studio)["controls"][0]["picture"])
    with Image.open(kept) as steered_by:  # Generate used the edited picture
        assert np.array_equal(np.asarray(steered_by.convert("L")), layer)


def test_cancel_or_turning_the_mask_tool_off_leaves_the_control_as_it_was(qtbot, window,
                                                                          shapes):
    studio, controls = window.studio, window.studio.controls
    controls.add_file(shapes)
    edges = controls.rows[0].made.copy()
    _source(qtbot, window, shapes)
    studio.set_mask_editing(True)  # the mask tool was on: it stays on after
    assert controls.edit_on_canvas(0)
    _stroke(studio.mask, (50, 2), (60, 2))
    window.controls_panel.row_widgets[0].cancel_button.click()
    assert np.array_equal(controls.rows[0].made, edges) and controls.rows[0].control_type == "canny"
    assert studio.mask_editing and studio.mask.is_empty() and not studio.mask.is_lent
    assert controls.edit_on_canvas(0)
    studio.set_mask_editing(False)  # Ctrl+M: the edit ends, nothing changed
    assert controls.edited is None and np.array_equal(controls.rows[0].made, edges)
    assert studio.mask.is_empty()


def test_a_grey_picture_keeps_its_greys_and_a_colour_one_is_refused(qtbot, window, shapes,
                                                                    tmp_path):
    studio, controls = window.studio, window.studio.controls
    depth = np.repeat(np.linspace(0, 250, 64, dtype=np.uint8)[np.newaxis], 48, axis=0)
    controls.add_picture(np.repeat(depth[..., np.newaxis], 3, axis=2), "depth", "picture")
    assert not controls.edit_on_canvas(0)  # no source to paint over yet
    _source(qtbot, window, shapes)
    assert controls.edit_on_canvas(0) and np.array_equal(studio.mask.pixels(), depth)
    assert controls.use_edit() and np.array_equal(controls.rows[0].made[..., 0], depth)
    controls.add_file(shapes)
    controls.set_type(1, "picture")  # the colour picture as it is
    assert not controls.edit_on_canvas(1) and window.last_problem == NOT_GREY
    assert controls.edited is None and not studio.mask.is_lent


def test_save_control_picture_writes_the_made_picture(qtbot, window, shapes, tmp_path,
                                                      monkeypatch):
    from PySide6.QtWidgets import QFileDialog

    controls = window.studio.controls
    controls.add_file(shapes)
    wanted = tmp_path / "edges"  # no suffix: .png is added
    monkeypatch.setattr(QFileDialog, "getSaveFileName",
                        lambda *args, **kwargs: (str(wanted), ""))
    window.controls_panel.row_widgets[0].save_action.trigger()
    with Image.open(tmp_path / "edges.png") as saved:
        assert saved.format == "PNG"
        assert np.array_equal(np.asarray(saved.convert("RGB")), controls.rows[0].made)
    assert not controls.save_picture(0, tmp_path / "no such folder" / "x.png")
    assert "could not be saved" in window.last_problem
