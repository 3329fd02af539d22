"""The tiny VAE at work (issue 23): live previews with it when one fits the model, "fast
decode" of the final pictures with it (``--fast-decode``, the window's setting), said in the
picture's metadata; the model's own VAE otherwise. On the tiny random SD 1.x model, whose VAE
scales by 2, with a tiny random AutoencoderTiny of the same scale imported through the store."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from desktop.app import worker
from desktop.app.generation import EnginePipelines
from desktop.cli import main
from desktop.decoding import Decoding, use_decoding
from desktop.image_files import a1111_parameters, read_parameters
from desktop.model_store import ModelStore
from engine.errors import BadRequest, ModelError
from engine.manifest import write_manifest
from engine.model import load_model
from engine.pipelines.text_to_image import TextToImagePipeline
from engine.request import TextToImageRequest
from engine.runtime import CancelToken, RuntimeOptions
from engine.tiny_vae import load_tiny_vae

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
from diffusers import AutoencoderTiny  # noqa: E402

pytestmark = pytest.mark.slow
WIDTH, HEIGHT = 64, 48


@pytest.fixture(scope="module")
def taesd_folder(tmp_path_factory) -> Path:
    """A tiny random AutoencoderTiny (two stages: pictures twice the latents' side, as the
    tiny test model's VAE), saved as the Hub keeps madebyollin/taesd."""
    torch.manual_seed(0)
    vae = AutoencoderTiny(encoder_block_out_channels=(8, 8), decoder_block_out_channels=(8, 8),
                          num_encoder_blocks=(1, 1), num_decoder_blocks=(1, 1)).eval()
    with torch.no_grad():  # lifted, so its pictures are not black (a black frame fails)
        vae.decoder.layers[-1].bias.add_(0.5)
    folder = tmp_path_factory.mktemp("taesd") / "taesd"
    vae.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def template(tiny_sd1_diffusers, taesd_folder, tmp_path_factory) -> Path:
    """A data folder with the tiny model and the tiny VAE imported (done once)."""
    home = tmp_path_factory.mktemp("template") / "home"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EASEL_HOME", str(home))
        assert main(["models", "import", str(tiny_sd1_diffusers), "--name", "tiny",
                     "--no-prepare"]) == 0
        assert main(["models", "import", str(taesd_folder), "--name", "taesd"]) == 0
    return home


@pytest.fixture
def home(template, tmp_path, monkeypatch) -> Path:
    home = tmp_path / "home"
    shutil.copytree(template, home)
    monkeypatch.setenv("EASEL_HOME", str(home))
    return home


def store_of(home: Path) -> ModelStore:
    return ModelStore(home / "models")


def request(seed: int = 5) -> TextToImageRequest:
    return TextToImageRequest("a red chair", width=WIDTH, height=HEIGHT, steps=3, seed=seed)


def run(model, seed: int = 5):
    """The pictures, and each step's latents and preview."""
    steps = []
    result = TextToImagePipeline(model)(request(seed), lambda progress: steps.append(
        (progress.latents.copy(), progress.preview())), CancelToken())
    return result, steps


def test_fast_decode_decodes_the_final_latents_with_the_tiny_vae_and_says_so(home):
    store = store_of(home)
    model = load_model(store.path_of("tiny"), RuntimeOptions(), "tiny")
    plain, _ = run(model)
    assert use_decoding(store, model, Decoding(previews=False, fast_decode=True)) is None
    fast, steps = run(model)
    tiny = load_tiny_vae(store.path_of("taesd", "tiny_vae"))
    final_latents = steps[-1][0]
    assert np.array_equal(fast.images[0].pixels, tiny.decode(final_latents)[0])
    assert fast.images[0].pixels.shape == (HEIGHT, WIDTH, 3)
    # The same latents, another decoder: the model's own VAE gives other pixels.
    assert not np.array_equal(fast.images[0].pixels, plain.images[0].pixels)
    assert fast.images[0].parameters.decoder == "taesd"
    assert plain.images[0].parameters.decoder is None
    # Without fast decode the model's own VAE decodes again, and nothing is recorded.
    use_decoding(store, model, Decoding(previews=True, fast_decode=False))
    again, _ = run(model)
    assert np.array_equal(again.images[0].pixels, plain.images[0].pixels)
    assert again.images[0].parameters.decoder is None


def test_previews_come_from_the_tiny_vae_at_the_pictures_size(home):
    store = store_of(home)
    model = load_model(store.path_of("tiny"), RuntimeOptions(), "tiny")
    _, linear = run(model)
    assert linear[0][1].shape == (HEIGHT // 2, WIDTH // 2, 3)  # latent cells, linear map
    use_decoding(store, model, Decoding(previews=True))
    _, tiny_steps = run(model)
    tiny = load_tiny_vae(store.path_of("taesd", "tiny_vae"))
    for latents, preview in tiny_steps:
        assert preview.shape == (HEIGHT, WIDTH, 3)
        assert np.array_equal(preview, tiny.preview(latents))


def test_the_command_line_asks_for_fast_decode_and_the_picture_says_so(home, tmp_path):
    assert main(["generate", "a red chair", "--model", "tiny", "--width", str(WIDTH),
                 "--height", str(HEIGHT), "--steps", "3", "--seed", "9", "--fast-decode",
                 "-o", str(tmp_path / "out.png")]) == 0
    with Image.open(tmp_path / "out.png") as image:
        metadata = json.loads(image.text["easel"])
        infotext = image.text["parameters"]
    assert metadata["decoder"] == "taesd"
    assert "VAE: taesd" in infotext
    assert read_parameters(tmp_path / "out.png").decoder == "taesd"


def test_fast_decode_without_a_fitting_tiny_vae_is_one_sentence(home, capsys):
    store = store_of(home)
    store.remove("taesd")
    code = main(["generate", "a red chair", "--model", "tiny", "--width", str(WIDTH),
                 "--height", str(HEIGHT), "--steps", "2", "--fast-decode"])
    assert code != 0
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "Fast decode needs a tiny VAE for sd1 models" in error[0]
    model = load_model(store.path_of("tiny"), RuntimeOptions(), "tiny")
    with pytest.raises(BadRequest, match="import TAESD"):
        use_decoding(store, model, Decoding(fast_decode=True))
    # Previews alone need none: the linear preview stays.
    assert use_decoding(store, model, Decoding(previews=True)) is None
    assert model.preview_decoder is None and model.fast_decoder is None


def test_the_window_decodes_with_the_model_vae_and_warns_when_none_fits(home):
    store = store_of(home)
    store.remove("taesd")
    pipelines = EnginePipelines(store, RuntimeOptions())
    pipelines.decoding = Decoding(previews=True, fast_decode=True)
    result = pipelines.run("tiny", request(), lambda progress: None, CancelToken())
    assert result.images[0].parameters.decoder is None
    assert any("Fast decode needs a tiny VAE" in warning and "own VAE decoded" in warning
               for warning in result.warnings)


def test_the_window_fast_decodes_when_one_fits(home):
    pipelines = EnginePipelines(store_of(home), RuntimeOptions())
    pipelines.decoding = Decoding(previews=True, fast_decode=True)
    result = pipelines.run("tiny", request(), lambda progress: None, CancelToken())
    assert result.images[0].parameters.decoder == "taesd"
    assert "VAE: taesd" in a1111_parameters(result.images[0].parameters)


def test_a_tiny_vae_of_another_scale_or_family_does_not_fit(home, installed_tiny_sd2):
    store = store_of(home)
    tiny = load_tiny_vae(store.path_of("taesd", "tiny_vae"))
    sd2 = load_model(installed_tiny_sd2, RuntimeOptions(), "tiny-sd2")
    sd2.use_tiny_vae(tiny)  # TAESD decodes SD 2.x latents too

    def changed(name: str, **changes: object):
        folder = home / name
        shutil.copytree(tiny.folder, folder)
        description = json.loads((folder / "easel.json").read_text())
        (folder / "easel.json").write_text(json.dumps({**description, **changes}))
        write_manifest(folder)
        return load_tiny_vae(folder, name=name)

    with pytest.raises(ModelError, match="does not fit model 'tiny-sd2'"):
        sd2.use_tiny_vae(changed("taesdxl", variant="taesdxl", families=["sdxl"]))
    # Described as TAESD's 8 times: the tiny model's VAE scales by 2.
    with pytest.raises(ModelError, match="does not fit model 'tiny-sd2'"):
        sd2.use_tiny_vae(changed("eight", scale_factor=8))
    assert sd2.preview_decoder is not None  # the one that fits is still in use


def test_previews_are_spaced_so_they_take_at_most_a_fifth_of_the_time(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(worker.time, "monotonic", lambda: clock[0])
    sent = []
    context = worker.JobContext(sent.append, CancelToken())

    def slow_preview() -> np.ndarray:
        clock[0] += 0.5  # a tiny VAE's preview on a busy CPU
        return np.zeros((8, 8, 3), np.uint8)

    for step in range(1, 9):
        clock[0] += 1.0  # a denoising step
        context.report(step, 10, preview=slow_preview)
    previews = [progress.preview is not None for progress in sent]
    assert len(sent) == 8
    # 0.5 s previews need 2 s between them: every other step of 1 s gets one.
    assert previews == [True, False, True, False, True, False, True, False]


def test_the_settings_offer_previews_and_fast_decode(qtbot):
    from desktop.app.widgets.settings_dialog import SettingsDialog
    from desktop.settings import Settings

    dialog = SettingsDialog(Settings(), [], None, None)
    qtbot.addWidget(dialog)
    assert dialog.tiny_previews.isChecked() and not dialog.fast_decode.isChecked()
    dialog.tiny_previews.setChecked(False)
    dialog.fast_decode.setChecked(True)
    chosen = dialog.chosen()
    assert (chosen.tiny_vae_previews, chosen.fast_decode) == (False, True)
    with pytest.raises(ValueError, match="fast_decode"):
        Settings(fast_decode="yes").validated()


def test_the_window_settings_turn_fast_decode_on_for_the_next_picture(qtbot, home):
    from desktop.settings import Settings
    from tests.app_windows import tiny_studio

    def generate(studio) -> dict:
        with qtbot.waitSignal(studio.generated, timeout=120_000) as done:
            assert studio.generate() is not None
        with Image.open(done.args[0].entries[0].path) as image:
            return json.loads(image.text["easel"])

    with tiny_studio(qtbot, home) as shown:
        studio = shown.studio
        assert studio.services.pipelines.decoding == Decoding(previews=True, fast_decode=False)
        assert "decoder" not in generate(studio)
        studio.apply_settings(Settings(fast_decode=True))
        assert studio.services.pipelines.decoding == Decoding(previews=True, fast_decode=True)
        assert generate(studio)["decoder"] == "taesd"
