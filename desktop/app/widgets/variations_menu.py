"""What Variations keep, chosen on the Variations button's own menu (and in Picture ›
Variations keep): the composition (image to image, as before) or the meaning (the source as
an image prompt, a new picture at its size). The button's text says the choice when it is
the meaning, so one click never surprises."""

from __future__ import annotations

from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import QMenu, QToolBar, QToolButton, QWidget

from desktop.app.viewmodels.image_prompts import ImagePromptsModel

OWN_PROMPT = ", with its own prompt unless you type a new one; as many as 'Variations' says"
COMPOSITION_TIP = ("New pictures like the source, redrawn from it (its layout stays; Strength "
                   "says how much)" + OWN_PROMPT)
MEANING_TIP = ("New pictures of what the source shows, in a new composition (the source "
               "steers as an image prompt through an IP-Adapter, at its size)" + OWN_PROMPT)


class VariationsMenu(QMenu):
    def __init__(self, image_prompts: ImagePromptsModel, variations: QAction,
                 parent: QWidget | None = None) -> None:
        super().__init__("Variations keep", parent)
        self.setToolTipsVisible(True)
        self.vm = image_prompts
        self.variations = variations
        self.composition = self._choice("Keep the composition", COMPOSITION_TIP)
        self.meaning = self._choice("Keep the meaning", MEANING_TIP)
        group = QActionGroup(self)
        group.addAction(self.composition)
        group.addAction(self.meaning)
        self.meaning.toggled.connect(image_prompts.set_keep_meaning)
        image_prompts.keep_meaning_changed.connect(self._show)
        self._show()

    def _choice(self, text: str, tip: str) -> QAction:
        action = self.addAction(text)
        action.setCheckable(True)
        action.setToolTip(tip)
        return action

    def attach(self, toolbar: QToolBar) -> None:
        """The menu on the toolbar's Variations button: a click runs Variations, the arrow
        chooses what they keep."""
        button = toolbar.widgetForAction(self.variations)
        button.setMenu(self)
        button.setPopupMode(QToolButton.ToolButtonPopupMode.MenuButtonPopup)

    def _show(self) -> None:
        meaning = self.vm.keep_meaning
        (self.meaning if meaning else self.composition).setChecked(True)
        self.variations.setText("Variations (meaning)" if meaning else "Variations")
        shortcut = self.variations.shortcut().toString(QKeySequence.SequenceFormat.NativeText)
        tip = MEANING_TIP if meaning else COMPOSITION_TIP
        self.variations.setToolTip(f"{tip} ({shortcut})" if shortcut else tip)
