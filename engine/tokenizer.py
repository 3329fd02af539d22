"""Prompt → token ids, with the `tokenizers` library only (no transformers at run time).

The exporter writes ``tokenizer/tokenizer.json``; padding and truncation are set here so they
match what the text encoder was trained with (CLIP pads to 77, SD 1.x with the end token,
SD 2.x with "!"). A CLIP model reads a prompt of any length in chunks
(``engine.prompt_chunks``), from the bare ids of ``piece_ids``; calling the tokenizer gives the
one truncated 77-token input, which the starter model's word list still uses.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from engine.errors import ModelError
from engine.prompt_chunks import SpecialTokens


@dataclass(frozen=True)
class TokenizedPrompt:
    ids: np.ndarray  # int64, shape (1, max_length)
    truncated_text: str  # the part of the prompt the text encoder never saw ("" if none)
    unknown_words: tuple[str, ...] = ()  # words a word-list tokenizer does not know
    known_word_count: int = 0  # words it knows that say something (word lists only)


class PromptTokenizer:
    def __init__(self, folder: Path, max_length: int) -> None:
        folder = Path(folder)
        try:
            self._tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        except Exception as error:  # tokenizers raises plain Exception on a bad file
            raise ModelError(f"The tokenizer of model '{folder.parent.name}' cannot be read "
                             f"({error}).") from None
        self.max_length = max_length
        pad_token = _pad_token(folder)
        pad_id = self._tokenizer.token_to_id(pad_token)
        if pad_id is None:
            raise ModelError(f"The tokenizer of model '{folder.parent.name}' has no pad token "
                             f"'{pad_token}'.")
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        self._pad_id = pad_id
        # A word-list tokenizer (the starter model's) maps any other word to its unknown
        # token; a byte-level BPE (CLIP's) can spell every word, so it has no unknown words.
        model = json.loads(self._tokenizer.to_str()).get("model", {})
        unknown = model.get("unk_token") if model.get("type") == "WordLevel" else None
        self._unknown_id = None if unknown is None else self._tokenizer.token_to_id(unknown)
        self.known_words: tuple[str, ...] = ()
        if self._unknown_id is not None:
            specials = {token.content for token in
                        self._tokenizer.get_added_tokens_decoder().values()}
            specials.update((unknown, pad_token))
            # Words like "a" or "the" are known but say nothing: a prompt of only those and
            # unknown words is refused too. The tokenizer's config lists them.
            self._function_words = frozenset(_config_value(folder, "function_words") or ())
            self.known_words = tuple(sorted(
                word for word in self._tokenizer.get_vocab()
                if word not in specials and word not in self._function_words
                and not (word.startswith("[") and word.endswith("]"))))

    @property
    def is_word_list(self) -> bool:
        """A closed word list (the starter model's) rather than CLIP's open vocabulary."""
        return self._unknown_id is not None

    @property
    def special_tokens(self) -> SpecialTokens:
        """The start, end, pad and comma tokens that chunking needs."""
        token_id = self._tokenizer.token_to_id
        start, end = token_id("<|startoftext|>"), token_id("<|endoftext|>")
        if start is None or end is None:
            raise ModelError("The model's tokenizer has no CLIP start and end tokens, so it "
                             "cannot read prompts.")
        return SpecialTokens(start, end, self._pad_id, token_id(",</w>"))

    def piece_ids(self, text: str) -> list[int]:
        """The ids of a piece of a prompt, without start or end tokens and never cut short."""
        return list(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def __call__(self, prompt: str) -> TokenizedPrompt:
        encoding = self._tokenizer.encode(prompt)
        ids = list(encoding.ids)
        unknown_words: list[str] = []
        known = 0
        if self._unknown_id is not None:
            for token_id, special, (start, end) in zip(
                encoding.ids, encoding.special_tokens_mask, encoding.offsets, strict=True
            ):
                if special:
                    continue
                if token_id == self._unknown_id:
                    unknown_words.append(prompt[start:end])
                elif self._tokenizer.id_to_token(token_id) not in self._function_words:
                    known += 1
        truncated_text = ""
        if len(ids) > self.max_length:
            # Keep the start and the closing end-of-text token, as CLIP's tokenizer does.
            kept_end = encoding.offsets[self.max_length - 2][1]
            truncated_text = prompt[kept_end:].strip()
            ids = ids[: self.max_length - 1] + ids[-1:]
        ids = ids + [self._pad_id] * (self.max_length - len(ids))
        return TokenizedPrompt(np.array([ids], dtype=np.int64), truncated_text,
                               tuple(dict.fromkeys(unknown_words)), known)


_PREVIEW_WORDS = 6  # how many of the dropped words a warning quotes
_PREVIEW_CHARS = 60  # and at most this many characters (a prompt may have no spaces)


def truncation_warning(dropped: str, label: str, max_tokens: int) -> str:
    """The warning for a ``label`` ("prompt") whose ``dropped`` end the text encoder never
    read: how many words, and the first few (a long prompt's end can be 1,500 characters)."""
    words = dropped.split()
    preview = " ".join(words[:_PREVIEW_WORDS])
    if len(preview) > _PREVIEW_CHARS:
        preview = preview[:_PREVIEW_CHARS].rstrip()
    if preview != " ".join(words):
        preview += " …"
    which = "its last word was" if len(words) == 1 else f"its last {len(words)} words were"
    return (f"The {label} is longer than the {max_tokens} tokens the text encoder reads: "
            f"{which} left out (“{preview}”).")


def _config_value(folder: Path, key: str, names: tuple[str, ...] = ("tokenizer_config.json",)):
    """``key`` from the first of the tokenizer's config files that has it, else None."""
    for name in names:
        try:
            data = json.loads((folder / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and key in data:
            return data[key]
    return None


def _pad_token(folder: Path) -> str:
    """The pad token named by the tokenizer's config (SD 2.x uses "!")."""
    value = _config_value(folder, "pad_token",
                          ("special_tokens_map.json", "tokenizer_config.json"))
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else "<|endoftext|>"
