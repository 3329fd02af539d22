"""The sentences a download can end with: each error is one sentence a user can read as it is."""

from __future__ import annotations

from engine.errors import Cancelled, EaselError


class DownloadError(EaselError):
    """A file could not be fetched, or what arrived is not what was promised."""


class DownloadCancelled(DownloadError, Cancelled):
    """The user stopped the download; the bytes already fetched stay in the partial file."""
