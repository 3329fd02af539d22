"""Text-to-image behaviour beyond parity: progress, previews, cancel, latents, bad output."""

import threading

import numpy as np
import pytest

from engine.errors import BadRequest, Cancelled, GenerationFailed, ModelError
from engine.model import load_model
from engine.pipelines.text_to_image import TextToImagePipeline
from engine.request import TextToImageRequest
from engine.runtime import CancelToken
from engine.tokenizer import PromptTokenizer

SMALL = {"width": 64, "height": 48, "steps": 4, "scheduler": "euler_ancestral"}


@pytest.fixture(scope="module")
def pipeline(installed_tiny_sd1):
    return TextToImagePipeline(load_model(installed_tiny_sd1))


def test_progress_reports_every_step_with_a_cheap_preview(pipeline):
    seen = []
    request = TextToImageRequest("a dog", count=2, seed=3, **SMALL)
    result = pipeline(request, on_progress=seen.append)
    assert [(p.image, p.step) for p in seen] == [(i, s) for i in range(2) for s in range(1, 5)]
    preview = seen[-1].preview()
    assert preview.dtype == np.uint8 and preview.shape == (24, 32, 3)  # latent resolution
    assert preview.std() > 0
    assert [image.parameters.seed for image in result.images] == [3, 4]


def test_explicit_latents_reproduce_the_seeded_image(pipeline):
    seeded = pipeline(TextToImageRequest("a dog", seed=11, **SMALL)).images[0].pixels
    latents = np.random.default_rng(11).standard_normal((1, 4, 24, 32), dtype=np.float32)
    given = pipeline(TextToImageRequest("a dog", seed=11, latents=latents, **SMALL))
    assert np.array_equal(given.images[0].pixels, seeded)
    other = pipeline(TextToImageRequest("a dog", seed=11, latents=latents * 0.5, **SMALL))
    assert not np.array_equal(other.images[0].pixels, seeded)


def test_cancel_between_steps_stops_within_one_step(pipeline):
    cancel = CancelToken()
    steps_seen = []

    def on_progress(progress):
        steps_seen.append(progress.step)
        if progress.step == 2:
            cancel.cancel()

    request = TextToImageRequest("a dog", **{**SMALL, "steps": 30})
    with pytest.raises(Cancelled):
        pipeline(request, on_progress=on_progress, cancel=cancel)
    assert steps_seen == [1, 2]


def test_cancel_from_another_thread_stops_the_job(pipeline):
    cancel = CancelToken()
    started = threading.Event()
    request = TextToImageRequest("a dog", width=128, height=128, steps=500, scheduler="euler")
    timer = threading.Timer(0.5, cancel.cancel)
    timer.start()
    with pytest.raises(Cancelled):
        pipeline(request, on_progress=lambda _: started.set(), cancel=cancel)
    timer.join()


def test_nan_latents_are_a_failure_not_a_picture(pipeline):
    latents = np.full((1, 4, 24, 32), np.nan, dtype=np.float32)
    with pytest.raises(GenerationFailed, match="invalid image"):
        pipeline(TextToImageRequest("a dog", latents=latents, **SMALL))


def test_black_decode_is_a_failure(pipeline, monkeypatch):
    def black(*_):
        return [np.full((1, 3, 48, 64), -1.0, dtype=np.float32)]

    monkeypatch.setattr(pipeline.model.vae_decoder, "run", black)
    with pytest.raises(GenerationFailed, match="black image"):
        pipeline(TextToImageRequest("a dog", **SMALL))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"width": 63}, "multiple of 8"),
        ({"height": 0}, "multiple of 8"),
        ({"width": 16384}, "at most"),
        ({"steps": 0}, "at least 1"),
        ({"guidance": float("nan")}, "0 or more"),
        ({"count": 101}, "between 1 and"),
        ({"seed": -1}, "seed"),
        ({"scheduler": "plms"}, "no scheduler called"),
        ({"scheduler": "flow_euler"}, "does not fit"),
        ({"latents": np.zeros((1, 4, 8, 8), dtype=np.float32)}, "shape"),
    ],
)
def test_bad_requests_are_refused_before_work(pipeline, changes, message):
    with pytest.raises(BadRequest, match=message):
        pipeline(TextToImageRequest("a dog", **{**SMALL, **changes}))


def test_non_models_are_refused(tmp_path):
    with pytest.raises(ModelError, match="not a folder"):
        load_model(tmp_path / "nothing")
    with pytest.raises(ModelError, match="not an Easel model"):
        load_model(tmp_path)


def test_tokenizer_matches_transformers_and_reports_truncation(installed_tiny_sd1,
                                                               installed_tiny_sd2):
    transformers = pytest.importorskip("transformers")
    prompts = ["a photo of an astronaut riding a horse", "",
               "Ünïcode  spaces,, and PUNCTUATION!!", "word " * 100 + "END"]
    for folder in (installed_tiny_sd1, installed_tiny_sd2):
        ours = PromptTokenizer(folder / "tokenizer", 77)
        theirs = transformers.CLIPTokenizer.from_pretrained(folder / "tokenizer")
        for prompt in prompts:
            expected = theirs(prompt, padding="max_length", max_length=77,
                              truncation=True).input_ids
            tokens = ours(prompt)
            assert tokens.ids.tolist() == [expected], prompt
            assert bool(tokens.truncated_text) == prompt.endswith("END")
    assert PromptTokenizer(installed_tiny_sd1 / "tokenizer", 77)(prompts[-1]).truncated_text \
        .endswith("word END")
