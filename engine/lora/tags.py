"""LoRAs named in a prompt as AUTOMATIC1111 writes them: ``<lora:NAME:WEIGHT>``.

The tag is cut out of the prompt and nothing else is touched (A1111 does the same), so the
words around it are encoded as they would be without it. The weight is optional (1 when
left out); a name given twice adds up, as two activations of one network do in A1111.
"""

from __future__ import annotations

import re

from engine.errors import BadRequest

_TAG = re.compile(r"<lora:([^:>]+)(?::([^:>]*))?(?::[^>]*)?>")


def extract_lora_tags(prompt: str) -> tuple[str, list[tuple[str, float]]]:
    """The prompt without its ``<lora:...>`` tags, and each named LoRA with its weight, in the
    order first named; BadRequest in one sentence for a weight that is not a number."""
    weights: dict[str, float] = {}
    for match in _TAG.finditer(prompt):
        name = match.group(1).strip()
        weights[name] = weights.get(name, 0.0) + _weight(match.group(2), match.group(0))
    return _TAG.sub("", prompt), list(weights.items())


def parse_lora_option(text: str) -> tuple[str, float]:
    """``NAME`` or ``NAME:WEIGHT`` (the command line's ``--lora``) as (name, weight)."""
    name, separator, weight = text.rpartition(":")
    if not separator:
        name, weight = text, ""
    if not name.strip():
        raise BadRequest(f"'{text}' names no LoRA; write NAME or NAME:WEIGHT.")
    return name.strip(), _weight(weight, text)


def _weight(text: str | None, shown: str) -> float:
    if text is None or not text.strip():
        return 1.0
    try:
        value = float(text)
    except ValueError:
        raise BadRequest(f"The LoRA weight in '{shown}' is not a number.") from None
    if value != value or abs(value) == float("inf"):
        raise BadRequest(f"The LoRA weight in '{shown}' is not a number.")
    return value


def checked_loras(loras: object) -> tuple[tuple[str, float], ...]:
    """A request's ``loras`` as a tuple of (file, weight); BadRequest in one sentence when it
    is not a list of pairs with a number for weight."""
    try:
        pairs = tuple((str(path), float(weight)) for path, weight in loras)  # type: ignore
    except (TypeError, ValueError):
        raise BadRequest("LoRAs are given as pairs of a LoRA and a weight.") from None
    for path, weight in pairs:
        if weight != weight or abs(weight) == float("inf"):
            raise BadRequest(f"The weight of LoRA '{path}' is not a number.")
    return pairs
