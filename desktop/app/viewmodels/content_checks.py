"""The studio's content checks: the prompt filter before a job is queued (a blocked prompt is
one sentence, a flagged one a status-bar note and a record for the pictures' metadata), the
filter's word list for editing, and the signing news after a job (a replaced key, a
picture saved without credentials)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from desktop.content_filter import words_file
from desktop.content_filter.screening import PromptBlocked, Screening, screen
from engine.errors import EaselError

if TYPE_CHECKING:
    from desktop.app.viewmodels.studio import Studio


class ContentChecks:
    def __init__(self, studio: Studio) -> None:
        self._studio = studio

    def screened(self, request: object) -> Screening | None:
        """The filter's word on the request's prompts; None once a blocked prompt's sentence
        was said."""
        studio = self._studio
        try:
            screening = screen(request, studio.library.root, studio.settings.content_filter)
        except PromptBlocked as blocked:
            studio.problem.emit(str(blocked))
            return None
        for note in screening.notes:
            studio.message.emit(note)
        return screening

    def word_list(self) -> Path | None:
        """The filter's word list, copied from the shipped one on first use; None once a
        sentence said why it cannot be made."""
        try:
            return words_file(self._studio.library.root)
        except EaselError as error:
            self._studio.problem.emit(str(error))
            return None

    def say_signing_news(self) -> None:
        """After a job: a replaced signing key, a picture saved without credentials (once)."""
        for note in self._studio.library.provenance.take_notes():
            self._studio.problem.emit(note)
