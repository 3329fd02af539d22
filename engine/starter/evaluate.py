"""Measure the starter model: does it draw the named object, at the named place, on the named
background, for prompts it never saw in training?

    python -m engine.starter.evaluate [--model resources/models/starter] [--count 200]

Prompts are scenes drawn from the held-out split (each holds an (object, position, colour)
combination that training never showed), said in the canonical phrasing. Each picture is made
through the engine, exactly as ``easel generate`` makes it (seed = the prompt's index), and
judged by ``evaluate_reference``: the nearest of the reference renderings of every candidate.
Beside the model's figures it prints the evaluator's own accuracy on real rendered scenes and
the chance level.

A second table (issue 14) asks for objects without saying where: the object alone ("a cat"),
the object on a colour ("a cat on a green background", for the (object, colour) pairs that
training never says without a position), two objects on a colour with no positions, and
"a dog" again and again. Those pictures are judged by ``evaluate_count``, which finds every
object wherever it is: are the named objects there, is the picture empty, is anything drawn
twice? Those prompts are drawn as ``easel generate`` draws them, with a place given to each
object they leave unplaced (``engine.placement``); the last column is the weights alone, the
prompt drawn as written. Not a timed test: it takes a few minutes.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.model import load_model
from engine.pipelines.text_to_image import TextToImagePipeline
from engine.request import TextToImageRequest
from engine.runtime import RuntimeOptions
from engine.starter import evaluate_count
from engine.starter.evaluate_reference import Judgement, judge, self_check, total
from engine.starter.objects import OBJECT_WORDS, OBJECTS_BY_WORD
from engine.starter.scenes import HELD_OUT_PAIRS, Scene, caption, sample_scene

REPOSITORY = Path(__file__).resolve().parents[2]
SHIPPED = REPOSITORY / "resources" / "models" / "starter"
TARGETS = {"one_object": 0.70, "left_right_both": 0.85, "colour": 0.90}
# For prompts without positions (issue 14): the named objects in at least 95% of pictures,
# no empty picture and no extra copy.
UNPLACED_TARGETS = {"shows_named": 0.95, "empty": 0.0, "extra_copies": 0.0}
UNPLACED_FORMS = {
    "object_only": 'object only ("a cat")',
    "object_colour": 'object + colour ("a cat on a green background")',
    "two_objects": 'two objects, no positions ("a cat and a dog on ...")',
    "a_dog": '"a dog", counted as one dog',
    "phrasings": 'a size or other phrasing ("a big cat", ...)',
}


@dataclass(frozen=True)
class UnplacedPrompt:
    """A prompt that names objects (and perhaps a colour) but no position."""

    text: str
    objects: tuple[str, ...]
    colour: str | None


def _naming(words: tuple[str, ...], colour: str | None) -> UnplacedPrompt:
    subject = " and ".join(f"{OBJECTS_BY_WORD[w].article} {w}" for w in words)
    text = subject if colour is None else f"{subject} on a {colour} background"
    return UnplacedPrompt(text.replace(" a orange", " an orange"), words, colour)


def _phrasing(form: int, word: str, other: str, colour: str) -> UnplacedPrompt:
    """One of four other ways to name objects without a place: with a size, or in the
    caption templates that lead with the background or list the objects."""
    one, two = OBJECTS_BY_WORD[word].article, OBJECTS_BY_WORD[other].article
    background = f"{'an' if colour == 'orange' else 'a'} {colour} background"
    if form == 0:
        return UnplacedPrompt(f"a big {word}", (word,), None)
    if form == 1:
        return UnplacedPrompt(f"a small {word} on {background}", (word,), colour)
    if form == 2:
        return UnplacedPrompt(f"{background} with {one} {word} and {two} {other}",
                              (word, other), colour)
    return UnplacedPrompt(f"{one} {word}, {two} {other}, {colour} background", (word, other),
                          colour)


def unplaced_prompts(count: int, seed: int = 0) -> dict[str, list[UnplacedPrompt]]:
    """``count`` prompts of each form without positions. Object + colour uses the
    (object, colour) pairs that training never says without a position (``HELD_OUT_PAIRS``);
    two objects pair one of those with another object on its colour, named in either order;
    the other phrasings take turns over the same pairs."""
    rng = np.random.default_rng([seed, 14])
    pairs = [HELD_OUT_PAIRS[i % len(HELD_OUT_PAIRS)] for i in range(count)]
    two = []
    for word, colour in pairs:
        other = str(rng.choice([w for w in OBJECT_WORDS if w != word]))
        two.append(_naming((word, other) if rng.random() < 0.5 else (other, word), colour))
    phrasings = []  # drawn after the forms above, so those stay as they were
    for index, (word, colour) in enumerate(pairs):
        other = str(rng.choice([w for w in OBJECT_WORDS if w != word]))
        phrasings.append(_phrasing(index % 4, word, other, colour))
    return {
        "object_only": [_naming((OBJECT_WORDS[i % len(OBJECT_WORDS)],), None)
                        for i in range(count)],
        "object_colour": [_naming((word,), colour) for word, colour in pairs],
        "two_objects": two,
        "a_dog": [_naming(("dog",), None)] * count,
        "phrasings": phrasings,
    }


def generate_and_count(pipeline: TextToImagePipeline, prompts: list[UnplacedPrompt],
                       steps: int | None = None,
                       guidance: float | None = None) -> evaluate_count.CountScores:
    counts = []
    for index, prompt in enumerate(prompts):
        request = TextToImageRequest(prompt.text, seed=index, steps=steps, guidance=guidance)
        image = pipeline(request).images[0].pixels
        counts.append(evaluate_count.count(image, prompt.objects))
    return evaluate_count.total(counts, [p.colour for p in prompts])


def prompt_scenes(count: int, split: str = "held_out", seed: int = 0) -> dict[str, list[Scene]]:
    """``count`` one-object scenes, ``count`` left/right pairs and ``count // 2`` top/bottom
    pairs, from the split, fixed by the seed."""
    rng = np.random.default_rng([seed, 1])
    one = [sample_scene(rng, split, two_objects_probability=0.0) for _ in range(count)]
    left_right: list[Scene] = []
    top_bottom: list[Scene] = []
    while len(left_right) < count or len(top_bottom) < count // 2:
        scene = sample_scene(rng, split, two_objects_probability=1.0)
        group = left_right if {o.position for o in scene.objects} == {"left", "right"} \
            else top_bottom
        if len(group) < (count if group is left_right else count // 2):
            group.append(scene)
    return {"one_object": one, "left_right": left_right, "top_bottom": top_bottom}


def generate_and_judge(pipeline: TextToImagePipeline, scenes: list[Scene],
                       steps: int | None = None,
                       guidance: float | None = None) -> list[Judgement]:
    judgements = []
    for index, scene in enumerate(scenes):
        request = TextToImageRequest(caption(scene), seed=index, steps=steps, guidance=guidance)
        image = pipeline(request).images[0].pixels
        judgements.append(judge(image, scene))
    return judgements


def evaluate(folder: Path, count: int = 200, split: str = "held_out",
             steps: int | None = None, guidance: float | None = None,
             unplaced_count: int | None = None) -> dict:
    model = load_model(folder, RuntimeOptions(providers=("cpu",)))
    pipeline = TextToImagePipeline(model)
    started = time.perf_counter()
    groups = prompt_scenes(count, split)
    results = {name: total(generate_and_judge(pipeline, scenes, steps, guidance), scenes)
               for name, scenes in groups.items()}
    as_written = TextToImagePipeline(model, place_objects=False)
    unplaced, unplaced_as_written = {}, {}
    for name, prompts in unplaced_prompts(unplaced_count or count).items():
        unplaced[name] = generate_and_count(pipeline, prompts, steps, guidance).as_dict()
        unplaced_as_written[name] = generate_and_count(as_written, prompts, steps,
                                                       guidance).as_dict()
    seconds = time.perf_counter() - started
    images = sum(len(scenes) for scenes in groups.values()) + 2 * sum(
        int(form["pictures"]) for form in unplaced.values())
    one, left_right, top_bottom = (results[k] for k in ("one_object", "left_right", "top_bottom"))
    colour = float(np.mean([one.colour, left_right.colour, top_bottom.colour]))
    return {
        "model": str(folder), "split": split, "images": images,
        "steps": steps or model.description.default_steps,
        "guidance": guidance if guidance is not None else model.description.default_guidance,
        "one_object": one.one_object, "position": one.position,
        "left_right_both": left_right.two_objects_both,
        "left_right_each": left_right.two_objects_each,
        "top_bottom_both": top_bottom.two_objects_both,
        "colour": colour,
        "unplaced": unplaced,
        "unplaced_as_written": unplaced_as_written,
        "seconds_per_image": seconds / images,
    }


def report(figures: dict, reference: dict) -> str:
    rendered = reference["rendered_scenes"]
    chance = reference["chance"]
    rows = [
        ("named object wins (one object)", "one_object", rendered["one_object"],
         chance["one_object"]),
        ("named position wins (one object)", "position", rendered["position"],
         chance["position"]),
        ("both objects on their sides (left/right)", "left_right_both",
         rendered["two_objects_both"], chance["two_objects_both"]),
        ("each object on its side (left/right)", "left_right_each",
         rendered["two_objects_each"], chance["two_objects_each"]),
        ("both objects in place (top/bottom)", "top_bottom_both",
         rendered["two_objects_both"], chance["two_objects_both"]),
        ("background colour", "colour", rendered["colour"], chance["colour"]),
    ]
    lines = [f"{'':44} {'model':>7} {'target':>7} {'renders':>8} {'chance':>7}"]
    for label, key, evaluator, guess in rows:
        target = f"{TARGETS[key]:.0%}" if key in TARGETS else ""
        lines.append(f"{label:44} {figures[key]:>7.1%} {target:>7} {evaluator:>8.1%} "
                     f"{guess:>7.1%}")
    lines.append("")
    lines.extend(report_unplaced(figures["unplaced"], figures.get("unplaced_as_written"),
                                 reference.get("count_judge")))
    lines.append(f"{figures['images']} images, {figures['steps']} steps, guidance "
                 f"{figures['guidance']}, {figures['seconds_per_image']:.2f} s per image "
                 f"(with judging); 'renders' is the evaluator on real rendered scenes")
    return "\n".join(lines)


def report_unplaced(unplaced: dict, as_written: dict | None,
                    judge_check: dict | None) -> list[str]:
    """The table for prompts without positions, with the weights alone in the last column
    ("alone": exactly the named objects, the prompt drawn as written) and the count judge's
    own record."""
    columns = ("shows_named", "exactly_named", "empty", "extra_copies", "colour")
    heads = ("named", "exactly", "empty", "extra", "colour", "alone")
    lines = [f"{'no position named':58} " + " ".join(f"{h:>7}" for h in heads)]
    for key, label in UNPLACED_FORMS.items():
        row = unplaced[key]
        cells = ["" if row[c] != row[c] else f"{row[c]:.1%}" for c in columns]  # NaN: blank
        if as_written:
            cells.append(f"{as_written[key]['exactly_named']:.1%}")
        lines.append(f"{label + ' (' + str(int(row['pictures'])) + ')':58} "
                     + " ".join(f"{c:>7}" for c in cells))
    lines.append(f"{'target':58} " + " ".join(
        f"{'>=' + format(UNPLACED_TARGETS['shows_named'], '.0%'):>7}" if c == "shows_named"
        else f"{format(UNPLACED_TARGETS[c], '.0%'):>7}" if c in UNPLACED_TARGETS else f"{'':>7}"
        for c in columns))
    if judge_check:
        rendered, twice, plain = (judge_check[k] for k in
                                  ("rendered_scenes", "object_drawn_twice", "plain_background"))
        lines.append(
            f"count judge on renders: named objects found exactly in "
            f"{rendered['exactly_named']:.1%} of {int(rendered['pictures'])} scenes, "
            f"a second copy seen in "
            f"{twice['extra_copies']:.1%} of {int(twice['pictures'])}, plain backgrounds empty "
            f"in {plain['empty']:.1%}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=SHIPPED, help="a starter model folder")
    parser.add_argument("--count", type=int, default=200,
                        help="prompts per group (one object, left/right; half for top/bottom)")
    parser.add_argument("--unplaced-count", type=int,
                        help="prompts per form without positions (default: --count)")
    parser.add_argument("--split", choices=("held_out", "train"), default="held_out")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--guidance", type=float)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    figures = evaluate(args.model, args.count, args.split, args.steps, args.guidance,
                       args.unplaced_count)
    reference = self_check(count=400, split=args.split)
    reference["count_judge"] = evaluate_count.self_check()
    print(report(figures, reference))
    if args.json:
        args.json.write_text(json.dumps({"model": figures, "evaluator": reference}, indent=2)
                             + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
