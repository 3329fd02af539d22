"""Emoji scenes for the starter model: compose, render, caption, split and sample.

A scene is one or two emoji objects, each at a named position with a named size, on a plain
background colour. Scenes are plain frozen dataclasses; ``render`` draws one as a ``uint8``
HxWx3 array, ``caption`` says it in words. Glyphs are rendered from the font once, then
resized once per pixel size and cached; a scene is composed by alpha blending in numpy.

The train / held-out split is over (object, position, colour) combinations, fixed by a hash
of the combination's words, so it never depends on a seed or on the order of the lists.
numpy and Pillow only.
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont, features

from engine.starter.objects import (
    COLOUR_NAMES,
    COLOURS,
    OBJECT_WORDS,
    OBJECTS_BY_WORD,
    PAIR_LAYOUTS,
    PAIR_SIZE_NAMES,
    POSITION_NAMES,
    POSITION_PHRASES,
    POSITIONS,
    SIZE_NAMES,
    SIZES,
)

FONT_ENV = "EASEL_EMOJI_FONT"
FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf",  # Debian, Ubuntu: fonts-noto-color-emoji
    "/usr/share/fonts/noto/NotoColorEmoji.ttf",  # Arch: noto-fonts-emoji
    "/usr/share/fonts/google-noto-color-emoji-fonts/NotoColorEmoji.ttf",  # Fedora
)
FONT_PIXEL_SIZE = 109  # the only size the CBDT bitmaps come in (136 x 128 px glyphs)

HELD_OUT_PER_OBJECT = 4  # (position, colour) combinations of each object kept for evaluation
DEFAULT_JITTER = 0.05  # largest random shift of an object, as a fraction of the image side
MARGIN = 1 / 32  # objects stay this far (fraction of the side) inside the image edges


class FontMissing(RuntimeError):
    """The Noto Color Emoji font is not installed (or Pillow cannot lay out its sequences)."""


def find_font() -> Path | None:
    """The Noto Color Emoji font file: ``$EASEL_EMOJI_FONT`` or a distribution's path."""
    override = os.environ.get(FONT_ENV)
    for candidate in ([override] if override else []) + list(FONT_CANDIDATES):
        if Path(candidate).is_file():
            return Path(candidate)
    return None


# --- scenes -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Placed:
    """One object in a scene. ``dx``/``dy`` shift it by a fraction of the image side."""

    word: str
    position: str
    size: str = "medium"
    dx: float = 0.0
    dy: float = 0.0

    def __post_init__(self) -> None:
        if self.word not in OBJECTS_BY_WORD:
            raise ValueError(f"unknown object {self.word!r}")
        if self.position not in POSITIONS:
            raise ValueError(f"unknown position {self.position!r}")
        if self.size not in SIZES:
            raise ValueError(f"unknown size {self.size!r}")


@dataclass(frozen=True)
class Scene:
    """One or two placed objects, in the order the caption names them, on a background."""

    objects: tuple[Placed, ...]
    background: str

    def __post_init__(self) -> None:
        if self.background not in COLOURS:
            raise ValueError(f"unknown background colour {self.background!r}")
        if not 1 <= len(self.objects) <= 2:
            raise ValueError("a scene has one or two objects")

    def without_jitter(self) -> Scene:
        return replace(self, objects=tuple(replace(o, dx=0.0, dy=0.0) for o in self.objects))

    def combinations(self) -> tuple[tuple[str, str, str], ...]:
        """The scene's (object, position, colour) combinations, one per object."""
        return tuple((o.word, o.position, self.background) for o in self.objects)


# --- glyphs and rendering ---------------------------------------------------------------------


@functools.cache
def _font() -> ImageFont.FreeTypeFont:
    path = find_font()
    if path is None:
        raise FontMissing(
            "the Noto Color Emoji font is not installed: install the Debian package "
            f"fonts-noto-color-emoji, or set {FONT_ENV} to NotoColorEmoji.ttf"
        )
    if not features.check("raqm"):
        raise FontMissing("Pillow lacks libraqm, needed to draw emoji sequences (astronaut)")
    return ImageFont.truetype(str(path), FONT_PIXEL_SIZE, layout_engine=ImageFont.Layout.RAQM)


@functools.cache
def master_glyph(word: str) -> Image.Image:
    """The object's emoji at the font's native size, RGBA, cropped to its visible pixels."""
    font = _font()
    sequence = OBJECTS_BY_WORD[word].sequence
    canvas = Image.new("RGBA", (2 * FONT_PIXEL_SIZE, 2 * FONT_PIXEL_SIZE), (0, 0, 0, 0))
    ImageDraw.Draw(canvas).text((0, 0), sequence, font=font, embedded_color=True)
    box = canvas.getbbox()
    if box is None:
        raise FontMissing(f"the font draws nothing for {word!r}")
    glyph = canvas.crop(box)
    if glyph.width > 1.5 * FONT_PIXEL_SIZE:  # a sequence drawn as several glyphs
        raise FontMissing(f"the font draws {word!r} as more than one glyph")
    return glyph


@functools.cache
def glyph(word: str, box_px: int) -> tuple[np.ndarray, np.ndarray]:
    """The glyph fitted into a ``box_px`` square (aspect kept), as float32 arrays
    (premultiplied RGB HxWx3, and 1 - alpha HxWx1), ready to blend."""
    master = master_glyph(word)
    scale = box_px / max(master.size)
    size = (max(1, round(master.width * scale)), max(1, round(master.height * scale)))
    # Pillow resizes RGBA premultiplied, so transparent pixels do not darken the edges.
    small = np.asarray(master.resize(size, Image.Resampling.LANCZOS), dtype=np.float32)
    alpha = small[..., 3:] / 255.0
    premultiplied = np.ascontiguousarray(small[..., :3] * alpha)
    premultiplied.setflags(write=False)
    transparency = np.ascontiguousarray(1.0 - alpha)
    transparency.setflags(write=False)
    return premultiplied, transparency


def object_box(placed: Placed, size: int) -> tuple[int, int, int, int]:
    """Where ``placed`` lands in a ``size`` px image: (x0, y0, x1, y1), end exclusive."""
    premultiplied, _ = glyph(placed.word, round(SIZES[placed.size] * size))
    h, w = premultiplied.shape[:2]
    fx, fy = POSITIONS[placed.position]
    margin = round(MARGIN * size)
    x0 = round((fx + placed.dx) * size - w / 2)
    y0 = round((fy + placed.dy) * size - h / 2)
    x0 = min(max(x0, margin), size - margin - w)
    y0 = min(max(y0, margin), size - margin - h)
    return x0, y0, x0 + w, y0 + h


def render(scene: Scene, size: int = 32) -> np.ndarray:
    """The scene as a ``uint8`` array, ``size`` x ``size`` x 3."""
    out = np.empty((size, size, 3), dtype=np.float32)
    out[...] = COLOURS[scene.background]
    for placed in scene.objects:
        premultiplied, transparency = glyph(placed.word, round(SIZES[placed.size] * size))
        x0, y0, x1, y1 = object_box(placed, size)
        region = out[y0:y1, x0:x1]
        region *= transparency
        region += premultiplied
    out += 0.5
    return out.astype(np.uint8)


def render_batch(scenes: list[Scene] | tuple[Scene, ...], size: int = 32) -> np.ndarray:
    """Several scenes as one ``uint8`` array, N x ``size`` x ``size`` x 3."""
    return (
        np.stack([render(s, size) for s in scenes])
        if scenes
        else np.zeros((0, size, size, 3), np.uint8)
    )


# --- captions ---------------------------------------------------------------------------------

# Templates take the objects' phrases joined with " and " ({subject}) or ", " ({listing}).
CAPTION_TEMPLATES = (
    "{subject}, on a {colour} background",  # canonical
    "{subject} on a {colour} background",
    "{listing}, {colour} background",
    "a {colour} background with {subject}",
    "{subject} against a {colour} background",
)
# A caption that leaves the background colour out says only the objects.
CAPTION_TEMPLATES_WITHOUT_COLOUR = ("{subject}",)
# Attributes a training caption may leave out; the scene keeps them (an object whose position
# is not said still sits somewhere), so an unnamed attribute comes to mean "any".
ATTRIBUTES = ("position", "size", "colour")


def _object_phrase(placed: Placed, position_phrase: str, say_size: bool = True) -> str:
    noun = OBJECTS_BY_WORD[placed.word].word
    if placed.size != "medium" and say_size:
        noun = f"{placed.size} {noun}"
    article = "an" if noun[0] in "aeiou" else "a"
    return f"{article} {noun} {position_phrase}".rstrip()


def caption(scene: Scene, rng: np.random.Generator | None = None, leave_out: float = 0.0) -> str:
    """The scene in words. Without ``rng`` the canonical phrasing, e.g.
    "an avocado on the left, on a blue background"; with it, a random phrasing variant, which
    with ``leave_out`` > 0 leaves each attribute (the positions, the sizes, the background
    colour) unsaid with that probability, e.g. "an avocado on a blue background" or
    "an avocado". Positions are kept where ``is_pair_held_out`` keeps an (object, colour)
    pair out of position-less captions."""
    omitted = omitted_attributes(scene, rng, leave_out) if rng is not None else frozenset()
    if rng is None:
        template = CAPTION_TEMPLATES[0]
        phrases = [_object_phrase(o, POSITION_PHRASES[o.position][0]) for o in scene.objects]
    else:
        templates = (
            CAPTION_TEMPLATES_WITHOUT_COLOUR if "colour" in omitted else CAPTION_TEMPLATES
        )
        template = templates[int(rng.integers(len(templates)))]
        phrases = []
        for o in scene.objects:
            options = POSITION_PHRASES[o.position]
            phrase = options[int(rng.integers(len(options)))]
            phrases.append(
                _object_phrase(o, "" if "position" in omitted else phrase, "size" not in omitted)
            )
    text = template.format(
        subject=" and ".join(phrases), listing=", ".join(phrases), colour=scene.background
    )
    return text.replace(" a orange", " an orange")


def omitted_attributes(
    scene: Scene, rng: np.random.Generator, leave_out: float
) -> frozenset[str]:
    """Which of ATTRIBUTES a random caption of ``scene`` leaves unsaid: each with probability
    ``leave_out``, independently (one draw per attribute, so the generator advances the same
    way whatever is left out). Nothing is drawn when ``leave_out`` is 0."""
    if leave_out <= 0:
        return frozenset()
    draws = rng.random(len(ATTRIBUTES))
    omitted = {a for a, d in zip(ATTRIBUTES, draws, strict=True) if d < leave_out}
    if "position" in omitted and "colour" not in omitted and any(
        is_pair_held_out(o.word, scene.background) for o in scene.objects
    ):
        omitted.discard("position")  # "a cat on a green background" is kept for evaluation
    return frozenset(omitted)


# --- the train / held-out split ---------------------------------------------------------------


def _combination_rank(combination: tuple[str, str, str]) -> bytes:
    return hashlib.sha256("easel-starter|{}|{}|{}".format(*combination).encode()).digest()


ALL_COMBINATIONS: tuple[tuple[str, str, str], ...] = tuple(
    (w, p, c) for w in OBJECT_WORDS for p in POSITION_NAMES for c in COLOUR_NAMES
)
# For each object, the HELD_OUT_PER_OBJECT of its (position, colour) combinations with the
# smallest SHA-256 of "easel-starter|object|position|colour": fixed by the words alone.
HELD_OUT_COMBINATIONS: tuple[tuple[str, str, str], ...] = tuple(
    t
    for w in OBJECT_WORDS
    for t in sorted(
        ((w, p, c) for p in POSITION_NAMES for c in COLOUR_NAMES), key=_combination_rank
    )[:HELD_OUT_PER_OBJECT]
)
_HELD_OUT_SET = frozenset(HELD_OUT_COMBINATIONS)
TRAIN_COMBINATIONS: tuple[tuple[str, str, str], ...] = tuple(
    t for t in ALL_COMBINATIONS if t not in _HELD_OUT_SET
)


# For each object, the background colour of its first held-out combination: training
# captions never say that (object, colour) pair without a position, so "a cat on a green
# background" (an object and a colour, no position) can be evaluated on pairs never seen so.
HELD_OUT_PAIRS: tuple[tuple[str, str], ...] = tuple(
    (w, c) for w, _, c in HELD_OUT_COMBINATIONS[::HELD_OUT_PER_OBJECT]
)
_HELD_OUT_PAIR_SET = frozenset(HELD_OUT_PAIRS)


def is_pair_held_out(word: str, colour: str) -> bool:
    """Whether (object, colour) is kept out of training captions that name no position."""
    return (word, colour) in _HELD_OUT_PAIR_SET


def is_held_out(word: str, position: str, colour: str) -> bool:
    """Whether the (object, position, colour) combination is kept out of training."""
    return (word, position, colour) in _HELD_OUT_SET


# Held-out combinations whose position can be half of a two-object layout.
_HELD_OUT_PAIRABLE = tuple(t for t in HELD_OUT_COMBINATIONS if t[1] != "centre")


def scene_split(scene: Scene) -> str:
    """'train' when all the scene's combinations are training ones, else 'held_out'."""
    return "held_out" if any(is_held_out(*t) for t in scene.combinations()) else "train"


# --- sampling ---------------------------------------------------------------------------------


def _shift(rng: np.random.Generator, jitter: float) -> tuple[float, float]:
    if jitter <= 0:
        return 0.0, 0.0
    dx, dy = rng.uniform(-jitter, jitter, size=2)
    return float(dx), float(dy)


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def sample_scene(
    rng: np.random.Generator,
    split: str = "train",
    two_objects_probability: float = 0.5,
    jitter: float = DEFAULT_JITTER,
) -> Scene:
    """A random scene. ``split="train"`` gives only training combinations;
    ``split="held_out"`` gives scenes with at least one held-out combination (a one-object
    scene's combination is held out; in a two-object scene the first-placed object's is, and
    the other object is any). The same generator state always gives the same scene."""
    if split not in ("train", "held_out"):
        raise ValueError(f"split must be 'train' or 'held_out', not {split!r}")
    two = rng.random() < two_objects_probability
    if not two:
        if split == "train":
            while True:
                word, position, colour = (
                    _pick(rng, OBJECT_WORDS),
                    _pick(rng, POSITION_NAMES),
                    _pick(rng, COLOUR_NAMES),
                )
                if not is_held_out(word, position, colour):
                    break
        else:
            word, position, colour = HELD_OUT_COMBINATIONS[
                int(rng.integers(len(HELD_OUT_COMBINATIONS)))
            ]
        size = _pick(rng, SIZE_NAMES)
        dx, dy = _shift(rng, jitter)
        return Scene((Placed(word, position, size, dx, dy),), colour)

    if split == "train":
        while True:
            layout = PAIR_LAYOUTS[int(rng.integers(len(PAIR_LAYOUTS)))]
            colour = _pick(rng, COLOUR_NAMES)
            first, second = (str(w) for w in rng.choice(OBJECT_WORDS, size=2, replace=False))
            if not is_held_out(first, layout[0], colour) and not is_held_out(
                second, layout[1], colour
            ):
                break
        positions = layout
    else:
        first, held_position, colour = _HELD_OUT_PAIRABLE[
            int(rng.integers(len(_HELD_OUT_PAIRABLE)))
        ]
        layout = next(lay for lay in PAIR_LAYOUTS if held_position in lay)
        other_position = layout[1] if layout[0] == held_position else layout[0]
        second = first
        while second == first:
            second = _pick(rng, OBJECT_WORDS)
        positions = (held_position, other_position)
    placed = []
    for word, position in zip((first, second), positions, strict=True):
        size = _pick(rng, PAIR_SIZE_NAMES)
        dx, dy = _shift(rng, jitter)
        placed.append(Placed(word, position, size, dx, dy))
    if rng.random() < 0.5:  # the caption names them in either order
        placed.reverse()
    return Scene(tuple(placed), colour)


def sample_batch(
    rng: np.random.Generator,
    count: int,
    size: int = 32,
    split: str = "train",
    two_objects_probability: float = 0.5,
    jitter: float = DEFAULT_JITTER,
    leave_out: float = 0.0,
) -> tuple[np.ndarray, list[str], list[Scene]]:
    """``count`` random scenes: images (N x size x size x 3 uint8), varied captions (each
    attribute left unsaid with probability ``leave_out``), scenes."""
    scenes = [sample_scene(rng, split, two_objects_probability, jitter) for _ in range(count)]
    captions = [caption(s, rng, leave_out) for s in scenes]
    return render_batch(scenes, size), captions, scenes


def vocabulary() -> tuple[str, ...]:
    """Every word any caption can use, sorted."""
    words: set[str] = set(OBJECT_WORDS) | set(COLOUR_NAMES) | {"small", "big", "a", "an", "and"}
    for phrases in POSITION_PHRASES.values():
        for phrase in phrases:
            words.update(phrase.split())
    for template in CAPTION_TEMPLATES:
        for token in template.replace(",", " ").split():
            if not token.startswith("{"):
                words.add(token)
    return tuple(sorted(words))


def benchmark(count: int = 5000, size: int = 32, seed: int = 0) -> dict[str, float]:
    """Scenes per second on this thread: sampling + captioning + rendering, after warm-up."""
    import time

    rng = np.random.default_rng(seed)
    for word in OBJECT_WORDS:  # warm the glyph caches
        for name in SIZE_NAMES:
            glyph(word, round(SIZES[name] * size))
    start = time.perf_counter()
    sample_batch(rng, count, size)
    elapsed = time.perf_counter() - start
    scenes = [sample_scene(rng) for _ in range(count)]
    start = time.perf_counter()
    render_batch(scenes, size)
    render_only = time.perf_counter() - start
    return {"scenes_per_s": count / elapsed, "renders_per_s": count / render_only}


if __name__ == "__main__":
    print(benchmark())
