"""Upscale and Instruct in the window, offscreen, through the real engine.

Upscaling runs the engine's own Lanczos fallback or a tiny hand-made ONNX upscaler (a nearest
2x resize, so no torch is needed); a scripted number of slow "tiles" before the real work
gives the queue something to show and to cancel. Instruct runs the tiny InstructPix2Pix model
of tests/tiny_models_pix2pix.py.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from PIL import Image

from desktop.app import instructing, upscaling
from desktop.app.generation import EnginePipelines, chosen_upscaler
from desktop.app.viewmodels.studio import Studio
from desktop.app.widgets.main_window import MainWindow
from desktop.app.widgets.settings_dialog import SettingsDialog
from desktop.model_store import ModelStore
from engine.errors import Cancelled
from engine.manifest import write_manifest
from engine.request import GenerationParameters, InstructPix2PixRequest
from engine.runtime import CancelToken, RuntimeOptions
from engine.upscale import LANCZOS_NAME, UpscalerDescription, UpscaleRequest, load_upscaler
from tests.app_windows import studio_window

WAIT_MS = 30_000
CPU = RuntimeOptions(providers=("cpu",))


class SlowTiles(EnginePipelines):
    """The real engine, with ``tiles`` scripted tiles of ``tile_s`` seconds before an upscale
    (each checking the cancel token, as the engine's tiles do)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.tiles = 0
        self.tile_s = 0.0
        self.tiles_done = 0
        self.cancel_seen_after: int | None = None
        self.upscalers: list[str | None] = []

    def upscale(self, upscaler, request, on_tile, cancel):
        self.upscalers.append(upscaler)
        for done in range(1, self.tiles + 1):
            if cancel.cancelled:
                self.cancel_seen_after = self.tiles_done
                raise Cancelled("Cancelled.")
            time.sleep(self.tile_s)
            self.tiles_done = done
            on_tile(done, self.tiles)
        return super().upscale(upscaler, request, on_tile, cancel)


@pytest.fixture
def home(tmp_path):
    return tmp_path


@pytest.fixture
def window(qtbot, home):
    with studio_window(qtbot, home, lambda store: SlowTiles(
            store, RuntimeOptions(providers=("cpu",)))) as shown:
        yield shown


def _source_entry(studio: Studio, size: tuple[int, int] = (40, 24)):
    """A library picture with a prompt and seed, as if the window had made it."""
    width, height = size
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([x * 255 // width, y * 255 // height, (x * y) % 256], -1).astype(np.uint8)
    parameters = GenerationParameters(
        "a lighthouse at dusk", "", width, height, 4, 7.0, "euler", 1234, "starter",
        "0" * 16, "starter")
    entry = studio.library.add_generated(pixels, parameters)
    studio.gallery.refresh()
    return entry, pixels


def _gallery_action(window: MainWindow, text: str):
    grid = window.gallery.grid
    grid.setCurrentIndex(grid.model().index(0))
    menu = window.gallery.context_menu()
    return next(action for action in menu.actions() if action.text() == text)


def _metadata(path: Path) -> dict:
    with Image.open(path) as image:
        return json.loads(image.text["easel"])


def _tooltip(studio: Studio, row: int) -> str:
    from PySide6.QtCore import Qt

    studio.gallery.refresh()
    studio.gallery.entry(row)
    return studio.gallery.index(row).data(Qt.ItemDataRole.ToolTipRole)


def test_upscale_2x_from_the_gallery_menu_is_linked_to_its_source(qtbot, window):
    studio = window.studio
    studio.services.pipelines.tiles = 3
    source, pixels = _source_entry(studio)
    seen = []
    studio.jobs.dataChanged.connect(
        lambda *_: seen.append(window.queue.list.model().index(0).data()))
    with qtbot.waitSignal(studio.generated, timeout=WAIT_MS) as done:
        _gallery_action(window, "Upscale 2×").trigger()  # loads the source, then queues
    outcome = done.args[0]
    assert studio.source.image_id == source.id
    (entry,) = outcome.entries
    assert (entry.width, entry.height) == (80, 48)  # twice the size
    assert (entry.operation, entry.source_id) == ("upscale", source.id)
    assert Image.open(entry.path).size == (80, 48)
    assert (studio.canvas_image.width(), studio.canvas_image.height()) == (80, 48)
    # The tiles showed in the queue while it ran.
    assert any(text and "Upscaling, tile (3/3)" in text for text in seen)
    # Saved as `easel upscale` saves: the source's prompt and seed, Lanczos as the model.
    metadata = _metadata(entry.path)
    assert (metadata["prompt"], metadata["seed"]) == ("a lighthouse at dusk", 1234)
    assert metadata["model"]["name"] == LANCZOS_NAME
    assert metadata["source_image_id"] == source.id
    assert [e.id for e in studio.library.lineage(entry.id)] == [entry.id, source.id]
    assert studio.gallery.rowCount() == 2
    assert f"upscale of #{source.id[:6]}" in _tooltip(studio, 0)
    # With no upscaler installed the user is told that Lanczos added no detail.
    assert outcome.warnings == (upscaling.LANCZOS_NOTE,)
    assert "Lanczos resampling" in window.statusBar().currentMessage()
    # Enlarged from the source's own pixels.
    big = np.asarray(Image.open(entry.path).convert("RGB")).astype(int)
    small = np.asarray(Image.fromarray(big.astype(np.uint8)).resize((40, 24))).astype(int)
    assert np.abs(small - pixels).mean() < 8


def test_cancelling_an_upscale_saves_nothing(qtbot, window):
    studio = window.studio
    pipelines = studio.services.pipelines
    pipelines.tiles, pipelines.tile_s = 200, 0.02
    _source_entry(studio)
    _gallery_action(window, "Upscale 4×").trigger()
    qtbot.waitUntil(lambda: pipelines.tiles_done >= 2, timeout=WAIT_MS)
    assert "Upscale 4× of #" in window.queue.list.model().index(0).data()
    with qtbot.waitSignal(studio.runner.cancelled, timeout=WAIT_MS):
        at_cancel = pipelines.tiles_done
        window.cancel_action.trigger()
    assert pipelines.cancel_seen_after - at_cancel <= 1  # within a tile
    assert studio.gallery.rowCount() == 1 and studio.library.count() == 1
    assert studio.jobs.rowCount() == 0


def test_too_large_upscales_are_refused_in_the_engines_words(qtbot, window, home):
    studio = window.studio
    wide = home / "wide.png"
    Image.new("RGB", (2100, 8), "gray").save(wide)
    with qtbot.waitSignal(studio.source_changed, timeout=WAIT_MS):
        assert studio.drops.drop_file(wide)
    window.upscale_instruct.upscale_actions[4].trigger()
    assert "8192 pixels a side" in window.last_problem and "\n" not in window.last_problem
    assert studio.jobs.rowCount() == 0 and studio.services.pipelines.upscalers == []


def _tiny_upscaler(folder: Path) -> Path:
    """An installed 2x upscaler whose network is a nearest-neighbour resize."""
    folder.mkdir(parents=True)
    scales = helper.make_tensor("scales", TensorProto.FLOAT, [4], [1.0, 1.0, 2.0, 2.0])
    graph = helper.make_graph(
        [helper.make_node("Resize", ["image", "", "scales"], ["upscaled"], mode="nearest")],
        "tiny_x2", [helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                                  [1, 3, None, None])],
        [helper.make_tensor_value_info("upscaled", TensorProto.FLOAT, [1, 3, None, None])],
        [scales])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, folder / "model.onnx")
    UpscalerDescription(scale=2, architecture="ONNX").save(folder)
    write_manifest(folder)
    return folder


def test_an_installed_upscaler_runs_in_tiles(qtbot, window, home):
    studio = window.studio
    _tiny_upscaler(home / "models" / "tiny_x2")
    source, pixels = _source_entry(studio, (300, 20))  # two tiles across
    tiles = []
    studio.runner.progressed.connect(lambda _job, progress: tiles.append(
        (progress.stage, progress.step, progress.steps)))
    with qtbot.waitSignal(studio.generated, timeout=WAIT_MS) as done:
        _gallery_action(window, "Upscale 2×").trigger()
    (entry,) = done.args[0].entries
    assert studio.services.pipelines.upscalers == ["tiny_x2"]
    assert (upscaling.TILES_STAGE, 2, 2) in tiles
    assert done.args[0].warnings == ()
    assert _metadata(entry.path)["model"]["name"] == "tiny_x2"
    result = np.asarray(Image.open(entry.path).convert("RGB"))
    assert np.array_equal(result, pixels.repeat(2, axis=0).repeat(2, axis=1))


def test_the_upscaler_chosen_in_the_settings_is_used_while_installed(qtbot, window, home):
    studio = window.studio
    for name in ("a_x2", "b_x2"):
        _tiny_upscaler(home / "models" / name)
    assert studio.upscaler_names() == ["a_x2", "b_x2"]
    dialog = SettingsDialog(studio.settings, studio.upscaler_names())
    dialog.upscaler.setCurrentIndex(dialog.upscaler.findData("b_x2"))
    studio.apply_settings(dialog.chosen())
    _source_entry(studio)
    with qtbot.waitSignal(studio.generated, timeout=WAIT_MS) as done:
        _gallery_action(window, "Upscale 2×").trigger()
    assert _metadata(done.args[0].entries[0].path)["model"]["name"] == "b_x2"
    assert studio.services.pipelines.upscaler == "b_x2"  # hires fix uses the same choice
    # A choice that is no longer installed falls back to the first by name, then Lanczos.
    assert chosen_upscaler(studio.services.store, "removed_x4") == "a_x2"
    assert chosen_upscaler(ModelStore(home / "empty", home / "none"), "b_x2") is None


def test_new_runtime_options_let_the_upscalers_session_go(home):
    folder = _tiny_upscaler(home / "models" / "tiny_x2")
    pipelines = EnginePipelines(ModelStore(home / "models"), CPU)
    request = UpscaleRequest(np.zeros((20, 20, 3), np.uint8), 2)
    pipelines.upscale("tiny_x2", request, lambda done, total: None, CancelToken())
    first = load_upscaler(folder, CPU).session
    assert load_upscaler(folder, CPU).session is first  # kept between upscales

    pipelines.reconfigure(RuntimeOptions(providers=("cpu",), cpu_threads=2), 2)
    pipelines.upscale("tiny_x2", request, lambda done, total: None, CancelToken())
    assert load_upscaler(folder, CPU).session is not first  # made for the old options: gone


def test_instruct_is_refused_for_a_model_that_is_not_instruct_pix2pix(qtbot, window, home):
    studio = window.studio
    action = window.upscale_instruct.instruct_action
    model = studio.prompt.model()
    assert model is not None and model.description.variant == "text-to-image"
    # The action says what it needs instead of failing later.
    assert not action.isEnabled() and "InstructPix2Pix" in action.toolTip()
    assert not window.prompt_panel.image_guidance.isVisibleTo(window.prompt_panel)
    _source_entry(studio)
    path = home / "photo.png"
    Image.new("RGB", (32, 32), "white").save(path)
    with qtbot.waitSignal(studio.source_changed, timeout=WAIT_MS):
        studio.drops.drop_file(path)
    studio.prompt.update(prompt="make it winter")
    window.last_problem = None
    assert studio.instruct() is None
    assert window.last_problem == instructing.wrong_model(model)
    assert "\n" not in window.last_problem and f"'{model.name}' is not one" in (
        window.last_problem)
    assert studio.jobs.rowCount() == 0
    gallery_instruct = _gallery_action(window, "Instruct")  # greyed in the menu too, saying why
    assert not gallery_instruct.isEnabled()
    assert gallery_instruct.toolTip() == instructing.wrong_model(model)


@pytest.mark.slow
def test_instruct_with_the_tiny_pix2pix_model(qtbot, window, home):
    from tests import tiny_models_pix2pix
    from tests.tiny_models_xl import installed_copy

    studio = window.studio
    installed_copy(tiny_models_pix2pix.tiny_pix2pix_onnx(), home / "models" / "pix2pix")
    studio.prompt.reload_models()
    studio.prompt.choose_model("pix2pix")
    action = window.upscale_instruct.instruct_action
    assert action.isEnabled() and action.text() == "Instruct"
    panel = window.prompt_panel
    assert panel.image_guidance.isVisibleTo(panel)
    assert panel.image_guidance.value() == InstructPix2PixRequest.image_guidance  # as the CLI
    panel.image_guidance.setValue(1.2)
    source, _ = _source_entry(studio, (48, 40))
    with qtbot.waitSignal(studio.source_changed, timeout=WAIT_MS):
        studio.use_as_source(source)
    studio.prompt.update(prompt="", steps=2)
    action.trigger()
    assert window.last_problem == instructing.NO_INSTRUCTION
    studio.prompt.update(prompt="make it winter")
    with qtbot.waitSignal(studio.generated, timeout=WAIT_MS) as done:
        action.trigger()
    (entry,) = done.args[0].entries
    assert (entry.operation, entry.source_id) == ("instruct_pix2pix", source.id)
    assert (entry.width, entry.height) == (48, 40)
    metadata = _metadata(entry.path)
    assert metadata["prompt"] == "make it winter" and metadata["image_guidance"] == 1.2
    assert f"changed by instruction from #{source.id[:6]}" in _tooltip(studio, 0)
    # The gallery's Instruct takes the picture under the mouse (the newest, row 0) as source.
    with qtbot.waitSignal(studio.generated, timeout=WAIT_MS) as again:
        _gallery_action(window, "Instruct").trigger()
    (second,) = again.args[0].entries
    assert (second.operation, second.source_id) == ("instruct_pix2pix", entry.id)


def test_reuse_parameters_brings_back_the_image_guidance():
    from desktop.app.parameters import Form, form_from_image

    reused = form_from_image(Form(), "make it winter", "", "pix2pix", 3, 48, 40,
                             {"image_guidance": 1.2})
    assert reused.image_guidance == 1.2
    from_a1111 = form_from_image(Form(), "x", "", "", None, None, None,
                                 {"settings": {"Image CFG scale": "1.7"}})
    assert from_a1111.image_guidance == 1.7
    assert form_from_image(Form(), "x", "", "", None, None, None, {}).image_guidance == 1.5
