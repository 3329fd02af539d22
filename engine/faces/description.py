"""What the engine needs to know about installed face restorers and face detectors, as data.

Both carry ``easel.json`` like every model folder, marked ``"kind": "face_restorer"`` or
``"kind": "face_detector"``, beside ``model.onnx``:
- a face restorer takes one aligned face, float32 (1, 3, S, S) RGB in ``value_range``, and
  gives the restored face at the same size and range; CodeFormer's graph also takes its
  fidelity weight, a float32 scalar in [0, 1] (0 = quality, 1 = fidelity to the input);
- a face detector is YuNet (OpenCV zoo's ``face_detection_yunet_2023mar.onnx``): a BGR picture
  of 0..255 values in, and per stride (8, 16, 32) the outputs ``cls``, ``obj``, ``bbox``,
  ``kps`` (engine.faces.detect decodes them).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from engine.errors import ModelError

DESCRIPTION_FILE = "easel.json"
GRAPH_FILE = "model.onnx"
FACE_RESTORER, FACE_DETECTOR = "face_restorer", "face_detector"
FORMAT = 1
VALUE_RANGES = ("0..1", "-1..1")


@dataclass(frozen=True)
class FaceRestorerDescription:
    architecture: str  # as spandrel names it: "GFPGAN", "RestoreFormer", "CodeFormer"
    input_size: int  # the side of the square face the graph takes and gives
    licence: str
    non_commercial: bool = False  # said each time the model is used
    value_range: str = "0..1"  # of the face in and out
    input_name: str = "image"
    output_name: str = "restored"
    fidelity_input: str | None = None  # the scalar fidelity weight's input, where there is one
    kind: str = FACE_RESTORER
    format: int = FORMAT

    def __post_init__(self) -> None:
        if self.kind != FACE_RESTORER:
            raise ModelError(f"The description names a {self.kind!r} model, not a face "
                             f"restorer.")
        if not isinstance(self.input_size, int) or not 16 <= self.input_size <= 2048:
            raise ModelError(f"The face restorer description names an input size of "
                             f"{self.input_size!r}; it must be 16 to 2048 pixels.")
        if self.value_range not in VALUE_RANGES:
            raise ModelError(f"The face restorer description names a value range of "
                             f"{self.value_range!r}, not one of {', '.join(VALUE_RANGES)}.")

    @property
    def summary(self) -> str:
        return f"face restorer ({self.architecture}, {self.input_size} px)"

    def save(self, folder: Path) -> None:
        _write(folder, asdict(self))

    @classmethod
    def load(cls, folder: Path) -> FaceRestorerDescription:
        return _load(cls, Path(folder), FACE_RESTORER, "a face restorer")


@dataclass(frozen=True)
class FaceDetectorDescription:
    network: str  # "YuNet"
    input_name: str
    output_names: tuple[str, ...]  # cls, obj, bbox, kps for strides 8, 16, 32, in that order
    input_size: tuple[int, int] | None  # (height, width) when the graph fixes it
    licence: str = "MIT"
    kind: str = FACE_DETECTOR
    format: int = FORMAT

    def __post_init__(self) -> None:
        if self.kind != FACE_DETECTOR:
            raise ModelError(f"The description names a {self.kind!r} model, not a face "
                             f"detector.")
        object.__setattr__(self, "output_names", tuple(self.output_names))
        if self.input_size is not None:
            object.__setattr__(self, "input_size", tuple(self.input_size))
        if len(self.output_names) != 12:
            raise ModelError("The face detector description does not name YuNet's twelve "
                             "outputs.")

    @property
    def summary(self) -> str:
        return f"face detector ({self.network})"

    def save(self, folder: Path) -> None:
        _write(folder, asdict(self))

    @classmethod
    def load(cls, folder: Path) -> FaceDetectorDescription:
        return _load(cls, Path(folder), FACE_DETECTOR, "a face detector")


def kind_of(folder: Path) -> str | None:
    """The kind ``folder``'s description names (cheap; not checked), None when unreadable."""
    try:
        return _read(Path(folder)).get("kind")
    except ModelError:
        return None


def _write(folder: Path, data: dict) -> None:
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    (Path(folder) / DESCRIPTION_FILE).write_text(text, encoding="utf-8")


def _load(cls, folder: Path, kind: str, noun: str):
    data = _read(folder)
    if data.get("kind") != kind:
        raise ModelError(f"'{folder.name}' is not {noun}.")
    if not isinstance(data.get("format"), int) or data["format"] > FORMAT:
        raise ModelError(f"'{folder.name}' was made by a newer Easel; update Easel to use it.")
    known = {field.name for field in fields(cls)}
    try:
        return cls(**{key: value for key, value in data.items() if key in known})
    except TypeError as error:
        raise ModelError(f"The description of '{folder.name}' is incomplete "
                         f"({error}).") from None


def _read(folder: Path) -> dict:
    try:
        data = json.loads((folder / DESCRIPTION_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise ModelError(f"'{folder.name}' has no readable {DESCRIPTION_FILE}.") from None
    if not isinstance(data, dict):
        raise ModelError(f"'{folder.name}' has a damaged {DESCRIPTION_FILE}.")
    return data
