"""Errors the library raises; each ``str(error)`` is one sentence a user can read as it is."""

from __future__ import annotations

from engine.errors import EaselError


class LibraryError(EaselError):
    """Something about the gallery or history the user should hear; nothing was half-done."""


class LibraryTooNew(LibraryError):
    """The library was written by a newer Easel; it is left exactly as it is."""


class LibraryInUse(LibraryError):
    """Another Easel window already has this library open."""


class DiskFull(LibraryError):
    """A write ran out of space; what was there before is intact."""


class BadImage(LibraryError):
    """A file given to the library is not an image it accepts."""


class UnknownImage(LibraryError):
    """An image id (or prefix) names no image, or more than one."""
