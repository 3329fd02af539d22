"""What a picture records about the LoRAs it was made with: each one's name, weight and the
hash AUTOMATIC1111 writes as "Lora hashes", so model sites (Civitai) recognise the LoRA.

A1111 names a .safetensors LoRA by the "AutoV3" hash: the SHA-256 of the file after its
header (the tensor data only, so editing the metadata keeps it), shortened to 12 digits; any
other file (a pickle) by the SHA-256 of the whole file. It tells the two by the file's name.
The import converts a pickle to Easel's ``lora.safetensors``, whose hash is not the one sites
know, so it keeps A1111's hash of the imported file in the installed folder's ``easel.json``.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

from engine.embeddings.record import file_sha256, hash_at_import
from engine.lora.apply import LORA_FILE, lora_name

_BLOCK = 1 << 20
SOURCE_HASH = "source_hash"  # in easel.json: A1111's hash of the file that was imported


def recorded_loras(loras: Sequence[tuple[str, float]]) -> tuple[tuple[str, float, str], ...]:
    """(name, weight, short hash) of each LoRA with a weight other than 0, as requested."""
    return tuple((lora_name(Path(path)), float(weight), short_hash(Path(path)))
                 for path, weight in loras if float(weight) != 0.0)


def short_hash(path: Path) -> str:
    """A1111's hash of the LoRA file ``path``: of the file the user imported, as the import
    kept it; a file used where it lies, or one installed before imports kept that hash, is
    hashed as a .safetensors file (right for those imported as one: the import copies them
    byte for byte; a site may not know that of one converted from a pickle)."""
    return (hash_at_import(path, LORA_FILE, SOURCE_HASH) or autov3(path))[:12]


def a1111_hash(source: Path) -> str:
    """The whole hash A1111 gives the LoRA file ``source``: AutoV3 when its name says
    .safetensors (A1111 goes by the name), else the SHA-256 of the whole file."""
    if Path(source).suffix.lower() == ".safetensors":
        return autov3(Path(source))
    return file_sha256(Path(source))


def autov3(path: Path) -> str:
    """The SHA-256 of the tensor data of the .safetensors file ``path``, in hex."""
    stat = path.stat()
    return _tensor_data_hash(str(path), stat.st_size, stat.st_mtime_ns)


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
