"""Models in the local Hugging Face hub cache, found by repo id without any network.

The cache is huggingface_hub's own folder (``HF_HUB_CACHE``, else ``HF_HOME/hub``, else
``~/.cache/huggingface/hub``: the library works the location out from the environment when it
is imported). Its layout is documented and stable: ``models--ORG--NAME/refs/REVISION`` holds a
commit, ``snapshots/COMMIT/`` the files (symlinks into ``blobs/``). Reading it directly, rather
than through ``snapshot_download(local_files_only=True)``, keeps the network code out of this
path entirely.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from engine.errors import ModelError

# A Hub model id: "owner/name" (letters, digits, '-', '_', '.'); a bare name is taken as a path.
_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}")
_COMMIT = re.compile(r"[0-9a-f]{40}")


@dataclass(frozen=True)
class CachedModel:
    repo_id: str
    revision: str  # the ref it was found under ("main") or the commit asked for
    commit: str
    folder: Path  # the snapshot: what `easel models import` reads, in place
    size_bytes: int


def looks_like_repo_id(text: str) -> bool:
    """True for "owner/name" that is not an existing path (a folder of that name wins)."""
    return bool(_REPO_ID.fullmatch(text)) and not Path(text).expanduser().exists()


def cache_folder() -> Path:
    """Where huggingface_hub keeps its downloads on this machine."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE).expanduser()


def cached_snapshot(repo_id: str, revision: str | None = None,
                    hint: str | None = None) -> CachedModel:
    """The cached snapshot of ``repo_id`` at ``revision`` (default: the branch it was
    downloaded from, "main"), or one sentence saying it is not there. ``hint`` is what to run
    instead (for example the catalogue's ``easel models get ENTRY``)."""
    revision = revision or "main"
    root = cache_folder() / ("models--" + repo_id.replace("/", "--"))
    commit = revision if _COMMIT.fullmatch(revision) else _read_ref(root, revision)
    folder = root / "snapshots" / commit if commit else None
    if folder is None or not folder.is_dir() or not any(folder.iterdir()):
        instead = hint or f"download it with `hf download {repo_id}`"
        raise ModelError(f"'{repo_id}' ({revision}) is not in the Hugging Face cache at "
                         f"{cache_folder()}; {instead}, then import it again.")
    return CachedModel(repo_id, revision, commit, folder, _size(folder))


def cached_models() -> list[CachedModel]:
    """Every model repo in the cache with a snapshot on its "main" ref, by repo id."""
    found = []
    root = cache_folder()
    if not root.is_dir():
        return found
    for repo in sorted(root.glob("models--*")):
        repo_id = repo.name.removeprefix("models--").replace("--", "/", 1)
        try:
            found.append(cached_snapshot(repo_id))
        except ModelError:
            continue  # a repo with no complete "main" snapshot: nothing to offer
    return found


def _read_ref(root: Path, revision: str) -> str | None:
    try:
        commit = (root / "refs" / revision).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return commit if _COMMIT.fullmatch(commit) else None


def _size(folder: Path) -> int:
    # Snapshot files are symlinks into blobs/: count what they point at, each blob once.
    blobs = {path.resolve() for path in folder.rglob("*") if path.is_file()}
    return sum(blob.stat().st_size for blob in blobs)
