"""Running an installed safety checker on pictures: each picture made into the graph's input
as transformers' image processor makes it (for the Stable Diffusion checker, the CLIPImageProcessor
diffusers' pipelines feed it), then a verdict read as the description says."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from engine.errors import BadRequest, GenerationFailed
from engine.images import PictureInput, picture_pixels
from engine.manifest import verify_manifest
from engine.runtime import CancelToken, RuntimeOptions, get_session
from engine.safety.description import (
    GRAPH_FILE,
    STABLE_DIFFUSION,
    Preprocessing,
    SafetyCheckerDescription,
    read_safety_description,
)

MAX_SIDE = 8192  # as every picture Easel edits
_RESAMPLE = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
             "bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS,
             "box": Image.Resampling.BOX, "hamming": Image.Resampling.HAMMING}


@dataclass(frozen=True)
class SafetyVerdict:
    flagged: bool  # the checker judges the picture unsafe
    # How unsafe: the Stable Diffusion checker's largest concept score (flagged above 0), or a
    # classifier's probability of its unsafe classes (flagged at 0.5 and above).
    score: float


def check_pictures(folder: Path, pictures: Sequence[PictureInput],
                   runtime: RuntimeOptions | None = None,
                   cancel: CancelToken | None = None) -> list[SafetyVerdict]:
    """The verdict of the safety checker installed in ``folder`` on each picture (uint8
    H×W×3 or H×W×4 pixels, or PIL images), in order; BadRequest in one sentence for a
    picture it cannot read, ModelError for a damaged checker."""
    folder = Path(folder)
    description = read_safety_description(folder)
    verify_manifest(folder)  # the cheap check, as every model's load
    inputs = [network_input(_rgb(picture), description) for picture in pictures]
    session = get_session(folder / GRAPH_FILE, runtime)
    input_type = session.input_type(description.input_name)
    outputs = [description.score_output, *filter(None, [description.flag_output])]
    verdicts = []
    # One picture a run: classifiers are often exported with a batch of one.
    for values in inputs:
        results = session.run({description.input_name: values.astype(input_type)}, outputs,
                              cancel)
        verdicts.append(read_verdict(description, *results))
    return verdicts


def check_picture(folder: Path, picture: PictureInput, runtime: RuntimeOptions | None = None,
                  cancel: CancelToken | None = None) -> SafetyVerdict:
    """The verdict of the safety checker installed in ``folder`` on one picture."""
    return check_pictures(folder, [picture], runtime, cancel)[0]


def network_input(rgb: np.ndarray, description: SafetyCheckerDescription) -> np.ndarray:
    """float32 (1, 3, H, W), or (1, H, W, 3) for an "nhwc" graph, from uint8 (h, w, 3)."""
    values = preprocess(rgb, description.preprocessing)
    layout = (2, 0, 1) if description.layout == "nchw" else (0, 1, 2)
    return np.ascontiguousarray(values.transpose(layout)[np.newaxis], dtype=np.float32)


def preprocess(rgb: np.ndarray, rules: Preprocessing) -> np.ndarray:
    """float32 (H, W, 3) as transformers' PIL image processors make it: resized by PIL (the
    short side to ``shortest_edge``, the long side truncated in proportion, or straight to the
    size), the centre kept, then rescaled and normalised."""
    height, width = rules.size
    if rules.shortest_edge is None:
        target = (width, height)  # PIL's (width, height)
    else:
        short, long = sorted(rgb.shape[:2])
        long = int(rules.shortest_edge * long / short)
        target = (rules.shortest_edge, long) if rgb.shape[1] <= rgb.shape[0] else (
            long, rules.shortest_edge)
    resized = np.asarray(Image.fromarray(rgb).resize(target, _RESAMPLE[rules.resample],
                                                     reducing_gap=None))
    if rules.shortest_edge is not None and rules.crop:
        resized = _centre(resized, height, width)
    if resized.shape[:2] != (height, width):
        raise BadRequest(f"The picture is {resized.shape[1]}×{resized.shape[0]} pixels after "
                         f"resizing, but the safety checker reads {width}×{height}.")
    mean, std = np.asarray(rules.mean, np.float32), np.asarray(rules.std, np.float32)
    return (resized.astype(np.float32) * np.float32(rules.rescale) - mean) / std


def _centre(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """The centre ``height``×``width``, padded with black where the picture is smaller (as
    transformers' center_crop pads)."""
    rows, columns = pixels.shape[:2]
    if rows < height or columns < width:
        padded = np.zeros((max(rows, height), max(columns, width), 3), np.uint8)
        top, left = (padded.shape[0] - rows) // 2, (padded.shape[1] - columns) // 2
        padded[top:top + rows, left:left + columns] = pixels
        pixels, rows, columns = padded, padded.shape[0], padded.shape[1]
    top, left = (rows - height) // 2, (columns - width) // 2
    return pixels[top:top + height, left:left + width]


def read_verdict(description: SafetyCheckerDescription, scores: np.ndarray,
                 flags: np.ndarray | None = None) -> SafetyVerdict:
    """The verdict on one picture from the graph's outputs for it (a batch of one)."""
    values = np.asarray(scores, np.float64).reshape(-1)
    if not np.isfinite(values).all():
        raise GenerationFailed("The safety checker produced invalid values (not-a-number); "
                               "try the CPU provider.")
    if description.activation == "softmax":
        values = np.exp(values - values.max())
        values = values / values.sum()
    elif description.activation == "sigmoid":
        values = 1.0 / (1.0 + np.exp(-values))
    picked = values[list(description.unsafe_classes)] if description.unsafe_classes else values
    score = float(picked.sum()) if description.unsafe_classes else float(picked.max())
    if flags is not None:
        flagged = bool(np.asarray(flags).reshape(-1)[0])
    elif description.network == STABLE_DIFFUSION:
        flagged = score > description.threshold
    else:
        flagged = score >= description.threshold
    return SafetyVerdict(flagged, score)


def _rgb(picture: PictureInput) -> np.ndarray:
    """The picture's RGB, a transparent one laid over white first (as transformers'
    convert_rgb does, so the checker sees what its image processor would)."""
    if isinstance(picture, np.ndarray) and picture.ndim == 3 and picture.shape[2] == 4 \
            and picture.dtype == np.uint8:
        picture = Image.fromarray(picture, "RGBA")
    if isinstance(picture, Image.Image) and picture.mode != "RGB":
        picture_pixels(picture, MAX_SIDE)  # the size, before decoding
        if "A" in picture.getbands() or picture.info.get("transparency") is not None:
            white = Image.new("RGBA", picture.size, (255, 255, 255, 255))
            picture = Image.alpha_composite(white, picture.convert("RGBA"))
        picture = picture.convert("RGB")
    return np.ascontiguousarray(picture_pixels(picture, MAX_SIDE))
