"""File › Run batch… and File › Comparison grid…: a file dialog for a batch file, and the grid
dialog (the prompt panel's settings as the base, up to three axes, how many pictures it
makes). Both only ask; the batch view-model checks and queues.

Kept beside the main window: the window puts ``file_actions`` in its File menu.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, Qt
from PySide6.QtGui import QAction
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QGridLayout,
    QLabel,
    QLineEdit,
    QVBoxLayout,
    QWidget,
)

from desktop.app.viewmodels.batch import DEFAULT_AXES, FILE_TYPES, BatchModel
from desktop.app.widgets.icons import icon

BATCH_TIP = ("Make the pictures of every line of a JSON Lines or CSV file (as `easel batch`); "
             "run again after a stop, it makes only the pictures not made yet")
GRID_TIP = ("Compare settings side by side: the prompt panel's picture made with each "
            "combination of values, and a sheet of them all")
NO_AXIS = "(none)"
AXIS_PLACES = {"X": "columns", "Y": "rows", "Z": "blocks"}


class BatchActions(QObject):
    def __init__(self, model: BatchModel, window: QWidget) -> None:
        super().__init__(window)
        self.model = model
        self.window = window
        self.grid_dialog: GridDialog | None = None  # the open one (tests)
        self.batch_action = self._action("Run batch…", "folder", BATCH_TIP, self.run_batch)
        self.grid_action = self._action("Comparison grid…", "regions", GRID_TIP,
                                        self.open_grid)

    def _action(self, text: str, icon_name: str, tip: str, handler) -> QAction:  # noqa: ANN001
        action = QAction(icon(icon_name), text, self.window)
        action.setToolTip(tip)
        action.setStatusTip(tip)
        action.triggered.connect(handler)
        return action

    def file_actions(self) -> list[QAction]:
        return [self.batch_action, self.grid_action]

    def run_batch(self) -> int | None:
        """Ask for the batch file, then queue it; closing the file dialog does nothing."""
        start = str(self.model.folder or Path.home())
        path, _ = QFileDialog.getOpenFileName(self.window, "Run batch", start, FILE_TYPES)
        if not path:
            return None
        return self.model.run_file(Path(path))

    def open_grid(self) -> GridDialog:
        """Not modal, so the queue and the window stay in reach; a new one each time, as it
        starts from the prompt panel as it is now."""
        if self.grid_dialog is not None:
            self.grid_dialog.close()
        dialog = GridDialog(self.model, self.window)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.destroyed.connect(lambda: self._forget(dialog))
        self.grid_dialog = dialog
        dialog.show()
        return dialog

    def _forget(self, dialog: GridDialog) -> None:
        if self.grid_dialog is dialog:
            self.grid_dialog = None


class AxisRow:
    """One axis: its setting menu and its values field, refilled with suggestions when the
    setting changes, unless the user typed values of their own."""

    def __init__(self, model: BatchModel, setting: str | None, optional: bool) -> None:
        self.model = model
        self.setting = QComboBox()
        if optional:
            self.setting.addItem(NO_AXIS)
        self.setting.addItems(model.axis_settings())
        self.values = QLineEdit()
        self.values.setPlaceholderText("values separated by commas, e.g. 10,20,30")
        self._suggested = ""
        self.setting.setCurrentText(setting or NO_AXIS)
        self._suggest()
        self.setting.currentTextChanged.connect(self._suggest)

    def _suggest(self) -> None:
        chosen = self.chosen()
        self.values.setEnabled(chosen is not None)
        if self.values.text() and self.values.text() != self._suggested:
            return  # the user's own values stay
        self._suggested = self.model.suggested_values(chosen) if chosen else ""
        self.values.setText(self._suggested)

    def chosen(self) -> str | None:
        text = self.setting.currentText()
        return None if text == NO_AXIS else text

    def text(self) -> str:
        """"steps=10,20,30", or "" for no axis."""
        chosen = self.chosen()
        return f"{chosen}={self.values.text()}" if chosen else ""


class GridDialog(QDialog):
    def __init__(self, model: BatchModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = model
        self.setWindowTitle("Comparison grid")
        base = QLabel(model.describe_base())
        base.setWordWrap(True)
        base.setToolTip("Every picture starts from the prompt panel's settings; each axis "
                        "changes one of them")
        base_title = QLabel("Each picture is the prompt panel's, with one value from each axis:")
        base_title.setWordWrap(True)
        x_setting, y_setting = DEFAULT_AXES
        self.axes = {"X": AxisRow(model, x_setting, False), "Y": AxisRow(model, y_setting, True),
                     "Z": AxisRow(model, None, True)}
        rows = QGridLayout()
        rows.setColumnStretch(2, 1)
        for number, (name, axis) in enumerate(self.axes.items()):
            label = QLabel(f"{name} axis ({AXIS_PLACES[name]})")
            label.setBuddy(axis.setting)
            rows.addWidget(label, number, 0)
            rows.addWidget(axis.setting, number, 1)
            rows.addWidget(axis.values, number, 2)
            axis.setting.currentTextChanged.connect(self._show_plan)
            axis.values.textChanged.connect(self._show_plan)
        self.axes["Y"].setting.setToolTip("The rows (none: one row)")
        self.axes["X"].setting.setToolTip("The columns")
        self.axes["Z"].setting.setToolTip("Optional: one sheet block for each value")
        self.count = QLabel()
        self.count.setWordWrap(True)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.run_button = self.buttons.addButton("Run", QDialogButtonBox.ButtonRole.AcceptRole)
        self.run_button.setIcon(icon("generate"))
        self.run_button.setDefault(True)
        # Else Cancel, made first, takes the default as the dialog shows: Return should run.
        self.buttons.button(QDialogButtonBox.StandardButton.Cancel).setAutoDefault(False)
        self.buttons.accepted.connect(self._run)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(base_title)
        layout.addWidget(base)
        layout.addSpacing(6)
        layout.addLayout(rows)
        layout.addWidget(self.count)
        layout.addWidget(self.buttons)
        self.setMinimumWidth(600)  # the base's line fits on one or two lines
        self._show_plan()
        self.axes["X"].values.setFocus()

    def axis_texts(self) -> tuple[str, str, str]:
        x, y, z = (axis.text() for axis in self.axes.values())
        return x, y, z

    def _show_plan(self) -> None:
        plan = self.model.plan(*self.axis_texts())
        self.count.setText(plan.line())
        self.count.setStyleSheet("" if plan.problem is None else "color: #b00020;")
        self.run_button.setEnabled(plan.problem is None)

    def _run(self) -> None:
        """Queue the grid and close; a refusal (said in its own box) keeps the dialog open
        to fix the values."""
        if self.model.run_grid(*self.axis_texts()) is not None:
            self.accept()
