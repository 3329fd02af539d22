"""Objects a prompt leaves unplaced, given the places where the model draws each one once.

The starter model learnt scenes whose objects always sit somewhere named. Asked "a dog" it
draws a dog anywhere, and in about one picture of ten it draws two (its evaluation, issue
14); asked "a dog in the centre" it draws exactly one dog in every one of 56 seeds, and asked
"a cat on the left and a dog on the right", each once. So when a text-to-image prompt names
one or two of the model's objects and no place at all, the prompt is drawn with a place after
each object: "in the centre" for one, "on the left" and "on the right" for two, in the order
named. The words are inserted where the model's own captions put them ("a big cat on a green
background" → "a big cat in the centre on a green background"), the user's words are kept,
and the user is told what was drawn. A prompt that names any place is drawn as written; one
that names three objects or more too, with a note that some will be missing (the starter
learnt scenes of one or two).

A model opts in with a ``placement`` entry in its tokenizer's config (``tokenizer_config.json``):
its object words, the words that name a place, and the phrases to add. Models without it
(every imported model: CLIP reads "a dog" well) are never changed.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class Placement:
    objects: frozenset[str]  # words that name an object ("dog")
    place_words: frozenset[str]  # words that name a place ("left", "centre", "middle")
    one: str  # the phrase after a lone object ("in the centre")
    two: tuple[str, str]  # the phrases after the first and second of two objects

    @property
    def most_objects(self) -> int:
        """The most objects it has a layout for (two)."""
        return len(self.two)

    def named_objects(self, prompt: str) -> list[re.Match[str]]:
        """Where the prompt names an object, in order (a word named twice counts twice)."""
        return [match for match in _WORD.finditer(prompt)
                if _normalized(match.group()) in self.objects]

    def place(self, prompt: str) -> str | None:
        """``prompt`` with a place after each object, when it names one or two objects and
        no place; None when it is drawn as written."""
        if any(_normalized(m.group()) in self.place_words for m in _WORD.finditer(prompt)):
            return None
        named = self.named_objects(prompt)
        if not 1 <= len(named) <= self.most_objects:
            return None
        phrases = (self.one,) if len(named) == 1 else self.two
        placed, end = [], 0
        for match, phrase in zip(named, phrases, strict=True):
            placed += [prompt[end:match.end()], " ", phrase]
            end = match.end()
        return "".join(placed) + prompt[end:]

    def as_config(self) -> dict:
        """The ``placement`` entry of a tokenizer config."""
        return {"objects": sorted(self.objects), "place_words": sorted(self.place_words),
                "one": self.one, "two": list(self.two)}


def _normalized(word: str) -> str:
    # As the word-list tokenizer reads words: NFKC, lower case.
    return unicodedata.normalize("NFKC", word).lower()


def load_placement(tokenizer_folder: Path) -> Placement | None:
    """The model's placement, from its tokenizer config; None when it has none (or a
    malformed one: a prompt is then drawn as written, as for any model)."""
    try:
        config = json.loads((Path(tokenizer_folder) / "tokenizer_config.json")
                            .read_text(encoding="utf-8"))
        entry = config["placement"]
        placement = Placement(
            objects=frozenset(_normalized(w) for w in entry["objects"]),
            place_words=frozenset(_normalized(w) for w in entry["place_words"]),
            one=str(entry["one"]), two=(str(entry["two"][0]), str(entry["two"][1])))
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None
    return placement if placement.objects and placement.one and all(placement.two) else None


def too_many_note(model_name: str, count: int) -> str:
    """What the user is told when a prompt names more objects than the model lays out."""
    return (f"'{model_name}' draws one or two objects; the prompt names {count}, so some will "
            f"be missing.")


def placement_note(drawn: str) -> str:
    """What the user is told when a prompt was drawn with places added (short: the window
    shows it in its status bar)."""
    return f"Drawn as “{drawn}”, so each object comes out once."
