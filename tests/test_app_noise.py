"""The prompt panel's noise source and weights: chosen by the user or by Reuse parameters, and
carried into what Generate asks for."""

# ruff: noqa: F811 (the fixtures imported below are used as arguments)
from __future__ import annotations

from dataclasses import replace

from desktop.app.parameters import request_from
from tests.test_app import library, pipelines, window  # noqa: F401


def _pick(box, data) -> None:
    box.setCurrentIndex(box.findData(data))
    box.activated.emit(box.currentIndex())


def test_the_noise_and_weights_boxes_set_what_generate_asks_for(window):
    panel, prompt = window.prompt_panel, window.studio.prompt
    _pick(panel.noise, "torch-cuda")
    _pick(panel.emphasis, "none")
    request = request_from(prompt.form)
    assert (request.generator, request.emphasis) == ("torch-cuda", "none")


def test_the_boxes_show_what_reuse_put_in_the_form(window):
    panel, prompt = window.prompt_panel, window.studio.prompt
    prompt.form = replace(prompt.form, generator="torch-cpu", emphasis="none")
    prompt.form_changed.emit()
    assert (panel.noise.currentData(), panel.emphasis.currentData()) == ("torch-cpu", "none")
    assert panel.noise.currentText() == "A1111 CPU"
