"""What the Control panel and the Image prompts section share: pictures added from a file or
the canvas, up to a limit, and the family of the chosen model, which decides the installed
models (ControlNets, IP-Adapters) that fit.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from PIL import Image
from PySide6.QtCore import QObject, Signal

from desktop.app.editing import SourcePicture
from desktop.app.viewmodels.prompt import PromptViewModel
from desktop.controls import read_picture
from desktop.library import ImageEntry
from desktop.model_store import ModelStore
from engine.errors import EaselError
from engine.images import PictureInput

# The library's kept control and reference pictures, by the key a picture records.
KeptPictures = Callable[[object], Path | None]


class CanvasPictures(Protocol):
    """What the window shows (the studio): the picture on the canvas and the source."""

    canvas_entry: ImageEntry | None
    canvas_is_preview: bool
    canvas_is_source: bool
    source: SourcePicture | None


def kept_or_first(names: list[str], current: str) -> str:
    """``current`` while it is still among ``names``, else the first of them ("" if none)."""
    return current if current in names else (names[0] if names else "")


class PictureInputsModel(QObject):
    """A panel's pictures and the models of the family. Each panel says how many pictures it
    takes (``most``, ``_count``), what they are called (``things``), what it says when the
    canvas has none (``no_canvas_picture``), how it adds one (``add_file``, ``add_picture``)
    and how it reads its installed models again (``_refresh_models``)."""

    problem = Signal(str)

    most: int
    things: str
    no_canvas_picture: str

    def __init__(self, store: ModelStore, prompt: PromptViewModel, canvas: CanvasPictures,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._store = store
        self._prompt = prompt
        self._canvas = canvas
        self._family = self._model_family()
        prompt.form_changed.connect(self._model_maybe_changed)
        prompt.models_changed.connect(self._refresh_models)

    def add_file(self, path: Path) -> bool:
        raise NotImplementedError

    def add_picture(self, picture: PictureInput, name: str) -> bool:
        raise NotImplementedError

    def add_from_canvas(self) -> bool:
        """A picture from the one on the canvas (else the source picture)."""
        canvas = self._canvas
        entry = None if canvas.canvas_is_preview or canvas.canvas_is_source else canvas.canvas_entry
        if entry is not None and not entry.missing:
            return self.add_file(entry.path)
        if canvas.source is not None:
            return self.add_picture(canvas.source.pixels, canvas.source.name)
        self.problem.emit(self.no_canvas_picture)
        return False

    def _read(self, path: Path) -> Image.Image | None:
        """The picture file at ``path``, or None after one sentence saying why not."""
        try:
            return read_picture(Path(path))
        except EaselError as error:
            self.problem.emit(str(error))
            return None

    def _room(self) -> bool:
        if self._count() < self.most:
            return True
        self.problem.emit(f"At most {self.most} {self.things} can steer one picture; remove "
                          f"one first.")
        return False

    def _count(self) -> int:
        raise NotImplementedError

    def _refresh_models(self) -> None:
        raise NotImplementedError

    def _model_maybe_changed(self) -> None:
        if self._model_family() != self._family:
            self._refresh_models()

    def _model_family(self) -> str:
        model = self._prompt.model()
        return model.family if model is not None else ""
