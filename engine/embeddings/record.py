"""What a picture records about the textual-inversion embeddings its prompts used: each one's
name and the hash AUTOMATIC1111 writes as "TI hashes", so model sites (Civitai) recognise it.

A1111 records only the embeddings a prompt named, found as the engine finds them
(engine.embeddings.token_table): the name's token ids in a piece of the tokenized prompt,
the longest name first where several could start, so a name inside a longer word or a longer
name is not "used". Its hash of an embedding is the SHA-256 of the whole file, shortened to
12 digits (unlike a LoRA's, which skips the header: engine.lora.record). Sites know the file
the user downloaded, which the import rewrites as Easel's own ``embedding.safetensors``, so
the import keeps that file's SHA-256 in the installed folder's ``easel.json``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from engine.description import DESCRIPTION_FILE
from engine.embeddings.embedding_file import EMBEDDING_FILE
from engine.embeddings.token_table import name_index, replace_names
from engine.errors import BadRequest
from engine.prompt_syntax import parse_prompt

if TYPE_CHECKING:
    from engine.model import Model
    from engine.tokenizer import PromptTokenizer

_BLOCK = 1 << 20
SOURCE_HASH = "source_sha256"  # in easel.json: the SHA-256 of the file that was imported
_SHA256 = re.compile(r"[0-9a-f]{64}")


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
    """A1111's TI hash of the embedding file ``path``: of the file the user imported, as the
    import kept it; a file used where it lies, or one installed before imports kept that
    hash, is hashed as it is (for those, a site may not know the hash)."""
    return (hash_at_import(path, EMBEDDING_FILE, SOURCE_HASH) or file_sha256(path))[:12]


def file_sha256(path: Path) -> str:
    """The SHA-256 of the whole file ``path``, in hex."""
    stat = path.stat()
    return _file_hash(str(path), stat.st_size, stat.st_mtime_ns)


def hash_at_import(path: Path, installed_file: str, key: str) -> str | None:
    """The SHA-256 the import wrote under ``key`` in the ``easel.json`` beside ``path``, when
    ``path`` is an installed ``installed_file``; None where there is none or it is no hash."""
    if path.name != installed_file:
        return None
    try:
        stored = json.loads((path.parent / DESCRIPTION_FILE).read_text(encoding="utf-8"))[key]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return stored if isinstance(stored, str) and _SHA256.fullmatch(stored) else None


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
