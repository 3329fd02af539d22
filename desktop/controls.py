"""A request's controls from what the user gave (``--control`` on the command line, the
window's Control panel): for each, the installed ControlNet that reads it and its control
picture made from the user's picture (``engine.control.pictures``). Qt-free.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from desktop.library import BadImage
from desktop.library.images import load_pixels, open_image
from desktop.model_kinds.annotator import find_annotator
from desktop.model_store import ModelStore
from engine.control.control import Control
from engine.control.description import read_controlnet_description
from engine.control.pictures import ControlOption, control_type_named, make_control_picture
from engine.errors import BadRequest, ModelError

CONTROLNET_KIND = "controlnet"
# A picture used as it is (a ready-made depth map, pose, ...) may go to any ControlNet of the
# family; every other type goes to one trained for it.
AS_IT_IS = "picture"


def make_controls(store: ModelStore, family: str, options: Sequence[ControlOption],
                  guess_mode: bool = False) -> tuple[Control, ...]:
    """The engine's controls for ``options``, every picture read and made before any work."""
    return tuple(make_control(store, family, option, guess_mode) for option in options)


def make_control(store: ModelStore, family: str, option: ControlOption,
                 guess_mode: bool = False) -> Control:
    # The annotator first: without one, which ControlNet reads the picture does not matter.
    annotator = find_annotator(store, option.control_type)
    folder = find_controlnet(store, family, option.control_type, option.controlnet)
    picture = read_picture(option.picture)
    control_picture = make_control_picture(option.control_type, picture, annotator)
    return Control(folder, control_picture, option.weight, option.start, option.end,
                   guess_mode)


def find_controlnet(store: ModelStore, family: str, control_type: str,
                    name: str | None = None) -> Path:
    """The installed ControlNet named ``name``, else the one of ``family`` trained for
    ``control_type``; one sentence when there is none or several to choose from."""
    kind = control_type_named(control_type)  # an unknown type is refused first
    if name is not None:
        try:
            return store.path_of(name, CONTROLNET_KIND)
        except ModelError:
            raise BadRequest(f"There is no installed ControlNet called '{name}'; "
                             f"'easel models list' shows them.") from None
    fitting = [model for model in store.installed(CONTROLNET_KIND)
               if _reads(model.path, family, None if kind.name == AS_IT_IS else kind.name)]
    if len(fitting) == 1:
        return fitting[0].path
    if not fitting:
        raise BadRequest(f"No installed ControlNet reads {kind.name} pictures for this "
                         f"model's family ({family}); import one (easel models import FILE), "
                         f"or name one with {kind.name}=NAME.")
    names = ", ".join(model.name for model in fitting)
    raise BadRequest(f"Several installed ControlNets read {kind.name} pictures ({names}); "
                     f"choose one with {kind.name}=NAME.")


def _reads(folder: Path, family: str, control: str | None) -> bool:
    """Whether the ControlNet in ``folder`` fits ``family`` and reads ``control`` (None:
    any control)."""
    try:
        description = read_controlnet_description(folder)
    except ModelError:
        return False  # a damaged one is not offered; `easel models check` says why
    return description.family == family and control in (None, description.control)


def read_picture(path: Path) -> Image.Image:
    """A control picture file, decoded, its transparency kept (a scribble's strokes are its
    opaque pixels); anything else is one sentence."""
    try:
        with open_image(Path(path)) as image:
            return load_pixels(image, Path(path).name)
    except BadImage as error:
        raise BadRequest(str(error)) from None
