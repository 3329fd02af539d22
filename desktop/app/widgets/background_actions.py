"""The window's Background drop-down (toolbar and Picture menu), its gallery menu entries and
the mask tool's "Use the subject / background as the mask" buttons.

Only shows and forwards: desktop.app.viewmodels.background decides and queues. Replace
background… asks for its prompt in a small dialog rather than taking the prompt panel's:
that prompt usually describes the whole picture, while this one says only what goes behind
the subject, and the dialog says so where the user types it.
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QObject
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QInputDialog, QLineEdit, QMenu, QToolBar, QToolButton, QWidget

from desktop.app.viewmodels.background import BackgroundModel
from desktop.app.widgets.icons import icon

REMOVE_TIP = "Cut the subject out: a transparent picture in the gallery"
REPLACE_TIP = ("Keep the subject exactly and paint a new background with the selected model "
               "and the prompt panel's settings")
SUBJECT_TIP = "Start the mask tool with the subject masked (Inpaint repaints the subject)"
BACKGROUND_TIP = ("Start the mask tool with everything but the subject masked (Inpaint "
                  "repaints the background)")
PROMPT_LABEL = "What should the new background show?"


class BackgroundActions(QObject):
    def __init__(self, model: BackgroundModel, window: QWidget) -> None:
        super().__init__(window)
        self.model = model
        self.window = window
        self.replace_dialog: QInputDialog | None = None  # the open one (tests)
        self.menu = QMenu("Background", window)
        self.menu.setIcon(icon("background"))
        self.menu.setToolTipsVisible(True)
        self.remove_action = self._add("Remove background", REMOVE_TIP, model.remove)
        self.replace_action = self._add("Replace background…", REPLACE_TIP,
                                        lambda: self.ask_prompt(model.replace))
        self.menu.addSeparator()
        self.subject_mask_action = self._add("Use the subject as the mask", SUBJECT_TIP,
                                             lambda: model.use_as_mask(False))
        self.background_mask_action = self._add("Use the background as the mask",
                                                BACKGROUND_TIP, lambda: model.use_as_mask(True))

    def _add(self, text: str, tip: str, act: Callable[[], object]) -> QAction:
        action = self.menu.addAction(text)
        action.setToolTip(tip)
        action.setStatusTip(tip)
        action.triggered.connect(lambda: self._with_segmenter(act))
        return action

    def _with_segmenter(self, act: Callable[[], object]) -> None:
        """With several segmenters installed, ask once which one to use."""
        if self.model.needs_segmenter_choice():
            name, chosen = QInputDialog.getItem(
                self.window, "Background", "Which segmenter finds the subject?",
                self.model.segmenter_names(), 0, False)
            if not chosen:
                return
            self.model.choose_segmenter(name)
        act()

    def ask_prompt(self, then: Callable[[str], object]) -> QInputDialog:
        """The new background's prompt, in a dialog that does not block the event loop."""
        dialog = QInputDialog(self.window)
        dialog.setWindowTitle("Replace background")
        dialog.setLabelText(PROMPT_LABEL)
        dialog.setTextEchoMode(QLineEdit.EchoMode.Normal)
        dialog.setTextValue(self.model.last_prompt)
        dialog.setOkButtonText("Replace")
        dialog.textValueSelected.connect(then)
        dialog.finished.connect(dialog.deleteLater)
        self.replace_dialog = dialog
        dialog.open()
        return dialog

    def add_to(self, toolbar: QToolBar) -> None:
        """One drop-down with words: the editing toolbar has no room for four buttons."""
        toolbar.addAction(self.menu.menuAction())

    def add_to_mask_tools(self, toolbar: QToolBar) -> None:
        """One short drop-down: the mask tool's bar has room for few words."""
        choice = QMenu("Subject as mask", self.window)
        choice.setToolTipsVisible(True)
        choice.addAction(self.subject_mask_action)
        choice.addAction(self.background_mask_action)
        choice.menuAction().setToolTip("Mask the subject, or the background, as found by "
                                       "Remove background")
        toolbar.addAction(choice.menuAction())
        button = toolbar.widgetForAction(choice.menuAction())
        if isinstance(button, QToolButton):
            button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)

    def add_to_gallery_menu(self, menu: QMenu, entry: object) -> None:
        """Remove and Replace background for the gallery's selected picture."""
        remove = menu.addAction("Remove background",
                                lambda: self._with_segmenter(lambda: self.model.remove_of(entry)))
        remove.setToolTip(REMOVE_TIP)
        replace = menu.addAction("Replace background…", lambda: self._with_segmenter(
            lambda: self.ask_prompt(lambda prompt: self.model.replace_of(entry, prompt))))
        replace.setToolTip(REPLACE_TIP)
