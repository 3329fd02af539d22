"""The LoRAs and embeddings a prompt can name: those installed that fit the chosen model,
for the picker beside the prompt box, and the text that names one in a prompt.

The installed list is read from the store only when the models change (an install, a
removal); a model change only sorts it again, so the new seed every Generate brings costs no
disk reads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, Signal

from desktop.model_kinds import embedding, lora
from desktop.model_store import ModelStore
from engine.export.checkpoint_family import FAMILY_NAMES

if TYPE_CHECKING:
    from desktop.app.viewmodels.prompt import PromptViewModel

LORA, EMBEDDING = lora.name, embedding.name
# Characters after which a tag needs no space of its own: the start of a weight's brackets.
_OPENERS = "([{"
# Characters before which a tag needs no space after it: punctuation that closes or separates.
_CLOSERS = ",.;:)]}"


@dataclass(frozen=True)
class AddOn:
    """An installed LoRA or embedding, as the picker offers it."""

    name: str
    kind: str  # LORA or EMBEDDING
    family: str  # the family it fits; lora.UNKNOWN_FAMILY when its layers do not tell
    use: str  # the store's one line: what it is, the family it fits

    @property
    def text(self) -> str:
        """What names it in a prompt: a LoRA's tag at full weight, an embedding's name."""
        return f"<lora:{self.name}:1>" if self.kind == LORA else self.name

    def fits(self, family: str | None) -> bool:
        """Whether it can be used with a model of ``family``. A LoRA whose family is unknown
        is offered everywhere: the engine finds out when it is used, as the CLI does."""
        if self.kind == LORA and self.family == lora.UNKNOWN_FAMILY:
            return family is not None
        return self.family == family


class PromptResources(QObject):
    """The picker's lists, kept in step with the installed models and the chosen model."""

    changed = Signal()

    def __init__(self, store: ModelStore, prompt: PromptViewModel,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._store = store
        self._prompt = prompt
        self._installed: list[AddOn] = []
        self.loras: list[AddOn] = []  # those that fit the chosen model
        self.embeddings: list[AddOn] = []
        self.other_families: list[AddOn] = []  # installed, for other families: not offered
        prompt.models_changed.connect(self.reload)  # after every install and removal
        prompt.form_changed.connect(self._sort)  # the chosen model may have changed
        self.reload()

    def reload(self) -> None:
        """Read the installed LoRAs and embeddings again."""
        self._installed = [AddOn(model.name, model.kind, model.family, model.use)
                           for kind in (LORA, EMBEDDING) for model in self._store.installed(kind)]
        self._sort()

    def _sort(self) -> None:
        model = self._prompt.model()
        family = model.family if model is not None else None
        fitting = [add_on for add_on in self._installed if add_on.fits(family)]
        lists = ([add_on for add_on in fitting if add_on.kind == LORA],
                 [add_on for add_on in fitting if add_on.kind == EMBEDDING],
                 [add_on for add_on in self._installed if add_on not in fitting])
        if lists != (self.loras, self.embeddings, self.other_families):
            self.loras, self.embeddings, self.other_families = lists
            self.changed.emit()

    @property
    def nothing_installed(self) -> bool:
        return not self._installed

    def none_fits_note(self) -> str:
        """One line for a picker with nothing to offer."""
        if self.nothing_installed:
            return "No LoRAs or embeddings are installed."
        model = self._prompt.model()
        if model is None:
            return "Choose a model to see the LoRAs and embeddings that fit it."
        family = FAMILY_NAMES.get(model.family, model.family)
        return f"None of the installed LoRAs or embeddings fits '{model.name}' ({family})."

    def other_families_note(self) -> str:
        """One line saying what is installed but left out ("" when nothing is)."""
        count = len(self.other_families)
        if not count:
            return ""
        return f"{count} more installed for other model families"


# Putting one into the prompt ---------------------------------------------------------------


def lora_tag_span(prompt: str, name: str) -> tuple[int, int] | None:
    """Where the prompt already names LoRA ``name`` in a tag (start, end), whatever its
    weight; None when it does not. Read as engine.lora.tags reads tags: the name stripped."""
    pattern = re.compile(r"<lora:\s*" + re.escape(name) + r"\s*(?::[^>]*)?>")
    found = pattern.search(prompt)
    return None if found is None else found.span()


def spaced(text: str, before: str, after: str) -> str:
    """``text`` to insert between the characters ``before`` and ``after`` ("" at either end
    of the prompt), with a space on a side where it would otherwise join a word."""
    if before and not before.isspace() and before not in _OPENERS:
        text = " " + text
    if after and not after.isspace() and after not in _CLOSERS:
        text = text + " "
    return text
