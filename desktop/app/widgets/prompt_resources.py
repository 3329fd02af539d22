"""The LoRA / embedding button beside the prompt box: a menu of the installed LoRAs and
embeddings that fit the chosen model; choosing one puts it into the prompt at the cursor."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QMenu, QToolButton, QWidget

from desktop.app.viewmodels.prompt_resources import (
    LORA,
    AddOn,
    PromptResources,
    lora_tag_span,
    spaced,
)
from desktop.app.widgets.icons import icon

if TYPE_CHECKING:
    from desktop.app.widgets.prompt_panel import PromptBox


class PromptResourcesButton(QToolButton):
    def __init__(self, resources: PromptResources, prompt: PromptBox,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.resources = resources
        self.prompt = prompt
        self._get_more: list[QAction] = []  # the window's Get models… and Import…
        self.setText("LoRA / embedding")
        self.setIcon(icon("models"))
        self.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.setAccessibleName("LoRAs and embeddings")
        self.setToolTip("Put an installed LoRA or embedding that fits this model into the "
                        "prompt, at the cursor")
        menu = QMenu(self)
        menu.setToolTipsVisible(True)  # the hidden ones' names and families
        self.setMenu(menu)
        resources.changed.connect(self.fill)
        self.fill()

    def offer(self, get_more: Sequence[QAction]) -> None:
        """The window's actions that bring models in, offered when nothing fits."""
        self._get_more = list(get_more)
        self.fill()

    def fill(self) -> None:
        """Show the view-model's lists: LoRAs, then embeddings, then what is left out."""
        menu, resources = self.menu(), self.resources
        menu.clear()
        for title, add_ons in (("LoRAs", resources.loras), ("Embeddings", resources.embeddings)):
            if add_ons:
                menu.addSection(title)
            for add_on in add_ons:
                action = menu.addAction(f"{add_on.name}  —  {add_on.use}")
                action.setToolTip(f"Puts {add_on.text} into the prompt")
                action.triggered.connect(lambda _=False, chosen=add_on: self.put_in_prompt(chosen))
        if not (resources.loras or resources.embeddings):
            menu.addAction(resources.none_fits_note()).setEnabled(False)
            menu.addActions(self._get_more)
        if note := resources.other_families_note():
            menu.addSeparator()
            left_out = menu.addAction(note)
            left_out.setEnabled(False)
            left_out.setToolTip("\n".join(f"{add_on.name}: {add_on.use}"
                                          for add_on in resources.other_families))

    def put_in_prompt(self, add_on: AddOn) -> None:
        """Insert ``add_on`` at the cursor as one undoable edit; a LoRA the prompt already
        names is selected instead, so its weight can be changed rather than doubled."""
        box = self.prompt
        cursor = box.textCursor()
        text = box.toPlainText()
        span = lora_tag_span(text, add_on.name) if add_on.kind == LORA else None
        if span is not None:
            cursor.setPosition(_qt_position(text, span[0]))
            cursor.setPosition(_qt_position(text, span[1]), cursor.MoveMode.KeepAnchor)
        else:
            # At the cursor, not over a selection: Ctrl+Up leaves weighed words selected, and
            # choosing from a menu should never delete them.
            cursor.clearSelection()
            at = cursor.position()
            document = box.document()
            before = document.characterAt(at - 1) if at > 0 else ""
            cursor.insertText(spaced(add_on.text, before, document.characterAt(at)))
            box.walking = False  # edited: Up/Down no longer walk the history over it
        box.setTextCursor(cursor)
        box.setFocus()


def _qt_position(text: str, index: int) -> int:
    """An index into the Python string as a Qt text position (UTF-16 units)."""
    return len(text[:index].encode("utf-16-le")) // 2
