"""``easel generate … --control TYPE:PICTURE`` and ``easel edit … --control``: the installed
ControlNet found by its control and the model's family, the control picture made (canny), the
picture changed by it and recording it; and one sentence for each thing that cannot work."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from desktop.cli import main
from tests import installed_homes
from tests.tiny_controlnets import tiny_sd1_controlnet, tiny_sdxl_controlnet

pytest.importorskip("torch")
pytest.importorskip("diffusers")

SIZE = ["--width", "64", "--height", "48", "--steps", "2", "--seed", "3"]


@pytest.fixture(scope="module")
def home_with_controlnets(tmp_path_factory):
    """A data folder with the tiny SD 1.x, a canny ControlNet for it and an SDXL one."""
    template = tmp_path_factory.mktemp("template") / "home"
    sources = template.parent
    tiny_sd1_controlnet(seed=0).save_pretrained(sources / "control_v11p_sd15_canny")
    tiny_sdxl_controlnet(seed=0).save_pretrained(sources / "controlnet-canny-sdxl")
    with installed_homes.filling(template):
        assert main(["models", "import", str(sources / "control_v11p_sd15_canny")]) == 0
        assert main(["models", "import", str(sources / "controlnet-canny-sdxl")]) == 0
    return template


@pytest.fixture
def home(home_with_controlnets, tmp_path, monkeypatch):
    return installed_homes.copied_home(home_with_controlnets, tmp_path / "home", monkeypatch)


@pytest.fixture
def shapes(tmp_path):
    return installed_homes.save_shapes(tmp_path / "shapes.png")


def generate(tmp_path, name, *extra) -> tuple[np.ndarray, dict, str]:
    target = tmp_path / name
    assert main(["generate", "a red chair", "--model", "tiny", *SIZE, "-o", str(target),
                 *extra]) == 0
    with Image.open(target) as image:
        return np.asarray(image), json.loads(image.text["easel"]), image.text["parameters"]


def test_a_canny_control_steers_and_is_recorded(home, shapes, tmp_path, capsys):
    plain, _, _ = generate(tmp_path, "plain.png")
    steered, metadata, parameters = generate(tmp_path, "steered.png", "--control",
                                             f"canny:{shapes}:0.9:0:0.5")
    assert np.abs(steered.astype(int) - plain.astype(int)).mean() > 0.5
    (control,) = metadata["controls"]
    assert control["controlnet"] == "control_v11p_sd15_canny"
    assert control["control"] == "canny"
    assert (control["weight"], control["start"], control["end"]) == (0.9, 0.0, 0.5)
    assert not control["guess_mode"]
    assert 'ControlNet 0: "Module: canny, Model: control_v11p_sd15_canny [' in parameters
    # The control picture (canny edges of the shapes) is kept by the key the picture records.
    from desktop.library import Library
    from engine.control.pictures import canny_edges

    with Library.open(home) as library:
        kept = library.input_path(control["picture"])
    assert kept is not None
    edges = canny_edges(np.asarray(Image.open(shapes).convert("RGB")))
    assert np.array_equal(np.asarray(Image.open(kept)), edges)
    # The same settings make the same picture; weight 0 makes the plain one.
    again, _, _ = generate(tmp_path, "again.png", "--control", f"canny:{shapes}:0.9:0:0.5")
    assert np.array_equal(again, steered)
    zero, _, _ = generate(tmp_path, "zero.png", "--control", f"canny:{shapes}:0")
    assert np.abs(zero.astype(int) - plain.astype(int)).max() <= 1
    capsys.readouterr()
    assert main(["gallery", "show", metadata["image_id"][:12]]) == 0
    assert "control_v11p_sd15_canny (canny) 0.9 from 0 to 0.5" in capsys.readouterr().out


def test_a_named_controlnet_and_guess_mode(home, shapes, tmp_path):
    _, metadata, parameters = generate(
        tmp_path, "named.png", "--control", f"picture=control_v11p_sd15_canny:{shapes}",
        "--guess-mode")
    (control,) = metadata["controls"]
    assert control["controlnet"] == "control_v11p_sd15_canny" and control["guess_mode"]
    assert "Control Mode: ControlNet is more important" in parameters


def test_an_edit_takes_controls(home, shapes, tmp_path, capsys):
    source = tmp_path / "source.png"
    generate(tmp_path, "source.png")
    capsys.readouterr()
    assert main(["edit", str(source), "a blue chair", "--strength", "0.6", "--seed", "2",
                 "--control", f"canny:{shapes}"]) == 0
    made = capsys.readouterr().out.split()[-1]
    with Image.open(made) as image:
        metadata = json.loads(image.text["easel"])
    assert metadata["operation"] == "image_to_image"
    assert metadata["controls"][0]["controlnet"] == "control_v11p_sd15_canny"


@pytest.mark.parametrize(("option", "sentence"), [
    ("depth:{shapes}", "annotator model"),
    ("canny:{missing}", "missing.png"),
    ("canny=nothing-here:{shapes}", "no installed ControlNet called 'nothing-here'"),
    ("canny=controlnet-canny-sdxl:{shapes}", "is for Stable Diffusion XL models"),
    ("canny:{shapes}:5", "weight"),
    ("canny:{shapes}:1:0.8:0.2", "start"),
    ("sketchy:{shapes}", "not a control type"),
])
def test_what_cannot_work_is_one_sentence(home, shapes, tmp_path, capsys, option, sentence):
    option = option.format(shapes=shapes, missing=tmp_path / "missing.png")
    before = sorted(home.rglob("*.png"))
    assert exit_code(["generate", "a red chair", "--model", "tiny", *SIZE,
                      "--control", option]) != 0
    assert sentence in capsys.readouterr().err
    assert sorted(home.rglob("*.png")) == before, "nothing is made"


def test_guess_mode_alone_is_refused(home, capsys):
    assert exit_code(["generate", "a red chair", "--model", "tiny", *SIZE, "--guess-mode"]) != 0
    assert "add a --control" in capsys.readouterr().err


def exit_code(command: list[str]) -> int:
    """The command's exit status, whether it returns one or argparse exits."""
    try:
        return main(command)
    except SystemExit as exit:
        return int(exit.code)
