"""The count judge (issue 14): objects found wherever they are, empty pictures and extra copies,
and the evaluator's prompt forms that name no position."""

from __future__ import annotations

import re

import numpy as np
import pytest

from engine.starter import evaluate_count as ec
from engine.starter import scenes as sc
from engine.starter.evaluate import unplaced_prompts
from engine.starter.objects import COLOURS, OBJECT_WORDS, POSITION_PHRASES

pytestmark = pytest.mark.skipif(
    sc.find_font() is None,
    reason="Noto Color Emoji is not installed (Debian package fonts-noto-color-emoji)",
)


def test_the_judge_finds_the_objects_of_rendered_scenes_wherever_they_are() -> None:
    rng = np.random.default_rng(4)
    scenes = [sc.sample_scene(rng, "held_out", 0.5) for _ in range(40)]
    counts = [ec.count(sc.render(s, 32), [o.word for o in s.objects]) for s in scenes]
    assert all(c.exactly_named and not c.empty and not c.extra_copies for c in counts)
    assert [c.colour for c in counts] == [s.background for s in scenes]
    # A larger picture (as the app shows it) is judged the same.
    big = ec.count(sc.render(scenes[0], 256), [o.word for o in scenes[0].objects])
    assert big.exactly_named


def test_the_judge_sees_a_second_copy_a_wrong_object_and_an_empty_picture() -> None:
    twice = sc.Scene((sc.Placed("dog", "left"), sc.Placed("dog", "right")), "green")
    judged = ec.count(sc.render(twice, 32), ["dog"])
    assert judged.seen == ("dog", "dog")
    assert judged.shows_named and judged.extra_copies and not judged.exactly_named
    assert ec.count(sc.render(twice, 32), ["dog", "dog"]).exactly_named

    cat = sc.Scene((sc.Placed("cat", "top", "small"),), "blue")
    wrong = ec.count(sc.render(cat, 32), ["horse"])
    assert wrong.seen == ("cat",) and not wrong.shows_named and not wrong.extra_copies

    plain = np.broadcast_to(np.array(COLOURS["green"], np.uint8), (256, 256, 3))
    empty = ec.count(plain, ["cat"])
    assert empty.empty and not empty.shows_named and empty.colour == "green"


def test_the_judge_ignores_noise_on_the_background() -> None:
    rng = np.random.default_rng(0)
    scene = sc.Scene((sc.Placed("tree", "left"),), "green")  # a green glyph on green
    noisy = sc.render(scene, 32).astype(np.int16) + rng.integers(-6, 7, (32, 32, 3))
    judged = ec.count(np.clip(noisy, 0, 255).astype(np.uint8), ["tree"])
    assert judged.exactly_named
    noise_only = np.clip(np.array(COLOURS["black"]) + rng.integers(-6, 7, (32, 32, 3)), 0, 255)
    assert ec.count(noise_only.astype(np.uint8), ["moon"]).empty


def test_the_judges_own_record_on_renders() -> None:
    record = ec.self_check(count_each=30, seed=2)
    assert record["rendered_scenes"]["exactly_named"] == 1.0
    assert record["object_drawn_twice"]["extra_copies"] == 1.0
    assert record["plain_background"]["empty"] == 1.0


def test_prompts_without_positions_name_held_out_pairs_and_no_place() -> None:
    forms = unplaced_prompts(56)
    assert set(forms) == {"object_only", "object_colour", "two_objects", "a_dog", "phrasings"}
    phrases = [p for options in POSITION_PHRASES.values() for p in options]
    for form, prompts in forms.items():
        assert len(prompts) == 56, form
        for prompt in prompts:
            assert not any(phrase in prompt.text for phrase in phrases), prompt.text
            for word in prompt.objects:
                assert word in re.findall(r"\w+", prompt.text), prompt.text
    assert {p.objects[0] for p in forms["object_only"]} == set(OBJECT_WORDS)
    assert all(p.colour is None and p.text.count(" ") == 1 for p in forms["object_only"])
    # Object + colour: exactly the pairs training never says without a position.
    pairs = {(p.objects[0], p.colour) for p in forms["object_colour"]}
    assert pairs == set(sc.HELD_OUT_PAIRS)
    assert all(p.text == f"{'an' if p.objects[0][0] in 'aeiou' else 'a'} {p.objects[0]} on "
               f"{'an' if p.colour == 'orange' else 'a'} {p.colour} background"
               for p in forms["object_colour"])
    for prompt in forms["two_objects"]:
        first, second = prompt.objects
        assert first != second and " and " in prompt.text
        assert sc.is_pair_held_out(first, prompt.colour) or sc.is_pair_held_out(
            second, prompt.colour)
    assert {p.text for p in forms["a_dog"]} == {"a dog"}
    # The other phrasings: a size, or the templates that lead with the background or list.
    texts = [p.text for p in forms["phrasings"]]
    assert texts[0].startswith("a big ") and " background" not in texts[0]
    assert texts[1].startswith("a small ") and texts[1].endswith(" background")
    assert " background with " in texts[2] and len(forms["phrasings"][2].objects) == 2
    assert texts[3].count(", ") == 2 and len(forms["phrasings"][3].objects) == 2
    assert not any(" a orange" in t or t.startswith("a orange") for t in texts)
    assert unplaced_prompts(56) == forms  # fixed, so before and after are comparable
