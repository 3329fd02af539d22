"""The model picker's second half: what the user's model folders hold, read again when the
folders change or a model is imported."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from pathlib import Path

from PySide6.QtCore import QAbstractItemModel, QObject, Signal

from desktop.app.model_folders import FolderChoice, folder_choices
from desktop.app.viewmodels.prompt import PromptViewModel
from desktop.app.worker import JobRunner
from desktop.model_store import ModelStore

PREFIX = "model-folders:"


class FolderModels(QObject):
    changed = Signal()
    problem = Signal(str)

    def __init__(self, runner: JobRunner, store: ModelStore,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._runner = runner
        self._store = store
        self._reads = itertools.count(1)
        self._latest = ""
        self.folders: tuple[str, ...] = ()
        self.choices: list[FolderChoice] = []
        runner.fetched.connect(self._fetched)

    def serve(self, prompt: PromptViewModel, installed: QAbstractItemModel,
              import_model: Callable[[Path, str], object]) -> None:
        """Offer the choices in ``prompt``'s picker, import one when it is picked, and read
        the folders again whenever the ``installed`` models change."""
        self.changed.connect(lambda: prompt.set_folder_models(self.choices))
        prompt.import_wanted.connect(lambda found: import_model(found.path, found.name))
        installed.modelReset.connect(lambda: self.read())

    def read(self, folders: Sequence[str] | None = None) -> None:
        """Read the folders (again) off the GUI thread; ``changed`` says when."""
        if folders is not None:
            self.folders = tuple(folders)
        if not self.folders:
            self.choices = []
            self.changed.emit()
            return
        self._latest = f"{PREFIX}{next(self._reads)}"
        folders = self.folders
        installed = {model.name for model in self._store.list()}
        self._runner.fetch(self._latest, lambda: folder_choices(folders, installed))

    def _fetched(self, key: str, result: object) -> None:
        if key != self._latest:
            return  # an older read, overtaken by a newer one
        self.choices, problems = result
        for sentence in problems:
            self.problem.emit(sentence)
        self.changed.emit()
