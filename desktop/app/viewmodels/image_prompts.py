"""The Image prompts section of the Controls dock: reference pictures whose look and subject
carry into the next picture through an IP-Adapter, one weight for them all (the engine scales
one adapter's pictures together), the installed adapter in use; and what Variations keep (the
composition, or the meaning: the source read as an image prompt).

The reference pictures are decoded once, when added, and kept as pixels with a small preview:
Generate hands the pixels to the engine, which reads them as CLIP's image processor does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QImage

from desktop.app import editing, generation
from desktop.app.editing import SourcePicture
from desktop.app.parameters import Form
from desktop.app.variations import meaning_request
from desktop.app.viewmodels.picture_inputs import (
    CanvasPictures,
    KeptPictures,
    PictureInputsModel,
    kept_or_first,
)
from desktop.app.viewmodels.prompt import PromptViewModel
from desktop.app.worker import qimage_from_pixels
from desktop.controls import read_picture
from desktop.image_prompts import make_image_prompts
from desktop.model_store import ModelStore
from engine.errors import BadRequest, EaselError, ModelError
from engine.image_prompt.description import IP_ADAPTER_KIND, read_adapter_description
from engine.image_prompt.prompt import MAX_PICTURES, MAX_WEIGHT, ImagePrompt

PREVIEW_SIDE = 96  # the preview's pixels before the panel scales it (sharp on HiDPI too)
NO_CANVAS_PICTURE = ("There is no picture on the canvas to use as a reference: generate one, "
                     "choose one in the gallery or drop one on the canvas.")
PICTURES_NOT_KEPT = (" Add the reference pictures again: the library no longer keeps them "
                     "(or the picture was made before it did).")
# What to import for each family, named as h94/IP-Adapter ships it (resources/docs/
# image-prompts.md); a family with no known adapter gets the general sentence only.
ADAPTER_FILES = {
    "sd1": "h94/IP-Adapter's models/ip-adapter_sd15.safetensors and models/image_encoder",
    "sdxl": "h94/IP-Adapter's sdxl_models/ip-adapter_sdxl_vit-h.safetensors and "
            "models/image_encoder",
}


@dataclass(frozen=True, eq=False)
class ReferencePicture:
    """One reference picture as the panel shows it."""

    pixels: np.ndarray  # uint8 (H, W, 3)
    name: str
    preview: QImage


def preview_of(pixels: np.ndarray, side: int = PREVIEW_SIDE) -> QImage:
    """A small copy for the thumbnail (a reference's look matters, not its edges)."""
    picture = Image.fromarray(pixels)
    picture.thumbnail((side, side), Image.Resampling.BILINEAR)
    return qimage_from_pixels(np.asarray(picture))


class ImagePromptsModel(PictureInputsModel):
    changed = Signal()  # reference pictures added or removed
    settings_changed = Signal()  # the weight or the adapter (Reuse parameters)
    adapters_changed = Signal()  # the model (its family) or the installed adapters
    keep_meaning_changed = Signal()

    most = MAX_PICTURES
    things = "reference pictures"
    no_canvas_picture = NO_CANVAS_PICTURE

    def __init__(self, store: ModelStore, prompt: PromptViewModel, canvas: CanvasPictures,
                 parent: QObject | None = None) -> None:
        super().__init__(store, prompt, canvas, parent)
        self.references: list[ReferencePicture] = []
        self.weight = 1.0
        self.keep_meaning = False  # what Variations keep: the composition (False) or meaning
        self.adapter = kept_or_first(self.adapters(), "")

    # Adding and removing -------------------------------------------------------------------

    def add_file(self, path: Path) -> bool:
        """A reference from a picture file; an unreadable one is one sentence, nothing added."""
        if not self._room():
            return False
        picture = self._read(path)
        if picture is None:
            return False
        pixels = np.asarray(picture.convert("RGB"), dtype=np.uint8)
        return self.add_picture(pixels, Path(path).name)

    def add_picture(self, pixels: np.ndarray, name: str) -> bool:
        if not self._room():
            return False
        self.references.append(ReferencePicture(pixels, name, preview_of(pixels)))
        self.changed.emit()
        return True

    def remove(self, index: int) -> None:
        del self.references[index]
        self.changed.emit()

    def _count(self) -> int:
        return len(self.references)

    # Settings ------------------------------------------------------------------------------

    def set_weight(self, weight: float) -> None:
        self.weight = min(max(float(weight), 0.0), MAX_WEIGHT)

    def set_adapter(self, name: str) -> None:
        self.adapter = name

    def set_keep_meaning(self, on: bool) -> None:
        if on != self.keep_meaning:
            self.keep_meaning = on
            self.keep_meaning_changed.emit()

    # The installed IP-Adapters -------------------------------------------------------------

    def adapters(self) -> list[str]:
        """The installed IP-Adapters that fit the chosen model's family, "plus" ones first
        (they carry more of the picture), as ``desktop.image_prompts.find_adapter`` picks."""
        fitting = []
        for model in self._store.installed(IP_ADAPTER_KIND):
            try:
                description = read_adapter_description(model.path)
            except ModelError:
                continue  # damaged: `easel models check` says why
            if description.family == self._family:
                fitting.append((description.variant != "plus", model.name))
        return [name for _, name in sorted(fitting)]

    def refresh_adapters(self) -> None:
        """Read the installed adapters again (an import, a removal, another model)."""
        self._family = self._model_family()
        self.adapter = kept_or_first(self.adapters(), self.adapter)
        self.adapters_changed.emit()

    _refresh_models = refresh_adapters

    # What Generate and Variations use ------------------------------------------------------

    def steer(self, request: generation.Request) -> generation.Request | None:
        """``request`` with the reference pictures, or None after one sentence saying what
        is wrong."""
        if not self.references:
            return request
        try:
            prompts = self._image_prompts([reference.pixels for reference in self.references])
            return generation.with_image_prompts(request, prompts)
        except EaselError as error:
            self.problem.emit(str(error))
            return None

    def variations_request(self, form: Form, source: SourcePicture,
                           ) -> generation.Request | None:
        """What Variations of ``source`` run: image to image (keep the composition), or text
        to image at the source's size with the source as an image prompt (keep the meaning);
        None after one sentence naming what to import when no adapter fits."""
        if not self.keep_meaning:
            return editing.variations_request(form, source)
        if not self.adapter:
            self.problem.emit(self._no_adapter("Variations that keep the meaning",
                                               "choose Variations › Keep the composition"))
            return None
        try:
            prompts = self._image_prompts([source.pixels])
            return meaning_request(form, source, prompts, self._prompt.model().size_multiple)
        except EaselError as error:
            self.problem.emit(str(error))
            return None

    def _image_prompts(self, pictures: list[np.ndarray]) -> tuple[ImagePrompt, ...]:
        if not self.adapter or self.adapter not in self.adapters():
            raise BadRequest(self._no_adapter("Image prompts", "remove the reference pictures"))
        return make_image_prompts(self._store, self._family,
                                  [(pixels, self.weight) for pixels in pictures], self.adapter)

    def _no_adapter(self, what: str, otherwise: str) -> str:
        """One sentence naming what to import (the files, for a family h94 made them for)."""
        files = ADAPTER_FILES.get(self._family)
        where = f" ({files})" if files else ""
        return (f"{what} need an IP-Adapter for this model's family ({self._family or 'none'}) "
                f"and its CLIP image encoder: import them{where} with Models › Get models… or "
                f"Import model…, or {otherwise}.")

    # Reuse parameters ----------------------------------------------------------------------

    def reuse(self, parameters: dict, kept: KeptPictures | None = None) -> str:
        """The recorded weight, and the adapter while it is installed and fits; a note for the
        status line ("" when nothing is missing). A picture made with no image prompts leaves
        the section as it is."""
        recorded = [prompt for prompt in parameters.get("image_prompts") or []
                    if isinstance(prompt, dict)]
        if not recorded:
            return ""
        weight = recorded[0].get("weight")
        if isinstance(weight, int | float) and not isinstance(weight, bool):
            self.set_weight(weight)
        name = recorded[0].get("adapter")
        installed = name in self.adapters()
        if installed:
            self.adapter = name
        self.settings_changed.emit()
        note = "" if installed else (f" IP-Adapter {name} is not installed for this model, so "
                                     f"{self.adapter or 'none'} is in use.")
        self._restore_references(recorded, kept)
        return note + ("" if self.references else PICTURES_NOT_KEPT)

    def _restore_references(self, recorded: list[dict], kept: KeptPictures | None) -> None:
        """The recorded reference pictures the library kept, in place of these."""
        paths = [kept(prompt.get("picture")) for prompt in recorded] if kept else []
        pictures = []
        for path in paths:
            if path is None:
                continue  # not kept (a picture made before they were): added again by hand
            try:
                pictures.append(np.asarray(read_picture(path).convert("RGB")))
            except EaselError:
                continue  # damaged since: added again by hand
        if pictures:
            self.references = [ReferencePicture(pixels, "kept reference", preview_of(pixels))
                               for pixels in pictures[:MAX_PICTURES]]
            self.changed.emit()

