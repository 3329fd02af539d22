"""Restoring faces in a picture: find them (or take the user's boxes), crop each square and
upright, run the installed face restorer on it, and paste it back (engine.faces.align)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from engine.errors import BadRequest, GenerationFailed
from engine.faces.align import alignment, box_crop, crop_face, paste_face
from engine.faces.description import (
    GRAPH_FILE,
    FaceDetectorDescription,
    FaceRestorerDescription,
)
from engine.faces.detect import Face, detect_faces
from engine.images import picture_pixels
from engine.manifest import verify_manifest
from engine.runtime import CancelToken, RuntimeOptions, get_session

Box = tuple[int, int, int, int]  # x, y, width, height in the picture's pixels
MAX_SIDE = 8192
NO_DETECTOR = ("Finding faces needs a face detector: import OpenCV zoo's YuNet "
               "(face_detection_yunet_2023mar.onnx) with: easel models import FILE --kind "
               "face_detector, or give the face's box with --box x,y,w,h.")
NO_FACE = "No face was found in the picture; give the face's box with --box x,y,w,h."
DEFAULT_FIDELITY = 0.5  # CodeFormer's reference default: between quality (0) and fidelity (1)


def check_boxes(boxes: Sequence[Box] | None, width: int, height: int) -> None:
    """BadRequest in one sentence for a box that is empty or reaches outside the picture."""
    for box in boxes or ():
        x, y, w, h = box
        if w <= 0 or h <= 0:
            raise BadRequest(f"The box {x},{y},{w},{h} is empty; give x,y,width,height with a "
                             f"width and height above 0.")
        if x < 0 or y < 0 or x + w > width or y + h > height:
            raise BadRequest(f"The box {x},{y},{w},{h} reaches outside the {width}×{height} "
                             f"picture.")


def restore_faces(picture, restorer: Path, boxes: Sequence[Box] | None = None,
                  detector: Path | None = None, runtime: RuntimeOptions | None = None,
                  cancel: CancelToken | None = None,
                  fidelity: float | None = None) -> tuple[np.ndarray, list[str]]:
    """The picture with its faces restored (uint8 H×W×3) and sentences for the user: the
    faces in ``boxes``, else those the installed ``detector`` finds. ``fidelity`` (0 to 1) is
    for restorers that take one (CodeFormer; 0.5 when not given)."""
    rgb = picture_pixels(picture, MAX_SIDE)
    height, width = rgb.shape[:2]
    check_boxes(boxes, width, height)
    if not boxes and detector is None:
        raise BadRequest(NO_DETECTOR)
    description = FaceRestorerDescription.load(restorer)
    fidelity = _checked_fidelity(fidelity, description)
    verify_manifest(Path(restorer))
    if boxes:
        faces = [Face((x, y, x + w, y + h), None) for x, y, w, h in boxes]
    else:
        faces = find_faces(rgb, Path(detector), runtime, cancel)
    session = get_session(Path(restorer) / GRAPH_FILE, runtime)
    side = description.input_size
    for face in faces:
        matrix = (alignment(face.landmarks, side) if face.landmarks is not None
                  else box_crop(face.box, side))
        crop = crop_face(rgb, matrix, side)
        feed = {description.input_name: _to_sample(crop, description)}
        if description.fidelity_input:
            feed[description.fidelity_input] = np.array(fidelity, np.float32)
        (restored,) = session.run(feed, [description.output_name], cancel)
        rgb = paste_face(rgb, _to_face(restored, description), matrix)
    return rgb, _notes(len(faces), description, fidelity)


def _checked_fidelity(fidelity: float | None,
                      description: FaceRestorerDescription) -> float | None:
    """The fidelity weight to feed (the default where the restorer takes one and none was
    given); BadRequest in one sentence for one outside 0..1 or one the restorer cannot take."""
    if fidelity is None:
        return DEFAULT_FIDELITY if description.fidelity_input else None
    if not description.fidelity_input:
        raise BadRequest(f"A fidelity weight is for CodeFormer only; {description.architecture} "
                         f"has none, so restore without one.")
    if not 0 <= fidelity <= 1:
        raise BadRequest(f"The fidelity weight {fidelity:g} is outside 0 to 1 (0 favours "
                         f"quality, 1 fidelity to the picture).")
    return fidelity


def find_faces(rgb: np.ndarray, detector: Path, runtime: RuntimeOptions | None = None,
               cancel: CancelToken | None = None) -> list[Face]:
    """The faces the installed ``detector`` finds, best first; BadRequest when none."""
    description = FaceDetectorDescription.load(detector)
    verify_manifest(detector)
    session = get_session(detector / GRAPH_FILE, runtime)
    faces = detect_faces(rgb, lambda sample: session.run(
        {description.input_name: sample}, list(description.output_names), cancel),
        description.input_size)
    if not faces:
        raise BadRequest(NO_FACE)
    return faces


def _to_sample(face: np.ndarray, description: FaceRestorerDescription) -> np.ndarray:
    values = face.astype(np.float32).transpose(2, 0, 1)[np.newaxis] / 255
    return values * 2 - 1 if description.value_range == "-1..1" else values


def _to_face(restored: np.ndarray, description: FaceRestorerDescription) -> np.ndarray:
    side = description.input_size
    if restored.shape != (1, 3, side, side):
        raise GenerationFailed(f"The face restorer gave an output of shape {restored.shape}, "
                               f"not a {side}×{side} RGB face; nothing was made.")
    if not np.isfinite(restored).all():
        raise GenerationFailed("The face restorer gave invalid values (not-a-number); nothing "
                               "was made.")
    values = (restored[0] + 1) / 2 if description.value_range == "-1..1" else restored[0]
    return np.clip(np.rint(values.transpose(1, 2, 0) * 255), 0, 255).astype(np.uint8)


def _notes(count: int, description: FaceRestorerDescription,
           fidelity: float | None) -> list[str]:
    notes = [f"restored {count} face{'s' if count != 1 else ''} with {description.summary}"
             + (f" at fidelity {fidelity:g}" if fidelity is not None else "")]
    if description.non_commercial:
        notes.append(f"{description.architecture} is licensed for non-commercial use only "
                     f"({description.licence}).")
    return notes
