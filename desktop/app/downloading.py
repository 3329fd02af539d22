"""Getting a catalogue model in the app's worker thread: download, check and import it exactly
as ``easel models get`` does (desktop.model_sources.get), with bytes, speed and time left in
the job queue and the job's cancel token as the stop signal.

Qt-free and thread-agnostic, like desktop.app.generation: ``desktop.app.worker`` calls
``get_model`` from its thread with a context (progress out, cancel in).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from desktop.catalogue import Entry
from desktop.downloads import DownloadProgress, partial_path
from desktop.model_prepare import saved_runtime
from desktop.model_sources import get
from desktop.model_store import InstalledModel, ModelStore
from desktop.units import duration_text
from engine.runtime import CancelToken, RuntimeOptions


class Context(Protocol):
    """What a job gets from the worker (desktop.app.worker.JobContext)."""

    cancel: CancelToken

    def report(self, step: int, steps: int, image: int = 0, images: int = 1,
               preview: Callable[[], object] | None = None, stage: str = "",
               detail: str = "") -> None: ...


def get_model(store: ModelStore, entry: Entry, downloads: Path, keep_download: bool,
              context: Context, runtime: RuntimeOptions | None = None) -> InstalledModel:
    """Download ``entry`` into ``downloads/ENTRY`` (resuming what a cancelled try left),
    import it, delete the download unless ``keep_download``, and prepare the model for
    ``runtime`` (default: the saved settings'), as the window will load it."""
    download = get.from_entry(entry)
    tally = _Tally(entry, Path(downloads) / download.label)
    stage = f"Downloading {entry.name}"

    def fetched(progress: DownloadProgress) -> None:
        done, total = tally.add(progress)
        context.report(done, max(total, 1), stage=stage,
                       detail=progress_text(done, total, progress.bytes_per_second))

    def imported(step_name: str, done: int, total: int) -> None:
        context.report(done, max(total, 1), stage=step_name)

    return get.get_model(download, store, Path(downloads), fetched=fetched, imported=imported,
                         should_stop=lambda: context.cancel.cancelled,
                         keep_download=keep_download,
                         prepare_for=saved_runtime if runtime is None else (
                             lambda: runtime))


def bytes_kept(entry: Entry, downloads: Path) -> int:
    """Bytes of ``entry`` already in its download folder (whole files and partial ones): what
    the next Get does not fetch again."""
    folder = Path(downloads) / get.from_entry(entry).label
    kept = 0
    for file in entry.files:
        for path in (folder / file.path, partial_path(folder / file.path)):
            if path.is_file():
                kept += path.stat().st_size
    return kept


class _Tally:
    """The whole entry's bytes from per-file reports: files come one after another, and those
    already complete when the job starts are skipped without a report."""

    def __init__(self, entry: Entry, folder: Path) -> None:
        self.total = entry.download_size
        # Counted as done from the start: complete files are checked, not fetched again.
        self.finished = sum(file.download_size for file in entry.files
                            if (folder / file.path).is_file())
        self.current: str | None = None
        self.current_bytes = 0

    def add(self, progress: DownloadProgress) -> tuple[int, int]:
        """(bytes done, bytes in all) after ``progress``."""
        if progress.file_name != self.current or progress.bytes_done < self.current_bytes:
            self.finished += self.current_bytes  # the previous file is done
            self.current = progress.file_name
        self.current_bytes = progress.bytes_done
        done = self.finished + self.current_bytes
        return done, max(self.total, done)  # sizes the catalogue only rounds can be short


def progress_text(done: int, total: int, bytes_per_second: float) -> str:
    """"1.2/4.3 GB · 45 MB/s · 1 min left" (decimal units, as disks count)."""
    scale, unit = (1e9, "GB") if total >= 1e9 else (1e6, "MB")
    parts = [f"{done / scale:.1f}/{total / scale:.1f} {unit}"]
    if bytes_per_second > 0:
        speed = bytes_per_second / 1e6
        parts.append(f"{speed:.0f} MB/s" if speed >= 10 else f"{speed:.1f} MB/s")
        if done < total:
            parts.append(f"{duration_text((total - done) / bytes_per_second)} left")
    return " · ".join(parts)
