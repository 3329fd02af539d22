"""Prompt syntax as AUTOMATIC1111's web UI reads it: weights in brackets, and BREAK.

``(words)`` weighs its words 1.1 times more, ``[words]`` 1.1 times less, ``(words:1.3)`` sets
the factor; nested brackets multiply; a bracket left open at the end still weighs everything
after it; ``\\(`` ``\\)`` ``\\[`` ``\\]`` ``\\\\`` are the plain characters; ``BREAK`` starts a
new 75-token chunk. Adjacent pieces of equal weight are merged, so the text encoder's tokenizer
sees them as one (the tokens then match A1111's exactly).

Where A1111 is lenient, two cases are refused instead, each in one sentence: a closing bracket
that closes nothing (A1111 reads it as a plain character, so a typo like "((red) hair))"
silently changes which words are weighted; ``\\)`` writes a real one), and a weight that is not
a number, like ``(hair:1.2.3)`` (where A1111 stops with an error) or ``(hair:high)`` (which it
reads as the text "hair:high"). And BREAK inside brackets still starts a chunk (A1111 weighs the
marker with the bracket and then reads it as the word "BREAK").
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from engine.errors import BadRequest
from engine.lora.tags import extract_lora_tags

EMPHASIS_UP = 1.1  # what "(words)" multiplies by; "[words]" divides by it

# One lexical piece of a prompt, tried in this order (as A1111's re_attention): an escaped
# bracket or backslash, a lone backslash (dropped), an opening bracket, a ":weight)" ending, a
# closing bracket, a run of plain text, a lone colon.
_PIECE = re.compile(r"""
    \\[()\[\]\\] | \\ | [(\[] | :(?P<weight>[^:()\[\]\\]*)\) | [)\]] | [^\\()\[\]:]+ | :
""", re.VERBOSE)
_NUMBER = re.compile(r"[+-]?[.\d]+")  # what A1111 accepts as a weight
_BREAK = re.compile(r"\s*\bBREAK\b\s*")


@dataclass(frozen=True)
class ParsedPrompt:
    """A prompt's sections (split at BREAK), each a list of (text, weight) pieces."""

    sections: tuple[tuple[tuple[str, float], ...], ...]
    unclosed: str = ""  # brackets still open at the end, in order: they weigh to the end


@dataclass
class _Piece:
    text: str
    weight: float = 1.0
    is_break: bool = False


def parse_prompt(prompt: str, label: str = "prompt") -> ParsedPrompt:
    """Read ``prompt``'s weights; bad syntax is refused in one sentence naming ``label``.
    ``<lora:NAME:WEIGHT>`` tags are cut out first, as A1111 does: the caller has already
    turned them into the request's LoRAs (``engine.lora.extract_lora_tags``)."""
    prompt = extract_lora_tags(prompt)[0]
    pieces: list[_Piece] = []
    open_brackets: list[tuple[str, int]] = []  # (bracket, index of the first piece inside)

    def weigh_from(start: int, factor: float) -> None:
        for piece in pieces[start:]:
            piece.weight *= factor

    for match in _PIECE.finditer(prompt):
        text = match.group(0)
        if text.startswith("\\"):
            pieces.append(_Piece(text[1:]))
        elif text in ("(", "["):
            open_brackets.append((text, len(pieces)))
        elif match.group("weight") is not None or text in (")", "]"):
            opening = "[" if text == "]" else "("
            factor = EMPHASIS_UP if opening == "(" else 1 / EMPHASIS_UP
            inner = match.group("weight")
            if inner is not None:
                weight = _weight(inner, match.start() + 2, label)
                if weight is None:  # as A1111: "(time: noon)" is text, then a bracket
                    pieces.extend(_plain(":" + inner))
                else:
                    factor = weight
            if not _close(opening, open_brackets, weigh_from, factor):
                closing = text[-1]
                raise BadRequest(f"The {label} has a '{closing}' that closes no '{opening}' "
                                 f"(at character {match.end()}); write '\\{closing}' for "
                                 f"the character itself.")
        else:
            pieces.extend(_plain(text))
    # Brackets left open weigh everything after them: the round ones, then the square ones,
    # each from the outermost, in A1111's order (so the products round alike).
    for kind, factor in (("(", EMPHASIS_UP), ("[", 1 / EMPHASIS_UP)):
        for bracket, start in open_brackets:
            if bracket == kind:
                weigh_from(start, factor)
    unclosed = "".join(bracket for bracket, _ in open_brackets)
    return ParsedPrompt(_sections(pieces), unclosed)


def _close(opening: str, open_brackets: list[tuple[str, int]], weigh_from, factor: float) -> bool:
    """Close the innermost ``opening`` bracket, weighing what it holds; False if none is open.

    As A1111, the innermost bracket of that kind closes even if one of the other kind opened
    after it: "(a [b) c]" weighs "a b" by 1.1 and "b c" by 1/1.1.
    """
    for index in range(len(open_brackets) - 1, -1, -1):
        bracket, start = open_brackets[index]
        if bracket == opening:
            del open_brackets[index]
            weigh_from(start, factor)
            return True
    return False


def _weight(text: str, at: int, label: str) -> float | None:
    """The weight in ":text)" (``text`` at character ``at``), or None where it is plain text.

    A1111 reads only a bare number; text with a space in it ("(time: noon)") stays text. What
    looks like a weight but is not one is refused rather than read as words: "1.2.3" (which
    stops A1111 with an error), " 1.5", "1,5", "high".
    """
    stripped = text.strip()
    if _NUMBER.fullmatch(text) and _is_float(text) and math.isfinite(float(text)):
        return float(text)
    if not stripped or (not _is_float(stripped) and not _NUMBER.fullmatch(text)
                        and (text[0].isspace() or any(c.isspace() for c in stripped))):
        return None
    shown = text if len(text) <= 20 else text[:20] + "…"
    raise BadRequest(f"The weight '{shown}' in the {label} (at character {at}) is not a plain "
                     f"number; write it like (words:1.2).")


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _plain(text: str) -> list[_Piece]:
    """Plain text, split at each BREAK (which takes the spaces around it)."""
    pieces = []
    for index, part in enumerate(_BREAK.split(text)):
        if index:
            pieces.append(_Piece("", is_break=True))
        pieces.append(_Piece(part))
    return pieces


def _sections(pieces: list[_Piece]) -> tuple[tuple[tuple[str, float], ...], ...]:
    """Split at the breaks and merge neighbours of equal weight."""
    sections: list[list[tuple[str, float]]] = [[]]
    for piece in pieces:
        if piece.is_break:
            sections.append([])
            continue
        section = sections[-1]
        if section and section[-1][1] == piece.weight:
            section[-1] = (section[-1][0] + piece.text, piece.weight)
        else:
            section.append((piece.text, piece.weight))
    if sections == [[]]:
        sections = [[("", 1.0)]]
    return tuple(tuple(section) for section in sections)
