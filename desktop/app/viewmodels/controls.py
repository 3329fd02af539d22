"""The Control panel's state: up to four controls (a picture, its control type, the installed
ControlNet that reads it, weight, start and end, canny's thresholds) and one guess mode for
all, as A1111's ControlNet units; and what they add to the window's requests.

Each control's control picture (the edge map, the scribble) is made once on the GUI thread
when its picture, type or thresholds change, and kept: canny on a 1024² picture takes about
0.1 s, and Generate reuses the made picture instead of making it again.

The mask tool doubles as a control picture's editor: its strokes become a scribble control,
and a control picture can be lent to it (``MaskModel.lend``) to be painted and erased over the
source picture, then come back as that control's picture, used as it is. The mask the user
painted for Inpaint waits untouched meanwhile, and adding a scribble keeps it too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image
from PySide6.QtCore import QObject, Signal, SignalInstance
from PySide6.QtGui import QImage

from desktop.app import generation
from desktop.app.viewmodels.mask import MaskModel
from desktop.app.viewmodels.picture_inputs import (
    CanvasPictures,
    KeptPictures,
    PictureInputsModel,
    kept_or_first,
)
from desktop.app.viewmodels.prompt import PromptViewModel
from desktop.app.worker import qimage_from_pixels
from desktop.controls import CONTROLNET_KIND, read_picture
from desktop.image_files import save_png
from desktop.model_kinds.annotator import find_annotator
from desktop.model_store import ModelStore
from engine.control.control import MAX_CONTROLS, Control
from engine.control.description import read_controlnet_description
from engine.control.pictures import (
    CONTROL_TYPES,
    ControlType,
    control_type_named,
    make_control_picture,
)
from engine.errors import BadRequest, EaselError, ModelError
from engine.images import PictureInput

AS_IT_IS = "picture"  # the type whose picture any ControlNet of the family may read
NO_PICTURE = ("Control {number} has no picture: add its picture again (drop a file on it or "
              "click its preview).")
NO_CANVAS_PICTURE = ("There is no picture on the canvas to use as a control: generate one, "
                     "choose one in the gallery or drop one on the canvas.")
PREVIEW_SIDE = 128  # the preview's pixels before the panel scales it (sharp on HiDPI too)
NO_STROKES = ("Nothing is painted with the mask tool: turn it on (Ctrl+M), paint the lines "
              "over the picture, then add them as a scribble.")
NO_SOURCE_TO_EDIT_ON = ("A control picture is edited over the source picture: drop a picture "
                        "on the canvas or choose one in the gallery first.")
NOT_GREY = ("Only a black-and-white or grey control picture can be edited on the canvas (the "
            "mask layer holds one grey per pixel): save it (Save control picture…), edit it in "
            "a paint program and add it back with the picture type.")
EDIT_FIRST = "Use or cancel the control picture being edited on the canvas first."
STROKES_NAME = "strokes painted with the mask tool"
EDITED_NAME = "edited on the canvas"
PICTURES_NOT_KEPT = (" Add the control pictures again: the library no longer keeps them "
                     "(or the picture was made before it did).")


class CanvasTools(CanvasPictures, Protocol):
    """The studio's mask tool too, which paints scribbles and edits control pictures."""

    mask: MaskModel
    mask_editing: bool
    mask_editing_changed: SignalInstance

    def set_mask_editing(self, on: bool) -> None: ...


@dataclass(eq=False)
class ControlRow:
    """One control as the panel shows it. ``picture`` is None after Reuse parameters (a
    picture records its controls' settings, not their pictures)."""

    picture: PictureInput | None
    picture_name: str = ""
    control_type: str = "canny"
    controlnet: str = ""  # the installed ControlNet's name; "" when none fits
    weight: float = 1.0
    start: float = 0.0
    end: float = 1.0
    low: int = 100  # canny's thresholds
    high: int = 200
    made: np.ndarray | None = None  # the control picture, made from ``picture``
    preview: QImage | None = None
    problem: str = ""  # why there is no control picture (a type needing an annotator)
    _made_for: tuple = field(default=())


def thumbnail(made: np.ndarray, side: int = PREVIEW_SIDE) -> np.ndarray:
    """``made`` shrunk to about ``side`` pixels by keeping each block's brightest pixel: a
    smooth scaling would fade one-pixel edges to nothing in a 64 px preview."""
    step = max(1, -(-max(made.shape[:2]) // side))
    height, width = (made.shape[0] // step) * step, (made.shape[1] // step) * step
    if step == 1 or not height or not width:
        return made
    blocks = made[:height, :width].reshape(height // step, step, width // step, step, -1)
    return blocks.max(axis=(1, 3))


def built_in_types() -> list[ControlType]:
    return [control_type for control_type in CONTROL_TYPES if control_type.annotator is None]


@dataclass(frozen=True)
class TypeChoice:
    """A control type as the panel offers it: ``missing`` says why it cannot be chosen (an
    annotator model to import), empty when it can."""

    name: str
    description: str
    missing: str = ""


class ControlsModel(PictureInputsModel):
    changed = Signal()  # controls added, removed or replaced (the panel rebuilds its rows)
    row_changed = Signal(int)  # one control's settings or preview changed
    controlnets_changed = Signal()  # the model (its family) or the installed ControlNets
    guess_mode_changed = Signal()
    editing_changed = Signal()  # a control picture went onto the canvas or came back
    message = Signal(str)  # news for the status bar

    most = MAX_CONTROLS
    things = "controls"
    no_canvas_picture = NO_CANVAS_PICTURE

    def __init__(self, store: ModelStore, prompt: PromptViewModel, canvas: CanvasTools,
                 parent: QObject | None = None) -> None:
        super().__init__(store, prompt, canvas, parent)
        self._canvas: CanvasTools = canvas  # the mask tool too, not only the pictures
        self.rows: list[ControlRow] = []
        self.guess_mode = False
        self.edited: ControlRow | None = None  # the control whose picture is on the canvas
        self._mask_tool_was_on = False  # what the mask tool goes back to after the edit
        canvas.mask_editing_changed.connect(self._mask_tool_toggled)

    # Adding and removing -------------------------------------------------------------------

    def add_file(self, path: Path) -> bool:
        """A control from a picture file; an unreadable one is one sentence, nothing added."""
        if not self._room():
            return False
        picture = self._read(path)
        return picture is not None and self.add_picture(picture, Path(path).name)

    def add_picture(self, picture: PictureInput, name: str, control_type: str = "canny") -> bool:
        if not self._room():
            return False
        row = ControlRow(picture, name, control_type)
        row.controlnet = self._fitting_name(row.control_type, "")
        self._make(row)
        self.rows.append(row)
        self.changed.emit()
        return True

    def set_picture(self, index: int, path: Path) -> bool:
        """A new picture for control ``index`` (one restored by Reuse parameters)."""
        picture = self._read(path)
        if picture is None:
            return False
        row = self.rows[index]
        row.picture, row.picture_name = picture, Path(path).name
        self._make(row)
        self.row_changed.emit(index)
        return True

    def remove(self, index: int) -> None:
        if self.rows[index] is self.edited:
            self.cancel_edit()
        del self.rows[index]
        self.changed.emit()

    def _count(self) -> int:
        return len(self.rows)

    # Settings ------------------------------------------------------------------------------

    def set_type(self, index: int, control_type: str) -> None:
        row = self.rows[index]
        row.control_type = control_type_named(control_type).name
        row.controlnet = self._fitting_name(row.control_type, row.controlnet)
        self._make(row)
        self.row_changed.emit(index)

    def update(self, index: int, **changes: object) -> None:
        """Settings the user edited (weight, start, end, low, high, controlnet); the preview
        is made again only when the thresholds changed."""
        row = self.rows[index]
        for name, value in changes.items():
            setattr(row, name, value)
        if {"low", "high"} & set(changes):
            self._make(row)
            self.row_changed.emit(index)

    def set_guess_mode(self, on: bool) -> None:
        if on != self.guess_mode:
            self.guess_mode = on
            self.guess_mode_changed.emit()

    # The installed ControlNets -------------------------------------------------------------

    def controlnets(self, control_type: str) -> list[str]:
        """The installed ControlNets that fit the chosen model's family and read
        ``control_type`` (any of the family's for a picture used as it is)."""
        wanted = None if control_type == AS_IT_IS else control_type
        names = []
        for model in self._store.installed(CONTROLNET_KIND):
            try:
                description = read_controlnet_description(model.path)
            except ModelError:
                continue  # damaged: `easel models check` says why
            if description.family == self._family and wanted in (None, description.control):
                names.append(model.name)
        return names

    def type_choices(self) -> list[TypeChoice]:
        """Every control type, those whose annotator model is not installed with the reason."""
        choices = []
        for control_type in CONTROL_TYPES:
            try:
                find_annotator(self._store, control_type.name)
                missing = ""
            except EaselError as error:
                missing = str(error)
            choices.append(TypeChoice(control_type.name, control_type.description, missing))
        return choices

    def refresh_controlnets(self) -> None:
        """Read the installed ControlNets again (an import, a removal, another model)."""
        self._family = self._model_family()
        for row in self.rows:
            row.controlnet = self._fitting_name(row.control_type, row.controlnet)
        self.controlnets_changed.emit()

    _refresh_models = refresh_controlnets

    def _fitting_name(self, control_type: str, current: str) -> str:
        return kept_or_first(self.controlnets(control_type), current)

    # The control picture -------------------------------------------------------------------

    def _make(self, row: ControlRow) -> None:
        """Make the row's control picture, once for each picture, type and thresholds."""
        wanted = (id(row.picture), row.control_type, row.low, row.high)
        if row.picture is None or wanted == row._made_for:
            return
        options = {"low": row.low, "high": row.high} if row.control_type == "canny" else {}
        try:
            annotator = find_annotator(self._store, row.control_type)
            row.made = make_control_picture(row.control_type, row.picture, annotator,
                                            **options)
            row.preview = qimage_from_pixels(thumbnail(row.made))
            row.problem = ""
        except EaselError as error:
            row.made, row.preview, row.problem = None, None, str(error)
        row._made_for = wanted

    # The mask tool: scribbles and edited control pictures --------------------------------

    def add_scribble_from_mask(self) -> bool:
        """A scribble control from the strokes painted with the mask tool: white where
        painted, black elsewhere, at the source picture's size. The mask stays as it is, for
        an Inpaint still to come (the mask tool's Clear takes it away)."""
        if not self.mask_is_free():
            return False
        strokes = self._canvas.mask.pixels() >= 128  # as the engine reads a mask
        if not strokes.any():
            self.problem.emit(NO_STROKES)
            return False
        added = self.add_picture(_grey_to_rgb(strokes.astype(np.uint8) * 255), STROKES_NAME,
                                 "scribble")
        if added:
            self.message.emit(f"The mask's strokes are control {len(self.rows)} now, a "
                              f"scribble; the mask is kept for Inpaint.")
        return added

    def edit_on_canvas(self, index: int) -> bool:
        """Lend control ``index``'s control picture to the mask tool, over the source, to
        add lines with the brush and take some away with the eraser; ``use_edit`` brings it
        back, ``cancel_edit`` leaves it as it was."""
        row = self.rows[index]
        layer = self._editable_layer(index, row)
        if layer is None:
            return False
        self.cancel_edit()  # one control picture on the canvas at a time
        mask = self._canvas.mask
        self._mask_tool_was_on = self._canvas.mask_editing
        mask.lend(_fitted(layer, mask.size))
        self.edited = row
        self._canvas.set_mask_editing(True)
        self.editing_changed.emit()
        scaled = (f" (scaled from {layer.shape[1]}×{layer.shape[0]} to the source's "
                  f"{mask.size[0]}×{mask.size[1]})" if layer.shape[::-1] != mask.size else "")
        self.message.emit(f"Control {index + 1}'s picture is on the canvas{scaled}: paint lines "
                          f"with the brush, erase with the eraser, then Use as control picture.")
        return True

    def _editable_layer(self, index: int, row: ControlRow) -> np.ndarray | None:
        """The row's control picture as one grey (H, W), or None after one sentence."""
        if row.made is None:
            self.problem.emit(row.problem or NO_PICTURE.format(number=index + 1))
        elif not _is_grey(row.made):
            self.problem.emit(NOT_GREY)  # a normal map's or a pose's colours would be lost
        elif self._canvas.source is None or self._canvas.mask.size is None:
            self.problem.emit(NO_SOURCE_TO_EDIT_ON)
        else:
            return row.made[..., 0]
        return None

    def use_edit(self) -> bool:
        """The edited layer becomes the control's picture, used as it is from now on (its
        lines are no longer found in a picture); the mask tool goes back as it was."""
        row, layer = self._end_edit()
        if row is None or layer is None:
            if row is not None:
                self.problem.emit("The new source picture ended the control picture's edit; "
                                  "edit it again.")
            return False
        row.picture, row.picture_name = _grey_to_rgb(layer), EDITED_NAME
        row.control_type = AS_IT_IS
        row.controlnet = self._fitting_name(AS_IT_IS, row.controlnet)
        self._make(row)
        self.row_changed.emit(self.rows.index(row))
        self.message.emit(f"Control {self.rows.index(row) + 1} uses the edited picture as it is.")
        return True

    def mask_is_free(self) -> bool:
        """False, after one sentence, while the mask tool holds a control picture (Inpaint
        must not repaint by it)."""
        if self.edited is not None:
            self.problem.emit(EDIT_FIRST)
        return self.edited is None

    def cancel_edit(self) -> None:
        """Leave the control picture as it was; the mask tool goes back as it was."""
        self._end_edit()

    def _end_edit(self) -> tuple[ControlRow | None, np.ndarray | None]:
        row, self.edited = self.edited, None
        if row is None:
            return None, None
        layer = self._canvas.mask.take_back()
        if not self._mask_tool_was_on:
            self._canvas.set_mask_editing(False)
        self.editing_changed.emit()
        return row, layer

    def _mask_tool_toggled(self) -> None:
        """The mask tool turned off (its button, a gallery picture, Inpaint) while a control
        picture was on it: the control stays as it was, and the user's mask comes back."""
        if self.edited is not None and not self._canvas.mask_editing:
            self._mask_tool_was_on = False
            self.cancel_edit()
            self.message.emit("The control picture was left as it was (the mask tool was "
                              "turned off before Use as control picture).")

    def save_picture(self, index: int, path: Path) -> bool:
        """Write control ``index``'s control picture as a PNG (to edit in a paint program and
        add back with the picture type)."""
        made = self.rows[index].made
        if made is None:
            self.problem.emit(self.rows[index].problem or NO_PICTURE.format(number=index + 1))
            return False
        path = Path(path) if Path(path).suffix.lower() == ".png" else Path(f"{path}.png")
        try:
            save_png(made, path, None)
        except OSError as error:
            self.problem.emit(f"The control picture could not be saved to {path}: "
                              f"{error.strerror or error}.")
            return False
        self.message.emit(f"Control {index + 1}'s picture is saved as {path.name}.")
        return True

    # What Generate uses --------------------------------------------------------------------

    def steer(self, request: generation.Request) -> generation.Request | None:
        """``request`` with the controls, or None after one sentence saying what is wrong."""
        try:
            controls = tuple(self._control(number, row)
                             for number, row in enumerate(self.rows, start=1))
            return generation.with_controls(request, controls)
        except EaselError as error:
            self.problem.emit(str(error))
            return None

    def _control(self, number: int, row: ControlRow) -> Control:
        if row.picture is None:
            raise BadRequest(NO_PICTURE.format(number=number))
        if row.made is None:
            raise BadRequest(row.problem)
        if not row.controlnet or row.controlnet not in self.controlnets(row.control_type):
            raise BadRequest(
                f"Control {number}: no installed ControlNet reads {row.control_type} pictures "
                f"for this model's family ({self._family or 'none'}); import one (Models › "
                f"Get models… or Import model…) or remove the control.")
        if not row.start < row.end:
            raise BadRequest(
                f"Control {number} would stop before it starts: its start ({row.start:g}) "
                f"must be less than its end ({row.end:g}).")
        folder = self._store.path_of(row.controlnet, CONTROLNET_KIND)
        return Control(folder, row.made, row.weight, row.start, row.end, self.guess_mode)

    # Reuse parameters ----------------------------------------------------------------------

    def reuse(self, parameters: dict, kept: KeptPictures | None = None) -> str:
        """The recorded controls' settings in place of these, each with the control picture
        the library kept for it (``kept`` gives it by the key the picture records; used as it
        is) or else the picture of the control at its place; a note for the status line (""
        when nothing is missing). A picture made with no controls leaves the panel as is."""
        recorded = [control for control in parameters.get("controls") or []
                    if isinstance(control, dict)]
        if not recorded:
            return ""
        rows, missing = [], []
        for control in recorded[:MAX_CONTROLS]:
            row = self._recorded_row(control, len(rows), kept)
            if row is None:
                missing.append(str(control.get("controlnet")))
            else:
                rows.append(row)
        self.cancel_edit()  # the edited control is replaced
        self.rows = rows
        self.guess_mode = any(bool(control.get("guess_mode")) for control in recorded)
        self.changed.emit()
        self.guess_mode_changed.emit()
        note = (f" ControlNet {', '.join(missing)} is not installed, so its control was left "
                f"out." if missing else "")
        return note + (PICTURES_NOT_KEPT if any(row.picture is None for row in rows) else "")

    def _recorded_row(self, control: dict, place: int,
                      kept: KeptPictures | None) -> ControlRow | None:
        name = control.get("controlnet")
        recorded_type = control.get("control") or AS_IT_IS
        known = next((t for t in built_in_types() if recorded_type in t.words), None)
        # A depth or pose picture cannot be made here: the user gives the ready-made one.
        control_type = known.name if known else AS_IT_IS
        old = self.rows[place] if place < len(self.rows) else None
        picture, picture_name = (old.picture, old.picture_name) if old else (None, "")
        kept_path = kept(control.get("picture")) if kept is not None else None
        if kept_path is not None:
            try:  # the control picture as it was made: used as it is, never made again
                picture, picture_name = read_picture(kept_path), "the kept control picture"
                control_type = AS_IT_IS
            except EaselError:
                pass  # damaged since: the user adds the picture again
        if name not in self.controlnets(control_type):
            return None
        row = ControlRow(picture, picture_name, control_type, name,
                         _number(control, "weight", 1.0), _number(control, "start", 0.0),
                         _number(control, "end", 1.0))
        self._make(row)
        return row


def _is_grey(picture: np.ndarray) -> bool:
    return bool((picture[..., 0] == picture[..., 1]).all()
                and (picture[..., 0] == picture[..., 2]).all())


def _grey_to_rgb(grey: np.ndarray) -> np.ndarray:
    return np.repeat(grey[..., np.newaxis], 3, axis=2)


def _fitted(layer: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``layer`` at ``size`` (width, height), the mask's. Lines stay crisp (nearest
    neighbour, every pixel still 0 or 255); a grey picture such as a depth map is
    smoothed."""
    if layer.shape[::-1] == size:
        return layer
    lines_only = bool(np.isin(layer, (0, 255)).all())
    resample = Image.Resampling.NEAREST if lines_only else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(layer).resize(size, resample))


def _number(control: dict, key: str, default: float) -> float:
    value = control.get(key)
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    return float(value) if is_number else default
