"""Finding faces with YuNet (OpenCV zoo's ``face_detection_yunet_2023mar.onnx``), in numpy.

The 2023 graph takes a BGR picture of 0..255 values, (1, 3, H, W) with sides that are
multiples of 32, and for each stride (8, 16, 32) gives, per grid cell (row by row):
``cls_s`` and ``obj_s`` (1, cells, 1), ``bbox_s`` (1, cells, 4: the centre's offset in the cell
and the log of the size, in strides) and ``kps_s`` (1, cells, 10: five points' offsets in the
cell, in strides). A face's score is the geometric mean of its clipped class and object scores,
as OpenCV's FaceDetectorYN decodes it; boxes above the score go through non-maximum
suppression. The five points are the eyes, the nose tip and the mouth's corners, the one on
the picture's left first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from engine.control.description import GraphSignature
from engine.control.pose import non_maximum_suppression
from engine.errors import GenerationFailed
from engine.faces.description import FaceDetectorDescription

STRIDES = (8, 16, 32)
PARTS = ("cls", "obj", "bbox", "kps")
YUNET_OUTPUTS = tuple(f"{part}_{stride}" for part in PARTS for stride in STRIDES)
FIELDS = {"cls": 1, "obj": 1, "bbox": 4, "kps": 10}
SIZE_MULTIPLE = 32
LONGEST_SIDE = 640  # a graph with free sides sees the picture at most this large
SCORE_THRESHOLD = 0.9  # OpenCV zoo's default for YuNet
OVERLAP_LIMIT = 0.3  # likewise

Run = Callable[[np.ndarray], list[np.ndarray]]  # the sample -> YuNet's twelve outputs


@dataclass(frozen=True)
class Face:
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in the picture's pixels
    landmarks: np.ndarray | None  # (5, 2) x, y: eyes, nose tip, mouth corners (left first)
    score: float = 1.0


def is_yunet(signature: GraphSignature) -> bool:
    """One picture in, and YuNet's twelve outputs by name."""
    if len(signature.inputs) != 1 or not set(signature.outputs) >= set(YUNET_OUTPUTS):
        return False
    (shape,) = signature.inputs.values()
    return len(shape) == 4


def describe_yunet(signature: GraphSignature) -> FaceDetectorDescription:
    ((input_name, shape),) = signature.inputs.items()
    fixed = all(isinstance(side, int) and side > 0 for side in shape[2:])
    return FaceDetectorDescription(network="YuNet", input_name=input_name,
                                   output_names=YUNET_OUTPUTS,
                                   input_size=(shape[2], shape[3]) if fixed else None)


def detect_faces(rgb: np.ndarray, run: Run, input_size: tuple[int, int] | None,
                 threshold: float = SCORE_THRESHOLD) -> list[Face]:
    """The faces in ``rgb`` (uint8 H×W×3), best first."""
    sample, ratio = detector_sample(rgb, input_size)
    outputs = dict(zip(YUNET_OUTPUTS, run(sample), strict=True))
    boxes, landmarks, scores = decode_yunet(outputs, sample.shape[2:])
    keep = scores > threshold
    boxes, landmarks, scores = boxes[keep] / ratio, landmarks[keep] / ratio, scores[keep]
    kept = non_maximum_suppression(boxes, scores, OVERLAP_LIMIT) if len(scores) else []
    return [Face(tuple(float(v) for v in boxes[index]), landmarks[index], float(scores[index]))
            for index in kept]


def detector_sample(rgb: np.ndarray, input_size: tuple[int, int] | None
                    ) -> tuple[np.ndarray, float]:
    """The picture scaled by ``ratio`` to fit the graph's fixed size (or, with free sides, at
    most LONGEST_SIDE), at the top left of black padding to whole multiples of 32; float32
    (1, 3, h, w) BGR of 0..255 values, and the ratio."""
    height, width = rgb.shape[:2]
    if input_size is None:
        ratio = min(1.0, LONGEST_SIDE / max(height, width))
        inner = (max(1, round(width * ratio)), max(1, round(height * ratio)))
        canvas_size = tuple(-(-side // SIZE_MULTIPLE) * SIZE_MULTIPLE for side in inner[::-1])
    else:
        ratio = min(input_size[0] / height, input_size[1] / width)
        inner = (max(1, int(width * ratio)), max(1, int(height * ratio)))
        canvas_size = input_size
    canvas = np.zeros((*canvas_size, 3), np.float32)
    resized = Image.fromarray(rgb).resize(inner, Image.Resampling.BILINEAR)
    canvas[:inner[1], :inner[0]] = np.asarray(resized, np.float32)
    bgr = canvas[..., ::-1].transpose(2, 0, 1)[np.newaxis]
    return np.ascontiguousarray(bgr), ratio


def decode_yunet(outputs: dict[str, np.ndarray], size: tuple[int, int]
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes (n, 4: x0, y0, x1, y1), landmarks (n, 5, 2) and scores (n,) of every grid cell of
    every stride, in the sample's pixels."""
    boxes, points, scores = [], [], []
    for stride in STRIDES:
        rows, columns = size[0] // stride, size[1] // stride
        part = {name: _cells(outputs[f"{name}_{stride}"], rows * columns, FIELDS[name],
                             f"{name}_{stride}") for name in PARTS}
        ys, xs = np.mgrid[0:rows, 0:columns]
        cell = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float64)
        centres = (part["bbox"][:, :2] + cell) * stride
        sides = np.exp(part["bbox"][:, 2:4]) * stride
        boxes.append(np.concatenate([centres - sides / 2, centres + sides / 2], axis=1))
        points.append((part["kps"].reshape(-1, 5, 2) + cell[:, np.newaxis]) * stride)
        scores.append(np.sqrt(np.clip(part["cls"][:, 0], 0, 1) *
                              np.clip(part["obj"][:, 0], 0, 1)))
    return np.concatenate(boxes), np.concatenate(points), np.concatenate(scores)


def _cells(output: np.ndarray, cells: int, fields: int, name: str) -> np.ndarray:
    values = np.asarray(output, np.float64)
    if values.size != cells * fields:
        raise GenerationFailed(f"The face detector's output {name} holds {values.size} "
                               f"values, not YuNet's {cells} cells of {fields}; nothing was "
                               f"made.")
    return values.reshape(cells, fields)
