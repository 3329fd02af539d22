"""Library benchmark on a large synthetic library (a script, not a timed test).

    python -m tests.benchmarks.library_speed /tmp/easel-bench --images 100000 [--rebuild]

Builds (once; reused when the folder exists) a library of tiny PNGs with real metadata and
rows, then prints: start-up time (quick_check + reconcile), search p50/p95, one page of 200,
adding an image, a backup, and with ``--rebuild`` the worst case: the index rebuilt from the
files alone, as after losing the database and every backup.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

from desktop.image_files import a1111_parameters, new_image_id
from desktop.library import Library
from desktop.library.database import quick_check, writing
from desktop.library.history import record_use
from desktop.library.metadata import from_easel
from desktop.library.pngs import generated_metadata
from desktop.library.rows import insert_row
from engine.request import GenerationParameters

BASE = GenerationParameters(
    prompt="", negative_prompt="", width=512, height=512, steps=20, guidance=7.0,
    scheduler="euler", seed=0, model_name="", model_hash="0", model_family="sd1")


def vocabulary(rng: random.Random, size: int = 3000) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = {"".join(rng.choice(letters) for _ in range(rng.randint(3, 9)))
             for _ in range(size * 2)}
    return sorted(words)[:size]


def build(root: Path, count: int, seed: int = 0) -> None:
    """Tiny PNGs with full metadata, and their rows, written in bulk (no per-image fsync:
    this measures reading a big library, not writing one)."""
    rng = random.Random(seed)
    words = vocabulary(rng)
    weights = [1 / (rank + 1) for rank in range(len(words))]  # Zipf-like, as prompts are
    models = [f"model-{index}" for index in range(20)]
    pixels = Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8))
    now = time.time()
    started = time.perf_counter()
    with Library.open(root, backup_interval_s=10**9) as library:
        batch = []
        for index in range(count):
            prompt = ", ".join(rng.choices(words, weights, k=rng.randint(8, 25)))
            parameters = replace(BASE, prompt=prompt, negative_prompt="blurry, low quality",
                                 seed=rng.randrange(2**32), model_name=rng.choice(models))
            created = now - rng.uniform(0, 2 * 365 * 86400)
            image_id = new_image_id()
            metadata = generated_metadata(parameters, image_id, created, "text_to_image", None)
            moment = time.localtime(created)
            relative = (f"{time.strftime('%Y-%m', moment)}/"
                        f"{time.strftime('%Y%m%d-%H%M%S', moment)}-{image_id[:8]}.png")
            path = library.images_dir / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            info = PngImagePlugin.PngInfo()
            info.add_itxt("parameters", a1111_parameters(parameters))
            info.add_itxt("easel", json.dumps(metadata))
            buffer = io.BytesIO()
            pixels.save(buffer, format="PNG", pnginfo=info)
            path.write_bytes(buffer.getvalue())
            batch.append((image_id, relative, metadata, created, len(buffer.getvalue()),
                          parameters.prompt))
            if len(batch) == 2000 or index == count - 1:
                _commit(library, batch, rng)
                batch = []
                print(f"\rbuilt {index + 1}/{count}", end="", flush=True)
    print(f"\nbuilt in {time.perf_counter() - started:.0f} s")


def _commit(library: Library, batch: list, rng: random.Random) -> None:
    with writing(library.connection) as connection:
        for image_id, relative, metadata, created, size, prompt in batch:
            insert_row(connection, image_id, relative, from_easel(json.dumps(metadata)),
                       created, size, replace_existing=False)
            if rng.random() < 0.05:
                connection.execute("UPDATE images SET favourite = 1 WHERE id = ?", (image_id,))
            if rng.random() < 0.2:  # most prompts are new, some are reused
                record_use(connection, prompt, "prompt", created)


def timed(action: Callable[[], object], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append((time.perf_counter() - started) * 1000)
    return times


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))]


def report(name: str, milliseconds: list[float]) -> None:
    print(f"{name:<44} p50 {statistics.median(milliseconds):8.1f} ms   "
          f"p95 {percentile(milliseconds, 0.95):8.1f} ms   (n={len(milliseconds)})")


def measure(root: Path, rebuild: bool) -> None:
    rng = random.Random(1)
    opened = timed(lambda: Library.open(root).close(), 3)
    report("open: quick_check + reconcile + migrate", opened)
    with Library.open(root, backup_interval_s=10**9) as library:
        total = library.count(trash="include")
        size_mb = library.database_path.stat().st_size / 1e6
        print(f"library: {total} images, database {size_mb:.0f} MB")
        report("  of which quick_check", timed(lambda: quick_check(library.connection), 3))
        words = vocabulary(random.Random(0))
        common, rare = words[:50], words[500:]
        queries = ([rng.choice(common) for _ in range(70)]
                   + [rng.choice(rare) for _ in range(70)]
                   + [f"{rng.choice(common)} {rng.choice(words[:1000])}" for _ in range(60)])
        report("search (1-2 words), first page of 200",
               [timed(lambda q=query: library.search(q, limit=200), 1)[0] for query in queries])
        report("search + model filter, first page of 200",
               [timed(lambda q=query: library.search(q, model="model-3", limit=200), 1)[0]
                for query in queries[:60]])
        report("list newest, one page of 200", timed(lambda: library.search(limit=200), 50))
        cursors = []
        page = library.search(limit=200)
        while page.next_cursor and len(cursors) < 100:
            cursors.append(page.next_cursor)
            page = library.search(limit=200, cursor=page.next_cursor)
        report("list, a later page of 200 (cursor)",
               [timed(lambda c=cursor: library.search(limit=200, cursor=c), 1)[0]
                for cursor in cursors])
        report("favourites, one page of 200",
               timed(lambda: library.search(favourites=True, limit=200), 20))
        report("history search", timed(lambda: library.history(rng.choice(common)), 50))
        pixels = np.zeros((512, 512, 3), dtype=np.uint8)
        report("add one 512x512 image (PNG, fsyncs, commit)",
               timed(lambda: library.add_generated(pixels, replace(BASE, prompt="bench")), 10))
        backup_ms = timed(library.backup_now, 1)
        newest = sorted(library.backups_dir.iterdir())[-1]
        print(f"{'backup':<44} {backup_ms[0]:8.0f} ms   {newest.stat().st_size / 1e6:.0f} MB")
        if rebuild:
            library.connection.execute("DELETE FROM images")
            started = time.perf_counter()
            result = library.rebuild()
            print(f"{'rebuild the index from the files alone':<44} "
                  f"{time.perf_counter() - started:8.1f} s   ({result.indexed} indexed)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--rebuild", action="store_true")
    arguments = parser.parse_args()
    if not (arguments.folder / "library").exists():
        build(arguments.folder, arguments.images)
    measure(arguments.folder, arguments.rebuild)


if __name__ == "__main__":
    main()
