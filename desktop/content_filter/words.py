"""The content filter's word list: a text file in the user's data folder they may edit.

Easel ships a default list (``resources/filter/blocked-terms.txt``) and reads it while the
user has no list of their own. The first time the user asks to edit the list (Settings ›
Edit word list…) it is copied to ``<data folder>/filter/blocked-terms.txt``, and from then
on that copy is the user's: Easel reads it and never writes it again. (Checking a prompt
never writes: a command that fails for a full disk leaves nothing behind.) Deleting it
brings the default back. A list Easel cannot read (permissions, not UTF-8 text, a
folder in its place) is left exactly as it is, and the shipped default is used in its
place, with one sentence saying so.

The format: one term or phrase a line; everything from ``#`` to the end of a line is a
comment; blank lines are ignored. A term is read as its words (see ``normalise``), so case,
accents and the spacing between words do not matter.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from desktop.content_filter.normalise import term_words
from desktop.files import data_folder_writes
from desktop.library.atomic import write_atomically
from desktop.library.errors import DiskFull
from engine.errors import EaselError
from engine.resource_files import resource_path

FOLDER = "filter"
FILE_NAME = "blocked-terms.txt"


@dataclass(frozen=True)
class Term:
    """One term of the list: as written there, and as the words the filter matches."""

    written: str
    words: tuple[str, ...]


@dataclass(frozen=True)
class LoadedTerms:
    """The terms in use, in the list's order, and, when the user's list could not be read
    and the shipped default stands in for it, the one sentence that says so."""

    terms: tuple[Term, ...]
    message: str | None = None

    def __iter__(self) -> Iterator[Term]:  # so ``check_prompt`` takes it as it is
        return iter(self.terms)


def shipped_words_file() -> Path:
    """The default list that ships with Easel (read-only)."""
    return resource_path(FOLDER, FILE_NAME)


def words_file(data_folder: Path) -> Path:
    """The user's list, ``<data folder>/filter/blocked-terms.txt``; the shipped default is
    copied there (whole or not at all) when it is missing. ``DataFolderUnusable`` in one
    sentence when the data folder cannot be written."""
    path = Path(data_folder) / FOLDER / FILE_NAME
    if path.exists() or path.is_symlink():  # a broken link is the user's business too
        return path
    default = _shipped_bytes()
    with data_folder_writes(Path(data_folder)):
        path.parent.mkdir(parents=True, exist_ok=True)
        # FileExistsError: another Easel process copied it first, and theirs is the same.
        with contextlib.suppress(FileExistsError):
            write_atomically(path, lambda stream: stream.write(default))
    return path


def load_terms(data_folder: Path) -> LoadedTerms:
    """The terms of the user's list, or of the shipped default while there is none; the
    default's, with one sentence naming the user's file, when that file cannot be read.
    Nothing is written, overwritten or deleted."""
    path = Path(data_folder) / FOLDER / FILE_NAME
    try:
        if not path.exists() and not path.is_symlink():
            return LoadedTerms(read_terms(_decoded(_shipped_bytes())))
        return LoadedTerms(read_terms(_text(path)))
    except (OSError, UnicodeDecodeError, EaselError) as error:
        why = _why(error)
    message = (f"Easel could not use your content-filter list '{path}' ({why}), so it uses "
               "the default list that ships with Easel.")
    return LoadedTerms(read_terms(_decoded(_shipped_bytes())), message)


def read_terms(text: str) -> tuple[Term, ...]:
    """The terms of a list's text, in its order, each once; a line with no words (only
    punctuation, say) matches nothing and is left out."""
    terms: dict[tuple[str, ...], Term] = {}
    for line in text.splitlines():
        written = line.split("#", 1)[0].strip()
        words = term_words(written)
        if words and words not in terms:
            terms[words] = Term(written, words)
    return tuple(terms.values())


def _text(path: Path) -> str:
    return _decoded(path.read_bytes())


def _decoded(data: bytes) -> str:
    # utf-8-sig: a list saved by an editor that writes a byte-order mark reads the same.
    return data.decode("utf-8-sig")


def _shipped_bytes() -> bytes:
    try:
        data = shipped_words_file().read_bytes()
        _decoded(data)
    except (OSError, UnicodeDecodeError) as error:
        raise EaselError(f"Easel's default content-filter list '{shipped_words_file()}' "
                         f"cannot be read ({_why(error)}); reinstall Easel.") from error
    return data


def _why(error: BaseException) -> str:
    if isinstance(error, UnicodeDecodeError):
        return "it is not UTF-8 text"
    if isinstance(error, IsADirectoryError):
        return "it is a folder"
    if isinstance(error, PermissionError):
        return "permission denied"
    if isinstance(error, FileNotFoundError):
        return "it is missing"
    if isinstance(error, DiskFull):
        return "the disk is full"
    if isinstance(error, EaselError):  # the copy of the default could not be made
        return "its folder cannot be written"
    return getattr(error, "strerror", None) or str(error)
