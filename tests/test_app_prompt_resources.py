"""The LoRA / embedding picker beside the prompt box: it offers the installed LoRAs and
embeddings that fit the chosen model, puts the chosen one into the prompt at the cursor as an
undoable edit, and follows installs, removals and model changes.

LoRA and embedding files are written here with numpy at a real family's widths (as
tests/test_lora.py and tests/test_embeddings.py make them), so no torch is needed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import Qt

from desktop.app.viewmodels.prompt_resources import lora_tag_span, spaced
from desktop.app.widgets.main_window import MainWindow
from desktop.model_store import ModelStore
from tests import tiny_models
from tests.app_windows import BUILT_IN, studio_window
from tests.test_app import ScriptedPipelines

JOB_MS = 60_000
_LAYER = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k"


def _safetensors(path: Path, tensors: dict[str, np.ndarray]) -> Path:
    header, blobs, offset = {}, [], 0
    for name, values in tensors.items():
        blob = np.ascontiguousarray(values, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(values.shape),
                        "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    path.write_bytes(len(encoded).to_bytes(8, "little") + encoded + b"".join(blobs))
    return path


def lora_file(folder: Path, name: str, family: str) -> Path:
    """One cross-attention layer at the family's text width: what tells a LoRA's family."""
    width = {"sd1": 768, "sdxl": 2048}[family]
    rng = np.random.default_rng(0)
    return _safetensors(folder / f"{name}.safetensors", {
        f"{_LAYER}.lora_down.weight": rng.standard_normal((4, width)),
        f"{_LAYER}.lora_up.weight": rng.standard_normal((640, 4))})


def embedding_file(folder: Path, name: str, family: str) -> Path:
    rng = np.random.default_rng(1)
    tensors = ({"emb_params": rng.standard_normal((2, 768))} if family == "sd1" else
               {"clip_l": rng.standard_normal((2, 768)), "clip_g": rng.standard_normal((2, 1280))})
    return _safetensors(folder / f"{name}.safetensors", tensors)


@pytest.fixture
def store(tmp_path) -> ModelStore:
    """The tiny SD 1.x model installed (so it is the chosen one), beside the starter."""
    store = ModelStore(tmp_path / "models", BUILT_IN)
    (store.root / "tiny-sd1").symlink_to(tiny_models.tiny_onnx("sd1"), target_is_directory=True)
    return store


@pytest.fixture
def window(qtbot, tmp_path, store):
    with studio_window(qtbot, tmp_path, ScriptedPipelines()) as shown:
        yield shown


@pytest.fixture
def installed(qtbot, tmp_path, store):
    """A window over an SD 1.x and an SDXL LoRA and embedding each."""
    files = tmp_path / "files"
    files.mkdir()
    for path in (lora_file(files, "ink", "sd1"), lora_file(files, "xl-ink", "sdxl"),
                 embedding_file(files, "paper", "sd1"), embedding_file(files, "xl-paper", "sdxl")):
        store.import_model(path)
    with studio_window(qtbot, tmp_path, ScriptedPipelines()) as shown:
        yield shown


def menu_lines(window: MainWindow) -> list[str]:
    return [action.text() for action in window.prompt_panel.resources.menu().actions()
            if not action.isSeparator() or action.text()]


def choose(window: MainWindow, name: str) -> None:
    """Choose ``name`` in the picker's menu, as a click on it does."""
    found = [action for action in window.prompt_panel.resources.menu().actions()
             if action.text().split("  —  ")[0] == name]
    assert len(found) == 1 and found[0].isEnabled(), menu_lines(window)
    found[0].trigger()


def type_prompt(qtbot, window: MainWindow, text: str, cursor_at: int) -> None:
    box = window.prompt_panel.prompt
    box.setFocus()
    qtbot.keyClicks(box, text)
    cursor = box.textCursor()
    cursor.setPosition(cursor_at)
    box.setTextCursor(cursor)


def test_fitting_loras_and_embeddings_are_listed_each_with_its_use(installed):
    assert installed.studio.prompt.form.model == "tiny-sd1"
    lines = menu_lines(installed)
    assert lines[0] == "LoRAs" and lines[2] == "Embeddings"  # section titles
    assert lines[1].startswith("ink  —  LoRA for Stable Diffusion 1.x")
    assert lines[3].startswith("paper  —  embedding for Stable Diffusion 1.x")
    names = [line.split("  —  ")[0] for line in lines]
    assert "xl-ink" not in names and "xl-paper" not in names
    assert lines[-1] == "2 more installed for other model families"


def test_the_list_follows_the_chosen_model(installed):
    installed.studio.prompt.choose_model("starter")  # fits neither family
    lines = menu_lines(installed)
    assert "ink" not in [line.split("  —  ")[0] for line in lines]
    assert lines[0] == ("None of the installed LoRAs or embeddings fits 'starter' "
                        "(starter).")
    assert lines[-1] == "4 more installed for other model families"
    installed.studio.prompt.choose_model("tiny-sd1")
    assert [line.split("  —  ")[0] for line in menu_lines(installed)][:2] == ["LoRAs", "ink"]


def test_a_lora_goes_in_at_the_cursor_and_ctrl_z_takes_it_back(qtbot, installed):
    type_prompt(qtbot, installed, "a cat in a hat", len("a cat"))
    choose(installed, "ink")
    box = installed.prompt_panel.prompt
    assert box.toPlainText() == "a cat <lora:ink:1> in a hat"
    assert box.textCursor().position() == len("a cat <lora:ink:1>")
    assert installed.studio.prompt.form.prompt == "a cat <lora:ink:1> in a hat"
    qtbot.keyClick(box, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert box.toPlainText() == "a cat in a hat"
    assert installed.studio.prompt.form.prompt == "a cat in a hat"


def test_an_embedding_goes_in_by_its_name(qtbot, installed):
    type_prompt(qtbot, installed, "a city", len("a city"))
    choose(installed, "paper")
    assert installed.prompt_panel.prompt.toPlainText() == "a city paper"


def test_a_lora_already_in_the_prompt_is_selected_not_added_again(qtbot, installed):
    type_prompt(qtbot, installed, "a cat, <lora:ink:0.6> in a hat", 0)
    choose(installed, "ink")
    box = installed.prompt_panel.prompt
    assert box.toPlainText() == "a cat, <lora:ink:0.6> in a hat"
    assert box.textCursor().selectedText() == "<lora:ink:0.6>"


def test_with_nothing_installed_the_menu_says_so_and_offers_the_ways_in(window):
    assert menu_lines(window) == ["No LoRAs or embeddings are installed.", "Get models…",
                                  "Import model…"]
    note = window.prompt_panel.resources.menu().actions()[0]
    assert not note.isEnabled()


def test_the_list_follows_installs_and_removals(qtbot, window, tmp_path):
    studio = window.studio
    with qtbot.waitSignal(studio.runner.finished, timeout=JOB_MS):
        studio.import_model(lora_file(tmp_path, "ink", "sd1"))
    qtbot.waitUntil(lambda: "ink" in [line.split("  —  ")[0] for line in menu_lines(window)])
    studio.remove_model("ink")
    assert menu_lines(window)[0] == "No LoRAs or embeddings are installed."


def test_the_menu_opens_from_the_button_beside_the_prompt(qtbot, installed):
    button = installed.prompt_panel.resources
    assert button.isVisible() and button.text() == "LoRA / embedding"
    menu = button.menu()
    with qtbot.waitExposed(menu):  # where a click on the button opens it (showMenu blocks)
        menu.popup(button.mapToGlobal(button.rect().bottomLeft()))
    assert menu.isVisible()
    menu.close()


@pytest.mark.parametrize(("before", "after", "expected"), [
    ("", "", "T"),  # an empty prompt
    ("t", "", " T"),  # after a word
    (" ", "\u2029", "T"),  # after a space, at the end (Qt's paragraph end)
    ("(", ":", "T"),  # inside weight brackets, before the weight
    ("t", "w", " T "),  # inside a word: kept apart on both sides
    (",", ",", " T"),
])
def test_a_tag_is_kept_apart_from_the_words_around_it(before, after, expected):
    assert spaced("T", before, after) == expected


def test_a_tag_is_found_whatever_its_weight_and_spacing():
    assert lora_tag_span("a <lora:ink:0.5> cat", "ink") == (2, 16)
    assert lora_tag_span("a <lora: ink >", "ink") == (2, 14)
    assert lora_tag_span("a <lora:inky:1> <lora:ink.v2:1>", "ink") is None
    assert lora_tag_span("ink", "ink") is None
