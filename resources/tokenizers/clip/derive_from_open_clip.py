"""Derive CLIP's vocab.json and merges.txt from open_clip's BPE list, as OpenAI CLIP does.

Usage (from the repository root; needs only the standard library):

    pip download open_clip_torch --no-deps -d /tmp/oc
    python resources/tokenizers/clip/derive_from_open_clip.py /tmp/oc/open_clip_torch-*.whl

The wheel (or the extracted ``bpe_simple_vocab_16e6.txt.gz``) is the only input. The vocabulary
is built in the order of OpenAI's ``SimpleTokenizer`` and transformers' ``CLIPTokenizer``:
the 256 byte symbols, the same with ``</w>``, one token per merge (lines 1..48894 of the list,
after its ``#version`` header), then ``<|startoftext|>`` and ``<|endoftext|>``: 49,408 ids.
"""

from __future__ import annotations

import gzip
import json
import sys
import zipfile
from pathlib import Path

BPE_MEMBER = "open_clip/bpe_simple_vocab_16e6.txt.gz"
HEADER = "#version: 0.2"
# OpenAI's code keeps merges[1:49152-256-2+1]: the list in the wheel is longer than the
# 48,894 merges CLIP was trained with, and the first line is a header, not a merge.
MERGE_COUNT = 49152 - 256 - 2
SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>")
VOCAB_SIZE = 49408
HERE = Path(__file__).resolve().parent


def bytes_to_unicode() -> dict[int, str]:
    """OpenAI's reversible byte -> printable character table (GPT-2's), in its order."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(code) for code in codes), strict=True))


def read_bpe_list(source: Path) -> list[str]:
    if zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as wheel:
            packed = wheel.read(BPE_MEMBER)
    else:
        packed = source.read_bytes()
    return gzip.decompress(packed).decode("utf-8").split("\n")


def derive(lines: list[str]) -> tuple[dict[str, int], list[str]]:
    # The first line reads '"bpe_simple_vocab_16e6.txt#version: 0.2' (a file name left in it).
    if not lines[0].endswith(HEADER):
        raise SystemExit(f"unexpected BPE list header {lines[0]!r}")
    merges = lines[1:MERGE_COUNT + 1]
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [symbol + "</w>" for symbol in symbols]
    tokens += ["".join(merge.split()) for merge in merges]
    tokens += SPECIAL_TOKENS
    vocab = {token: index for index, token in enumerate(tokens)}
    if len(vocab) != VOCAB_SIZE or len(tokens) != VOCAB_SIZE:
        raise SystemExit(f"derived {len(vocab)} distinct tokens, expected {VOCAB_SIZE}")
    return vocab, merges


def write(vocab: dict[str, int], merges: list[str], folder: Path) -> None:
    # The layout transformers' CLIPTokenizer reads (and the Hugging Face hub ships): vocab.json
    # compact, in id order, UTF-8; merges.txt with its header and one merge per line.
    text = json.dumps(vocab, ensure_ascii=False, separators=(",", ":"))
    (folder / "vocab.json").write_text(text, encoding="utf-8")
    (folder / "merges.txt").write_text("\n".join([HEADER, *merges]) + "\n", encoding="utf-8")


def write_configs(folder: Path) -> None:
    """Stable Diffusion 1.x's tokenizer settings; SD 2.x pads with "!" instead (set per model)."""
    special = {
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
    }
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": 77,
        "do_lower_case": True,
        "add_prefix_space": False,
        "errors": "replace",
        **special,
    }
    for name, data in (("tokenizer_config.json", config), ("special_tokens_map.json", special)):
        (folder / name).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        raise SystemExit(__doc__)
    vocab, merges = derive(read_bpe_list(Path(argv[1])))
    write(vocab, merges, HERE)
    write_configs(HERE)
    print(f"wrote {len(vocab)} tokens and {len(merges)} merges to {HERE}")


if __name__ == "__main__":
    main(sys.argv)
