"""The ``easel restore-faces`` command: restore the faces in a picture.

SOURCE is a picture file (PNG, JPEG or WEBP) or a library picture's id, as for ``easel edit``.
The faces are those in the ``--box`` options or, without one, those an installed face detector
(YuNet) finds; each is restored by an installed face restorer (GFPGAN, RestoreFormer,
CodeFormer; ``--fidelity`` sets CodeFormer's weight, 0 = quality to 1 = fidelity). The result
is saved in the library with the operation "restore_faces" and, when the source is a
library picture, the source's id (lineage). A restorer whose licence is non-commercial is said
each time it is used.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from desktop.cli.common import (
    add_runtime_arguments,
    model_store,
    open_library,
    output_paths,
    runtime_options,
    say,
)
from desktop.image_files import copy_png, read_parameters
from desktop.library import Library, UnknownImage
from desktop.model_store import ModelStore
from desktop.source_pictures import source_picture
from engine.errors import BadRequest, EaselError
from engine.faces import FACE_DETECTOR, FACE_RESTORER, Box, check_boxes, restore_faces
from engine.manifest import manifest_hash
from engine.request import GenerationParameters

OPERATION = "restore_faces"


def add_commands(commands: argparse._SubParsersAction) -> None:
    faces = commands.add_parser("restore-faces", help="restore the faces in a picture")
    faces.add_argument("source", help="a picture file, or a library picture's id")
    faces.add_argument("--box", action="append", type=_box, metavar="x,y,w,h",
                       help="a face's box in pixels (repeat for several); without one, an "
                            "installed face detector finds the faces")
    faces.add_argument("--model", "-m", help="an installed face restorer (default: the only "
                                             "one installed)")
    faces.add_argument("--detector", help="an installed face detector (default: the only one "
                                          "installed)")
    faces.add_argument("--fidelity", type=float, metavar="W",
                       help="CodeFormer only: 0 favours quality, 1 fidelity to the picture "
                            "(default 0.5)")
    faces.add_argument("--output", "-o", type=Path,
                       help="also write a copy to this .png file name or folder")
    add_runtime_arguments(faces)
    faces.set_defaults(run=_restore_faces)


def _box(text: str) -> Box:
    try:
        x, y, w, h = (int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not x,y,width,height in whole "
                                         f"pixels") from None
    return x, y, w, h


def _restore_faces(arguments: argparse.Namespace) -> int:
    """Check the boxes and models before anything runs, restore, save with lineage."""
    store = model_store()
    runtime = runtime_options(arguments)
    with open_library() as library:
        source = source_picture(library, arguments.source)
        check_boxes(arguments.box, *source.picture.size)
        restorer = _chosen(store, FACE_RESTORER, arguments.model, "--model", required=True)
        detector = None if arguments.box else _chosen(store, FACE_DETECTOR, arguments.detector,
                                                      "--detector", required=False)
        pixels, notes = restore_faces(source.picture, restorer, arguments.box, detector,
                                      runtime, fidelity=arguments.fidelity)
        for note in notes:
            say(note)
        parameters = _parameters(library, arguments.source, pixels.shape, restorer)
        (target,) = output_paths(arguments.output, parameters.seed, 1)
        entry = library.add_generated(pixels, parameters, source_id=source.image_id)
        if target is not None:  # the copy is the library's file, byte for byte
            copy_png(entry.path, target)
        print(target or entry.path)
    return 0


def _chosen(store: ModelStore, kind: str, name: str | None, option: str,
            required: bool) -> Path | None:
    """The named model of ``kind``, else the only one installed; with none, None when it is
    not ``required`` (restore_faces then says what to import)."""
    if name is not None:
        return store.path_of(name, kind)
    installed = store.installed(kind)
    if not installed:
        if required:
            raise BadRequest("Restoring faces needs a face restorer: import GFPGAN "
                             "(GFPGANv1.4.pth), RestoreFormer or CodeFormer with: easel "
                             "models import FILE.")
        return None
    if len(installed) > 1:
        names = ", ".join(model.name for model in installed)
        raise EaselError(f"Several {kind.replace('_', ' ')}s are installed ({names}); choose "
                         f"one with {option}.")
    return installed[0].path


def _parameters(library: Library, source: str, shape: tuple, restorer: Path
                ) -> GenerationParameters:
    """The source's settings when Easel made it, with this restorer as the picture's model."""
    height, width = shape[:2]
    name, model_hash = restorer.name, manifest_hash(restorer)
    base = _source_parameters(library, source) or GenerationParameters(
        prompt="", negative_prompt="", width=width, height=height, steps=0, guidance=0.0,
        scheduler="euler", seed=0, model_name=name, model_hash=model_hash,
        model_family=FACE_RESTORER)
    return replace(base, width=width, height=height, model_name=name, model_hash=model_hash,
                   model_family=FACE_RESTORER, operation=OPERATION, strength=None,
                   feather=None, extend=None, scale=None, upscaler=None, base_size=None)


def _source_parameters(library: Library, source: str) -> GenerationParameters | None:
    path = Path(source)
    if not path.is_file():
        try:
            path = library.get(source).path
        except UnknownImage:
            return None
    return read_parameters(path)
