"""The window's Upscale (2× or 4×, from a drop-down) and Instruct actions on the source picture.

Kept beside the main window rather than inside it: the window adds them to its editing
toolbar and Picture menu with ``add_to`` and ``menu_actions``.
"""

from __future__ import annotations

from PySide6.QtCore import QObject, Qt
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QMenu, QToolBar, QToolButton, QWidget

from desktop.app.instructing import is_instruct_model, wrong_model
from desktop.app.upscaling import UPSCALE_SCALES
from desktop.app.viewmodels.studio import Studio
from desktop.app.widgets.icons import icon

UPSCALE_TIP = ("Enlarge the source with the installed upscaler (without one, by Lanczos "
               "resampling, which adds no detail)")
INSTRUCT_TIP = ('Change the source as the prompt says, e.g. "make it winter"; Image guidance '
                "says how closely to keep it")


class UpscaleInstructActions(QObject):
    def __init__(self, studio: Studio, window: QWidget) -> None:
        super().__init__(window)
        self.studio = studio
        self.upscale_menu = QMenu("Upscale", window)
        self.upscale_menu.setIcon(icon("upscale"))
        self.upscale_menu.setToolTipsVisible(True)
        self.upscale_menu.menuAction().setToolTip(UPSCALE_TIP)
        self.upscale_actions: dict[int, QAction] = {}
        for scale in UPSCALE_SCALES:
            action = self.upscale_menu.addAction(icon("upscale"), f"Upscale {scale}×")
            action.setToolTip(f"Make the source {scale} times larger each way")
            action.triggered.connect(self._upscaler(scale))
            self.upscale_actions[scale] = action
        self.instruct_action = QAction(icon("instruct"), "Instruct", window)
        self.instruct_action.setShortcut("Ctrl+Shift+T")
        self.instruct_action.triggered.connect(studio.instruct)
        window.addAction(self.instruct_action)  # the shortcut works whichever panel has focus
        studio.prompt.form_changed.connect(self._explain_instruct)
        studio.prompt.models_changed.connect(self._explain_instruct)
        self._explain_instruct()

    def _upscaler(self, scale: int):  # noqa: ANN202 (a slot)
        return lambda: self.studio.upscale(scale)

    def _explain_instruct(self) -> None:
        """Instruct is on only with an InstructPix2Pix model; otherwise its tip (and the menu
        entry's own words) say which kind of model it needs."""
        model = self.studio.prompt.model()
        usable = is_instruct_model(model)
        self.instruct_action.setEnabled(usable)
        self.instruct_action.setText("Instruct" if usable
                                     else "Instruct (needs an InstructPix2Pix model)")
        tip = INSTRUCT_TIP if usable else wrong_model(model)
        self.instruct_action.setToolTip(f"{tip} (Ctrl+Shift+T)" if usable else tip)
        self.instruct_action.setStatusTip(tip)

    def add_to(self, toolbar: QToolBar) -> None:
        """As icons with drop-down and tips: the editing toolbar is already full of words."""
        toolbar.addAction(self.upscale_menu.menuAction())
        toolbar.addAction(self.instruct_action)
        upscale = toolbar.widgetForAction(self.upscale_menu.menuAction())
        if isinstance(upscale, QToolButton):
            upscale.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        for action in (self.upscale_menu.menuAction(), self.instruct_action):
            toolbar.widgetForAction(action).setToolButtonStyle(
                Qt.ToolButtonStyle.ToolButtonIconOnly)

    def menu_actions(self) -> list[QAction]:
        """For the Picture menu: the Upscale submenu and Instruct."""
        return [self.upscale_menu.menuAction(), self.instruct_action]
