"""Files from Hugging Face repos: huggingface_hub says where a file is, who the user is and what
the file should be; ``transfer.fetch`` moves the bytes, as for every other source.

From huggingface_hub: the address (``hf_hub_url``), the login (``build_hf_headers`` reads
HF_TOKEN or the token saved by ``hf auth login``) and the metadata (``get_hf_file_metadata``:
size, commit, and the ETag, which is the SHA-256 of a file kept in LFS and the git blob SHA-1
of one kept in git). Its errors become one sentence each.

HF_ENDPOINT and HF_HUB_OFFLINE are honoured as huggingface_hub honours them: it reads them once,
when it is first imported (``huggingface_hub.constants``), so they count as set when Easel
starts, as for the ``hf`` command. ``endpoint=`` overrides the address for one call. This module
is imported only when a download is asked for: importing it touches no network.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx2  # huggingface_hub's HTTP client: its connection errors come through as they are
from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import build_hf_headers

from desktop.downloads.errors import DownloadError
from desktop.downloads.transfer import DownloadProgress, fetch

# huggingface_hub's user-agent telemetry fetches a registry of AI agents from the Hub the first
# time it builds headers (utils/_detect_agent.py): a request the user did not ask for.
constants.HF_HUB_DISABLE_TELEMETRY = True

_SHA256 = re.compile(r"[0-9a-f]{64}")
_SHA1 = re.compile(r"[0-9a-f]{40}")


@dataclass(frozen=True)
class HubFile:
    """What the Hub says about one file at one revision."""

    url: str  # the file at its commit, so a branch that moves meanwhile cannot mix versions
    size: int | None
    sha256: str | None  # files kept in LFS (every weights file)
    git_sha1: str | None  # small files kept in git (configs, tokenizer files)
    commit: str | None


def hub_file(repo_id: str, filename: str, revision: str, *,
             endpoint: str | None = None) -> HubFile:
    """Ask the Hub about ``filename`` in ``repo_id`` at ``revision`` (a HEAD request, no bytes
    of the file); one sentence for every way that can fail."""
    if constants.is_offline_mode():
        raise DownloadError(_offline(repo_id))
    url = hf_hub_url(repo_id, filename, revision=revision, endpoint=endpoint)
    try:
        metadata = get_hf_file_metadata(url)
    except Exception as error:
        raise _sentence(error, repo_id, filename, revision, url) from error
    etag = (metadata.etag or "").lower()
    commit = metadata.commit_hash
    return HubFile(
        url=hf_hub_url(repo_id, filename, revision=commit or revision, endpoint=endpoint),
        size=metadata.size,
        sha256=etag if _SHA256.fullmatch(etag) else None,
        git_sha1=etag if _SHA1.fullmatch(etag) else None,
        commit=commit)


def fetch_hub_file(repo_id: str, filename: str, revision: str, destination: Path, *,
                   expected_size: int | None = None, expected_sha256: str | None = None,
                   progress: Callable[[DownloadProgress], None] | None = None,
                   should_stop: Callable[[], bool] | None = None,
                   endpoint: str | None = None) -> Path:
    """Download one repo file to ``destination``, checked against the catalogue's size and
    SHA-256 where given and against the Hub's own checksum always."""
    info = hub_file(repo_id, filename, revision, endpoint=endpoint)
    expected_sha256 = expected_sha256.lower() if expected_sha256 else None
    if expected_size is not None and info.size is not None and info.size != expected_size:
        raise DownloadError(_changed(repo_id, filename, revision, "size"))
    if expected_sha256 and info.sha256 and info.sha256 != expected_sha256:
        raise DownloadError(_changed(repo_id, filename, revision, "checksum"))
    try:
        headers = build_hf_headers()
    except Exception as error:
        raise _sentence(error, repo_id, filename, revision, info.url) from error
    path = fetch(info.url, destination, headers=headers, expected_size=info.size or expected_size,
                 expected_sha256=expected_sha256 or info.sha256, progress=progress,
                 should_stop=should_stop)
    if not (expected_sha256 or info.sha256) and info.git_sha1:
        _check_git_sha1(path, info.git_sha1)
    return path


def _check_git_sha1(path: Path, expected: str) -> None:
    """Files kept in git have no SHA-256 on the Hub, only their blob id: check that instead.
    They are small (configs, tokenizers), so reading one again costs nothing."""
    data = path.read_bytes()
    got = hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()
    if got != expected:
        path.unlink()
        raise DownloadError(f"{path.name} arrived damaged and was deleted: its git SHA-1 is "
                            f"{got}, not the expected {expected}.")


def _sentence(error: Exception, repo_id: str, filename: str, revision: str,
              url: str) -> DownloadError:
    """huggingface_hub's error as one sentence the user can act on."""
    host = urlsplit(url).hostname or url
    if isinstance(error, OfflineModeIsEnabled):
        return DownloadError(_offline(repo_id))
    if isinstance(error, GatedRepoError):
        if error.response is not None and error.response.status_code == 403:
            return DownloadError(f"{repo_id} is gated and your account has no access yet: accept "
                                 f"its licence on {host}, then try again.")
        return DownloadError(f"{repo_id} is gated: accept its licence on {host} and log in with "
                             "`hf auth login`, then try again.")
    if isinstance(error, RepositoryNotFoundError):
        return DownloadError(f"{repo_id} was not found on {host}: check the name, or log in with "
                             "`hf auth login` if it is private.")
    if isinstance(error, RevisionNotFoundError):
        return DownloadError(f"{repo_id} has no revision '{revision}' on {host}.")
    if isinstance(error, EntryNotFoundError):
        return DownloadError(f"{repo_id} has no file '{filename}' at revision '{revision}'.")
    if isinstance(error, HfHubHTTPError):
        status = error.response.status_code if error.response is not None else None
        if status == 401:
            return DownloadError(f"{host} refused your Hugging Face token: log in again with "
                                 "`hf auth login`, then try again.")
        if status == 403:
            return DownloadError(f"Your Hugging Face token may not read {repo_id}: give it read "
                                 "access on huggingface.co, or log in again with `hf auth login`.")
        return DownloadError(f"{host} answered HTTP {status} for {filename} of {repo_id}; "
                             "try again later.")
    if isinstance(error, httpx2.HTTPError | OSError):
        return DownloadError(f"Cannot reach {host} to fetch {filename} of {repo_id}: check the "
                             "network connection (and HF_ENDPOINT, if set), then try again.")
    return DownloadError(f"Asking {host} about {filename} of {repo_id} failed: {error}.")


def _offline(repo_id: str) -> str:
    return (f"HF_HUB_OFFLINE is set, so Easel does not download {repo_id} from Hugging Face; "
            "unset it to download.")


def _changed(repo_id: str, filename: str, revision: str, what: str) -> str:
    return (f"The {what} of {filename} in {repo_id} at '{revision}' is not the one Easel's "
            "catalogue expects, so it was not downloaded.")
