"""Thumbnails, made on first request and kept in a cache of bounded size.

A thumbnail is a JPEG named by image id and size, so it never needs invalidating (library
images are never rewritten). When the cache grows past ``max_bytes`` the least recently used
ones are deleted down to 90 %; using a thumbnail touches its modification time. Safe to call
from a worker thread: it touches no database. A picture with transparency (a cut-out) shows
it as a checkerboard, JPEG having no alpha.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from PIL import Image

from desktop.library.atomic import is_temporary, write_atomically
from desktop.library.images import load_pixels, on_checkerboard, open_image

DEFAULT_SIZE = 256
DEFAULT_MAX_BYTES = 256 * 1024 * 1024


class ThumbnailCache:
    def __init__(self, folder: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.folder = Path(folder)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._total: int | None = None  # measured on first write, then kept up to date

    def path_for(self, image_id: str, size: int = DEFAULT_SIZE) -> Path:
        return self.folder / image_id[:2] / f"{image_id}-{size}.jpg"

    def get(self, image_id: str, image_path: Path, size: int = DEFAULT_SIZE) -> Path:
        """The thumbnail of ``image_path`` no larger than ``size`` on its longer side."""
        target = self.path_for(image_id, size)
        try:
            os.utime(target)  # a hit: mark it recently used
            return target
        except FileNotFoundError:
            pass
        with open_image(image_path) as image:
            small = load_pixels(image, image_path.name)
            if small.mode not in ("RGB", "RGBA"):
                small = small.convert("RGBA" if small.has_transparency_data else "RGB")
            # Shrunk before the checkerboard is laid under, so its squares keep their size
            # (Pillow shrinks RGBA premultiplied: hidden pixels do not bleed into edges).
            small.thumbnail((size, size), Image.Resampling.LANCZOS)
            small = on_checkerboard(small)
        target.parent.mkdir(parents=True, exist_ok=True)
        # No EXIF is passed, so none is written; JPEG keeps the cache small.
        try:
            write_atomically(target, lambda stream: small.save(stream, "JPEG", quality=85))
        except FileExistsError:  # another thread or process made it meanwhile
            return target
        self._grew(target.stat().st_size)
        return target

    def forget(self, image_id: str) -> None:
        """Delete an image's thumbnails (its image left the library)."""
        folder = self.folder / image_id[:2]
        if folder.is_dir():
            for path in folder.glob(f"{image_id}-*.jpg"):
                path.unlink(missing_ok=True)

    def total_bytes(self) -> int:
        return sum(size for _, size, _ in self._files())

    def _grew(self, added: int) -> None:
        with self._lock:
            if self._total is None:
                self._total = self.total_bytes()
            else:
                self._total += added
            if self._total > self.max_bytes:
                self._total = self._trim(int(self.max_bytes * 0.9))

    def _trim(self, goal: int) -> int:
        files = sorted(self._files(), key=lambda item: item[2])  # least recently used first
        total = sum(size for _, size, _ in files)
        for path, size, _ in files:
            if total <= goal:
                break
            path.unlink(missing_ok=True)
            total -= size
        return total

    def _files(self) -> list[tuple[Path, int, float]]:
        found = []
        if not self.folder.is_dir():
            return found
        for folder, _, names in os.walk(self.folder):
            for name in names:
                path = Path(folder) / name
                try:
                    stat = path.stat()
                except FileNotFoundError:
                    continue
                if is_temporary(name) and time.time() - stat.st_mtime > 3600:
                    path.unlink(missing_ok=True)  # left by a crash long ago
                    continue
                found.append((path, stat.st_size, stat.st_mtime))
        return found
