"""Prompt → token ids, with the `tokenizers` library only (no transformers at run time).

The exporter writes ``tokenizer/tokenizer.json``; padding and truncation are set here so they
match what the text encoder was trained with (CLIP pads to 77, SD 1.x with the end token,
SD 2.x with "!").
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from engine.errors import ModelError


@dataclass(frozen=True)
class TokenizedPrompt:
    ids: np.ndarray  # int64, shape (1, max_length)
    truncated_text: str  # the part of the prompt the text encoder never saw ("" if none)


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

    def __call__(self, prompt: str) -> TokenizedPrompt:
        encoding = self._tokenizer.encode(prompt)
        ids = list(encoding.ids)
        truncated_text = ""
        if len(ids) > self.max_length:
            # Keep the start and the closing end-of-text token, as CLIP's tokenizer does.
            kept_end = encoding.offsets[self.max_length - 2][1]
            truncated_text = prompt[kept_end:].strip()
            ids = ids[: self.max_length - 1] + ids[-1:]
        ids = ids + [self._pad_id] * (self.max_length - len(ids))
        return TokenizedPrompt(np.array([ids], dtype=np.int64), truncated_text)


def _pad_token(folder: Path) -> str:
    """The pad token named by the tokenizer's config (SD 2.x uses "!")."""
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        try:
            value = json.loads((folder / name).read_text(encoding="utf-8")).get("pad_token")
        except (OSError, ValueError):
            continue
        if isinstance(value, dict):
            value = value.get("content")
        if isinstance(value, str):
            return value
    return "<|endoftext|>"
