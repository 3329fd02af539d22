"""Judge a generated image against reference renderings of every candidate (issue 3).

For a prompt scene, each question is decided by rendering every candidate answer and taking the
one nearest to the image:

- object, per object of the prompt: the prompt scene with that object replaced by each known
  object (same position, size and background; the other object kept), so a two-object image
  with the objects swapped fails on both sides;
- position, for one-object prompts: the object at each of the five positions;
- background colour: the prompt scene on each background colour.

The distance: both images are brought to 32 x 32 (area resampling), averaged over 2 x 2 blocks
to 16 x 16, blurred with a Gaussian of sigma 1 (in 16-px units; 2 px of the 32 px image), and
compared by the mean squared error of their RGB values in [0, 1]. The blur makes a one- or
two-pixel shift of an object cost little, so the nearest reference is decided by what is drawn
and where, not by exact pixels. References are drawn without jitter.

``self_check`` runs the evaluator on real rendered scenes (with jitter), which should score near
100%, and reports chance levels and trivial baselines beside it. numpy and Pillow only.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image

from engine.starter.objects import COLOUR_NAMES, COLOURS, OBJECT_WORDS, POSITION_NAMES
from engine.starter.scenes import Scene, render, sample_scene

EVAL_SIZE = 32
BLUR_SIGMA = 1.0  # in units of the 16 x 16 feature grid
# Shifts (fraction of the side: -1.5, 0, +1.5 px at 32 px) tried for the object being judged.
SHIFTS = (-1.5 / 32, 0.0, 1.5 / 32)


def _blur_matrix(n: int, sigma: float) -> np.ndarray:
    """An n x n matrix applying a Gaussian blur along one axis, edges replicated."""
    radius = max(1, int(round(3 * sigma)))
    offsets = np.arange(-radius, radius + 1)
    weights = np.exp(-0.5 * (offsets / sigma) ** 2)
    weights /= weights.sum()
    m = np.zeros((n, n), dtype=np.float32)
    for i in range(n):
        for off, w in zip(offsets, weights, strict=True):
            m[i, min(max(i + off, 0), n - 1)] += w
    return m


# Averaging 2 x 2 blocks then blurring, as one 16 x 32 matrix applied along each axis.
_DOWN = np.kron(np.eye(EVAL_SIZE // 2, dtype=np.float32), np.full((1, 2), 0.5, np.float32))
_PROJECT = np.ascontiguousarray(_blur_matrix(EVAL_SIZE // 2, BLUR_SIGMA) @ _DOWN)


def features(images: np.ndarray) -> np.ndarray:
    """The space the distance is measured in: N x 16 x 16 x 3 float32 (or 16 x 16 x 3 for one
    image), from ``uint8`` images of any square size."""
    single = images.ndim == 3
    batch = images[None] if single else images
    if batch.shape[1:3] != (EVAL_SIZE, EVAL_SIZE):
        batch = np.stack(
            [
                np.asarray(
                    Image.fromarray(np.ascontiguousarray(im)).resize(
                        (EVAL_SIZE, EVAL_SIZE), Image.Resampling.BOX
                    )
                )
                for im in batch
            ]
        )
    x = batch.astype(np.float32).transpose(0, 3, 1, 2) / 255.0  # N x 3 x 32 x 32
    x = (_PROJECT @ x @ _PROJECT.T).transpose(0, 2, 3, 1)  # N x 16 x 16 x 3
    return x[0] if single else x


def distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean squared error between feature arrays (broadcasting over leading axes)."""
    return ((a - b) ** 2).mean(axis=(-3, -2, -1))


def _shifted(scene: Scene, slot: int | None) -> list[Scene]:
    """The scene with object ``slot`` shifted by each of SHIFTS in x and y (None: unshifted)."""
    if slot is None:
        return [scene]
    out = []
    for dx in SHIFTS:
        for dy in SHIFTS:
            objects = tuple(
                replace(o, dx=dx, dy=dy) if i == slot else o for i, o in enumerate(scene.objects)
            )
            out.append(replace(scene, objects=objects))
    return out


@functools.lru_cache(maxsize=64)
def _reference_stack(candidates: tuple[Scene, ...], slot: int | None) -> np.ndarray:
    """Features of every candidate at every shift: candidates x shifts x 16 x 16 x 3."""
    scenes = [s for c in candidates for s in _shifted(c, slot)]
    f = features(np.stack([render(s, EVAL_SIZE) for s in scenes]))
    return f.reshape(len(candidates), -1, *f.shape[1:])


def _nearest(image_features: np.ndarray, candidates: list[Scene], slot: int | None) -> int:
    """The candidate nearest the image: distance to a candidate is the smallest over shifts."""
    refs = _reference_stack(tuple(candidates), slot)
    return int(np.argmin(distance(image_features, refs).min(axis=1)))


def object_candidates(prompt: Scene, slot: int) -> list[Scene]:
    """The prompt scene with object ``slot`` replaced by each known object (OBJECT_WORDS order)."""
    base = prompt.without_jitter()
    out = []
    for word in OBJECT_WORDS:
        objects = list(base.objects)
        objects[slot] = replace(objects[slot], word=word)
        out.append(replace(base, objects=tuple(objects)))
    return out


def position_candidates(prompt: Scene) -> list[Scene]:
    """A one-object prompt scene with its object at each position, in POSITION_NAMES order."""
    base = prompt.without_jitter()
    return [replace(base, objects=(replace(base.objects[0], position=p),)) for p in POSITION_NAMES]


def colour_candidates(prompt: Scene) -> list[Scene]:
    """The prompt scene on each background colour, in COLOUR_NAMES order."""
    base = prompt.without_jitter()
    return [replace(base, background=c) for c in COLOUR_NAMES]


@dataclass(frozen=True)
class Judgement:
    """What the evaluator sees in an image, for a prompt scene."""

    objects: tuple[str, ...]  # the nearest object at each of the prompt's objects' places
    objects_correct: tuple[bool, ...]
    position: str | None  # the nearest position (one-object prompts only)
    position_correct: bool | None
    colour: str
    colour_correct: bool

    @property
    def all_objects_correct(self) -> bool:
        return all(self.objects_correct)


def judge(image: np.ndarray, prompt: Scene) -> Judgement:
    """Which object(s), position and background colour ``image`` (uint8 HxWx3) shows, each
    chosen as the nearest reference rendering among all candidates for the prompt scene."""
    f = features(image)
    objects = tuple(
        OBJECT_WORDS[_nearest(f, object_candidates(prompt, slot), slot)]
        for slot in range(len(prompt.objects))
    )
    correct = tuple(o == p.word for o, p in zip(objects, prompt.objects, strict=True))
    position = position_correct = None
    if len(prompt.objects) == 1:
        position = POSITION_NAMES[_nearest(f, position_candidates(prompt), 0)]
        position_correct = position == prompt.objects[0].position
    colour = COLOUR_NAMES[_nearest(f, colour_candidates(prompt), None)]
    return Judgement(
        objects, correct, position, position_correct, colour, colour == prompt.background
    )


@dataclass(frozen=True)
class Scores:
    """Accuracies over a set of (image, prompt) pairs, as fractions."""

    one_object: float  # one-object prompts: the named object is nearest
    position: float  # one-object prompts: the named position is nearest
    two_objects_both: float  # two-object prompts: both objects nearest at their named places
    two_objects_each: float  # two-object prompts: per object
    colour: float  # all prompts: the named background colour is nearest
    count_one: int
    count_two: int

    def as_dict(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def score(images: list[np.ndarray] | np.ndarray, prompts: list[Scene]) -> Scores:
    """Judge every image against its prompt and total the accuracies."""
    return total(
        [judge(image, prompt) for image, prompt in zip(images, prompts, strict=True)], prompts
    )


def total(judgements: list[Judgement], prompts: list[Scene]) -> Scores:
    """The accuracies of judgements made for their prompts."""
    one, pos, both, each, colour = [], [], [], [], []
    for j, prompt in zip(judgements, prompts, strict=True):
        colour.append(j.colour_correct)
        if len(prompt.objects) == 1:
            one.append(j.objects_correct[0])
            pos.append(bool(j.position_correct))
        else:
            both.append(j.all_objects_correct)
            each.extend(j.objects_correct)

    def mean(xs: list[bool]) -> float:
        return float(np.mean(xs)) if xs else float("nan")

    return Scores(mean(one), mean(pos), mean(both), mean(each), mean(colour), len(one), len(both))


def chance_levels() -> dict[str, float]:
    """Accuracy of guessing uniformly at random."""
    n_obj, n_pos, n_col = len(OBJECT_WORDS), len(POSITION_NAMES), len(COLOUR_NAMES)
    return {
        "one_object": 1 / n_obj,
        "position": 1 / n_pos,
        "two_objects_both": 1 / n_obj**2,
        "two_objects_each": 1 / n_obj,
        "colour": 1 / n_col,
    }


def self_check(
    count: int = 400, seed: int = 0, split: str = "held_out", two_objects_probability: float = 0.5
) -> dict[str, dict[str, float]]:
    """The evaluator on real rendered scenes (jittered, as in training), beside chance and two
    trivial baselines: a plain image of the named background colour, and a rendering of an
    unrelated random scene."""
    rng = np.random.default_rng(seed)
    prompts = [sample_scene(rng, split, two_objects_probability) for _ in range(count)]
    unrelated = [sample_scene(rng, split, two_objects_probability) for _ in prompts]
    rendered, plain, other = [], [], []
    for prompt, stranger in zip(
        prompts, unrelated, strict=True
    ):  # one prompt at a time: references cached
        rendered.append(judge(render(prompt, EVAL_SIZE), prompt))
        background = np.array(COLOURS[prompt.background], np.uint8)
        plain.append(judge(np.broadcast_to(background, (EVAL_SIZE, EVAL_SIZE, 3)), prompt))
        other.append(judge(render(stranger, EVAL_SIZE), prompt))
    return {
        "rendered_scenes": total(rendered, prompts).as_dict(),
        "chance": chance_levels(),
        "plain_background_baseline": total(plain, prompts).as_dict(),
        "unrelated_scene_baseline": total(other, prompts).as_dict(),
    }


if __name__ == "__main__":
    import json
    import time

    start = time.perf_counter()
    report = self_check()
    report["seconds"] = {"self_check": time.perf_counter() - start}
    print(json.dumps(report, indent=2))
