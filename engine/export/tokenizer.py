"""The tokenizer folder of an exported model, with the ``tokenizer.json`` the engine reads."""

from __future__ import annotations

import shutil
from pathlib import Path

from engine.errors import ModelError

# What transformers-based tools (optimum, diffusers) read; copied as they are.
TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json")


def export_tokenizer(source: Path, destination: Path, max_length: int, vocab_size: int) -> None:
    """Copy the CLIP tokenizer files and add ``tokenizer.json`` for the ``tokenizers`` library.

    ``tokenizer.json`` is made by transformers' CLIPTokenizerFast from the same files, with
    truncation and padding to ``max_length`` built in, using the model's own pad token (SD 2.x
    pads with "!", SD 1.x with <|endoftext|>): ``Tokenizer.from_file(...).encode(prompt).ids``
    is then exactly what diffusers feeds the text encoder. ``vocab_size`` is the text
    encoder's: a tokenizer with more tokens would index past its embedding table.
    """
    tokenizer = _load_clip_tokenizer(source)
    name = source.parent.name
    if len(tokenizer) > vocab_size:
        raise ModelError(f"'{name}' has a tokenizer of {len(tokenizer)} tokens for a text "
                         f"encoder that knows {vocab_size}.")
    destination.mkdir()
    for file in TOKENIZER_FILES:
        if (source / file).is_file():
            shutil.copyfile(source / file, destination / file)
    backend = tokenizer.backend_tokenizer
    backend.enable_truncation(max_length)
    backend.enable_padding(length=max_length, pad_id=tokenizer.pad_token_id,
                           pad_token=tokenizer.pad_token)
    backend.save(str(destination / "tokenizer.json"))


def _load_clip_tokenizer(source: Path):
    from transformers import CLIPTokenizerFast

    try:
        tokenizer = CLIPTokenizerFast.from_pretrained(source, local_files_only=True)
    except Exception as error:  # tokenizers reports a damaged file as a plain Exception
        raise ModelError(f"'{source.parent.name}' is damaged: its tokenizer cannot be "
                         f"read.") from error
    if tokenizer.pad_token_id is None:
        raise ModelError(f"'{source.parent.name}' has a tokenizer without a pad token.")
    return tokenizer
