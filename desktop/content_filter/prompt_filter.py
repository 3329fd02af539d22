"""The content filter's decision on a prompt: the user's choice of "off", "warn" or "block".

- "off": the prompt is not read at all.
- "warn" (the default): the picture is made, and labelled with the terms it matched
  (``record`` is what its metadata keeps).
- "block": the prompt is refused, in one sentence naming the first term it matched.

A term matches where its words stand side by side in one part of the prompt, whole words
only; how a prompt is read into words (case, accents, spacing, weights, brackets, LoRA
tags) is said in ``desktop.content_filter.normalise``. Matching is one dictionary look-up
per word and per distinct term length, so a long prompt costs time in step with its length.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from desktop.content_filter.normalise import prompt_words, term_words
from desktop.content_filter.words import Term
from engine.errors import EaselError

MODES = ("off", "warn", "block")
DEFAULT_MODE = "warn"
_WHERE = "Settings › Content filter"


class UnknownFilterMode(EaselError, ValueError):
    """A mode that is not one of ``MODES`` (a ValueError too, as a bad argument)."""


@dataclass(frozen=True)
class FilterDecision:
    """What the filter made of one prompt.

    ``matched`` holds the list's terms as written there, in the order they first appear in
    the prompt (a longer term before a shorter one starting at the same word). ``sentence``
    is the one sentence to show: the refusal when blocked, the label when warned, else None.
    """

    mode: str
    matched: tuple[str, ...] = ()
    blocked: bool = False
    warned: bool = False
    sentence: str | None = None


def check_mode(mode: str) -> str:
    """``mode`` when it is one of ``MODES``; ``UnknownFilterMode`` in one sentence if not."""
    if mode not in MODES:
        raise UnknownFilterMode(f"'{mode}' is not a content-filter mode; choose "
                                f"{', '.join(MODES[:-1])} or {MODES[-1]}.")
    return mode


def check_prompt(prompt: str, negative_prompt: str, terms: Iterable[Term | str],
                 mode: str) -> FilterDecision:
    """The filter's decision on ``prompt`` under ``mode``, with ``terms`` (``Term``s from
    ``load_terms``, or plain strings, read the same way)."""
    check_mode(mode)
    # The negative prompt is not read: it names what the user does NOT want in the picture
    # ("gore, nude" there steers away from both), so matching it would warn about, or
    # refuse, exactly the prompts that ask for a safer picture.
    del negative_prompt
    if mode == "off":
        return FilterDecision(mode)
    matched = find_terms(prompt, terms)
    if not matched:
        return FilterDecision(mode)
    if mode == "block":
        return FilterDecision(mode, matched, blocked=True, sentence=(
            f"The prompt was not used: it contains '{matched[0]}', which your content "
            f"filter blocks ({_WHERE})."))
    return FilterDecision(mode, matched, warned=True, sentence=(
        f"The prompt contains {_listed(matched)}, which your content filter flags "
        f"({_WHERE})."))


def find_terms(prompt: str, terms: Iterable[Term | str]) -> tuple[str, ...]:
    """The terms found in ``prompt``, as written in the list, in the order they appear."""
    by_words: dict[tuple[str, ...], str] = {}
    for term in terms:
        if isinstance(term, str):
            term = Term(term.strip(), term_words(term))
        if term.words:
            by_words.setdefault(term.words, term.written)
    lengths = sorted({len(words) for words in by_words}, reverse=True)
    found: list[tuple[int, int, int, str]] = []  # (position, -length, order, term)
    for part in prompt_words(prompt).parts:
        words = tuple(word for _, word in part)
        for index, (position, _) in enumerate(part):
            for length in lengths:
                written = by_words.get(words[index:index + length])
                if written is not None:
                    found.append((position, -length, len(found), written))
    return tuple(dict.fromkeys(written for *_, written in sorted(found)))


def record(decision: FilterDecision) -> dict | None:
    """What the picture's Easel metadata keeps of ``decision``, e.g.
    ``{"mode": "warn", "warned": ["gore"]}``; None when the filter was off or found nothing."""
    if decision.mode == "off" or not decision.matched:
        return None
    key = "blocked" if decision.blocked else "warned"
    return {"mode": decision.mode, key: list(decision.matched)}


def _listed(terms: tuple[str, ...]) -> str:
    quoted = [f"'{term}'" for term in terms]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} and {quoted[-1]}"
