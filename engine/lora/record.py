"""What a picture records about the LoRAs it was made with: each one's name, weight and the
hash AUTOMATIC1111 writes as "Lora hashes", so model sites (Civitai) recognise the LoRA.

A1111 names a .safetensors LoRA by the "AutoV3" hash: the SHA-256 of the file after its
header (the tensor data only, so editing the metadata keeps it), shortened to 12 digits.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

from engine.lora.apply import lora_name

_BLOCK = 1 << 20


def recorded_loras(loras: Sequence[tuple[str, float]]) -> tuple[tuple[str, float, str], ...]:
    """(name, weight, short hash) of each LoRA with a weight other than 0, as requested."""
    return tuple((lora_name(Path(path)), float(weight), short_hash(Path(path)))
                 for path, weight in loras if float(weight) != 0.0)


def short_hash(path: Path) -> str:
    stat = path.stat()
    return _tensor_data_hash(str(path), stat.st_size, stat.st_mtime_ns)[:12]


@lru_cache(maxsize=64)
def _tensor_data_hash(path: str, size: int, mtime_ns: int) -> str:
    """Cached per file version: a LoRA used for a whole batch is read once."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        (header_size,) = struct.unpack("<Q", file.read(8))
        file.seek(8 + header_size)
        while block := file.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()
