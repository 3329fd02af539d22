"""Pose pictures from DWPose: a YOLOX person detector and an RTMPose whole-body estimator, two
ONNX graphs run with ONNX Runtime, and the OpenPose stick figure drawn with Pillow.

The processing follows comfyui_controlnet_aux's ONNX path (``src/controlnet_aux/dwpose/``:
``dw_onnx/cv_ox_det.py`` for the detector, ``dw_onnx/cv_ox_pose.py`` for the estimator,
``wholebody.py`` for the OpenPose keypoints, ``util.py`` for the drawing), which is
DWPose's own ``annotator/dwpose`` code for ControlNet; each rule below names its file. No
torch, no onnx, no OpenCV: OpenCV's resize, warpAffine and drawing are done with Pillow, so
pixels may differ from theirs by a level or, at a shape's edge, by one pixel.

An installed pose annotator's folder holds ``detector.onnx``, ``pose.onnx`` and
``easel.json`` (kind "annotator", control "openpose", network "dwpose", each graph's file,
input name, outputs and input size, the source files' names and the licence).
"""

from __future__ import annotations

import colorsys
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from engine.control.annotators import (
    ANNOTATOR_KIND,
    DESCRIPTION_FILE,
    DESCRIPTION_FORMAT,
    POSE,
)
from engine.control.description import GraphSignature, read_graph_signature
from engine.errors import BadRequest, GenerationFailed, ModelError
from engine.manifest import verify_manifest
from engine.runtime import CancelToken, RuntimeOptions, get_session

DWPOSE = "dwpose"
DETECTOR_FILE = "detector.onnx"
ESTIMATOR_FILE = "pose.onnx"
LICENCE = "Apache-2.0"  # IDEA-Research/DWPose and Megvii's YOLOX both say so
MAKES = "OpenPose stick figures on black (body, hands and face)"
NO_PERSON = "No person was found in the picture, so there is no pose to follow."

# cv_ox_det.py: a 640×640 letterbox padded with grey 114, raw 0..255 values; strides 8, 16, 32.
DETECTOR_SIZE = (640, 640)
PAD_GREY = 114
STRIDES = (8, 16, 32)
YOLOX_FIELDS = 85  # centre x, y, width, height, objectness, 80 COCO classes
SCORE_FLOOR = 0.1  # multiclass_nms(score_thr=0.1)
OVERLAP_LIMIT = 0.45  # multiclass_nms(nms_thr=0.45)
PERSON_SCORE = 0.3  # inference_detector keeps class 0 above 0.3
# cv_ox_pose.py: the box grown by 1.25, ImageNet mean/std on 0..255 RGB, SimCC split 2.0.
BOX_PADDING = 1.25
POSE_MEAN = (123.675, 116.28, 103.53)
POSE_STD = (58.395, 57.12, 57.375)
SIMCC_SPLIT = 2.0
POSE_OUTPUTS = ("simcc_x", "simcc_y")
# wholebody.py format_result: keypoints under 0.3 are not drawn.
KEYPOINT_SCORE = 0.3
# controlnet_aux 0.0.10 dwpose/__init__.py: detect_resolution 512; the drawing's sizes (a limb
# 4 pixels half-wide, a joint of radius 4) are for a picture whose shorter side is 512.
DRAW_SIDE = 512

# wholebody.py: the neck (the shoulders' mid-point) is put at 17, then OpenPose's 18 body
# points are taken from COCO-WholeBody's: nose, neck, right arm, left arm, right leg, left leg,
# eyes, ears.
OPENPOSE_FROM_COCO = (0, 17, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3)
NECK_FROM = (5, 6)
# After the neck: feet 18-23, face 24-91, left hand 92-112, right hand 113-133.
FACE = range(24, 92)
HANDS = (range(92, 113), range(113, 134))
# util.py draw_bodypose: 17 limbs (1-based point pairs) and OpenPose's 18 colours.
LIMBS = ((2, 3), (2, 6), (3, 4), (4, 5), (6, 7), (7, 8), (2, 9), (9, 10), (10, 11), (2, 12),
         (12, 13), (13, 14), (2, 1), (1, 15), (15, 17), (1, 16), (16, 18))
COLOURS = ((255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0),
           (85, 255, 0), (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255),
           (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255), (170, 0, 255),
           (255, 0, 255), (255, 0, 170), (255, 0, 85))
LIMB_HALF_WIDTH = 4
LIMB_ALPHA = 0.6
JOINT_RADIUS = 4
# util.py draw_handpose: 20 bones from the wrist, each its own hue; blue joints.
HAND_BONES = ((0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (0, 9), (9, 10),
              (10, 11), (11, 12), (0, 13), (13, 14), (14, 15), (15, 16), (0, 17), (17, 18),
              (18, 19), (19, 20))
HAND_JOINT = (0, 0, 255)
FACE_RADIUS = 3
EDGE = 0.01  # util.py's eps: points at the picture's very edge (0, 0) are not drawn


# --- the description ---------------------------------------------------------------------------

@dataclass(frozen=True)
class PoseGraph:
    """One of the two graphs: its file in the folder, input, outputs and fixed input size."""

    file: str
    input_name: str
    output_names: tuple[str, ...]
    input_size: tuple[int, int]  # (height, width)

    def as_json(self) -> dict:
        return {"file": self.file, "input_name": self.input_name,
                "output_names": list(self.output_names), "input_size": list(self.input_size)}


@dataclass(frozen=True)
class PoseDescription:
    detector: PoseGraph
    estimator: PoseGraph
    sources: tuple[str, str] = ("", "")  # the detector's and the estimator's file names
    licence: str | None = LICENCE
    control: str = POSE
    network: str = DWPOSE
    makes: str = MAKES

    def as_json(self) -> dict:
        return {"kind": ANNOTATOR_KIND, "format": DESCRIPTION_FORMAT, "control": self.control,
                "network": self.network, "detector": self.detector.as_json(),
                "estimator": self.estimator.as_json(), "source": list(self.sources),
                "licence": self.licence}

    def save(self, folder: Path) -> None:
        text = json.dumps(self.as_json(), indent=2) + "\n"
        (Path(folder) / DESCRIPTION_FILE).write_text(text, encoding="utf-8")


def is_detector(signature: GraphSignature) -> bool:
    """YOLOX as DWPose ships it: one (1, anchors, 85) output, boxes not yet decoded. The
    "end2end" exports with NMS inside are not read (comfyui_controlnet_aux reads neither)."""
    shapes = list(signature.outputs.values())
    return len(shapes) == 1 and len(shapes[0]) == 3 and shapes[0][-1] == YOLOX_FIELDS


def is_estimator(signature: GraphSignature) -> bool:
    return set(signature.outputs) >= set(POSE_OUTPUTS)


def describe_pose_graphs(graphs: list[Path]) -> PoseDescription:
    """The description of DWPose's detector and estimator among ``graphs`` (told apart by
    their outputs, whatever their names); ModelError in one sentence when one is missing."""
    found: dict[str, tuple[Path, GraphSignature]] = {}
    for graph in graphs:
        signature = read_graph_signature(graph)
        role = "detector" if is_detector(signature) else \
            "estimator" if is_estimator(signature) else None
        if role is None or role in found:
            raise ModelError(f"'{graph.name}' is neither DWPose's person detector nor its pose "
                             f"estimator, or is a second one; keep only yolox_l.onnx and "
                             f"dw-ll_ucoco_384.onnx in the folder.")
        found[role] = (graph, signature)
    if len(found) != 2:
        missing = "person detector (yolox_l.onnx)" if "detector" not in found else \
            "pose estimator (dw-ll_ucoco_384.onnx)"
        raise ModelError(f"The folder lacks DWPose's {missing}; a pose picture needs both "
                         f"graphs, so put them in one folder and import it.")
    detector = _pose_graph(*found["detector"], DETECTOR_FILE, DETECTOR_SIZE)
    estimator = _pose_graph(*found["estimator"], ESTIMATOR_FILE, None)
    return PoseDescription(detector, estimator,
                           (found["detector"][0].name, found["estimator"][0].name))


def _pose_graph(graph: Path, signature: GraphSignature, file: str,
                default: tuple[int, int] | None) -> PoseGraph:
    (input_name, shape), *others = signature.inputs.items()
    height, width = (shape[2], shape[3]) if len(shape) == 4 else (None, None)
    if others or len(shape) != 4:
        raise ModelError(f"'{graph.name}' does not take one picture as DWPose's graphs do.")
    if not (isinstance(height, int) and isinstance(width, int)):
        if default is None:
            raise ModelError(f"'{graph.name}' does not fix its input size as DWPose's pose "
                             f"estimator does (384×288).")
        height, width = default
    outputs = POSE_OUTPUTS if file == ESTIMATOR_FILE else tuple(signature.outputs)
    return PoseGraph(file, input_name, outputs, (height, width))


def is_pose_folder(folder: Path) -> bool:
    """Whether ``folder``'s description names DWPose (False when it cannot be read: the
    one-graph reader then says why)."""
    try:
        data = json.loads((Path(folder) / DESCRIPTION_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("network") == DWPOSE


def read_pose_description(folder: Path) -> PoseDescription:
    """The description of the pose annotator installed in ``folder``; ModelError in one
    sentence when it or a graph is missing or damaged."""
    folder = Path(folder)
    try:
        data = json.loads((folder / DESCRIPTION_FILE).read_text(encoding="utf-8"))
        description = _from_json(data)
    except (OSError, ValueError, KeyError, TypeError):
        raise ModelError(f"The description of annotator '{folder.name}' is damaged.") from None
    if data["format"] > DESCRIPTION_FORMAT:
        raise ModelError(f"Annotator '{folder.name}' was installed by a newer Easel; update "
                         f"Easel or import it again.")
    for graph in (description.detector, description.estimator):
        if not (folder / graph.file).is_file():
            raise ModelError(f"The annotator '{folder.name}' has lost its {graph.file}; "
                             f"import it again.")
    return description


def _from_json(data: dict) -> PoseDescription:
    if data["kind"] != ANNOTATOR_KIND or data["control"] != POSE or \
            not isinstance(data["format"], int):
        raise ValueError("not a pose annotator")
    sources = data.get("source") or ["", ""]
    licence = data.get("licence")
    return PoseDescription(_graph_from_json(data["detector"], DETECTOR_FILE),
                           _graph_from_json(data["estimator"], ESTIMATOR_FILE),
                           (str(sources[0]), str(sources[1])),
                           licence if isinstance(licence, str) else None)


def _graph_from_json(data: dict, file: str) -> PoseGraph:
    size, outputs = data["input_size"], data["output_names"]
    if data["file"] != file or not isinstance(data["input_name"], str) or \
            not all(isinstance(name, str) for name in outputs) or len(size) != 2 or \
            not all(isinstance(side, int) and side > 0 for side in size):
        raise ValueError("damaged graph entry")
    return PoseGraph(file, data["input_name"], tuple(outputs), (size[0], size[1]))


# --- running it ----------------------------------------------------------------------------

def make_pose_picture(folder: Path, rgb: np.ndarray, runtime: RuntimeOptions | None = None,
                      cancel: CancelToken | None = None) -> np.ndarray:
    """The OpenPose picture of the people in ``rgb`` (uint8 H×W×3), at its size; BadRequest
    when no person is found."""
    folder = Path(folder)
    description = read_pose_description(folder)
    verify_manifest(folder)  # the cheap check, as every model's load
    detector = get_session(folder / DETECTOR_FILE, runtime)
    boxes = detect_people(rgb, lambda sample: detector.run(
        {description.detector.input_name: sample}, list(description.detector.output_names),
        cancel)[0], description.detector.input_size)
    if len(boxes) == 0:
        # A black picture (what A1111 gives) would steer the ControlNet to an empty scene and
        # spend a whole generation on it; the user asked for a pose, so say there is none.
        raise BadRequest(NO_PERSON)
    estimator = get_session(folder / ESTIMATOR_FILE, runtime)
    graph = description.estimator
    people = [estimate_pose(rgb, box, lambda crop: estimator.run(
        {graph.input_name: crop}, list(graph.output_names), cancel), graph.input_size)
        for box in boxes]
    return draw_people(people, rgb.shape[:2])


def letterbox(rgb: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, float]:
    """cv_ox_det.py preprocess: the picture scaled by ``ratio`` (its longer side to the
    square's, sides truncated), as cv2's INTER_LINEAR, at the top left of grey 114; float32
    (1, 3, h, w) of 0..255 values (RGB, as comfyui gives it) and the ratio."""
    height, width = rgb.shape[:2]
    ratio = min(size[0] / height, size[1] / width)
    inner = (int(width * ratio), int(height * ratio))
    canvas = np.full((*size, 3), PAD_GREY, np.uint8)
    canvas[:inner[1], :inner[0]] = _resized_like_cv2(rgb, inner)
    return np.ascontiguousarray(canvas.transpose(2, 0, 1)[np.newaxis], np.float32), ratio


def _resized_like_cv2(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """cv2.resize(INTER_LINEAR) to (width, height): bilinear between the nearest pixels, with
    no widening of the filter when shrinking (Pillow's resize would blur as it shrinks)."""
    across, down = rgb.shape[1] / size[0], rgb.shape[0] / size[1]
    image = Image.fromarray(rgb).transform(size, Image.Transform.AFFINE,
                                           (across, 0.0, 0.0, 0.0, down, 0.0),
                                           Image.Resampling.BILINEAR)
    return np.asarray(image)


def detect_people(rgb: np.ndarray, run, size: tuple[int, int] = DETECTOR_SIZE) -> np.ndarray:
    """The people's boxes (n, 4: x0, y0, x1, y1 in the picture's pixels), best first;
    ``run`` gives YOLOX's (1, anchors, 85) output for a letterboxed sample."""
    sample, ratio = letterbox(rgb, size)
    predictions = np.asarray(run(sample), np.float32)
    if predictions.ndim != 3 or predictions.shape[-1] != YOLOX_FIELDS:
        raise GenerationFailed(f"The person detector gave an output of shape "
                               f"{predictions.shape}, not YOLOX's; nothing was made.")
    boxes, scores = decode_yolox(predictions[0], size)
    return person_boxes(boxes / ratio, scores)


def decode_yolox(predictions: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray,
                                                                              np.ndarray]:
    """cv_ox_det.py demo_postprocess: each anchor's centre is (offset + its grid cell) ×
    stride, its size exp(value) × stride, over the 80×80, 40×40 and 20×20 grids in turn;
    the class scores times the objectness. Boxes (x0, y0, x1, y1) in the letterbox's pixels."""
    cells, strides = [], []
    for stride in STRIDES:
        rows, columns = size[0] // stride, size[1] // stride
        ys, xs = np.mgrid[0:rows, 0:columns]
        cells.append(np.stack([xs.ravel(), ys.ravel()], axis=1))
        strides.append(np.full((rows * columns, 1), stride))
    grid, stride = np.concatenate(cells).astype(np.float32), np.concatenate(strides)
    if len(grid) != len(predictions):
        raise GenerationFailed(f"The person detector gave {len(predictions)} anchors, not the "
                               f"{len(grid)} of YOLOX at {size[1]}×{size[0]}; nothing was made.")
    centres = (predictions[:, :2] + grid) * stride
    sides = np.exp(predictions[:, 2:4].astype(np.float64)) * stride
    boxes = np.concatenate([centres - sides / 2, centres + sides / 2], axis=1)
    return boxes, predictions[:, 4:5] * predictions[:, 5:]


def person_boxes(boxes: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """cv_ox_det.py multiclass_nms then inference_detector: NMS is class by class, so only
    the person class (0) matters: scores above 0.1 go through NMS at 0.45, and of those the
    ones above 0.3 are people."""
    person = scores[:, 0]
    candidates = person > SCORE_FLOOR
    boxes, person = boxes[candidates], person[candidates]
    kept = non_maximum_suppression(boxes, person, OVERLAP_LIMIT)
    return np.array([boxes[index] for index in kept if person[index] > PERSON_SCORE],
                    np.float64).reshape(-1, 4)


def non_maximum_suppression(boxes: np.ndarray, scores: np.ndarray,
                            limit: float) -> list[int]:
    """cv_ox_det.py nms: best first, dropping boxes that overlap a kept one by more than
    ``limit`` (areas counted in whole pixels, +1 on each side, as there)."""
    areas = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
    order = list(np.argsort(scores)[::-1])
    kept: list[int] = []
    while order:
        best, rest = order[0], np.array(order[1:], int)
        kept.append(int(best))
        low = np.maximum(boxes[best, :2], boxes[rest, :2])
        high = np.minimum(boxes[best, 2:], boxes[rest, 2:])
        inter = np.prod(np.maximum(0.0, high - low + 1), axis=1)
        overlap = inter / (areas[best] + areas[rest] - inter)
        order = [int(index) for index in rest[overlap <= limit]]
    return kept


def crop_box(box: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """cv_ox_pose.py bbox_xyxy2cs and _fix_aspect_ratio: the box's centre, and its (width,
    height) grown by 1.25 then widened or heightened to the estimator's aspect."""
    centre = (box[:2] + box[2:]) / 2
    width, height = (box[2:] - box[:2]) * BOX_PADDING
    aspect = size[1] / size[0]
    scale = (width, width / aspect) if width > height * aspect else (height * aspect, height)
    return centre, np.array(scale, np.float64)


def crop_person(rgb: np.ndarray, centre: np.ndarray, scale: np.ndarray,
                size: tuple[int, int]) -> np.ndarray:
    """cv_ox_pose.py top_down_affine (no rotation): the region ``scale`` wide and high around
    ``centre`` mapped onto the estimator's (height, width), bilinear, black outside; as uint8.

    warpAffine puts pixel centres at whole numbers, Pillow at halves, so the offset here is
    cv2's plus half a pixel less half a scaled one."""
    height, width = size
    step = float(scale[0]) / width  # one crop pixel in the picture's pixels, both ways
    left = float(centre[0]) - step * width / 2
    top = float(centre[1]) - step * height / 2
    shift = 0.5 - 0.5 * step
    crop = Image.fromarray(rgb).transform(
        (width, height), Image.Transform.AFFINE,
        (step, 0.0, left + shift, 0.0, step, top + shift), Image.Resampling.BILINEAR)
    return np.asarray(crop)


def estimate_pose(rgb: np.ndarray, box: np.ndarray, run,
                  size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """One person's 133 whole-body keypoints (picture pixels) and scores; ``run`` gives the
    estimator's (simcc_x, simcc_y) for a normalised crop."""
    centre, scale = crop_box(box, size)
    crop = crop_person(rgb, centre, scale, size).astype(np.float32)
    sample = (crop - np.float32(POSE_MEAN)) / np.float32(POSE_STD)
    simcc_x, simcc_y = run(np.ascontiguousarray(sample.transpose(2, 0, 1)[np.newaxis]))
    points, scores = decode_simcc(np.asarray(simcc_x)[0], np.asarray(simcc_y)[0])
    # cv_ox_pose.py postprocess: crop pixels back to the picture's.
    picture_points = points / np.array([size[1], size[0]]) * scale + centre - scale / 2
    return picture_points, scores


def decode_simcc(simcc_x: np.ndarray, simcc_y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """cv_ox_pose.py get_simcc_maximum and decode: each keypoint at the maxima of its x and y
    scores divided by the split ratio 2.0, its score the smaller maximum; (-1, -1) where that
    score is not above 0 (then divided too, as there)."""
    locations = np.stack([simcc_x.argmax(axis=-1), simcc_y.argmax(axis=-1)], axis=-1)
    scores = np.minimum(simcc_x.max(axis=-1), simcc_y.max(axis=-1))
    locations = np.where((scores <= 0)[..., np.newaxis], -1, locations).astype(np.float64)
    return locations / SIMCC_SPLIT, scores


def openpose_points(points: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """wholebody.py: the neck inserted at 17 (the shoulders' mid-point, score 1 when both
    shoulders are above 0.3 else 0), then the 18 body points in OpenPose's order, followed by
    the rest (feet, face, hands) as they were."""
    neck = points[list(NECK_FROM)].mean(axis=0)
    neck_score = float(all(scores[index] > KEYPOINT_SCORE for index in NECK_FROM))
    points = np.insert(points, 17, neck, axis=0)
    scores = np.insert(scores, 17, neck_score)
    order = list(OPENPOSE_FROM_COCO) + list(range(18, len(points)))
    return points[order], scores[order]


# --- drawing -------------------------------------------------------------------------------

def draw_people(people: list[tuple[np.ndarray, np.ndarray]],
                size: tuple[int, int]) -> np.ndarray:
    """controlnet_aux 0.0.10 dwpose: drawn on black at the detection size (shorter side 512),
    then resized (bilinear) to the picture's ``size`` (height, width); uint8 H×W×3."""
    factor = DRAW_SIDE / min(size)
    canvas_size = (max(1, round(size[1] * factor)), max(1, round(size[0] * factor)))
    canvas = Image.new("RGB", canvas_size)
    draw = ImageDraw.Draw(canvas)
    for points, scores in people:
        body, body_scores = openpose_points(points * factor, scores)
        shown = body_scores >= KEYPOINT_SCORE
        draw_body(draw, body, shown)
        for hand in HANDS:
            draw_hand(draw, body[list(hand)], shown[list(hand)])
        # wholebody.py format_result: the face's 68 points and the two eyes, when any shows.
        face = list(FACE) + [14, 15] if shown[list(FACE)].any() else []
        draw_face(draw, body[face], shown[face])
    if canvas.size != (size[1], size[0]):
        canvas = canvas.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    return np.asarray(canvas)


def draw_body(draw: ImageDraw.ImageDraw, points: np.ndarray, shown: np.ndarray) -> None:
    """util.py draw_bodypose: each limb a filled ellipse 4 pixels half-wide at 0.6 of its
    colour (on black, as blending), then each joint a disc of radius 4 in full colour."""
    for (first, second), colour in zip(LIMBS, COLOURS[:len(LIMBS)], strict=True):
        if shown[first - 1] and shown[second - 1]:
            dim = tuple(int(channel * LIMB_ALPHA) for channel in colour)
            draw.polygon(limb_polygon(points[first - 1], points[second - 1]), fill=dim)
    for point, visible, colour in zip(points[:18], shown[:18], COLOURS, strict=True):
        if visible:
            _disc(draw, point, JOINT_RADIUS, colour)


def limb_polygon(start: np.ndarray, end: np.ndarray) -> list[tuple[int, int]]:
    """cv2.ellipse2Poly((int(mid x), int(mid y)), (int(length / 2), 4), int(angle), 0, 360,
    1): a point per whole degree, rounded, repeats dropped."""
    centre_x, centre_y = int((start[0] + end[0]) / 2), int((start[1] + end[1]) / 2)
    half_length = int(math.hypot(*(start - end)) / 2)
    # util.py takes atan2 of the y difference over the x difference: the limb's direction.
    angle = math.radians(int(math.degrees(math.atan2(start[1] - end[1], start[0] - end[0]))))
    cos, sin = math.cos(angle), math.sin(angle)
    polygon: list[tuple[int, int]] = []
    for degree in range(361):
        x = half_length * math.cos(math.radians(degree))
        y = LIMB_HALF_WIDTH * math.sin(math.radians(degree))
        point = (round(centre_x + x * cos - y * sin), round(centre_y + x * sin + y * cos))
        if not polygon or point != polygon[-1]:
            polygon.append(point)
    return polygon


def draw_hand(draw: ImageDraw.ImageDraw, points: np.ndarray, shown: np.ndarray) -> None:
    """util.py draw_handpose: each bone a 2-pixel line of its own hue (hue = bone / 20),
    then blue joints of radius 4; points at (0, 0) are left out."""
    spots = [(int(x), int(y)) for x, y in points]
    for index, (first, second) in enumerate(HAND_BONES):
        ends = (spots[first], spots[second])
        if shown[first] and shown[second] and all(min(end) > EDGE for end in ends):
            red, green, blue = colorsys.hsv_to_rgb(index / len(HAND_BONES), 1.0, 1.0)
            colour = (round(red * 255), round(green * 255), round(blue * 255))
            draw.line(ends, fill=colour, width=2)
    for spot, visible in zip(spots, shown, strict=True):
        if visible and min(spot) > EDGE:
            _disc(draw, spot, JOINT_RADIUS, HAND_JOINT)


def draw_face(draw: ImageDraw.ImageDraw, points: np.ndarray, shown: np.ndarray) -> None:
    """util.py draw_facepose: each face point a white disc of radius 3."""
    for (x, y), visible in zip(points, shown, strict=True):
        if visible and min(int(x), int(y)) > EDGE:
            _disc(draw, (int(x), int(y)), FACE_RADIUS, (255, 255, 255))


def _disc(draw: ImageDraw.ImageDraw, point, radius: int, colour: tuple[int, int, int]) -> None:
    """cv2.circle(..., thickness=-1) at the point's whole pixel: the pixels within
    ``radius`` of it (Pillow's ellipse in the 2r+1 square)."""
    x, y = int(point[0]), int(point[1])
    draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=colour)
