"""What the batch tests share: writing a JSON Lines batch file, and finding the pictures a
batch saved in a library by their job id and picture number."""

from __future__ import annotations

import json
from pathlib import Path

from desktop.library import Library


def write_jsonl(path: Path, jobs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(job) + "\n" for job in jobs), encoding="utf-8")
    return path


def batch_pictures(home: Path) -> dict[tuple[str, int], list[Path]]:
    """Every library picture made by a batch, by (job id, picture index)."""
    found: dict[tuple[str, int], list[Path]] = {}
    with Library.open(home) as library:
        for entry in library.search(limit=10_000).entries:
            batch = entry.parameters.get("batch")
            if batch:
                found.setdefault((batch["job"], batch["picture"]), []).append(entry.path)
    return found
