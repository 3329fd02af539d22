"""Weighted tokens → 77-token chunks, as AUTOMATIC1111's web UI cuts a long prompt.

CLIP reads 77 tokens: a start token, 75 of the prompt's and an end token. A longer prompt is
cut into chunks of 75 that are encoded one by one and joined along the token axis, so nothing
is left out. Where a chunk fills up and its last comma is at most 20 tokens back, the words
after that comma move to the next chunk, so a phrase is not split between two chunks. BREAK
ends a chunk early. Each chunk is padded with the end token; a tokenizer with a pad token of
its own (SD 2.x's and SDXL's second, "!") has it after the first end token instead.
A textual-inversion embedding's ids come as one run (a tuple) that is never split: where it
does not fit in what is left of a chunk, it starts the next one whole (A1111).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

CHUNK_TOKENS = 75  # the prompt's tokens in one chunk, between the start and end tokens
COMMA_BACKTRACK = 20  # A1111's "Increase coherency by padding from the last comma" default

# A section of a prompt (BREAK separates them): (token ids, weight) per piece of text; a
# tuple among the ids is a run that stays in one chunk (an embedding's vectors).
Section = Sequence[tuple[Sequence[int | tuple[int, ...]], float]]


@dataclass(frozen=True)
class SpecialTokens:
    start: int
    end: int
    pad: int
    comma: int | None  # None: a vocabulary without "," (no backtracking)


@dataclass(frozen=True)
class Chunk:
    """One text-encoder input: ``ids`` and each token's ``weights``, CHUNK_TOKENS + 2 long."""

    ids: tuple[int, ...]
    weights: tuple[float, ...]


@dataclass
class _Filling:
    ids: list[int] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    last_comma: int = -1  # index in ``ids`` of the latest comma, -1 if none


def make_chunks(sections: Sequence[Section], tokens: SpecialTokens,
                length: int = CHUNK_TOKENS, backtrack: int = COMMA_BACKTRACK) -> list[Chunk]:
    """The chunks of a prompt's sections; an empty prompt is one chunk of padding."""
    chunks: list[Chunk] = []
    filling = _Filling()
    for number, section in enumerate(sections):
        if number:  # BREAK: the chunk ends here, even an empty one (as A1111)
            chunks.append(_finish(filling, tokens, length))
            filling = _Filling()
        for ids, weight in section:
            for token in ids:
                if isinstance(token, tuple):
                    filling = _add_run(token, weight, filling, chunks, tokens, length,
                                       backtrack)
                else:
                    filling = _add(token, weight, filling, chunks, tokens, length, backtrack)
    if filling.ids or not chunks:
        chunks.append(_finish(filling, tokens, length))
    return chunks


def _add(token: int, weight: float, filling: _Filling, chunks: list[Chunk],
         tokens: SpecialTokens, length: int, backtrack: int) -> _Filling:
    """Add one token, starting a new chunk first when this one is full."""
    if token == tokens.comma:
        filling.last_comma = len(filling.ids)
    elif (len(filling.ids) == length and filling.last_comma != -1
          and len(filling.ids) - filling.last_comma <= backtrack):
        # Move the words after the last comma on to the next chunk.
        cut = filling.last_comma + 1
        moved = _Filling(filling.ids[cut:], filling.weights[cut:])
        del filling.ids[cut:], filling.weights[cut:]
        chunks.append(_finish(filling, tokens, length))
        filling = moved
    if len(filling.ids) == length:
        chunks.append(_finish(filling, tokens, length))
        filling = _Filling()
    filling.ids.append(token)
    filling.weights.append(weight)
    return filling


def _add_run(run: tuple[int, ...], weight: float, filling: _Filling, chunks: list[Chunk],
             tokens: SpecialTokens, length: int, backtrack: int) -> _Filling:
    """Add an embedding's run whole: its first token as any token (a full chunk is cut at
    its last comma as before), then a new chunk first if the rest would not fit."""
    filling = _add(run[0], weight, filling, chunks, tokens, length, backtrack)
    if len(filling.ids) - 1 + len(run) > length:
        first = filling.ids.pop(), filling.weights.pop()
        chunks.append(_finish(filling, tokens, length))
        filling = _Filling([first[0]], [first[1]])
    filling.ids.extend(run[1:])
    filling.weights.extend([weight] * (len(run) - 1))
    return filling


def _finish(filling: _Filling, tokens: SpecialTokens, length: int) -> Chunk:
    """Start token + the tokens, end tokens up to ``length`` + an end token; every token
    after the first end token becomes the pad token. Weight 1 but for the prompt's own."""
    padding = length - len(filling.ids)
    ids = [tokens.start, *filling.ids] + [tokens.end] * (padding + 1)
    first_end = ids.index(tokens.end)  # a prompt may spell the end token itself
    ids[first_end + 1:] = [tokens.pad] * (len(ids) - first_end - 1)
    weights = [1.0, *filling.weights] + [1.0] * (padding + 1)
    return Chunk(tuple(ids), tuple(weights))
