"""The prompt panel's state: the form, the models to pick from, and walking the history."""

from __future__ import annotations

from dataclasses import replace

from PySide6.QtCore import QObject, Signal

from desktop.app.model_folders import FolderChoice
from desktop.app.parameters import (
    Form,
    ModelChoice,
    SizePreset,
    choice_of,
    form_for_model,
    form_from_image,
    new_seed,
    schedulers_for,
)
from desktop.app.sizes import fitting_size, size_choices, size_tooltip
from desktop.app.viewmodels.prompt_resources import PromptResources
from desktop.library import ImageEntry, Library
from desktop.model_store import ModelStore
from engine.errors import EaselError, ModelError


class PromptViewModel(QObject):
    form_changed = Signal()  # the whole form was replaced (model change, reuse, history)
    models_changed = Signal()
    size_changed = Signal()  # the user chose another picture size (the region tool follows)
    import_wanted = Signal(object)  # a FolderChoice was picked: import it, then use it

    def __init__(self, store: ModelStore, library: Library,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._store = store
        self._library = library
        self.models: list[ModelChoice] = []
        # Models in the user's other model folders, listed after the installed ones.
        self.folder_models: list[FolderChoice] = []
        self._wanted: str | None = None  # picked from a folder: chosen once imported
        self.form = Form(seed=new_seed())
        self._walk: list[str] = []  # the history being walked with Up/Down, newest first
        self._walk_at = -1
        self.reload_models()
        # The LoRAs and embeddings that fit the chosen model, for the picker by the prompt.
        self.resources = PromptResources(store, self, self)

    # Models --------------------------------------------------------------------------------

    def reload_models(self) -> None:
        """Read the installed models again (after an import or removal)."""
        choices = []
        for model in self._store.list():
            try:
                choices.append(choice_of(model))
            except ModelError:
                continue  # listed but unreadable: the models view says why
        self.models = choices
        self.models_changed.emit()
        if self._wanted is not None and any(c.name == self._wanted for c in choices):
            wanted, self._wanted = self._wanted, None
            self.choose_model(wanted)
        elif self.model() is None and choices:
            self.choose_model(self._default_model_name())
        elif not choices:
            self.form = replace(self.form, model="")
            self.form_changed.emit()

    def _default_model_name(self) -> str:
        try:
            return self._store.default_model().name
        except EaselError:  # several installed: the first, as the picker lists them
            return self.models[0].name

    def model(self) -> ModelChoice | None:
        return next((choice for choice in self.models if choice.name == self.form.model), None)

    def set_folder_models(self, choices: list[FolderChoice]) -> None:
        installed = {choice.name for choice in self.models}
        self.folder_models = [choice for choice in choices if choice.name not in installed]
        self.models_changed.emit()

    def choose_model(self, name: str) -> None:
        """Switch model and take its defaults (steps, guidance, size, scheduler). A model
        from the user's folders is imported first (``import_wanted``) and chosen when it is
        in; until then the form keeps the model it had."""
        found = next((choice for choice in self.folder_models if choice.name == name), None)
        if found is not None and not any(choice.name == name for choice in self.models):
            self._wanted = name
            self.import_wanted.emit(found)
            self.form_changed.emit()  # the picker shows the model still in use
            return
        choice = next((choice for choice in self.models if choice.name == name), None)
        if choice is None or (choice.name == self.form.model):
            return
        self.form = form_for_model(self.form, choice)
        self.form_changed.emit()

    def schedulers(self) -> list[str]:
        model = self.model()
        return schedulers_for(model) if model else []

    def size_presets(self) -> list[SizePreset]:
        """The sizes the chosen model is offered (``desktop.app.sizes``)."""
        model = self.model()
        return size_choices(model) if model else []

    def size_tooltip(self) -> str:
        """What the size box offers, with the size rule in this model's number."""
        return size_tooltip(self.model())

    # Editing -------------------------------------------------------------------------------

    def update(self, **changes: object) -> None:
        """A field the user edited; widgets already show it, so no ``form_changed``."""
        size = (self.form.width, self.form.height)
        self.form = replace(self.form, **changes)
        if (self.form.width, self.form.height) != size:
            self.size_changed.emit()

    def new_random_seed(self) -> None:
        self.form = replace(self.form, seed=new_seed())
        self.form_changed.emit()

    def seed_for_next_run(self) -> int:
        """The seed this run uses: the shown one when locked, a new one otherwise (shown)."""
        if not self.form.seed_locked:
            self.new_random_seed()
        return self.form.seed

    def reuse(self, entry: ImageEntry, seed_only: bool = False) -> None:
        """Fill the form with what ``entry`` was made with (or only its seed)."""
        if seed_only:
            if entry.seed is not None:
                self.form = replace(self.form, seed=entry.seed, seed_locked=True)
        else:
            model = entry.model if any(m.name == entry.model for m in self.models) else ""
            self.form = form_from_image(self.form, entry.prompt, entry.negative_prompt, model,
                                        entry.seed, entry.width, entry.height, entry.parameters)
            self._fit_size()
        self.form_changed.emit()

    def _fit_size(self) -> None:
        """A reused picture's size rounded to one the model can make (an edited picture may
        have any size), so the size box offers only sizes that keep the size rule."""
        model = self.model()
        if model is not None:
            width, height = fitting_size(model, self.form.width, self.form.height)
            self.form = replace(self.form, width=width, height=height)

    def use_prompt(self, text: str) -> None:
        self.form = replace(self.form, prompt=text)
        self.form_changed.emit()

    # Walking the history with Up/Down in an empty prompt box -------------------------------

    def history_step(self, older: bool) -> str | None:
        """The next older (or newer) prompt, or None at the end; starts from the newest."""
        if self._walk_at == -1 or not self._walk:
            self._walk = [entry.text for entry in self._library.history(limit=200)]
        target = self._walk_at + (1 if older else -1)
        if not 0 <= target < len(self._walk):
            if not older:
                self._walk_at = -1
            return None
        self._walk_at = target
        return self._walk[target]

    def stop_walking(self) -> None:
        self._walk_at = -1
