"""How a GPU computes, as the user chooses it: the window's setting ("On a GPU": half or
full precision) and the command line's --precision reach the engine's RuntimeOptions, and a
settings file with a value that makes no sense is set aside like any damaged one."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from desktop import settings as settings_file
from desktop.app.widgets.settings_dialog import SettingsDialog
from desktop.cli import _parser as build_parser
from desktop.cli.common import runtime_options as command_line_options
from desktop.model_prepare import settings_runtime
from desktop.settings import Settings


def test_the_setting_is_kept_and_reaches_the_engine(tmp_path):
    path = tmp_path / "settings.json"
    settings_file.save(Settings(gpu_precision="fp32"), path)
    loaded = settings_file.load(path).settings
    assert loaded.gpu_precision == "fp32"
    assert settings_runtime(loaded).precision == "fp32"
    assert settings_runtime(Settings()).precision == "auto"


def test_an_unknown_precision_in_the_file_is_a_damaged_file(tmp_path):
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"schema": 1, "gpu_precision": "fp8"}), encoding="utf-8")
    loaded = settings_file.load(path)
    assert loaded.settings == Settings() and "damaged" in loaded.message


def test_the_dialog_offers_half_and_full_precision(qtbot):
    dialog = SettingsDialog(Settings(gpu_precision="fp32"), [])
    qtbot.addWidget(dialog)
    assert dialog.precision.currentData() == "fp32"
    dialog.precision.setCurrentIndex(dialog.precision.findData("auto"))
    assert dialog.chosen().gpu_precision == "auto"
    assert "fp16" in dialog.precision.itemText(dialog.precision.findData("auto"))


@pytest.mark.parametrize("given, expected", [([], "auto"), (["--precision", "fp32"], "fp32"),
                                             (["--precision", "fp16"], "fp16")])
def test_the_command_line_passes_precision_on(given, expected):
    arguments = build_parser().parse_args(["generate", "a dog", *given])
    assert command_line_options(arguments).precision == expected


def test_the_command_line_refuses_an_unknown_precision(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["generate", "a dog", "--precision", "fp8"])
    assert "invalid choice: 'fp8'" in capsys.readouterr().err


def test_fp16_asked_for_on_the_cpu_makes_the_starter_picture_without_crashing(tmp_path):
    # onnxruntime 1.31's full optimisation level segfaulted on the starter's fp16 text
    # encoder: a subprocess, so a crash fails this test instead of ending the test run.
    env = {**os.environ, "EASEL_HOME": str(tmp_path / "home"), "EASEL_PROVIDERS": "cpu"}
    made = subprocess.run([sys.executable, "-m", "desktop.cli", "generate", "a dog at the top",
                           "--precision", "fp16", "--steps", "4", "-o", str(tmp_path / "a.png")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr
    assert "running on CPU" in made.stderr and ", fp16" in made.stderr
    assert (tmp_path / "a.png").is_file()
