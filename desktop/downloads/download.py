"""Download a model's files into a folder: the free-space check first, then each file in turn,
skipping those already there and verified."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from desktop.downloads.space import check_free_space
from desktop.downloads.transfer import CHUNK, DownloadProgress, fetch, partial_path


@dataclass(frozen=True)
class FileToFetch:
    """One file of a catalogue entry: from a Hugging Face repo (``repo_id``, ``filename``,
    ``revision``) or from a direct address (``url``). ``name`` is its path in the folder."""

    name: str
    repo_id: str | None = None
    filename: str | None = None
    revision: str = "main"  # the catalogue pins a commit
    url: str | None = None
    size: int | None = None  # known sizes let the space check run before any request
    sha256: str | None = None  # required for a direct address: nothing else vouches for it

    def __post_init__(self) -> None:
        if (self.url is None) == (self.repo_id is None):
            raise ValueError(f"{self.name}: give either a url or a repo_id, not both or neither")
        if self.url is not None and not self.sha256:
            raise ValueError(f"{self.name}: a file from a direct address needs its sha256")
        if Path(self.name).is_absolute() or ".." in Path(self.name).parts:
            raise ValueError(f"{self.name}: the name must stay inside the folder")

    @property
    def source_name(self) -> str:
        return self.filename or self.name


def download_files(files: list[FileToFetch], folder: Path,
                   progress: Callable[[DownloadProgress], None] | None = None,
                   should_stop: Callable[[], bool] | None = None, *,
                   extra_bytes: int = 0, what: str | None = None,
                   endpoint: str | None = None) -> list[Path]:
    """Fetch ``files`` into ``folder`` and return their paths, in order.

    Free space for the bytes still missing plus ``extra_bytes`` (the import's scratch and
    result) is checked before any request; ``what`` names the download in that sentence.
    Files already complete and verified are not fetched again; partial ones resume.
    ``endpoint`` overrides HF_ENDPOINT for the Hugging Face files of this call.
    """
    folder = Path(folder)
    missing = [file for file in files if not _verified(file, folder / file.name)]
    needed = sum(max(0, (file.size or 0) - _partial_size(folder / file.name)) for file in missing)
    check_free_space(folder, needed + extra_bytes, what or f"the download into {folder}")
    for file in missing:
        _fetch_one(file, folder / file.name, progress, should_stop, endpoint)
    return [folder / file.name for file in files]


def _fetch_one(file: FileToFetch, destination: Path,
               progress: Callable[[DownloadProgress], None] | None,
               should_stop: Callable[[], bool] | None, endpoint: str | None) -> None:
    destination.unlink(missing_ok=True)  # a damaged copy: fetched again below
    if file.url is not None:
        fetch(file.url, destination, expected_size=file.size, expected_sha256=file.sha256,
              progress=progress, should_stop=should_stop)
        return
    from desktop.downloads import hub  # huggingface_hub is imported only for a Hub download

    hub.fetch_hub_file(file.repo_id, file.source_name, file.revision, destination,
                       expected_size=file.size, expected_sha256=file.sha256,
                       progress=progress, should_stop=should_stop, endpoint=endpoint)


def _verified(file: FileToFetch, path: Path) -> bool:
    """Already there: the size matches and, where the catalogue has one, the SHA-256 too."""
    if not path.is_file():
        return False
    if file.size is not None and path.stat().st_size != file.size:
        return False
    if file.sha256:
        return sha256_of(path) == file.sha256.lower()
    return file.size is not None


def _partial_size(path: Path) -> int:
    partial = partial_path(path)
    return partial.stat().st_size if partial.is_file() else 0


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file, read in large blocks."""
    hasher = hashlib.sha256()
    with open(path, "rb") as file:
        buffer = memoryview(bytearray(CHUNK))
        while read := file.readinto(buffer):
            hasher.update(buffer[:read])
    return hasher.hexdigest()


