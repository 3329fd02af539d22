"""Hires fix in the window: the prompt panel's setting, the real engine with the starter model
(256 px base, enlarged by the labelled Lanczos fallback, redrawn), reuse, and plain data."""

from __future__ import annotations

import pytest

from desktop.app.parameters import Form, final_size, form_from_image, request_from
from engine.request import HiresFixRequest, TextToImageRequest
from tests.app_windows import real_engine, studio_window

WAIT_MS = 120_000


@pytest.fixture
def window(qtbot, tmp_path):
    with studio_window(qtbot, tmp_path, real_engine) as shown:
        yield shown


def test_hires_fix_makes_the_larger_picture_and_reuse_brings_the_setting_back(qtbot, window):
    studio, panel = window.studio, window.prompt_panel
    assert panel.hires_scale.text() == "Off" and not panel.hires_strength.isEnabled()
    panel.hires_scale.setValue(2.0)
    assert panel.hires_strength.isEnabled()
    panel.hires_strength.setValue(0.3)
    studio.prompt.update(prompt="a red ball on the left", steps=4, seed=11, seed_locked=True)
    stages: list[str] = []
    studio.progress_changed.connect(
        lambda: stages.append(studio.progress.stage) if studio.progress else None)
    job = studio.generate()
    assert studio.jobs.find(job).title.endswith("(hires fix 2×)")
    with qtbot.waitSignal(studio.generated, timeout=WAIT_MS) as done:
        pass
    entry = done.args[0].entries[0]
    assert (entry.width, entry.height) == (512, 512)
    assert entry.parameters["operation"] == "hires_fix"
    assert entry.parameters["base_size"] == [256, 256]
    assert (entry.parameters["scale"], entry.parameters["strength"]) == (2.0, 0.3)
    assert entry.parameters["upscaler"] == "Lanczos"  # no upscaler installed: said as such
    # One progress bar through the stages, in order (the worker may coalesce the quick
    # "upscaling" report with the next one).
    order = [stage for index, stage in enumerate(stages) if stage not in stages[:index]]
    assert order in (["drawing", "upscaling", "refining"], ["drawing", "refining"])

    panel.hires_scale.setValue(1.0)  # off again, and another size
    studio.prompt.update(width=320, height=192)
    studio.reuse(entry)
    assert (studio.prompt.form.width, studio.prompt.form.height) == (256, 256)
    assert panel.hires_scale.value() == 2.0 and panel.hires_strength.value() == 0.3


def test_the_form_makes_a_hires_request_only_when_it_is_on():
    plain = Form(prompt="a cat", width=256, height=192)
    assert isinstance(request_from(plain), TextToImageRequest)
    assert final_size(plain, 64) == (256, 192)
    hires = Form(prompt="a cat", width=256, height=192, hires_scale=1.5, hires_strength=0.45)
    request = request_from(hires)
    assert isinstance(request, HiresFixRequest)
    assert (request.base.width, request.base.height, request.scale, request.strength) == \
        (256, 192, 1.5, 0.45)
    assert final_size(hires, 64) == (384, 256)  # as the engine rounds: 288 to 4 x 64


def test_reusing_a_plain_picture_turns_hires_fix_off():
    form = Form(hires_scale=2.0, strength=0.6)
    plain = form_from_image(form, "a dog", "", "starter", 3, 256, 256,
                            {"operation": "text_to_image", "steps": 8})
    assert plain.hires_scale == 1.0 and (plain.width, plain.height) == (256, 256)
    edited = form_from_image(form, "a dog", "", "starter", 3, 512, 512,
                             {"operation": "hires_fix", "base_size": [256, 192], "scale": 2.0,
                              "strength": 0.35})
    assert (edited.width, edited.height, edited.hires_scale) == (256, 192, 2.0)
    assert edited.hires_strength == 0.35 and edited.strength == 0.6  # the edits' is untouched
