"""Prompt length. A CLIP model (SD 1.x, 2.x, XL) reads a prompt of any length in 77-token
chunks, so nothing is left out and no warning is given. The starter model keeps its own
word-list rules: a prompt past its 22 words is cut, and the warning says how many words were
left out and quotes the first few, not the whole dropped end (it can be 1,500 characters)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.errors import BadRequest
from engine.model import load_model
from engine.pipelines.text_to_image import TextToImagePipeline
from engine.request import TextToImageRequest
from engine.runtime import CancelToken, RuntimeOptions
from engine.tokenizer import truncation_warning

LONG = " ".join(f"a very detailed painting of lighthouse number {n}," for n in range(40))
STARTER = Path(__file__).resolve().parents[1] / "resources" / "models" / "starter"


def test_a_long_prompt_is_read_whole_by_a_clip_model(installed_tiny_sd1):
    pipeline = TextToImagePipeline(load_model(installed_tiny_sd1))
    embeddings, warnings = pipeline.encode_prompt(LONG, "", True, CancelToken())
    assert warnings == []
    # 40 × 10 tokens, cut at commas: 6 chunks for the prompt, the empty negative padded to
    # as many with the empty prompt's chunk.
    assert embeddings.hidden_states.shape == (2, 6 * 77, 32)
    negative, prompt = embeddings.hidden_states
    assert np.array_equal(negative[:77], negative[5 * 77:])
    # The end of the prompt reaches the picture: changing the last words changes the pixels.
    changed = LONG.replace("number 39,", "number 39, a red moon")

    def image(prompt: str) -> np.ndarray:
        request = TextToImageRequest(prompt, width=64, height=48, steps=2, seed=1)
        result = pipeline(request)
        assert result.warnings == ()
        return result.images[0].pixels.astype(int)

    assert np.abs(image(LONG) - image(changed)).max() > 0


def test_the_starter_model_still_cuts_a_long_prompt_and_says_so():
    words = "a big red apple on the left and a small blue car on the right " * 4
    pipeline = TextToImagePipeline(load_model(STARTER, RuntimeOptions(providers=("cpu",)),
                                              "starter"))
    tokens = pipeline.model.tokenizer(words)
    dropped = tokens.truncated_text.split()
    assert len(dropped) > 20
    result = pipeline(TextToImageRequest(words, steps=1))
    # It names eight objects as well, which the starter is told about in a note of its own.
    too_many, warning = result.warnings
    assert too_many.startswith("'starter' draws one or two objects; the prompt names 8")
    assert warning == (
        f"The prompt is longer than the 22 tokens the text encoder reads: its last "
        f"{len(dropped)} words were left out (“{' '.join(dropped[:6])} …”).")
    assert len(warning) < 200
    # Its word list reads no bracket syntax, so a stray bracket is no error there.
    pipeline.check_inputs(TextToImageRequest("a red apple)"))


def test_a_clip_model_refuses_bad_brackets_before_any_work(installed_tiny_sd1):
    pipeline = TextToImagePipeline(load_model(installed_tiny_sd1))
    with pytest.raises(BadRequest, match=r"^The prompt has a '\)' that closes no '\('"):
        pipeline.check_inputs(TextToImageRequest("a red apple)"))
    with pytest.raises(BadRequest, match="^The negative prompt has a"):
        pipeline.encode_prompt("a red apple", "blurry)", True, CancelToken())


def test_few_dropped_words_are_quoted_whole_and_one_is_singular():
    assert truncation_warning("  rocket on the right ", "prompt", 75) == (
        "The prompt is longer than the 75 tokens the text encoder reads: its last 4 words "
        "were left out (“rocket on the right”).")
    assert truncation_warning("blurry", "negative prompt", 75) == (
        "The negative prompt is longer than the 75 tokens the text encoder reads: its last "
        "word was left out (“blurry”).")


def test_a_dropped_end_without_spaces_is_cut_short():
    warning = truncation_warning("長" * 500, "prompt", 75)
    assert f"(“{'長' * 60} …”)" in warning and len(warning) < 200
