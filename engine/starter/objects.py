"""The starter model's vocabulary: objects (emoji), background colours and positions.

Objects are Noto Color Emoji glyphs (SIL Open Font License 1.1, Debian package
fonts-noto-color-emoji). Each caption word is its Unicode character name, simplified
("FULL MOON SYMBOL" -> "moon"); see DATA.md. Chosen to be visually distinct at 12-20 px.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass


@dataclass(frozen=True)
class EmojiObject:
    word: str  # the caption word, also the object's key
    sequence: str  # the emoji's code points, as rendered
    unicode_name: str  # the Unicode character name the word comes from

    @property
    def article(self) -> str:
        return "an" if self.word[0] in "aeiou" else "a"

    @property
    def code_points(self) -> str:
        return " ".join(f"U+{ord(c):04X}" for c in self.sequence)


def _emoji(word: str, sequence: str, unicode_name: str | None = None) -> EmojiObject:
    name = unicode_name or unicodedata.name(sequence[0])
    return EmojiObject(word, sequence, name)


OBJECTS: tuple[EmojiObject, ...] = (
    _emoji("avocado", "\U0001f951"),
    _emoji("chair", "\U0001fa91"),
    _emoji("dog", "\U0001f415"),
    _emoji("horse", "\U0001f40e"),
    # A ZWJ sequence (ADULT, ZERO WIDTH JOINER, ROCKET); its CLDR short name is "astronaut".
    _emoji("astronaut", "\U0001f9d1\u200d\U0001f680", "ASTRONAUT (CLDR; ADULT ZWJ ROCKET)"),
    _emoji("moon", "\U0001f315"),  # FULL MOON SYMBOL
    _emoji("rocket", "\U0001f680"),
    _emoji("tree", "\U0001f333"),  # DECIDUOUS TREE
    _emoji("house", "\U0001f3e0"),  # HOUSE BUILDING
    _emoji("sunflower", "\U0001f33b"),
    _emoji("car", "\U0001f697"),  # AUTOMOBILE
    _emoji("apple", "\U0001f34e"),  # RED APPLE
    _emoji("cat", "\U0001f408"),
    _emoji("fish", "\U0001f41f"),
    _emoji("banana", "\U0001f34c"),
    _emoji("ball", "\u26bd"),  # SOCCER BALL
    _emoji("elephant", "\U0001f418"),
    _emoji("turtle", "\U0001f422"),
    _emoji("butterfly", "\U0001f98b"),
    _emoji("mushroom", "\U0001f344"),
    _emoji("cactus", "\U0001f335"),
    _emoji("boat", "\u26f5"),  # SAILBOAT
    _emoji("airplane", "\u2708\ufe0f"),  # AIRPLANE (emoji presentation)
    _emoji("doughnut", "\U0001f369"),
    _emoji("strawberry", "\U0001f353"),
    _emoji("octopus", "\U0001f419"),
    _emoji("penguin", "\U0001f427"),
    _emoji("carrot", "\U0001f955"),
)

OBJECTS_BY_WORD: dict[str, EmojiObject] = {o.word: o for o in OBJECTS}
OBJECT_WORDS: tuple[str, ...] = tuple(o.word for o in OBJECTS)

# Background colours: name -> sRGB.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (245, 140, 30),
    "yellow": (245, 215, 50),
    "green": (50, 160, 70),
    "blue": (45, 95, 215),
    "purple": (130, 60, 180),
    "pink": (245, 150, 195),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)

# Positions: name -> the object's box centre as fractions of the image (x, y); the box is then
# moved inside the image margins. Left and right (and top and bottom) split the image in halves.
POSITIONS: dict[str, tuple[float, float]] = {
    "left": (0.25, 0.5),
    "right": (0.75, 0.5),
    "top": (0.5, 0.25),
    "bottom": (0.5, 0.75),
    "centre": (0.5, 0.5),
}
POSITION_NAMES: tuple[str, ...] = tuple(POSITIONS)

# How each position is said in a caption; the first is the canonical phrase.
POSITION_PHRASES: dict[str, tuple[str, ...]] = {
    "left": ("on the left", "at the left"),
    "right": ("on the right", "at the right"),
    "top": ("at the top", "on top"),
    "bottom": ("at the bottom", "on the bottom"),
    "centre": ("in the centre", "in the middle", "in the center"),
}

# The two-object layouts: opposite halves, so the objects never overlap.
PAIR_LAYOUTS: tuple[tuple[str, str], ...] = (("left", "right"), ("top", "bottom"))

# Object sizes: the side of the square the glyph is fitted into, as a fraction of the image.
# "medium" is not said in captions; two-object scenes use small and medium only.
SIZES: dict[str, float] = {"small": 0.375, "medium": 0.46875, "big": 0.625}
SIZE_NAMES: tuple[str, ...] = tuple(SIZES)
PAIR_SIZE_NAMES: tuple[str, ...] = ("small", "medium")
