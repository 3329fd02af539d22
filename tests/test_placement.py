"""Objects a prompt leaves unplaced are given a place (``engine.placement``), so the starter
draws each named object once; the picture keeps the prompt as written."""

import json
from pathlib import Path

import numpy as np
import pytest

from engine.model import load_model
from engine.pipelines.text_to_image import TextToImagePipeline
from engine.placement import Placement, load_placement
from engine.request import TextToImageRequest
from engine.runtime import RuntimeOptions
from engine.starter import evaluate_count
from engine.starter.vocabulary import PLACEMENT, write_tokenizer_folder

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "resources" / "models" / "starter"
CPU = RuntimeOptions(providers=("cpu",))


@pytest.mark.parametrize(("prompt", "drawn"), [
    ("a dog", "a dog in the centre"),
    ("A Dog!", "A Dog in the centre!"),
    ("a big cat on a green background", "a big cat in the centre on a green background"),
    ("a green background with a cat", "a green background with a cat in the centre"),
    ("a cat, green background", "a cat in the centre, green background"),
    ("a cat and a dog on a green background",
     "a cat on the left and a dog on the right on a green background"),
    ("a zebra and a dog", "a zebra and a dog in the centre"),  # unknown words are not objects
])
def test_objects_without_a_place_get_one_where_the_starter_draws_them_once(prompt, drawn):
    assert PLACEMENT.place(prompt) == drawn


@pytest.mark.parametrize("prompt", [
    "a dog on the left",  # any place named: drawn as written
    "a cat in the middle, on a red background",
    "a cat and a dog on top",
    "a cat, a dog and a horse",  # three objects: the starter never learnt a layout for them
    "on a blue background",  # no object
    "",
    "a doghouse",  # a word that contains an object's word is not that object
])
def test_prompts_that_place_their_objects_or_name_none_are_drawn_as_written(prompt):
    assert PLACEMENT.place(prompt) is None


def test_the_starters_tokenizer_config_carries_its_placement(tmp_path):
    write_tokenizer_folder(tmp_path)
    assert load_placement(tmp_path) == PLACEMENT
    assert load_placement(SHIPPED / "tokenizer") == PLACEMENT  # the shipped folder is current


@pytest.mark.parametrize("entry", [None, [], {"objects": ["dog"]}, {"objects": [], "place_words":
                                   [], "one": "x", "two": ["a", "b"]}, "dog"])
def test_a_missing_or_malformed_placement_leaves_prompts_as_written(tmp_path, entry):
    config = {"pad_token": "[PAD]"} if entry is None else {"placement": entry}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    assert load_placement(tmp_path) is None
    assert load_placement(tmp_path / "missing") is None


def test_another_word_list_model_may_say_its_own_placement(tmp_path):
    placement = Placement(frozenset({"fox"}), frozenset({"up"}), "up high", ("up", "down"))
    (tmp_path / "tokenizer_config.json").write_text(
        json.dumps({"placement": placement.as_config()}))
    assert load_placement(tmp_path) == placement
    assert load_placement(tmp_path).place("Two Fox, one FOX") == "Two Fox up, one FOX down"


@pytest.fixture(scope="module")
def starter():
    return load_model(SHIPPED, CPU, "starter")


# Seeds at which the shipped weights (step 11,820) draw a named object twice, or miss one, when
# the prompt is drawn as written: found with place_objects=False over seeds 0-39.
UNPLACED_FAILURES = [
    ("a dog", ("dog",), 25),
    ("a dog", ("dog",), 36),
    ("a cat on a green background", ("cat",), 15),
    ("a cat on a green background", ("cat",), 27),
    ("a cat and a dog on a green background", ("cat", "dog"), 19),
]


@pytest.mark.parametrize(("prompt", "objects", "seed"), UNPLACED_FAILURES)
def test_the_starter_draws_each_unplaced_object_once(starter, prompt, objects, seed):
    result = TextToImagePipeline(starter)(TextToImageRequest(prompt, seed=seed))
    counted = evaluate_count.count(result.images[0].pixels, objects)
    assert counted.exactly_named, evaluate_count.explain(result.images[0].pixels)


def test_the_picture_keeps_the_prompt_as_written_and_the_user_is_told(starter):
    pipeline = TextToImagePipeline(starter)
    result = pipeline(TextToImageRequest("a dog", seed=25, steps=4))
    placed = pipeline(TextToImageRequest("a dog in the centre", seed=25, steps=4))
    np.testing.assert_array_equal(result.images[0].pixels, placed.images[0].pixels)
    assert result.images[0].parameters.prompt == "a dog"  # the same prompt makes it again
    notes = [w for w in result.warnings if "Drawn as" in w]
    assert notes == ["Drawn as “a dog in the centre”, so each object comes out once."]
    assert not any("Drawn as" in w for w in placed.warnings)


def test_the_evaluator_can_draw_prompts_as_written(starter):
    as_written = TextToImagePipeline(starter, place_objects=False)
    result = as_written(TextToImageRequest("a dog", seed=25, steps=4))
    placed = TextToImagePipeline(starter)(TextToImageRequest("a dog", seed=25, steps=4))
    assert not any("Drawn as" in w for w in result.warnings)
    assert not np.array_equal(result.images[0].pixels, placed.images[0].pixels)


def test_places_that_would_not_fit_in_the_text_encoder_are_not_added(starter):
    pipeline = TextToImagePipeline(starter)
    words = starter.description.text_max_length - 2  # what it reads, less start and end
    filler = " the" * (words - 2 - 3)  # leaves room for "in the centre"
    fits = "a dog" + filler
    assert pipeline.placed_prompt(fits)[0] == "a dog in the centre" + filler
    crowded = fits + " the"  # placed, its last word would be cut off
    assert pipeline.placed_prompt(crowded) == (crowded, [])


def test_a_prompt_naming_more_objects_than_the_starter_draws_says_so(starter):
    pipeline = TextToImagePipeline(starter)
    result = pipeline(TextToImageRequest("a cat, a dog and a horse", seed=1, steps=2))
    assert ("'starter' draws one or two objects; the prompt names 3, so some will be "
            "missing.") in result.warnings
    assert not any("Drawn as" in w for w in result.warnings)
    assert pipeline.placed_prompt("a cat and a dog")[1] == [
        "Drawn as “a cat on the left and a dog on the right”, so each object comes out once."]
