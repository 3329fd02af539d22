"""What a picture records about the textual-inversion embeddings its prompts used: each one's
name and the hash AUTOMATIC1111 writes as "TI hashes", so model sites (Civitai) recognise it.

A1111 records only the embeddings a prompt named, found as the engine finds them
(engine.embeddings.token_table): the name's token ids in a piece of the tokenized prompt,
the longest name first where several could start, so a name inside a longer word or a longer
name is not "used". Its hash of an embedding is the SHA-256 of the whole file, shortened to
12 digits (unlike a LoRA's, which skips the header: engine.lora.record).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from engine.embeddings.token_table import name_index, replace_names
from engine.errors import BadRequest
from engine.prompt_syntax import parse_prompt

if TYPE_CHECKING:
    from engine.model import Model
    from engine.tokenizer import PromptTokenizer

_BLOCK = 1 << 20


def recorded_embeddings(embeddings: Sequence[tuple[str, str | Path]], *texts: str,
                        model: Model) -> tuple[tuple[str, str], ...]:
    """(name, short hash) of each of ``embeddings`` (name as written in prompts, file) that
    one of ``texts`` names, read by ``model``'s tokenizer; in the request's order."""
    if not embeddings:  # most requests: the tokenizer is not even read
        return ()
    tokenizer = model.tokenizer
    if tokenizer.is_word_list:  # a word list never reads embeddings
        return ()
    names = name_index((tuple(tokenizer.piece_ids(name)), name) for name, _path in embeddings)
    used = {found for text in texts for ids in _piece_ids(text, tokenizer)
            for found in replace_names(ids, names) if isinstance(found, str)}
    return tuple((name, short_hash(Path(path))) for name, path in embeddings if name in used)


def short_hash(path: Path) -> str:
    stat = path.stat()
    return _file_hash(str(path), stat.st_size, stat.st_mtime_ns)[:12]


@lru_cache(maxsize=64)
def _file_hash(path: str, size: int, mtime_ns: int) -> str:
    """Cached per file version: every picture of a batch names the same file."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _piece_ids(text: str, tokenizer: PromptTokenizer) -> Iterable[list[int]]:
    """The token ids of each weighted piece of ``text``, as the encoder reads them."""
    try:
        parsed = parse_prompt(text)
    except BadRequest:  # the encoder refuses it in its own words, if it reads it at all
        return
    for section in parsed.sections:
        for piece, _weight in section:
            yield tokenizer.piece_ids(piece)
