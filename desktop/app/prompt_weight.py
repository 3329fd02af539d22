"""Ctrl+Up / Ctrl+Down in a prompt: make the selected words weigh more or less, as
AUTOMATIC1111's web UI does (its edit-attention script).

With nothing selected, the words inside the ``(words:1.2)`` around the cursor are taken, or
else the word under it. Words not yet weighted are wrapped as ``(words:1.1)``; each press moves
the weight by 0.1 (A1111's default precision); at 1.0 the brackets go away again. The selection
stays on the words, so presses repeat. Qt-free, so it is tested without a display.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

STEP = 0.1
# What ends a word for the word under the cursor (A1111's default delimiters, and whitespace).
DELIMITERS = frozenset(".,\\/!?%^*;:{}=`~() \t\r\n")
_WEIGHT = re.compile(r":([+-]?(?:\d+\.?\d*|\.\d+))\)")


@dataclass(frozen=True)
class Edit:
    text: str
    start: int  # the selection afterwards: the words, without brackets or weight
    end: int


def step_weight(text: str, start: int, end: int, up: bool, step: float = STEP) -> Edit | None:
    """``text`` with the weight of ``text[start:end]`` (or what the cursor is in) moved one
    step; None when there are no words to weigh."""
    if start == end:
        start, end = _weighted_group(text, start) or _word(text, start)
    weight_match = _WEIGHT.match(text, end)
    if start > 0 and text[start - 1] == "(" and weight_match:
        weight = float(weight_match.group(1))
        after = weight_match.end()
    else:
        while end > start and text[end - 1] == " ":  # trailing spaces stay outside
            end -= 1
        if start == end:
            return None
        text = f"{text[:start]}({text[start:end]}:1.0){text[end:]}"
        start, end, weight = start + 1, end + 1, 1.0
        after = end + len(":1.0)")
    weight = round(weight + (step if up else -step), 12)
    if weight == 1:  # back to plain words
        return Edit(text[:start - 1] + text[start:end] + text[after:], start - 1, end - 1)
    return Edit(f"{text[:end]}:{_format(weight)}){text[after:]}", start, end)


def _weighted_group(text: str, cursor: int) -> tuple[int, int] | None:
    """The words of the innermost ``(words:weight)`` around ``cursor``, if it is in one."""
    depth = 0
    for opening in range(cursor - 1, -1, -1):
        if text[opening] == ")":
            depth += 1
        elif text[opening] == "(":
            if depth == 0:
                break
            depth -= 1
    else:
        return None
    depth = 0
    for closing in range(cursor, len(text)):
        if text[closing] == "(":
            depth += 1
        elif text[closing] == ")":
            if depth == 0:
                break
            depth -= 1
    else:
        return None
    colon = text.rfind(":", opening + 1, closing)
    if colon < 0 or not _WEIGHT.match(text, colon):
        return None  # "(words)" without a weight: the word under the cursor instead
    return opening + 1, colon


def _word(text: str, cursor: int) -> tuple[int, int]:
    start = end = cursor
    while start > 0 and text[start - 1] not in DELIMITERS:
        start -= 1
    while end < len(text) and text[end] not in DELIMITERS:
        end += 1
    return start, end


def _format(weight: float) -> str:
    """As A1111 writes it: the shortest form, with ".0" after a single digit ("2.0")."""
    shown = f"{weight:.12g}"
    return shown + ".0" if len(shown) == 1 else shown
