"""Get a model: download a catalogue entry's files (or one file from an address), check each
file's SHA-256, import it as ``easel models import`` would, then tidy up.

The download folder (``downloads/ENTRY`` in the data folder) keeps partial files, so a cancel,
a lost connection, a kill or a restart resumes where it stopped. After a successful import the
downloaded source is deleted unless the user keeps downloads: Easel uses the ONNX copy.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from desktop.catalogue import Entry
from desktop.downloads import DownloadProgress, FileToFetch, download_files
from desktop.model_prepare import command_line_runtime, prepare_after_import
from desktop.model_store import ImportProgress, InstalledModel, ModelStore
from engine.errors import EaselError
from engine.runtime import RuntimeOptions

_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
# What an import needs beyond the download when the address says nothing: room for the
# conversion's scratch and the ONNX result, about three times a checkpoint's size.
_IMPORT_FACTOR = 3


@dataclass(frozen=True)
class Download:
    """What to fetch and how to import it: made from a catalogue entry or an address."""

    label: str  # the folder under downloads/ and the name in messages
    files: tuple[FileToFetch, ...]
    install_as: str
    import_options: dict
    extra_bytes: int  # the import's scratch and result, for the free-space check
    single_file: bool  # import the one file, not the folder


def from_entry(entry: Entry) -> Download:
    files = tuple(
        FileToFetch(name=file.path, url=file.url, size=file.size, sha256=file.sha256)
        if entry.repo is None else
        FileToFetch(name=file.path, repo_id=entry.repo, filename=file.path,
                    revision=entry.revision or "main", size=file.size, sha256=file.sha256)
        for file in entry.files)
    return Download(entry.id, files, entry.install_as, entry.import_options(),
                    max(0, entry.disk_during_import - entry.download_size),
                    entry.file_format != "diffusers-folder")


def from_address(url: str, sha256: str | None, name: str | None = None) -> Download:
    """A model file at a direct address (a model site's download link). Its SHA-256, as the
    site lists it, is required: nothing else would vouch for the bytes."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise EaselError(f"'{url}' is not a web address (http:// or https://).")
    if not sha256:
        raise EaselError("A download from an address needs the file's SHA-256 (model sites "
                         "list it beside the download): add --sha256 HASH.")
    if not _SHA256.fullmatch(sha256):
        raise EaselError(f"'{sha256}' is not a SHA-256 (64 hexadecimal digits).")
    file_name = Path(unquote(parts.path)).name or "model"
    install_as = name or Path(file_name).stem
    label = re.sub(r"[^A-Za-z0-9._-]", "-", install_as)[:64] or "download"
    return Download(label, (FileToFetch(name=file_name, url=url, sha256=sha256.lower()),),
                    install_as, {}, 0, True)


def get_model(download: Download, store: ModelStore, downloads: Path, *,
              fetched: Callable[[DownloadProgress], None] | None = None,
              imported: ImportProgress | None = None,
              should_stop: Callable[[], bool] | None = None,
              keep_download: bool = False, endpoint: str | None = None,
              prepare_for: Callable[[], RuntimeOptions] = command_line_runtime,
              ) -> InstalledModel:
    """Download, verify and import; return the installed model. The name is checked before
    any byte is fetched; a failed import keeps the verified download for the next try.
    ``endpoint`` overrides HF_ENDPOINT for this download (a mirror; the tests' fake Hub).

    The model is then prepared for the options it will be loaded with, ``prepare_for()``
    (default: the command line's), and the last ``imported`` report says how that went
    (desktop.model_prepare); nothing there fails the download."""
    store.check_new_name(download.install_as)
    folder = Path(downloads) / download.label
    extra = download.extra_bytes or _IMPORT_FACTOR * sum(f.size or 0 for f in download.files)
    paths = download_files(list(download.files), folder, fetched, should_stop,
                           extra_bytes=extra, what=f"'{download.install_as}'",
                           endpoint=endpoint)
    source = paths[0] if download.single_file else folder
    model = store.import_model(source, download.install_as, imported, should_stop,
                               **download.import_options)
    if not keep_download:
        shutil.rmtree(folder, ignore_errors=True)
    prepare_after_import(model, prepare_for, imported, should_stop)
    return model
