"""The starter model's scene data: glyphs, scenes, captions, the held-out split, the evaluator."""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pytest

from engine.starter import evaluate_reference as ev
from engine.starter import scenes as sc
from engine.starter.objects import (
    COLOUR_NAMES,
    COLOURS,
    OBJECT_WORDS,
    OBJECTS,
    POSITION_NAMES,
    POSITION_PHRASES,
)

pytestmark = pytest.mark.skipif(
    sc.find_font() is None,
    reason="Noto Color Emoji is not installed (Debian package fonts-noto-color-emoji; "
    "tests/run.sh installs it where apt-get works)",
)


def test_vocabulary_is_distinct_and_named() -> None:
    assert 24 <= len(OBJECTS) <= 32
    assert len(set(OBJECT_WORDS)) == len(OBJECT_WORDS)
    assert all(re.fullmatch(r"[a-z]+", w) for w in OBJECT_WORDS + COLOUR_NAMES)
    assert len(set(COLOURS.values())) == len(COLOURS)
    # Every caption word is known to the vocabulary a text encoder would be built from.
    rng = np.random.default_rng(3)
    words = set(sc.vocabulary())
    for _ in range(200):
        text = sc.caption(sc.sample_scene(rng), rng)
        assert set(text.replace(",", "").split()) <= words, text


def test_every_glyph_renders_as_one_nonempty_image() -> None:
    for obj in OBJECTS:
        master = sc.master_glyph(obj.word)
        assert 60 <= master.width <= 140 and 60 <= master.height <= 140, obj.word
        rgb, transparency = sc.glyph(obj.word, 15)
        assert max(rgb.shape[:2]) == 15
        assert (transparency < 0.5).mean() > 0.2, obj.word  # mostly opaque inside its box
        assert rgb.std() > 10, obj.word  # not a flat blob


def test_render_puts_the_object_on_the_named_side_of_the_named_background() -> None:
    for position, (fx, fy) in [("left", (0.25, 0.5)), ("right", (0.75, 0.5)), ("top", (0.5, 0.25))]:
        image = sc.render(sc.Scene((sc.Placed("avocado", position),), "blue"), 32)
        assert image.shape == (32, 32, 3) and image.dtype == np.uint8
        changed = np.abs(image.astype(int) - COLOURS["blue"]).sum(axis=2) > 30
        ys, xs = np.nonzero(changed)
        assert abs(xs.mean() / 32 - fx) < 0.1 and abs(ys.mean() / 32 - fy) < 0.1, position
        assert tuple(image[0, 0]) == COLOURS["blue"]
    big = sc.render(sc.Scene((sc.Placed("moon", "centre", "big"),), "black"), 64)
    assert big.shape == (64, 64, 3)


def test_the_same_seed_gives_the_same_scenes_and_captions() -> None:
    a_images, a_captions, a_scenes = sc.sample_batch(np.random.default_rng(11), 50)
    b_images, b_captions, b_scenes = sc.sample_batch(np.random.default_rng(11), 50)
    assert a_scenes == b_scenes and a_captions == b_captions
    assert np.array_equal(a_images, b_images)
    _, c_captions, _ = sc.sample_batch(np.random.default_rng(12), 50)
    assert c_captions != a_captions
    counts = [len(s.objects) for s in a_scenes]
    assert 1 in counts and 2 in counts


def test_captions_name_the_objects_positions_sizes_and_colour() -> None:
    one = sc.Scene((sc.Placed("avocado", "left"),), "blue")
    assert sc.caption(one) == "an avocado on the left, on a blue background"
    two = sc.Scene((sc.Placed("dog", "left", "small"), sc.Placed("horse", "right")), "orange")
    assert sc.caption(two) == (
        "a small dog on the left and a horse on the right, on an orange background"
    )
    rng = np.random.default_rng(5)
    variants = set()
    for _ in range(300):
        scene = sc.sample_scene(rng)
        text = sc.caption(scene, rng)
        variants.add(re.sub(r"\b(" + "|".join(OBJECT_WORDS + COLOUR_NAMES) + r")\b", "X", text))
        assert scene.background in text.split() or f"{scene.background}," in text
        position_at = []
        for placed in scene.objects:
            assert re.search(rf"\b{placed.word}\b", text), text
            hits = [text.find(p) for p in POSITION_PHRASES[placed.position] if p in text]
            assert hits, (text, placed.position)
            position_at.append(min(hits))
            if placed.size != "medium":
                assert f"{placed.size} {placed.word}" in text
        # Each object's position phrase follows it, in the caption's order.
        assert position_at == sorted(position_at)
    assert len(variants) > 10


def test_held_out_combinations_never_appear_in_training() -> None:
    held = set(sc.HELD_OUT_COMBINATIONS)
    assert len(held) == 4 * len(OBJECTS)
    assert {w for w, _, _ in held} == set(OBJECT_WORDS)
    # Every object is still trained at every position and on every colour.
    train = set(sc.TRAIN_COMBINATIONS)
    assert {(w, p) for w, p, _ in train} == {(w, p) for w in OBJECT_WORDS for p in POSITION_NAMES}
    assert {(w, c) for w, _, c in train} == {(w, c) for w in OBJECT_WORDS for c in COLOUR_NAMES}
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(5000):
        scene = sc.sample_scene(rng, "train", two_objects_probability=0.5)
        combos = set(scene.combinations())
        assert not combos & held, scene
        seen |= combos
    assert len(seen) > 0.9 * len(train)
    for _ in range(500):
        scene = sc.sample_scene(rng, "held_out", two_objects_probability=0.5)
        assert set(scene.combinations()) & held, scene
        assert sc.scene_split(scene) == "held_out"


def test_evaluator_recognises_rendered_scenes() -> None:
    rng = np.random.default_rng(1)
    prompts = [sc.sample_scene(rng, "held_out", 0.5) for _ in range(60)]
    scores = ev.score([sc.render(p) for p in prompts], prompts)
    assert scores.one_object >= 0.95 and scores.position >= 0.95
    assert scores.two_objects_both >= 0.9 and scores.colour == 1.0
    assert scores.count_one > 10 and scores.count_two > 10
    # Also from a larger image, as the app would show it.
    prompt = prompts[0]
    assert ev.judge(sc.render(prompt, 128), prompt).all_objects_correct


def test_evaluator_fails_a_wrong_caption() -> None:
    image = sc.render(
        sc.Scene((sc.Placed("dog", "left"), sc.Placed("horse", "right")), "green"), 32
    )
    right = sc.Scene((sc.Placed("dog", "left"), sc.Placed("horse", "right")), "green")
    assert ev.judge(image, right).all_objects_correct
    swapped = sc.Scene((sc.Placed("horse", "left"), sc.Placed("dog", "right")), "green")
    assert ev.judge(image, swapped).objects_correct == (False, False)
    other = sc.Scene((sc.Placed("rocket", "left"), sc.Placed("horse", "right")), "green")
    assert ev.judge(image, other).objects_correct == (False, True)
    wrong_colour = replace(right, background="red")
    judgement = ev.judge(image, wrong_colour)
    assert judgement.colour == "green" and not judgement.colour_correct
    alone = sc.render(sc.Scene((sc.Placed("moon", "top"),), "purple"), 32)
    judgement = ev.judge(alone, sc.Scene((sc.Placed("moon", "bottom"),), "purple"))
    assert judgement.position == "top" and not judgement.position_correct


def test_chance_levels() -> None:
    chance = ev.chance_levels()
    assert chance["one_object"] == pytest.approx(1 / len(OBJECTS))
    assert chance["colour"] == pytest.approx(1 / len(COLOURS))
    assert chance["position"] == pytest.approx(1 / len(POSITION_NAMES))


# --- captions that leave attributes out (issue 14) ---------------------------------------------


def _says_position(text: str, placed: sc.Placed) -> bool:
    return any(phrase in text for phrase in POSITION_PHRASES[placed.position])


def test_captions_leave_out_each_attribute_and_keep_every_object() -> None:
    rng = np.random.default_rng(8)
    seen = {"position": 0, "size": 0, "colour": 0, "nothing": 0}
    for _ in range(600):
        scene = sc.sample_scene(rng)
        text = sc.caption(scene, rng, leave_out=0.3)
        for placed in scene.objects:  # every object is still named, once
            assert len(re.findall(rf"\b{placed.word}\b", text)) == 1, text
        says_colour = "background" in text
        assert says_colour == (scene.background in text.split(" ")
                               or f"{scene.background}," in text), text
        positions = [_says_position(text, o) for o in scene.objects]
        assert all(positions) or not any(positions), text  # all positions said, or none
        sized = [o for o in scene.objects if o.size != "medium"]
        sizes = [f"{o.size} {o.word}" in text for o in sized]
        assert all(sizes) or not any(sizes), text
        seen["colour"] += not says_colour
        seen["position"] += not any(positions)
        seen["size"] += bool(sized) and not any(sizes)
        seen["nothing"] += says_colour and all(positions) and all(sizes)
        if not says_colour and not any(positions) and not any(sizes):
            assert text == " and ".join(
                f"{'an' if o.word[0] in 'aeiou' else 'a'} {o.word}" for o in scene.objects)
    # Each attribute is left out about 30% of the time (a size only where one would be said).
    assert 120 < seen["colour"] < 240 and 100 < seen["position"] < 240
    assert 60 < seen["size"] < 200 and seen["nothing"] > 150


def test_without_leave_out_every_caption_says_everything() -> None:
    rng = np.random.default_rng(9)
    for _ in range(300):
        scene = sc.sample_scene(rng)
        text = sc.caption(scene, rng, leave_out=0.0)
        assert "background" in text and all(_says_position(text, o) for o in scene.objects)


def test_position_less_captions_never_show_a_held_out_object_colour_pair() -> None:
    pairs = set(sc.HELD_OUT_PAIRS)
    assert len(pairs) == len(OBJECTS) and {w for w, _ in pairs} == set(OBJECT_WORDS)
    assert all(any(h[0] == w and h[2] == c for h in sc.HELD_OUT_COMBINATIONS) for w, c in pairs)
    rng = np.random.default_rng(10)
    position_less_with_colour = 0
    for _ in range(3000):
        scene = sc.sample_scene(rng)
        text = sc.caption(scene, rng, leave_out=0.5)
        if "background" in text and not any(_says_position(text, o) for o in scene.objects):
            position_less_with_colour += 1
            assert not any(sc.is_pair_held_out(o.word, scene.background)
                           for o in scene.objects), text
    assert position_less_with_colour > 300
    # The pairs are still trained with a position named: only the phrasing is held out.
    train_pairs = {(w, c) for w, _, c in sc.TRAIN_COMBINATIONS}
    assert pairs <= train_pairs


def test_captions_that_leave_out_are_reproducible_by_seed() -> None:
    a = sc.sample_batch(np.random.default_rng([0, 7]), 40, leave_out=0.25)
    b = sc.sample_batch(np.random.default_rng([0, 7]), 40, leave_out=0.25)
    assert a[1] == b[1] and a[2] == b[2] and np.array_equal(a[0], b[0])
    c = sc.sample_batch(np.random.default_rng([0, 8]), 40, leave_out=0.25)
    assert c[1] != a[1]
    # Leaving out changes only the words: the same generator draws the same first scene.
    plain = sc.sample_batch(np.random.default_rng([0, 7]), 1, leave_out=0.0)
    assert plain[2] == a[2][:1]
