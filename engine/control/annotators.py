"""Annotators: ONNX networks that make a control picture (a depth map, line art, soft edges)
from a user's picture, for the ControlNets trained on such pictures.

An installed annotator's folder holds ``model.onnx`` (+ its weights file) and ``easel.json``
marked ``"kind": "annotator"``: the control it makes, the network it is (which fixes the
pre- and post-processing), its input and output names, the input size its graph fixes (None
when it takes any), the source file and the licence. Everything here reads the graph from
the protobuf (``engine.control.description.read_graph_signature``) and runs it with ONNX
Runtime: no torch, no onnx.

The pre- and post-processing of each network follows the reference annotators that
ControlNet users know, read from controlnet_aux 0.0.10 (PyPI, the lllyasviel annotators) and
comfyui_controlnet_aux (Depth Anything); each ``Network`` says which. Where they resize with
OpenCV, Pillow's filter of the same name is used here, so results differ from theirs by a
level or two of 255, not in kind. Pose (DWPose: a person detector and a pose estimator, two
graphs, and the skeleton drawn) is made by ``engine.control.pose``, whose installed folder
this module's readers hand on to it.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from engine.control.description import (
    GraphSignature,
    read_graph_signature,
    read_installed_graph,
)
from engine.errors import BadRequest, GenerationFailed, ModelError
from engine.manifest import verify_manifest
from engine.runtime import CancelToken, RuntimeOptions, get_session

if TYPE_CHECKING:
    from engine.control.pose import PoseDescription

ANNOTATOR_KIND = "annotator"
DESCRIPTION_FILE = "easel.json"  # one per model folder, as every kind's
GRAPH_FILE = "model.onnx"
DESCRIPTION_FORMAT = 1
POSE = "openpose"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)


# --- the networks ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Network:
    """How one annotator network reads a picture and what its output means.

    The picture goes in as ``(rgb / 255 - mean) / std`` (BGR order when ``bgr``), resized so
    its shorter side is ``side`` and both sides are multiples of ``multiple`` when the graph
    takes any size (exactly to the graph's size when it fixes one). ``output`` says how the
    result becomes grey 0..255: "depth" (min-max), "lines" (dark lines on white, inverted),
    "hed" (several logit maps, averaged, sigmoid), "edges" (a probability)."""

    name: str
    control: str
    side: int
    multiple: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    output: str
    makes: str
    bgr: bool = False
    # Depth Anything's Resize(keep_aspect_ratio, resize_method="lower_bound") never goes below
    # ``side``; controlnet_aux's resize_image rounds to the nearest multiple.
    lower_bound: bool = False
    resample: Image.Resampling = Image.Resampling.LANCZOS
    licence: str | None = None


NETWORKS: dict[str, Network] = {network.name: network for network in (
    # comfyui_controlnet_aux depth_anything (and LiheYoung/Depth-Anything's run.py): Resize to
    # 518, multiple of 14, lower bound, cv2.INTER_CUBIC; ImageNet mean/std; the relative
    # inverse depth resized back (bilinear) and min-max normalised to 0..255.
    Network("depth_anything", "depth", 518, 14, IMAGENET_MEAN, IMAGENET_STD, "depth",
            "a depth map (near is white)", lower_bound=True,
            resample=Image.Resampling.BICUBIC, licence="Apache-2.0"),
    # controlnet_aux midas: rgb / 127.5 - 1 (mean = std = 0.5); the DPT output min-max
    # normalised to 0..255. ONNX ports fix 384×384, the DPT-Hybrid's training size.
    Network("midas", "depth", 384, 32, HALF, HALF, "depth", "a depth map (near is white)",
            licence="MIT"),
    # controlnet_aux lineart (informative-drawings' "sk_model"): rgb / 255 in, a sigmoid out
    # that is 1 on white paper; * 255, then 255 - x: white lines on black.
    Network("informative_drawings", "lineart", 512, 8, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0),
            "lines", "line art (white lines on black)", licence="MIT"),
    # controlnet_aux hed (ControlNetHED_Apache2): raw 0..255 RGB in (std 1/255); five
    # projections, each resized to the input (bilinear), averaged, sigmoid, * 255.
    Network("hed", "softedge", 512, 16, (0.0, 0.0, 0.0), (1 / 255, 1 / 255, 1 / 255), "hed",
            "soft edges (white on black)", licence="Apache-2.0"),
    # controlnet_aux pidi: BGR / 255 in; the last output (the fused map) is already a
    # probability; * 255.
    Network("pidinet", "softedge", 512, 16, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), "edges",
            "soft edges (white on black)", bgr=True),
)}
# Networks by the words their files carry ("depth_anything_vitb14.onnx",
# "dpt_hybrid-midas-501f0c75.onnx", "sk_model.onnx", "ControlNetHED.onnx",
# "table5_pidinet.onnx"); DWPose's two graphs ("yolox_l.onnx", "dw-ll_ucoco_384.onnx").
_NAME_WORDS: tuple[tuple[frozenset[str], str], ...] = (
    (frozenset({"dwpose", "ucoco", "yolox", "openpose"}), POSE),
    (frozenset({"depthanything"}), "depth_anything"),
    (frozenset({"midas", "dpt"}), "midas"),
    (frozenset({"sk", "lineart", "informative"}), "informative_drawings"),
    (frozenset({"hed", "controlnethed"}), "hed"),
    (frozenset({"pidinet", "pidi"}), "pidinet"),
)
# The network a control falls back to when nothing else says: the one most shared today.
_BY_CONTROL = {"depth": "depth_anything", "lineart": "informative_drawings",
               "softedge": "hed"}
ANNOTATOR_CONTROLS = ("depth", "lineart", "softedge", POSE)  # what annotators make
# DWPose's pose estimator (RTMPose, SimCC heads) and its YOLOX person detector (80 COCO
# classes + box + objectness per anchor).
_POSE_OUTPUTS = frozenset({"simcc_x", "simcc_y"})
_YOLOX_FIELDS = 85


# --- telling an annotator graph by its content -----------------------------------------------

# YuNet's outputs (engine.faces.detect), named here so a face detector is never an annotator.
FACE_DETECTOR_OUTPUTS = frozenset(f"{part}_{stride}" for part in ("cls", "obj", "bbox", "kps")
                                  for stride in (8, 16, 32))


def looks_like_annotator(signature: GraphSignature) -> bool:
    """One picture in, and out only one-channel maps (a depth map, lines, edge maps) or
    DWPose's outputs. An upscaler gives a three-channel picture and is never claimed."""
    if len(signature.inputs) != 1:
        return False
    (shape,) = signature.inputs.values()
    if len(shape) != 4 or isinstance(shape[1], int) and shape[1] != 3:
        return False
    if set(signature.outputs) & FACE_DETECTOR_OUTPUTS:  # YuNet's: a face detector's
        return False
    return _is_pose(signature) or all(_is_map(out) for out in signature.outputs.values())


def _is_map(shape: tuple) -> bool:
    return len(shape) == 3 or len(shape) == 4 and shape[1] == 1


def _is_pose(signature: GraphSignature) -> bool:
    shapes = list(signature.outputs.values())
    yolox = len(shapes) == 1 and len(shapes[0]) == 3 and shapes[0][-1] == _YOLOX_FIELDS
    return set(signature.outputs) >= _POSE_OUTPUTS or yolox


def network_of(signature: GraphSignature, names: tuple[str, ...],
               control: str | None = None) -> Network:
    """The annotator network of a graph with ``signature``, told by its outputs, then by the
    words of ``names`` (file and folder names), then by ``control`` when the user says it;
    ModelError in one sentence saying what is missing or refused."""
    shown = names[0] if names else "the graph"
    if not looks_like_annotator(signature):
        raise ModelError(f"'{shown}' is not an annotator: an annotator takes one picture and "
                         f"gives one-channel maps (depth, lines or edges).")
    found = POSE if _is_pose(signature) else _network_in_names(names) or \
        _network_by_outputs(signature) or (_BY_CONTROL.get(control) if control else None)
    if found == POSE:
        raise ModelError(f"'{shown}' is one of DWPose's two graphs, and a pose picture needs "
                         f"both its person detector and its pose estimator: put "
                         f"yolox_l.onnx and dw-ll_ucoco_384.onnx in one folder and import "
                         f"that folder.")
    if found is None:
        raise ModelError(f"Neither the tensor names nor the file name of '{shown}' say which "
                         f"annotator it is; name the file after its network (depth_anything, "
                         f"dpt_hybrid-midas, sk_model for line art, ControlNetHED or "
                         f"pidinet) and import it again.")
    network = NETWORKS[found]
    if control is not None and control != network.control:
        raise ModelError(f"'{shown}' is a {network.name} annotator, which makes "
                         f"{network.control} pictures, not {control} ones.")
    return network


def _network_in_names(names: tuple[str, ...]) -> str | None:
    for name in names:
        words = {word for word in re.split(r"[^a-z0-9]+", name.lower()) if word}
        if {"depth", "anything"} <= words:
            words.add("depthanything")
        found = next((network for keys, network in _NAME_WORDS if keys & words), None)
        if found is not None:
            return found
    return None


def _network_by_outputs(signature: GraphSignature) -> str | None:
    """ControlNetHED gives five maps; a graph that names its output "depth" is a depth
    network, Depth Anything unless it fixes a side that is not a multiple of 14 (MiDaS)."""
    if len(signature.outputs) == 5:
        return "hed"
    if any("depth" in name.lower() for name in signature.outputs):
        fixed = _fixed_size(signature)
        return "midas" if fixed is not None and fixed[0] % 14 else "depth_anything"
    return None


def _fixed_size(signature: GraphSignature) -> tuple[int, int] | None:
    (shape,) = signature.inputs.values()
    height, width = shape[2], shape[3]
    return (height, width) if isinstance(height, int) and isinstance(width, int) else None


def licence_of(network: Network, names: tuple[str, ...]) -> str | None:
    """The licence the network's weights come under: Depth Anything V2's Base, Large and
    Giant weights are CC-BY-NC-4.0, its Small ones and V1's Apache-2.0."""
    words = {word for name in names for word in re.split(r"[^a-z0-9]+", name.lower())}
    if network.name == "depth_anything" and "v2" in words and not words & {"vits", "small"}:
        return "CC-BY-NC-4.0"
    return network.licence


# --- the description -------------------------------------------------------------------------

@dataclass(frozen=True)
class AnnotatorDescription:
    control: str  # "depth", "lineart" or "softedge"
    network: str  # a key of NETWORKS
    input_name: str
    output_names: tuple[str, ...]
    input_size: tuple[int, int] | None  # (height, width) the graph fixes; None: any
    source: str = ""
    licence: str | None = None

    @property
    def settings(self) -> Network:
        return NETWORKS[self.network]

    def as_json(self) -> dict:
        settings = self.settings
        return {"kind": ANNOTATOR_KIND, "format": DESCRIPTION_FORMAT, "control": self.control,
                "network": self.network, "input_name": self.input_name,
                "output_names": list(self.output_names),
                "input_size": None if self.input_size is None else list(self.input_size),
                "normalisation": {"mean": list(settings.mean), "std": list(settings.std),
                                  "channels": "BGR" if settings.bgr else "RGB"},
                "source": self.source, "licence": self.licence}

    def save(self, folder: Path) -> None:
        text = json.dumps(self.as_json(), indent=2) + "\n"
        (Path(folder) / DESCRIPTION_FILE).write_text(text, encoding="utf-8")


def describe_graph(graph: Path, names: tuple[str, ...],
                   control: str | None = None) -> AnnotatorDescription:
    """The description of the annotator graph ``graph``, from its signature and ``names``."""
    signature = read_graph_signature(graph)
    network = network_of(signature, names, control)
    (input_name,) = signature.inputs
    return AnnotatorDescription(network.control, network.name, input_name,
                                tuple(signature.outputs), _fixed_size(signature),
                                names[0] if names else "", licence_of(network, names))


def read_annotator_description(folder: Path) -> AnnotatorDescription | PoseDescription:
    """The description of the annotator installed in ``folder`` (a pose annotator's two
    graphs are described by engine.control.pose); ModelError in one sentence when it or a
    graph is missing or damaged."""
    from engine.control.pose import is_pose_folder, read_pose_description  # builds on this

    if is_pose_folder(folder):
        return read_pose_description(folder)
    return read_installed_graph(folder, "annotator", _from_json)


def _from_json(data: object, name: str) -> AnnotatorDescription:
    damaged = ModelError(f"The description of annotator '{name}' is damaged.")
    if not isinstance(data, dict) or data.get("kind") != ANNOTATOR_KIND:
        raise damaged
    if not isinstance(data.get("format"), int) or data["format"] > DESCRIPTION_FORMAT:
        raise ModelError(f"Annotator '{name}' was installed by a newer Easel; update Easel or "
                         f"import it again.")
    network, outputs, size = data.get("network"), data.get("output_names"), \
        data.get("input_size")
    if (network not in NETWORKS or data.get("control") != NETWORKS[network].control
            or not isinstance(data.get("input_name"), str) or not isinstance(outputs, list)
            or not outputs or not all(isinstance(out, str) for out in outputs)
            or not (size is None or _is_size(size))
            or not (data.get("licence") is None or isinstance(data["licence"], str))):
        raise damaged
    return AnnotatorDescription(data["control"], network, data["input_name"], tuple(outputs),
                                None if size is None else (size[0], size[1]),
                                str(data.get("source", "")), data.get("licence"))


def _is_size(size: object) -> bool:
    return isinstance(size, list) and len(size) == 2 and all(
        isinstance(side, int) and not isinstance(side, bool) and side > 0 for side in size)


# --- running one ----------------------------------------------------------------------------

def annotate(folder: Path, rgb: np.ndarray, runtime: RuntimeOptions | None = None,
             cancel: CancelToken | None = None) -> np.ndarray:
    """The control picture the annotator installed in ``folder`` makes from ``rgb`` (uint8
    H×W×3): uint8 H×W×3 grey, at the picture's size."""
    from engine.control.pose import make_pose_picture  # builds on this module

    folder = Path(folder)
    description = read_annotator_description(folder)
    if not isinstance(description, AnnotatorDescription):
        return make_pose_picture(folder, rgb, runtime, cancel)
    verify_manifest(folder)  # the cheap check, as every model's load
    settings = description.settings
    height, width = rgb.shape[:2]
    network_size = description.input_size or network_input_size(settings, height, width)
    session = get_session(folder / GRAPH_FILE, runtime)
    sample = network_input(rgb, settings, network_size)
    outputs = session.run({description.input_name: sample}, list(description.output_names),
                          cancel)
    grey = grey_map([_plane(output) for output in outputs], settings, network_size,
                    (height, width))
    return np.repeat(grey[..., np.newaxis], 3, axis=2)


def network_input_size(network: Network, height: int, width: int) -> tuple[int, int]:
    """(height, width) a graph that takes any size is given: the shorter side scaled to
    ``network.side``, both sides then made multiples of ``network.multiple``."""
    scale = network.side / min(height, width)

    def fit(length: int) -> int:
        multiple = network.multiple
        sized = round(length * scale / multiple) * multiple
        if network.lower_bound and sized < length * scale:
            sized = math.ceil(length * scale / multiple) * multiple
        return max(multiple, sized)

    return fit(height), fit(width)


def network_input(rgb: np.ndarray, network: Network, size: tuple[int, int]) -> np.ndarray:
    """float32 (1, 3, height, width): the picture resized and normalised as ``network``
    reads it."""
    resized = Image.fromarray(rgb).resize((size[1], size[0]), network.resample)
    pixels = np.asarray(resized, dtype=np.float32) / np.float32(255)
    if network.bgr:
        pixels = pixels[..., ::-1]
    pixels = (pixels - np.float32(network.mean)) / np.float32(network.std)
    return np.ascontiguousarray(pixels.transpose(2, 0, 1)[np.newaxis], dtype=np.float32)


def _plane(output: np.ndarray) -> np.ndarray:
    """A (1, H, W) or (1, 1, H, W) output as float32 H×W."""
    if output.ndim not in (3, 4) or output.shape[0] != 1 or output.ndim == 4 and \
            output.shape[1] != 1:
        raise GenerationFailed(f"The annotator gave an output of shape {output.shape}, not "
                               f"a one-channel map; nothing was made.")
    plane = output.reshape(output.shape[-2:]).astype(np.float32)
    if not np.isfinite(plane).all():
        raise GenerationFailed("The annotator produced invalid values (not-a-number); "
                               "nothing was made. Try the CPU provider.")
    return plane


def grey_map(planes: list[np.ndarray], network: Network, network_size: tuple[int, int],
             picture_size: tuple[int, int]) -> np.ndarray:
    """The network's output maps as uint8 grey at ``picture_size`` (height, width)."""
    if network.output == "hed" and not _baked_sigmoid(planes):
        # Each projection back to the input's size, averaged, then the sigmoid.
        mean = np.mean([_resized(plane, network_size) for plane in planes], axis=0)
        values = 255.0 / (1.0 + np.exp(-mean.astype(np.float64)))
        return _rounded(_resized(values.astype(np.float32), picture_size))
    plane = _resized(planes[-1], picture_size)  # pidinet's fused map is its last output
    if network.output == "depth":
        # Resized back first, then normalised, so the full 0..255 range is used at the
        # picture's size (comfyui's Depth Anything order; controlnet_aux's MiDaS normalises
        # first and resizes the uint8 map).
        low, high = float(plane.min()), float(plane.max())
        if high <= low:
            return np.zeros(picture_size, np.uint8)
        return _rounded((plane - low) / (high - low) * 255.0)
    values = np.clip(plane * 255.0, 0.0, 255.0)
    return _rounded(255.0 - values if network.output == "lines" else values)


def _baked_sigmoid(planes: list[np.ndarray]) -> bool:
    """A HED port with one output that lies in [0, 1] has the sigmoid (and the averaging)
    inside its graph: its output is already the edge probability. ControlNetHED's own five
    projections are logits, far below 0 on plain ground."""
    return len(planes) == 1 and float(planes[0].min()) >= 0.0 and float(planes[0].max()) <= 1.0


def _resized(plane: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A float map resized bilinearly to (height, width) (cv2.INTER_LINEAR in the
    references); the same size comes back unchanged."""
    if plane.shape == size:
        return plane.astype(np.float32)
    image = Image.fromarray(plane.astype(np.float32))
    return np.asarray(image.resize((size[1], size[0]), Image.Resampling.BILINEAR))


def _rounded(values: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(values, 0.0, 255.0)).astype(np.uint8)


def check_annotator_for(folder: Path, control: str) -> AnnotatorDescription | PoseDescription:
    """The annotator in ``folder`` when it makes ``control`` pictures; BadRequest else."""
    description = read_annotator_description(folder)
    if description.control != control:
        raise BadRequest(f"The annotator '{Path(folder).name}' makes {description.control} "
                         f"pictures, not {control} ones.")
    return description
