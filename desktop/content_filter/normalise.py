"""How the content filter reads text: a term of the list, or a prompt, as runs of words.

Both sides go through the same folding, so the list and the prompt meet on equal terms:

- Case and accents do not count: Unicode NFKD, combining marks dropped, then ``casefold``
  ("Nüde" is "nude", "ＮＵＤＥ" is "nude", "Straße" is "strasse").
- A word is a run of letters and digits. Anything else between two words is spacing, so
  "blood-soaked", "blood_soaked", "blood.soaked" and "BLOOD   soaked" are all the words
  "blood soaked". Spacing inside a word is not undone: "n s f w" is four one-letter words.
- Only whole words match: "classic" is one word, so it never matches "ass"; "1girl" is one
  word too, so it does not match "girl".

What A1111-style prompt syntax does to a word, and so what the filter sees:

- Emphasis brackets, ``(nude)``, ``[nude]``, ``((nude))``, ``\\(nude\\)``, are spacing: the
  text encoder reads the words inside them. A weight, ``(nude:1.3)``, is dropped with its
  colon, so "(blood:1.2) soaked" still reads "blood soaked".
- ``, ; | :`` separate the prompt's parts (tags, ``[cat|dog]`` alternatives, the steps of
  ``[from:to:when]`` prompt editing), so a phrase never spans them: "blood, soaked" holds the
  words "blood" and "soaked" but not the phrase "blood soaked". Words still match alone.
- An extra-network tag, ``<lora:nude_style:0.8>`` (or ``<lyco:...>``, ``<hypernet:...>``),
  is cut out of the text, as A1111 does before the text encoder sees it, and its name is
  read on its own: the name is text the user chose, and its ``_``, ``-`` and ``.`` are
  spacing, so "nude_style" holds the word "nude". The tag's kind and weight are not read.
  The words either side of the tag meet, as they do for the text encoder.

Languages written without spaces between words (Chinese, Japanese) are matched only where
the term is set apart by spacing or punctuation; whole-word matching cannot see inside them.
"""

from __future__ import annotations

import bisect
import re
import unicodedata
from dataclasses import dataclass

# An extra-network tag: <kind:name> or <kind:name:weight...>; the name is what the user chose.
_TAG = re.compile(r"<\s*\w+\s*:([^:<>]+)(?::[^<>]*)?>")
# A weight closing an emphasis bracket, "(words:1.3)" or "[words:0.5]", number only: a word
# after the colon ("[from:to]") is text, and the colon there separates parts.
_WEIGHT = re.compile(r":\s*[+-]?(?:\d+\.?\d*|\.\d+)\s*(?=[)\]])")
# A word, or a character that separates parts of a prompt (see the module's docstring).
_WORD_OR_BREAK = re.compile(r"[^\W_]+|(?P<separator>[,;|:])")


@dataclass(frozen=True)
class PromptWords:
    """A prompt read as words: each part is a run of words a phrase may span, with the
    position of each word, so matches can be put in the order they appear."""

    parts: tuple[tuple[tuple[int, str], ...], ...]


def fold(text: str) -> str:
    """``text`` with case and accents folded away (NFKD, combining marks dropped, casefold)."""
    # NFKD both sides of casefold: NFKD can give capitals ("ℌ" is "H") and casefold can
    # give combining marks ("İ" is "i" and a dot above).
    folded = unicodedata.normalize("NFKD", unicodedata.normalize("NFKD", text).casefold())
    return "".join(c for c in folded if not unicodedata.combining(c))


def term_words(term: str) -> tuple[str, ...]:
    """The words of one term of the list, as a prompt's words are read; separators such as
    commas count as spacing here, since a term is one phrase by definition."""
    return tuple(re.findall(r"[^\W_]+", fold(term)))


def prompt_words(prompt: str) -> PromptWords:
    """``prompt`` read as words, with its prompt syntax taken into account; each word's
    position is where it stands in the (folded) prompt."""
    text = fold(prompt)
    pieces: list[str] = []  # the text with its tags cut out, as the text encoder reads it
    cuts: list[tuple[int, int]] = []  # (where in the body, characters cut up to there)
    tag_parts: list[tuple[tuple[int, str], ...]] = []
    start = cut = 0
    for tag in _TAG.finditer(text):
        pieces.append(text[start:tag.start()])
        cuts.append((tag.start() - cut, cut + len(tag.group(0))))
        cut += len(tag.group(0))
        # A tag's name is a part of its own, standing where the tag stood.
        words = tuple((tag.start(), word) for word in term_words(tag.group(1)))
        if words:
            tag_parts.append(words)
        start = tag.end()
    pieces.append(text[start:])
    # Weights become spaces of the same length, so positions in the body stay put.
    body = _WEIGHT.sub(lambda weight: " " * len(weight.group(0)), "".join(pieces))
    offsets = [where for where, _ in cuts]

    def in_prompt(where: int) -> int:
        done = bisect.bisect_right(offsets, where)
        return where + (cuts[done - 1][1] if done else 0)

    body_parts = [tuple((in_prompt(where), word) for where, word in part)
                  for part in _parts(body)]
    return PromptWords(tuple(body_parts + tag_parts))


def _parts(text: str) -> list[tuple[tuple[int, str], ...]]:
    parts: list[tuple[tuple[int, str], ...]] = []
    current: list[tuple[int, str]] = []
    for match in _WORD_OR_BREAK.finditer(text):
        if match.group("separator"):
            if current:
                parts.append(tuple(current))
            current = []
        else:
            current.append((match.start(), match.group(0)))
    if current:
        parts.append(tuple(current))
    return parts
