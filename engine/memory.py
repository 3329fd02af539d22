"""How much memory this machine has free, to refuse work that cannot fit before it starts."""

from __future__ import annotations

from pathlib import Path

MEMINFO = Path("/proc/meminfo")


def memory_info(path: Path = MEMINFO) -> tuple[int, int] | None:
    """(total, available) bytes of main memory, or None where the system does not say
    (Linux's /proc/meminfo only: elsewhere a check is skipped, never guessed)."""
    try:
        fields = dict(line.split(":", 1) for line in path.read_text().splitlines() if ":" in line)
        return (int(fields["MemTotal"].split()[0]) * 1024,
                int(fields["MemAvailable"].split()[0]) * 1024)
    except (OSError, KeyError, ValueError, IndexError):
        return None
