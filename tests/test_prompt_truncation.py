"""A prompt past the text encoder's length: the warning says how many words were left out and
quotes the first few, not the whole dropped end (it can be 1,500 characters)."""

from __future__ import annotations

from engine.model import load_model
from engine.pipelines.text_to_image import TextToImagePipeline
from engine.request import TextToImageRequest
from engine.tokenizer import PromptTokenizer, truncation_warning

LONG = " ".join(f"a very detailed painting of lighthouse number {n}," for n in range(40))


def test_a_long_prompt_is_said_in_words_counted_and_a_short_quote(installed_tiny_sd1):
    tokens = PromptTokenizer(installed_tiny_sd1 / "tokenizer", 77)(LONG)
    dropped = tokens.truncated_text.split()
    assert len(tokens.truncated_text) > 1000 and len(dropped) > 100

    result = TextToImagePipeline(load_model(installed_tiny_sd1))(
        TextToImageRequest(LONG, width=64, height=48, steps=1))
    (warning,) = result.warnings
    assert warning == (
        f"The prompt is longer than the 75 tokens the text encoder reads: its last "
        f"{len(dropped)} words were left out (“{' '.join(dropped[:6])} …”).")
    assert len(warning) < 200


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
