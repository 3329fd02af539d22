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


def duration_text(seconds: float) -> str:
    """"12 s", "7 min", "1.5 h": a time left, as precise as it is worth."""
    if seconds < 90:
        return f"{max(seconds, 1):.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
