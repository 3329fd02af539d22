"""Keep one GPU architecture's machine code in a CUDA library, so that it packs much smaller.

onnxruntime-gpu's CUDA provider (``libonnxruntime_providers_cuda.so``, 284 MB) carries its
kernels compiled for every architecture it supports: sm_75, 80, 86, 89, 90a and 120a, in 609
fat binaries inside the ``.nv_fatbin`` section. The device machine is an H100 or H200 (sm_90),
which loads only the sm_90a code; the rest is 141 MB that would have to travel in parts of a
few tens of megabytes. ``prune`` rewrites each fat binary in place with only the entries of one
architecture and zeroes the bytes that freed, so nothing else in the library moves (the
wrappers CUDA registers still point at the same offsets) and the zeroes compress to nothing:
the xz-compressed library goes from 186 MB to about 52 MB.

A fat binary with no entry of that architecture is left exactly as it was (onnxruntime 1.31.1
has nine with only sm_120a code): a GPU of that architecture never loads it, and an unchanged
one cannot confuse the CUDA runtime. The library only runs on GPUs of the kept architecture
afterwards.

The format (a 16-byte header: magic 0xBA55ED50, version 1, header size, size of the entries;
then entries, each a header giving its kind, header size, payload size and ``arch`` at offset
28, then its payload) is the one cuobjdump lists; ``nvidia-cuda-cuobjdump``'s
``cuobjdump -lelf`` on the pruned library lists only the kept architecture.

Usage: ``python tests/benchmarks/gpu/fatbin.py LIBRARY [--arch 90] [--output FILE]``
(in place without ``--output``).
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

FATBIN_MAGIC = 0xBA55ED50
_FATBIN_HEADER = struct.Struct("<IHHQ")  # magic, version, header size, size of the entries
_ENTRY_SIZES = struct.Struct("<4xIQ")  # header size, payload size (after kind and a version)
_ENTRY_ARCH_OFFSET = 28
_ELF_MAGIC = b"\x7fELF"


class FatbinError(Exception):
    """The library is not laid out as expected; it is left unchanged."""


@dataclass(frozen=True)
class PruneResult:
    fatbins: int  # fat binaries in the library
    rewritten: int  # of them, those that lost entries
    entries_kept: int
    entries_dropped: int
    bytes_dropped: int


def fatbin_section(data: bytes | bytearray) -> tuple[int, int]:
    """(file offset, size) of the ``.nv_fatbin`` section of a 64-bit little-endian ELF file."""
    if data[:4] != _ELF_MAGIC or data[4] != 2 or data[5] != 1:
        raise FatbinError("not a 64-bit little-endian ELF file")
    section_table, = struct.unpack_from("<Q", data, 0x28)
    entry_size, count, names_index = struct.unpack_from("<HHH", data, 0x3A)
    headers = [struct.unpack_from("<IIQQQQ", data, section_table + number * entry_size)
               for number in range(count)]
    names_offset = headers[names_index][4]
    for name_at, _type, _flags, _address, offset, size in headers:
        start = names_offset + name_at
        if bytes(data[start:data.index(b"\0", start)]) == b".nv_fatbin":
            return offset, size
    raise FatbinError("the library has no .nv_fatbin section")


def _entries(data: bytearray, start: int, end: int) -> list[tuple[int, int, int]]:
    """(offset, length, arch) of each entry of the fat binary whose entries span start..end."""
    entries = []
    position = start
    while position < end:
        header_size, payload_size = _ENTRY_SIZES.unpack_from(data, position)
        arch, = struct.unpack_from("<I", data, position + _ENTRY_ARCH_OFFSET)
        length = header_size + payload_size
        if header_size < _ENTRY_ARCH_OFFSET + 4 or position + length > end:
            raise FatbinError(f"a fat binary entry at offset {position} overruns its binary")
        entries.append((position, length, arch))
        position += length
    return entries


def prune_bytes(data: bytearray, arch: int) -> PruneResult:
    """Keep only ``arch``'s entries in every fat binary of ``data`` (an ELF file), in place."""
    section, section_size = fatbin_section(data)
    position, stop = section, section + section_size
    fatbins = rewritten = kept = dropped = dropped_bytes = 0
    while position < stop:
        magic, version, header_size, size = _FATBIN_HEADER.unpack_from(data, position)
        if magic != FATBIN_MAGIC:
            # Fat binaries are 8-byte aligned; what lies between them is padding.
            if any(data[position:position + 8]):
                raise FatbinError(f"unexpected bytes at offset {position} of .nv_fatbin")
            position += 8 - position % 8
            continue
        if version != 1 or header_size != _FATBIN_HEADER.size:
            raise FatbinError(f"a fat binary of version {version} (header {header_size} bytes)")
        fatbins += 1
        start, end = position + header_size, position + header_size + size
        if end > stop:
            raise FatbinError(f"the fat binary at offset {position} overruns .nv_fatbin")
        entries = _entries(data, start, end)
        keep = [entry for entry in entries if entry[2] == arch]
        if keep and len(keep) < len(entries):
            body = b"".join(bytes(data[offset:offset + length]) for offset, length, _ in keep)
            data[start:start + len(body)] = body
            data[start + len(body):end] = bytes(end - start - len(body))
            struct.pack_into("<Q", data, position + 8, len(body))
            rewritten += 1
            dropped += len(entries) - len(keep)
            dropped_bytes += size - len(body)
            kept += len(keep)
        else:
            kept += len(entries)
        position = end
    if not fatbins:
        raise FatbinError("the .nv_fatbin section holds no fat binary")
    return PruneResult(fatbins, rewritten, kept, dropped, dropped_bytes)


def prune(library: Path, arch: int = 90, output: Path | None = None) -> PruneResult:
    """Write ``library`` with only ``arch``'s GPU code to ``output`` (default: in place)."""
    library = Path(library)
    output = Path(output or library)
    data = bytearray(library.read_bytes())
    result = prune_bytes(data, arch)
    # Written beside and renamed, so an interrupted run never leaves half a library.
    handle, temporary = tempfile.mkstemp(prefix=f".{output.name}-", dir=output.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.chmod(temporary, library.stat().st_mode & 0o777)
        os.replace(temporary, output)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("library", type=Path)
    parser.add_argument("--arch", type=int, default=90, help="the sm_ number to keep (90)")
    parser.add_argument("--output", type=Path, help="write here instead of in place")
    arguments = parser.parse_args(argv)
    try:
        result = prune(arguments.library, arguments.arch, arguments.output)
    except FatbinError as error:
        print(f"{arguments.library}: cannot prune its GPU code: {error}.", file=sys.stderr)
        return 1
    print(f"{arguments.library.name}: {result.fatbins} fat binaries, {result.rewritten} "
          f"rewritten; kept {result.entries_kept} entries, dropped {result.entries_dropped} "
          f"({result.bytes_dropped / 1e6:.1f} MB, now zeroes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
