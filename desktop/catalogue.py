"""Easel's model catalogue: the models it offers to fetch, read from ``resources/catalogue.json``.

The catalogue is data, not code: for each entry its source (a Hugging Face repository pinned
to a commit, or a direct address), the files to fetch with their size and SHA-256, the licence,
what the model is for, the options the import needs and the disk it takes. Every figure's
source is written down in ``resources/docs/catalogue.md``. This module only reads and checks
the file; fetching and importing are the downloader's and the model store's jobs.

A malformed catalogue is refused whole, in one sentence naming the entry and the field, so a
damaged file can never send the downloader to a wrong address or skip a checksum.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import EaselError
from engine.resource_files import resource_path

FORMAT = 1  # the newest catalogue format this Easel reads
KINDS = ("diffusion", "upscaler")  # the model store's kinds (desktop.model_kinds)
TASKS = {"diffusion": ("text-to-image", "inpainting", "instruct-pix2pix"),
         "upscaler": ("upscale",)}
# How the files arrive: one .safetensors checkpoint, one pickle checkpoint (read only as plain
# tensors), or the files of a diffusers folder.
FILE_FORMATS = ("single-file", "pickle", "diffusers-folder")
FAMILIES = ("sd1", "sd2", "sdxl")  # engine.export.checkpoint_family.FAMILIES
PREDICTIONS = ("epsilon", "v_prediction")
DISTILLATIONS = ("turbo", "lcm")
HUB = "https://huggingface.co"
UNPINNED = "main"  # a revision not pinned to a commit: the downloader records what it got
_COMMIT = re.compile(r"[0-9a-f]{40}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
# The names the model store accepts (desktop.model_store): letters, digits, spaces, dots,
# dashes and underscores, starting with a letter or digit.
_INSTALL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}")
_REPO = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")


class CatalogueError(EaselError):
    """The catalogue file is missing, malformed or made for a newer Easel."""


@dataclass(frozen=True)
class CatalogueFile:
    """One file to fetch. ``size`` and ``sha256`` are None where no published figure was
    found; the download is then checked against the Hub's own SHA-256 (its ETag)."""

    path: str  # where it goes, relative to the download folder (and to the repository)
    url: str  # the pinned address it is fetched from
    size: int | None  # exact bytes, as the source lists them
    sha256: str | None
    approx_size: int | None = None  # the source's rounded listing, where no exact size is known

    @property
    def download_size(self) -> int:
        """Bytes to fetch: exact where known, else the rounded listing, else 0 (a config)."""
        return self.size if self.size is not None else self.approx_size or 0


@dataclass(frozen=True)
class Entry:
    """One model on offer."""

    id: str  # "sd15": what `easel models get` takes
    name: str  # "Stable Diffusion 1.5": what a person reads
    install_as: str  # the installed model's name in the store
    kind: str  # "diffusion" or "upscaler"
    task: str  # "text-to-image", "inpainting", "instruct-pix2pix", "upscale"
    use: str  # one line: what it is good for
    repo: str | None  # Hugging Face repository, or None for a direct address
    revision: str | None  # 40-hex commit, or "main" where none was found to pin
    release: str | None  # the page of a direct-address source (a GitHub release)
    file_format: str  # "single-file", "pickle" or "diffusers-folder"
    files: tuple[CatalogueFile, ...]
    family: str | None  # import options a checkpoint cannot tell (import_model's keywords)
    prediction: str | None
    distillation: str | None
    licence: str
    licence_url: str
    licence_note: str | None
    non_commercial: bool  # the licence forbids commercial use
    gated: bool  # the Hub asks for a login and accepted terms before it serves the files
    disk_during_import: int  # bytes: the download, the import's scratch and its result
    disk_after_import: int  # bytes: the installed model (the download may then be deleted)

    @property
    def pinned(self) -> bool:
        """True when the files come from one fixed commit (or a direct address)."""
        return self.repo is None or bool(_COMMIT.fullmatch(self.revision or ""))

    @property
    def download_size(self) -> int:
        return sum(file.download_size for file in self.files)

    @property
    def needed_disk(self) -> int:
        """The free space an import needs at its peak."""
        return self.disk_during_import

    def import_options(self) -> dict[str, str | None]:
        """The keyword arguments for ModelStore.import_model (family=, prediction=,
        distillation=); an upscaler needs none."""
        if self.kind != "diffusion":
            return {}
        return {"family": self.family, "prediction": self.prediction,
                "distillation": self.distillation}


@dataclass(frozen=True)
class Catalogue:
    format: int
    entries: tuple[Entry, ...]

    def entry(self, entry_id: str) -> Entry:
        """The entry called ``entry_id``, or CatalogueError naming the known ones."""
        for candidate in self.entries:
            if candidate.id == entry_id:
                return candidate
        known = ", ".join(candidate.id for candidate in self.entries)
        raise CatalogueError(f"The catalogue has no entry '{entry_id}' (known: {known}).")

    def non_commercial(self) -> tuple[Entry, ...]:
        return tuple(candidate for candidate in self.entries if candidate.non_commercial)

    def total_download_size(self, entry_ids: Collection[str] | None = None) -> int:
        chosen = self.entries if entry_ids is None else [self.entry(i) for i in entry_ids]
        return sum(candidate.download_size for candidate in chosen)


CATALOGUE_ENV = "EASEL_CATALOGUE"  # another catalogue file (a studio's own list; the tests')


def default_path() -> Path:
    named = os.environ.get(CATALOGUE_ENV)
    return Path(named).expanduser() if named else resource_path("catalogue.json")


def load_catalogue(path: Path | None = None) -> Catalogue:
    """Read and check the catalogue at ``path`` (default: the one shipped with Easel)."""
    path = Path(path) if path is not None else default_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError:
        raise CatalogueError(f"The model catalogue '{path}' cannot be read.") from None
    except ValueError:
        raise CatalogueError(f"The model catalogue '{path.name}' is not valid JSON.") from None
    return parse_catalogue(data)


def entry(entry_id: str, path: Path | None = None) -> Entry:
    """The entry ``entry_id`` of the catalogue at ``path`` (default: the shipped one)."""
    return load_catalogue(path).entry(entry_id)


def is_installed(catalogue_entry: Entry, installed_names: Collection[str]) -> bool:
    """True when a model with the entry's install name is among ``installed_names``."""
    return catalogue_entry.install_as in installed_names


# --- checking ------------------------------------------------------------------------------

def parse_catalogue(data: Any) -> Catalogue:
    """The checked catalogue from its decoded JSON, or CatalogueError in one sentence."""
    if not isinstance(data, Mapping):
        raise CatalogueError("The model catalogue is damaged: it is not a JSON object.")
    version = data.get("format")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CatalogueError("The model catalogue is damaged: its 'format' is not a number "
                             "from 1 up.")
    if version > FORMAT:
        raise CatalogueError(f"The model catalogue (format {version}) was made for a newer "
                             f"Easel, which reads up to format {FORMAT}; update Easel.")
    raw_entries = data.get("entries")
    if not isinstance(raw_entries, list) or not raw_entries:
        raise CatalogueError("The model catalogue is damaged: it has no list of 'entries'.")
    entries = tuple(_entry(raw, number) for number, raw in enumerate(raw_entries, start=1))
    _check_unique(entries)
    return Catalogue(format=version, entries=entries)


class _Fields:
    """Reads one entry's fields, naming the entry and field in any refusal."""

    def __init__(self, raw: Any, label: str) -> None:
        if not isinstance(raw, Mapping):
            raise CatalogueError(f"The model catalogue is damaged: {label} is not a JSON "
                                 f"object.")
        self.raw, self.label = raw, label

    def bad(self, field: str, wanted: str) -> CatalogueError:
        return CatalogueError(f"The model catalogue is damaged: {self.label} has no valid "
                              f"'{field}' ({wanted}).")

    def text(self, field: str, pattern: re.Pattern | None = None,
             choices: Collection[str] | None = None, optional: bool = False,
             wanted: str = "a non-empty string") -> str | None:
        value = self.raw.get(field)
        if value is None and optional:
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.bad(field, wanted)
        if pattern is not None and not pattern.fullmatch(value):
            raise self.bad(field, wanted)
        if choices is not None and value not in choices:
            raise self.bad(field, wanted)
        return value

    def number(self, field: str, optional: bool = False) -> int | None:
        value = self.raw.get(field)
        if value is None and optional:
            return None
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise self.bad(field, "a whole number of bytes above 0")
        return value

    def flag(self, field: str) -> bool:
        value = self.raw.get(field)
        if not isinstance(value, bool):
            raise self.bad(field, "true or false")
        return value

    def part(self, field: str) -> _Fields:
        value = self.raw.get(field)
        if not isinstance(value, Mapping):
            raise self.bad(field, "a JSON object")
        return _Fields(value, self.label)


def _entry(raw: Any, number: int) -> Entry:
    label = f"entry {number}"
    if isinstance(raw, Mapping) and isinstance(raw.get("id"), str):
        label = f"entry '{raw['id']}'"
    fields = _Fields(raw, label)
    entry_id = fields.text("id", _ID, wanted="lower-case letters, digits and dashes")
    kind = fields.text("kind", choices=KINDS, wanted=" or ".join(KINDS))
    tasks = TASKS[kind]
    source = fields.part("source")
    repo, revision, release = _source(source)
    file_format = fields.text("file_format", choices=FILE_FORMATS, wanted=", ".join(FILE_FORMATS))
    options = fields.part("import")
    licence = fields.part("licence")
    disk = fields.part("disk")
    return Entry(
        id=entry_id,
        name=fields.text("name"),
        install_as=fields.text("install_as", _INSTALL_NAME,
                               wanted="a model name: up to 64 letters, digits, spaces, dots, "
                                      "dashes or underscores"),
        kind=kind,
        task=fields.text("task", choices=tasks, wanted=f"for {kind}: {', '.join(tasks)}"),
        use=fields.text("use"),
        repo=repo, revision=revision, release=release,
        file_format=file_format,
        files=_files(raw.get("files"), fields, repo, revision),
        family=options.text("family", choices=FAMILIES, optional=kind != "diffusion",
                            wanted=" or ".join(FAMILIES)),
        prediction=options.text("prediction", choices=PREDICTIONS, optional=True,
                                wanted=f"{' or '.join(PREDICTIONS)} or null"),
        distillation=options.text("distillation", choices=DISTILLATIONS, optional=True,
                                  wanted=f"{' or '.join(DISTILLATIONS)} or null"),
        licence=licence.text("name"),
        licence_url=licence.text("url", re.compile(r"https://\S+"), wanted="an https address"),
        licence_note=licence.text("note", optional=True),
        non_commercial=licence.flag("non_commercial"),
        gated=fields.flag("gated"),
        disk_during_import=disk.number("during_import"),
        disk_after_import=disk.number("after_import"),
    )


def _source(source: _Fields) -> tuple[str | None, str | None, str | None]:
    """(repo, revision, release): a Hub repository with its revision, or a release page."""
    if source.raw.get("hub") is None:
        release = source.text("release", re.compile(r"https://\S+"),
                              wanted="a Hub repository or an https release page")
        return None, None, release
    repo = source.text("hub", _REPO, wanted="a Hugging Face repository, owner/name")
    revision = source.text("revision", wanted=f"a 40-hex commit or '{UNPINNED}'")
    if revision != UNPINNED and not _COMMIT.fullmatch(revision):
        raise source.bad("revision", f"a 40-hex commit or '{UNPINNED}'")
    return repo, revision, None


def _files(raw: Any, fields: _Fields, repo: str | None,
           revision: str | None) -> tuple[CatalogueFile, ...]:
    if not isinstance(raw, list) or not raw:
        raise fields.bad("files", "a list of files to fetch")
    files = []
    for item in raw:
        file = _Fields(item, fields.label)
        path = file.text("path", re.compile(r"(?!/)(?!.*\.\.)[A-Za-z0-9._/-]+"),
                         wanted="a relative path inside the source")
        if repo is not None:
            url = f"{HUB}/{repo}/resolve/{revision}/{path}"
        else:
            url = file.text("url", re.compile(r"https://\S+"), wanted="an https address")
        size = file.number("size", optional=True)
        approx = file.number("approx_size", optional=True)
        sha256 = file.text("sha256", _SHA256, optional=True,
                           wanted="64 lower-case hexadecimal digits or null")
        if repo is None and (size is None or sha256 is None):
            # A direct address has no Hub ETag to fall back on.
            raise file.bad("sha256" if sha256 is None else "size",
                           "a published figure: a direct address has no other check")
        files.append(CatalogueFile(path=path, url=url, size=size, sha256=sha256,
                                   approx_size=approx))
    return tuple(files)


def _check_unique(entries: tuple[Entry, ...]) -> None:
    for field in ("id", "install_as"):
        seen: set[str] = set()
        for candidate in entries:
            value = getattr(candidate, field)
            if value in seen:
                raise CatalogueError(f"The model catalogue is damaged: entry '{candidate.id}' "
                                     f"repeats the '{field}' '{value}'.")
            seen.add(value)
