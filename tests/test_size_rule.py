"""One size rule, said and checked the same way at every entry point (issue 14, item 5), and
the starter model drawing a larger picture once and enlarging it, never tiling it (item 4)."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from desktop.app.parameters import ModelChoice
from desktop.app.sizes import size_choices, size_tooltip
from desktop.app.viewmodels.prompt import PromptViewModel
from desktop.cli import main
from desktop.library import ImageEntry, Library
from desktop.model_store import ModelStore
from engine.description import ModelDescription
from engine.errors import BadRequest, ModelError
from engine.model import load_model
from engine.pipelines.hires_fix import HiresFixPipeline
from engine.pipelines.image_to_image import ImageToImagePipeline
from engine.pipelines.native_size import enlarge
from engine.pipelines.outpaint import OutpaintPipeline
from engine.pipelines.regions import RegionsPipeline
from engine.pipelines.text_to_image import TextToImagePipeline
from engine.request import (
    HiresFixRequest,
    ImageToImageRequest,
    OutpaintRequest,
    RegionsRequest,
    TextToImageRequest,
)
from engine.runtime import RuntimeOptions
from engine.size_rule import RULE, RULE_SENTENCE
from engine.starter.training.export import description as starter_description
from tests.app_windows import BUILT_IN

STARTER = BUILT_IN / "starter"
CPU = RuntimeOptions(providers=("cpu",))
ROCKET = "a rocket on the left"
FEW_STEPS = {"steps": 4}


@pytest.fixture(scope="module")
def starter():
    return load_model(STARTER, CPU, "starter")


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("EASEL_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text)


# --- the rule's words ---------------------------------------------------------------------------


def test_the_rule_names_the_multiples_the_models_really_have(starter, installed_tiny_sd1):
    assert starter.description.pixel_multiple == 64 and "64 for the starter" in RULE
    assert ModelDescription.load(installed_tiny_sd1).pixel_multiple == 8
    assert "8 for Stable Diffusion" in RULE


@pytest.mark.parametrize(("command", "rule"), [
    ("generate", RULE), ("regions", RULE), ("outpaint", RULE_SENTENCE)])
def test_every_command_with_sizes_states_the_rule_in_its_help(capsys, command, rule):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    assert rule in one_line(capsys.readouterr().out)


# --- the engine's checks, one per entry point ---------------------------------------------------


def test_text_to_image_refuses_a_size_off_the_multiple_naming_the_model(starter):
    with pytest.raises(BadRequest, match=r"The width must be a positive multiple of 64 pixels, "
                                         r"the pixel multiple of 'starter' \(got 250\)\."):
        TextToImagePipeline(starter).check_inputs(TextToImageRequest(ROCKET, width=250))


def test_regions_and_the_hires_base_size_are_checked_by_the_same_rule(starter):
    message = "a positive multiple of 64 pixels, the pixel multiple of 'starter'"
    with pytest.raises(BadRequest, match=message):
        RegionsPipeline(starter).check_inputs(
            RegionsRequest(ROCKET, [((0, 0, 64, 64), "a moon")], height=300))
    with pytest.raises(BadRequest, match=message):
        HiresFixPipeline(starter).check_inputs(
            HiresFixRequest(TextToImageRequest(ROCKET, width=250, height=256)))


def test_outpaint_sides_keep_the_rule(starter, installed_tiny_sd1):
    picture = np.full((256, 256, 3), 120, dtype=np.uint8)
    with pytest.raises(BadRequest, match=r"The right side must be 0 or a multiple of 64 pixels, "
                                         r"the pixel multiple of 'starter' \(got 50\)"):
        OutpaintPipeline(starter).check_inputs(OutpaintRequest(picture, right=50))
    sd = OutpaintPipeline(load_model(installed_tiny_sd1, CPU, "tiny"))
    small = np.full((64, 64, 3), 120, dtype=np.uint8)
    with pytest.raises(BadRequest, match="0 or a multiple of 8 pixels"):
        sd.check_inputs(OutpaintRequest(small, right=50, **FEW_STEPS))
    sd.check_inputs(OutpaintRequest(small, right=48, **FEW_STEPS))  # a multiple: accepted


def test_variations_take_a_picture_of_any_size(starter):
    """The rule is about sizes asked for; a picture to edit is grown and cropped back."""
    picture = np.full((190, 250, 3), 90, dtype=np.uint8)
    result = ImageToImagePipeline(starter)(ImageToImageRequest(picture, strength=0.5,
                                                               **FEW_STEPS))
    assert result.images[0].pixels.shape == (190, 250, 3)


# --- the command line ---------------------------------------------------------------------------


def test_easel_outpaint_right_50_is_refused_before_any_work(home, tmp_path, capsys):
    source = tmp_path / "source.png"
    assert main(["generate", ROCKET, "--seed", "1", "-o", str(source)]) == 0
    capsys.readouterr()
    assert main(["outpaint", str(source), "--right", "50"]) == 1
    error = capsys.readouterr().err.strip()
    assert error == ("easel: error: The right side must be 0 or a multiple of 64 pixels, the "
                     "pixel multiple of 'starter' (got 50).")
    with Library.open(home) as library:
        assert library.count() == 1  # the source alone


def test_easel_generate_512_with_the_starter_says_how_it_was_drawn(home, tmp_path, capsys):
    output = tmp_path / "big.png"
    assert main(["generate", ROCKET, "--width", "512", "--height", "512", "--seed", "1",
                 "-o", str(output)]) == 0
    assert "drawn at 256 × 256 and enlarged to 512 × 512" in capsys.readouterr().err
    with Image.open(output) as image:
        assert image.size == (512, 512)
        metadata = json.loads(image.text["easel"])
    assert (metadata["width"], metadata["base_size"]) == (512, [256, 256])
    assert (metadata["scale"], metadata["upscaler"]) == (2.0, "nearest")


# --- the starter draws larger pictures once, enlarged -------------------------------------------


def test_a_rocket_at_512_is_the_256_picture_enlarged_not_tiled(starter):
    pipeline = TextToImagePipeline(starter)
    small = pipeline(TextToImageRequest(ROCKET, width=256, height=256, seed=1)).images[0]
    result = pipeline(TextToImageRequest(ROCKET, width=512, height=512, seed=1))
    large = result.images[0]
    assert large.pixels.shape == (512, 512, 3)
    assert result.warnings == ("'starter' draws at most 256 pixels a side, so the picture was "
                               "drawn at 256 × 256 and enlarged to 512 × 512.",)
    # Every 2 x 2 block of the large picture is one pixel of the small one: the same scene,
    # with one rocket, not the six a 512 px canvas of 32 px scenes tiled.
    assert np.array_equal(large.pixels, np.repeat(np.repeat(small.pixels, 2, 0), 2, 1))
    parameters = large.parameters
    assert (parameters.width, parameters.height, parameters.base_size) == (512, 512, (256, 256))
    assert (parameters.scale, parameters.upscaler) == (2.0, "nearest")
    assert small.parameters.base_size is None  # drawn as asked: nothing to say


def test_variations_of_a_512_picture_redraw_its_256_scene_once(starter):
    pipeline = TextToImagePipeline(starter)
    small = pipeline(TextToImageRequest(ROCKET, seed=1)).images[0].pixels
    large = enlarge(small, 512, 512)  # what the starter makes at 512 x 512
    variations = ImageToImagePipeline(starter)
    of_small = variations(ImageToImageRequest(small, ROCKET, strength=0.9, seed=3)).images[0]
    of_large = variations(ImageToImageRequest(large, ROCKET, strength=0.9, seed=3)).images[0]
    # At 512 its UNet would see a 64 px scene and draw the rocket nine times.
    assert np.array_equal(of_large.pixels, enlarge(of_small.pixels, 512, 512))
    assert (of_large.parameters.width, of_large.parameters.base_size) == (512, (256, 256))


def test_a_size_between_whole_enlargements_is_drawn_at_256_and_resampled(starter):
    image = TextToImagePipeline(starter)(TextToImageRequest(ROCKET, width=320, height=320,
                                                            **FEW_STEPS)).images[0]
    assert image.pixels.shape == (320, 320, 3)
    assert (image.parameters.base_size, image.parameters.upscaler) == ((256, 256), "Lanczos")


def test_regions_at_512_are_the_256_layout_enlarged(starter):
    pipeline = RegionsPipeline(starter)
    small = pipeline(RegionsRequest("on a blue background", [((0, 0, 128, 256), "a moon")],
                                    width=256, height=256, seed=2, **FEW_STEPS)).images[0]
    large = pipeline(RegionsRequest("on a blue background", [((0, 0, 256, 512), "a moon")],
                                    width=512, height=512, seed=2, **FEW_STEPS)).images[0]
    assert np.array_equal(large.pixels, enlarge(small.pixels, 512, 512))
    assert large.parameters.regions == (((0, 0, 256, 512), "a moon"),)  # as the user drew it


def test_the_largest_native_side_is_a_model_property_that_old_folders_lack(tmp_path):
    shipped = ModelDescription.load(STARTER)
    assert shipped.largest_native_side == 256
    export = starter_description(shipped.latent_scaling_factor, shipped.default_steps,
                                 shipped.default_guidance)
    assert export.to_json() == shipped.to_json()  # a re-export keeps it
    data = json.loads(shipped.to_json())
    del data["largest_native_side"]  # a folder from before the field
    (tmp_path / "easel.json").write_text(json.dumps(data))
    assert ModelDescription.load(tmp_path).largest_native_side is None
    (tmp_path / "easel.json").write_text(json.dumps({**data, "largest_native_side": 100}))
    with pytest.raises(ModelError, match="multiple of the model's 64 pixels"):
        ModelDescription.load(tmp_path)


# --- the window -----------------------------------------------------------------------------


def starter_choice() -> ModelChoice:
    return ModelChoice("starter", "starter", 1, True, ModelDescription.load(STARTER))


def test_the_window_offers_the_starter_only_sizes_it_draws_well(starter):
    choices = size_choices(starter_choice())
    assert [(choice.width, choice.height) for choice in choices] == [
        (256, 256), (512, 512), (768, 768), (1024, 1024)]
    assert choices[1].label == "512 × 512  (256 × 256 enlarged 2x)"
    pipeline = TextToImagePipeline(starter)
    for choice in choices:  # every size offered is one the engine takes
        pipeline.check_inputs(TextToImageRequest(ROCKET, width=choice.width,
                                                 height=choice.height))
    assert "multiples of 64 pixels for this model" in size_tooltip(starter_choice())


def test_a_reused_picture_of_any_size_gives_a_size_the_model_takes(qtbot, tmp_path):
    with Library.open(tmp_path / "home") as library:
        prompt = PromptViewModel(ModelStore(tmp_path / "models", BUILT_IN), library)
        entry = ImageEntry("id", Path("x.png"), 0.0, ROCKET, "", "starter", "", 1, 250, 190,
                           "outpaint", None, "generated", {}, False, None, False, 0, 1)
        prompt.reuse(entry)
        assert (prompt.form.width, prompt.form.height) == (256, 192)


def test_the_outpaint_dialog_rounds_a_typed_side_to_the_multiple(qtbot):
    from PySide6.QtCore import Qt

    from desktop.app.editing import Sides
    from desktop.app.widgets.outpaint_dialog import OutpaintDialog

    dialog = OutpaintDialog((256, 256), Sides(), 64)
    qtbot.addWidget(dialog)
    dialog.show()
    qtbot.waitExposed(dialog)
    box = dialog.boxes["right"]
    box.setFocus()
    box.lineEdit().selectAll()
    qtbot.keyClicks(box, "50")
    assert dialog.sides().right == 64
    qtbot.keyClick(box, Qt.Key.Key_Return)  # ends the editing (and presses Outpaint)
    assert box.value() == 64 and "320 × 256" in dialog.result_size.text()
