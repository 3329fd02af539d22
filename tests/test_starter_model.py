"""The starter model: its tokenizer, training that resumes, its export, and the shipped model
through the engine and the ``easel`` command."""

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from desktop.cli import main
from engine.errors import BadRequest
from engine.model import load_model
from engine.pipelines.text_to_image import TextToImagePipeline
from engine.request import TextToImageRequest
from engine.runtime import RuntimeOptions
from engine.starter.evaluate import prompt_scenes
from engine.starter.evaluate_reference import judge
from engine.starter.objects import COLOUR_NAMES
from engine.starter.scenes import Placed, Scene, caption, sample_scene
from engine.starter.training.export import export_starter, read_shipped_weights
from engine.starter.training.network import StarterConfig, StarterModel
from engine.starter.training.train import BatchSource, Settings, Tokens, Trainer, make_batch
from engine.starter.vocabulary import TEXT_MAX_LENGTH, build_tokenizer, write_tokenizer_folder
from engine.tokenizer import PromptTokenizer

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "resources" / "models" / "starter"
CPU = RuntimeOptions(providers=("cpu",))


def tiny_config() -> StarterConfig:
    return StarterConfig(vocab_size=build_tokenizer().get_vocab_size(), text_width=32,
                         text_layers=1, text_heads=2, channels=(16, 32, 32), attention_heads=2,
                         groups=8)


# --- tokenizer ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> PromptTokenizer:
    folder = tmp_path_factory.mktemp("tokenizer")
    write_tokenizer_folder(folder)
    return PromptTokenizer(folder, TEXT_MAX_LENGTH)


def test_every_caption_word_is_known_and_fits(tokenizer):
    rng = np.random.default_rng(3)
    for _ in range(500):
        text = caption(sample_scene(rng), rng)
        tokens = tokenizer(text)
        assert tokens.unknown_words == () and tokens.truncated_text == ""
        assert tokens.known_word_count >= 2  # an object and a colour at least


def test_unknown_words_are_reported_and_case_and_punctuation_ignored(tokenizer):
    same = tokenizer("A DOG, on the Left!").ids
    assert np.array_equal(same, tokenizer("a dog on the left").ids)
    tokens = tokenizer("a zebra and a dog")
    assert tokens.unknown_words == ("zebra",) and tokens.known_word_count == 1
    nothing = tokenizer("a zebra under the sea")
    assert nothing.known_word_count == 0 and "sea" in nothing.unknown_words
    assert "avocado" in tokenizer.known_words and "the" not in tokenizer.known_words


# --- training resumes exactly ---------------------------------------------------------------------


def test_resumed_training_equals_unbroken_training(tmp_path):
    torch.manual_seed(0)
    settings = Settings(batch=4, warmup_steps=2)
    tokens = Tokens.written_to(tmp_path)
    unbroken = Trainer(tmp_path / "a", settings, tiny_config())
    start = {k: v.clone() for k, v in unbroken.model.state_dict().items()}
    for _ in range(4):
        unbroken.train_step(make_batch(settings, unbroken.step, tokens))

    first = Trainer(tmp_path / "b", settings, tiny_config())
    first.model.load_state_dict(start)
    first.ema.load_state_dict(start)
    for _ in range(2):
        first.train_step(make_batch(settings, first.step, tokens))
    first.save()
    second = Trainer(tmp_path / "b", settings, tiny_config())
    assert second.restore().startswith("resumed")
    for _ in range(2):
        second.train_step(make_batch(settings, second.step, tokens))

    assert second.step == 4
    for name, value in unbroken.model.state_dict().items():
        assert torch.allclose(second.model.state_dict()[name], value, atol=1e-6), name
        assert torch.allclose(second.ema.state_dict()[name], unbroken.ema.state_dict()[name],
                              atol=1e-6), name
    assert not torch.equal(unbroken.model.state_dict()["unet.conv_in.weight"],
                           start["unet.conv_in.weight"])


def test_training_batches_leave_attributes_out_reproducibly(tmp_path):
    tokens = Tokens.written_to(tmp_path)
    settings = Settings(batch=64)
    assert settings.leave_out > 0
    first, again = make_batch(settings, 7, tokens), make_batch(settings, 7, tokens)
    assert torch.equal(first.input_ids, again.input_ids) and torch.equal(first.x_t, again.x_t)
    vocabulary = build_tokenizer().get_vocab()
    said = {word: (first.input_ids == vocabulary[word]).any(dim=1)
            for word in ("background", "left", "right", "top", "bottom", "centre", "middle",
                         "center")}
    no_colour = ~said["background"]
    no_position = ~torch.stack([said[w] for w in said if w != "background"]).any(dim=0)
    # Some captions say no colour, some no position (besides the empty ones, one in ten).
    empty = (first.input_ids == vocabulary["[EOS]"]).nonzero()[:, 1] == 1
    assert (no_colour & ~empty).any() and (no_position & ~empty).any()
    full = make_batch(Settings(batch=64, leave_out=0.0), 7, tokens)
    assert (full.input_ids == vocabulary["background"]).any(dim=1).sum() > said[
        "background"].sum()


def test_batches_drawn_by_workers_equal_batches_drawn_in_line(tmp_path):
    tokens = Tokens.written_to(tmp_path)
    settings = Settings(batch=3, workers=1)
    source = BatchSource(settings, tmp_path / "tokenizer")
    try:
        # Steps 5, 6, then a jump back to 2 (a restart): each must be that step's own batch.
        for step in (5, 6, 2):
            drawn = source.batch(step)
            expected = make_batch(settings, step, tokens)
            assert torch.equal(drawn.x_t, expected.x_t), step
            assert torch.equal(drawn.input_ids, expected.input_ids), step
            assert torch.equal(drawn.target, expected.target), step
    finally:
        source.close()
    assert not torch.equal(make_batch(settings, 5, tokens).x_t, expected.x_t)


# --- export -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_starter(tmp_path_factory) -> tuple[Path, StarterModel]:
    torch.manual_seed(1)
    config = tiny_config()
    model = StarterModel(config)
    with torch.no_grad():  # the zero-initialised output layers would hide a wrong export
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    folder = tmp_path_factory.mktemp("export") / "starter"
    record = {"steps": 3, "training_seconds": 1.5, "settings": {"latent_scaling": 1.0}}
    export_starter(model, config, folder, record)
    return folder, model


def test_export_stores_half_precision_weights_that_read_back(tiny_starter):
    folder, model = tiny_starter
    weights, record = read_shipped_weights(folder)
    assert record["steps"] == 3
    for name, value in model.state_dict().items():
        assert torch.equal(weights[name], value.half().float()), name


def test_exported_graphs_match_torch(tiny_starter):
    folder, model = tiny_starter
    weights, _ = read_shipped_weights(folder)
    reference = StarterModel(tiny_config())
    reference.load_state_dict(weights)
    reference.eval()
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 40, (2, TEXT_MAX_LENGTH)).astype(np.int64)
    sample = rng.standard_normal((2, 12, 12, 20), dtype=np.float32)  # not the traced size
    timestep = np.array([250.0, 900.0], np.float32)
    text = ort.InferenceSession(str(folder / "text_encoder" / "model.onnx"))
    unet = ort.InferenceSession(str(folder / "unet" / "model.onnx"))
    (hidden,) = text.run(["last_hidden_state"], {"input_ids": ids})
    (out,) = unet.run(None, {"sample": sample, "timestep": timestep,
                             "encoder_hidden_states": hidden})
    with torch.no_grad():
        expected_hidden, _ = reference.text_encoder(torch.from_numpy(ids))
        expected = reference.unet(torch.from_numpy(sample), torch.from_numpy(timestep),
                                  expected_hidden)
    np.testing.assert_allclose(hidden, expected_hidden.numpy(), atol=1e-4)
    np.testing.assert_allclose(out, expected.numpy(), atol=1e-4)


def test_pixel_vae_round_trip_is_exact(tiny_starter):
    folder, _ = tiny_starter
    decoder = ort.InferenceSession(str(folder / "vae_decoder" / "model.onnx"))
    encoder = ort.InferenceSession(str(folder / "vae_encoder" / "model.onnx"))
    latents = np.random.default_rng(0).uniform(-1, 1, (1, 12, 16, 8)).astype(np.float32)
    (pixels,) = decoder.run(None, {"latent_sample": latents})
    assert pixels.shape == (1, 3, 256, 128)
    (parameters,) = encoder.run(None, {"sample": pixels})
    np.testing.assert_allclose(parameters[:, :12], latents, atol=1e-6)
    assert (parameters[:, 12:] < -20).all()  # log-variance: sampling adds no noise


def test_tiny_export_runs_through_the_engine(tiny_starter):
    folder, _ = tiny_starter
    pipeline = TextToImagePipeline(load_model(folder, CPU, "starter"))
    result = pipeline(TextToImageRequest("a dog on the left and a zebra", seed=3, steps=2))
    assert result.images[0].pixels.shape == (256, 256, 3)
    assert any("zebra" in warning for warning in result.warnings)
    with pytest.raises(BadRequest, match="knows none of the words.*avocado"):
        pipeline(TextToImageRequest("a zebra under the sea", steps=2))


# --- the shipped model --------------------------------------------------------------------------


def test_shipped_model_is_small_and_says_how_it_was_made():
    size = sum(path.stat().st_size for path in SHIPPED.rglob("*") if path.is_file())
    assert size <= 40 * 1024 * 1024
    record = json.loads((SHIPPED / "training.json").read_text())
    assert record["training_seconds"] > 0 and record["steps"] > 0
    assert "python -m engine.starter.training.train" in record["command"]


def test_shipped_model_draws_the_named_background_colour():
    pipeline = TextToImagePipeline(load_model(SHIPPED, CPU, "starter"))
    right = 0
    for index, colour in enumerate(COLOUR_NAMES):
        scene = Scene((Placed("moon", "centre"),), colour)
        image = pipeline(TextToImageRequest(caption(scene), seed=index)).images[0].pixels
        right += judge(image, scene).colour_correct
    assert right >= len(COLOUR_NAMES) - 1


def test_shipped_model_puts_two_held_out_objects_on_their_named_sides():
    pipeline = TextToImagePipeline(load_model(SHIPPED, CPU, "starter"))
    scenes = prompt_scenes(6)["left_right"][:6]
    right = 0
    for index, scene in enumerate(scenes):
        image = pipeline(TextToImageRequest(caption(scene), seed=index)).images[0].pixels
        right += all(judge(image, scene).objects_correct)
    assert right >= 5  # 99% on 120 such prompts (README); chance is 0.1%


def test_shipped_model_refuses_sizes_its_unet_cannot_make():
    pipeline = TextToImagePipeline(load_model(SHIPPED, CPU, "starter"))
    assert pipeline.description.pixel_multiple == 64
    with pytest.raises(BadRequest, match="multiple of 64 pixels"):
        pipeline.check_inputs(TextToImageRequest("a dog", width=144, height=256))
    pipeline.check_inputs(TextToImageRequest("a dog", width=320, height=192))


def test_generate_with_no_model_installed_uses_the_starter_model(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EASEL_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("EASEL_BUILT_IN_MODELS", raising=False)
    output = tmp_path / "out.png"
    assert main(["generate", "an avocado on the left, on a blue background", "--seed", "5",
                 "-o", str(output)]) == 0
    from PIL import Image

    with Image.open(output) as image:
        assert image.size == (256, 256)
        assert json.loads(image.text["easel"])["model"]["name"] == "starter"

    assert main(["models", "list"]) == 0
    assert "(built in)" in capsys.readouterr().out
    assert main(["models", "remove", "starter"]) != 0
    assert "built into Easel" in capsys.readouterr().err
    assert SHIPPED.is_dir()

    assert main(["generate", "a zebra under the sea", "-o", str(tmp_path / "no.png")]) != 0
    message = capsys.readouterr().err
    assert "knows none of the words" in message and "avocado" in message
    assert main(["generate", "a dog", "--scheduler", "lcm", "-o", str(tmp_path / "no.png")]) != 0
    assert "does not fit a flow-matching model" in capsys.readouterr().err
    assert not (tmp_path / "no.png").exists()



@pytest.mark.parametrize("prompt", ["", "   ", "a the, and"])
def test_shipped_model_refuses_a_prompt_that_names_nothing(prompt):
    pipeline = TextToImagePipeline(load_model(SHIPPED, CPU, "starter"))
    with pytest.raises(BadRequest) as refused:
        pipeline(TextToImageRequest(prompt, steps=1))
    message = str(refused.value)
    assert ("is empty" if not prompt.strip() else "names nothing it knows") in message
    assert "avocado" in message and message.count(".") == 1 and "\n" not in message


def test_easel_generate_refuses_an_empty_prompt(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EASEL_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("EASEL_BUILT_IN_MODELS", raising=False)
    assert main(["generate", "", "-o", str(tmp_path / "no.png")]) != 0
    message = capsys.readouterr().err
    assert "prompt is empty" in message and "avocado" in message
    assert not (tmp_path / "no.png").exists()
    assert main(["generate", "a dog", "--steps", "1", "-o", str(tmp_path / "yes.png")]) == 0


def test_store_prefers_the_users_only_model_and_protects_built_in_ones(tmp_path):
    from desktop.model_store import ModelStore
    from engine.errors import EaselError
    from engine.starter.training.export import description

    built_in = tmp_path / "built-in"
    (built_in / "starter").mkdir(parents=True)
    description(1.0, 12, 4.0).save(built_in / "starter")
    store = ModelStore(tmp_path / "models", built_in)
    assert store.default_model().name == "starter" and store.default_model().built_in
    with pytest.raises(EaselError, match="built into Easel"):
        store.remove("starter")
    with pytest.raises(EaselError, match="built into Easel"):
        store.check_new_name("starter")

    for name in ("mine", "other"):
        (tmp_path / "models" / name).mkdir()
        description(1.0, 12, 4.0).save(tmp_path / "models" / name)
        if name == "mine":
            assert store.default_model().name == "mine"
    with pytest.raises(EaselError, match="Several models are installed.*--model"):
        store.default_model()
    assert [m.name for m in store.list()] == ["mine", "other", "starter"]
    assert store.path_of("starter") == built_in / "starter"
