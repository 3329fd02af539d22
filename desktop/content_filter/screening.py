"""The content filter at the door of every generation: the window and the command line hand
over the request before anything runs; a blocked prompt stops here with its one sentence, a
flagged one goes on and its pictures keep the decision in their metadata."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from desktop.content_filter.prompt_filter import check_mode, check_prompt, record
from desktop.content_filter.words import load_terms
from engine.errors import EaselError


class PromptBlocked(EaselError):
    """The prompt holds a term the user's filter blocks; ``str`` names it."""


@dataclass(frozen=True)
class Screening:
    record: dict | None = None  # what the pictures' metadata keeps ("warned: term")
    notes: tuple[str, ...] = ()  # sentences for the user: a flagged term, an unusable list

    @property
    def checks(self) -> dict:
        """For Library.add_generated(checks=…): the record under the filter's name."""
        return {"content_filter": self.record} if self.record else {}


def prompt_text(request: object) -> str:
    """Every prompt a request draws from: its own, a hires fix's first pass, each region's."""
    base = getattr(request, "base", None)
    if base is not None:
        return prompt_text(base)
    texts = [getattr(request, "prompt", "") or ""]
    texts += [prompt for _, prompt in getattr(request, "regions", ()) or ()]
    # A comma between them: a phrase never runs from one prompt into the next.
    return ", ".join(text for text in texts if text)


def screen(request: object, data_folder: Path, mode: str) -> Screening:
    """Check the request's prompts with the user's list in ``mode``; raises PromptBlocked."""
    if check_mode(mode) == "off":
        return Screening()
    loaded = load_terms(data_folder)
    decision = check_prompt(prompt_text(request), "", loaded.terms, mode)
    if decision.blocked:
        raise PromptBlocked(decision.sentence)
    notes = tuple(sentence for sentence in (loaded.message, decision.sentence) if sentence)
    return Screening(record(decision), notes)
