"""The content filter where prompts enter: `easel generate` and the window's Generate check
the prompt in the mode the settings file names; "block" stops before anything runs with the
one sentence, "warn" makes the picture and keeps the decision in its metadata."""

# ruff: noqa: F811 (the fixtures imported below are used as arguments)
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

from desktop import settings as settings_file
from desktop.cli import main
from desktop.content_filter.screening import prompt_text
from desktop.settings import Settings
from engine.request import HiresFixRequest, RegionsRequest, TextToImageRequest
from tests.test_app import library, pipelines, window  # noqa: F401 (fixtures)
from tests.test_cli import home, home_with_model, installed  # noqa: F401 (fixtures)


def _set_mode(mode: str) -> None:
    settings_file.save(Settings(content_filter=mode), settings_file.default_path())


def _pictures(home: Path) -> list[Path]:
    return sorted((home / "images").rglob("*.png"))


def test_block_stops_the_command_with_the_term_named(installed, home, capsys):
    _set_mode("block")
    code = main(["generate", "a scene full of gore", "--model", "tiny", "--width", "64",
                 "--height", "48", "--steps", "2"])
    assert code != 0
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "'gore'" in error and "blocks" in error
    assert _pictures(home) == []


def test_warn_makes_the_picture_and_keeps_the_decision(installed, home, capsys):
    assert os.environ["EASEL_CONFIG"]  # never the tester's own settings
    # The default mode is warn.
    code = main(["generate", "a (GORE:1.2) scene", "--model", "tiny", "--width", "64",
                 "--height", "48", "--steps", "2"])
    assert code == 0
    assert "'gore'" in capsys.readouterr().err
    [picture] = _pictures(home)
    with Image.open(picture) as image:
        metadata = json.loads(image.text["easel"])
    assert metadata["content_filter"] == {"mode": "warn", "warned": ["gore"]}


def test_off_checks_nothing(installed, home):
    _set_mode("off")
    assert main(["generate", "a scene full of gore", "--model", "tiny", "--width", "64",
                 "--height", "48", "--steps", "2"]) == 0
    [picture] = _pictures(home)
    with Image.open(picture) as image:
        assert "content_filter" not in json.loads(image.text["easel"])


def test_every_prompt_of_a_request_is_read():
    base = TextToImageRequest(prompt="a calm lake")
    assert prompt_text(HiresFixRequest(base=base)) == "a calm lake"
    regions = RegionsRequest(prompt="a field", regions=[((0, 0, 8, 8), "a gore pile")])
    assert prompt_text(regions) == "a field, a gore pile"


def test_the_window_says_a_blocked_prompt_and_queues_nothing(qtbot, window):
    studio = window.studio
    studio.apply_settings(Settings(content_filter="block"))
    problems: list[str] = []
    studio.problem.connect(problems.append)
    studio.prompt.update(prompt="a scene full of gore")
    assert studio.generate() is None
    assert len(problems) == 1 and "'gore'" in problems[0]
    assert studio.jobs.rowCount() == 0


def test_replace_background_is_checked_too(installed, home, tmp_path, capsys):
    scene = np.full((64, 64, 3), (40, 60, 200), np.uint8)
    scene[16:48, 8:32] = (230, 40, 30)
    Image.fromarray(scene).save(tmp_path / "scene.png")
    arguments = ["replace-background", str(tmp_path / "scene.png"), "a field of gore",
                 "--model", "tiny", "--steps", "2", "--seed", "4"]
    _set_mode("block")
    assert main(arguments) != 0
    assert "'gore'" in capsys.readouterr().err.strip().splitlines()[-1]
    assert _pictures(home) == []
    _set_mode("warn")
    assert main(arguments) == 0
    [picture] = _pictures(home)
    with Image.open(picture) as image:
        assert json.loads(image.text["easel"])["content_filter"] == {"mode": "warn",
                                                                    "warned": ["gore"]}
