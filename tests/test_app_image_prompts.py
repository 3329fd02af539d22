"""The window's Image prompts (issue 18): a reference added from a file is listed, only the
IP-Adapters that fit the model are offered, Generate records the image prompt in the picture
and a removed reference leaves the next picture plain, Variations that keep the meaning make
new pictures at the source's size steered by the source, and what cannot work (no adapter,
hires fix) is one sentence with nothing queued."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from desktop.app.viewmodels.image_prompts import PICTURES_NOT_KEPT
from desktop.app.widgets.image_prompts_panel import NONE_INSTALLED
from desktop.cli import main
from tests import installed_homes, tiny_ip_adapters
from tests.app_windows import tiny_studio
from tests.installed_homes import ENCODER, copied_home

pytest.importorskip("torch")
pytest.importorskip("diffusers")

ADAPTER = tiny_ip_adapters.BASE_FILE.removesuffix(".safetensors")
WAIT_MS = 120_000


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    return installed_homes.home_with_ip_adapter(tmp_path_factory.mktemp("image-prompts") / "home")


@pytest.fixture
def window(qtbot, installed, tmp_path, monkeypatch):
    with tiny_studio(qtbot, copied_home(installed, tmp_path / "home", monkeypatch)) as shown:
        yield shown


@pytest.fixture
def bare_window(qtbot, installed, tmp_path, monkeypatch):
    """The same data folder with the IP-Adapter and its encoder removed."""
    home = copied_home(installed, tmp_path / "bare", monkeypatch)
    for name in (ENCODER, ADAPTER):
        assert main(["models", "remove", name]) == 0
    with tiny_studio(qtbot, home) as shown:
        yield shown


@pytest.fixture
def reference(tmp_path):
    return installed_homes.save_reference(tmp_path / "reference.png")


def _made(qtbot, studio, start) -> list[tuple[np.ndarray, dict]]:  # noqa: ANN001
    """Run ``start`` (Generate, Variations); each saved PNG's pixels and own record."""
    with qtbot.waitSignal(studio.generated, timeout=WAIT_MS) as done:
        assert start() is not None
    pictures = []
    for entry in done.args[0].entries:
        with Image.open(entry.path) as image:
            pictures.append((np.asarray(image.convert("RGB")), json.loads(image.text["easel"])))
    return pictures


def _refused(window, start, words: str) -> None:  # noqa: ANN001
    """``start`` says ``words`` in one sentence and queues nothing."""
    assert start() is None
    assert words in window.last_problem and window.studio.jobs.rowCount() == 0
    assert window.last_problem.count(". ") == 0, "one sentence"


def test_a_reference_from_a_file_is_listed(window, reference, tmp_path):
    image_prompts, panel = window.studio.image_prompts, window.image_prompts_panel
    assert not window.controls_dock.isVisible()  # hidden until used: the gallery has room
    assert panel.hint.isVisibleTo(panel) and not panel.reference_widgets
    assert image_prompts.add_file(reference)
    assert window.controls_dock.isVisible()
    (listed,) = image_prompts.references
    assert listed.name == "reference.png" and listed.pixels.shape == (80, 96, 3)
    (shown,) = panel.reference_widgets
    assert shown.isVisible() and shown.toolTip() == "reference.png"
    assert not shown.picture.pixmap().isNull() and not panel.hint.isVisible()
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a picture")
    assert not image_prompts.add_file(broken)
    assert "broken.png" in window.last_problem and len(image_prompts.references) == 1


def test_only_the_adapters_that_fit_the_model_are_offered(window):
    studio, box = window.studio, window.image_prompts_panel.adapter_box
    assert [box.itemText(i) for i in range(box.count())] == [ADAPTER]
    assert studio.image_prompts.adapter == ADAPTER
    studio.prompt.choose_model("starter")  # another family: nothing fits
    assert box.itemText(0).startswith(NONE_INSTALLED) and "Get models…" in box.itemText(0)
    assert studio.image_prompts.adapter == ""
    studio.prompt.choose_model("tiny")
    assert box.currentText() == ADAPTER and studio.image_prompts.adapter == ADAPTER


def test_generate_records_the_image_prompt_and_a_removed_one_is_gone(
        qtbot, window, reference):
    studio, panel = window.studio, window.image_prompts_panel
    ((plain, record),) = _made(qtbot, studio, studio.generate)
    assert "image_prompts" not in record
    studio.image_prompts.add_file(reference)
    panel.weight.setValue(0.8)
    ((steered, record),) = _made(qtbot, studio, studio.generate)
    (recorded,) = record["image_prompts"]
    assert (recorded["adapter"], recorded["encoder"], recorded["weight"]) == \
        (ADAPTER, ENCODER, 0.8)
    assert np.abs(steered.astype(int) - plain.astype(int)).mean() > 0.5, "the picture steered"
    panel.reference_widgets[0].remove_button.click()
    assert not studio.image_prompts.references
    ((again, record),) = _made(qtbot, studio, studio.generate)
    assert "image_prompts" not in record and np.array_equal(again, plain)


def test_variations_that_keep_the_meaning_read_the_source_at_its_size(
        qtbot, window, tmp_path):
    studio = window.studio
    source = tmp_path / "source.png"  # a size no model makes: rounded down to its multiple
    Image.fromarray(np.random.default_rng(5).integers(0, 256, (53, 71, 3), np.uint8)).save(
        source)
    with qtbot.waitSignal(studio.source_changed, timeout=WAIT_MS):
        assert studio.drops.drop_file(source)
    studio.prompt.update(variations=2)
    window.variations_menu.meaning.trigger()
    assert studio.image_prompts.keep_meaning
    assert window.variations_action.text() == "Variations (meaning)"
    multiple = studio.prompt.model().size_multiple
    size = (71 // multiple * multiple, 53 // multiple * multiple)
    assert size != (71, 53)
    made = _made(qtbot, studio, studio.variations)
    assert len(made) == 2 and not np.array_equal(made[0][0], made[1][0])
    for pixels, record in made:
        assert (pixels.shape[1], pixels.shape[0]) == size
        assert record["operation"] == "text_to_image"
        assert [(p["adapter"], p["weight"]) for p in record["image_prompts"]] == \
            [(ADAPTER, 1.0)]
    window.variations_menu.composition.trigger()  # today's variations: the source redrawn
    pixels, record = _made(qtbot, studio, studio.variations)[0]
    assert record["operation"] == "image_to_image" and pixels.shape == (53, 71, 3)
    assert "image_prompts" not in record


def test_without_an_adapter_keeping_the_meaning_is_one_sentence(qtbot, bare_window,
                                                                reference):
    studio = bare_window.studio
    box = bare_window.image_prompts_panel.adapter_box
    assert box.itemText(0).startswith(NONE_INSTALLED)
    with qtbot.waitSignal(studio.source_changed, timeout=WAIT_MS):
        studio.drops.drop_file(reference)
    studio.image_prompts.set_keep_meaning(True)
    _refused(bare_window, studio.variations, "ip-adapter_sd15.safetensors")
    assert bare_window.last_problem.startswith(
        "Variations that keep the meaning need an IP-Adapter")
    studio.image_prompts.add_file(reference)
    _refused(bare_window, studio.generate, "Image prompts need an IP-Adapter")


def test_hires_fix_with_a_reference_is_refused(window, reference):
    studio = window.studio
    studio.image_prompts.add_file(reference)
    studio.prompt.update(hires_scale=2.0)
    _refused(window, studio.generate, "Image prompts do not steer hires fix")


def test_reuse_brings_back_the_weight_adapter_and_kept_pictures(qtbot, window, reference):
    studio, panel = window.studio, window.image_prompts_panel
    studio.image_prompts.add_file(reference)
    pixels = studio.image_prompts.references[0].pixels.copy()
    panel.weight.setValue(0.6)
    with qtbot.waitSignal(studio.generated, timeout=WAIT_MS) as done:
        studio.generate()
    entry = done.args[0].entries[0]
    panel.reference_widgets[0].remove_button.click()
    panel.weight.setValue(1.5)
    with qtbot.waitSignal(studio.message) as said:
        studio.reuse(entry)
    assert said.args[0] == "Parameters reused."
    assert studio.image_prompts.weight == 0.6 and panel.weight.value() == 0.6
    assert studio.image_prompts.adapter == ADAPTER
    (restored,) = studio.image_prompts.references
    assert np.array_equal(restored.pixels, pixels)
    # A picture whose reference is no longer kept asks for it again.
    studio.library.input_path(entry.parameters["image_prompts"][0]["picture"]).unlink()
    panel.reference_widgets[0].remove_button.click()
    with qtbot.waitSignal(studio.message) as said:
        studio.reuse(entry)
    assert said.args[0].endswith(PICTURES_NOT_KEPT) and not studio.image_prompts.references
