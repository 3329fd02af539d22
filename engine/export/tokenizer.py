"""The tokenizer folder of an exported model, with the ``tokenizer.json`` the engine reads."""

from __future__ import annotations

import shutil
from pathlib import Path

# What transformers-based tools (optimum, diffusers) read; copied as they are.
TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json")


def export_tokenizer(source: Path, destination: Path, max_length: int) -> None:
    """Copy the CLIP tokenizer files and add ``tokenizer.json`` for the ``tokenizers`` library.

    ``tokenizer.json`` is made by transformers' CLIPTokenizerFast from the same files, with
    truncation and padding to ``max_length`` built in, using the model's own pad token (SD 2.x
    pads with "!", SD 1.x with <|endoftext|>): ``Tokenizer.from_file(...).encode(prompt).ids``
    is then exactly what diffusers feeds the text encoder.
    """
    from transformers import CLIPTokenizerFast

    destination.mkdir()
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, destination / name)
    tokenizer = CLIPTokenizerFast.from_pretrained(source, local_files_only=True)
    backend = tokenizer.backend_tokenizer
    backend.enable_truncation(max_length)
    backend.enable_padding(length=max_length, pad_id=tokenizer.pad_token_id,
                           pad_token=tokenizer.pad_token)
    backend.save(str(destination / "tokenizer.json"))
