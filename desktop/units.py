"""Sizes as people read them: decimal units, as disks and file managers count them."""

from __future__ import annotations


def size_text(size_bytes: float) -> str:
    """"812 bytes", "4.3 MB", "6.9 GB"."""
    if size_bytes < 1000:
        return f"{size_bytes:.0f} bytes"
    for unit in ("KB", "MB", "GB", "TB"):
        size_bytes /= 1000
        if size_bytes < 1000 or unit == "TB":
            break
    return f"{size_bytes:.1f} {unit}"
