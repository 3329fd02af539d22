"""An installed safety checker: ``model.onnx`` and ``easel.json`` marked
``"kind": "safety_checker"``, which says how to make the graph's input from a picture and how to
read a verdict from its outputs; and how a lone ONNX graph is told to be an image classifier.

Two networks are installed:
- "stable-diffusion": diffusers' ``StableDiffusionSafetyChecker`` (CompVis/stable-diffusion-
  safety-checker), exported by engine.export.safety_checker: ``clip_input`` (N, 3, S, S) ->
  ``has_nsfw_concepts`` (N,) bool and ``concept_score`` (N,) float, the largest concept score
  as diffusers' ``forward_onnx`` computes it (flagged exactly when it is above 0);
- "classifier": any ONNX image classifier with one picture in and per-picture scores out
  (N, classes) or (N,); its score is the probability of the classes named unsafe, after the
  softmax or sigmoid the graph lacks, and a picture is flagged at 0.5 or more.

Read without torch or onnx (the engine's side); the signature test reads the protobuf.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from engine.control.description import GraphSignature, read_installed_graph
from engine.errors import ModelError

SAFETY_CHECKER_KIND = "safety_checker"
DESCRIPTION_FILE = "easel.json"
GRAPH_FILE = "model.onnx"
DESCRIPTION_FORMAT = 1
STABLE_DIFFUSION, CLASSIFIER = "stable-diffusion", "classifier"
NETWORKS = (STABLE_DIFFUSION, CLASSIFIER)
ACTIVATIONS = ("none", "softmax", "sigmoid")
LAYOUTS = ("nchw", "nhwc")
RESAMPLES = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")
# CLIPImageProcessor's defaults (preprocessor_config.json of the CompVis checker).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLASSIFIER_THRESHOLD = 0.5


@dataclass(frozen=True)
class Preprocessing:
    """How a picture becomes the graph's input, as transformers' image processors do it:
    resized (the short side to ``shortest_edge``, or to exactly ``size``), centre-cropped to
    ``crop``, multiplied by ``rescale``, then (x - mean) / std."""

    size: tuple[int, int]  # (height, width) the graph reads
    shortest_edge: int | None = None  # None: resized straight to ``size``
    crop: bool = True  # with ``shortest_edge``: the centre ``size`` is kept
    resample: str = "bicubic"
    rescale: float = 1 / 255
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD

    def __post_init__(self) -> None:
        sides = [*self.size, *([self.shortest_edge] if self.shortest_edge is not None else [])]
        if not all(isinstance(side, int) and 8 <= side <= 4096 for side in sides):
            raise ValueError("sizes")
        numbers = [self.rescale, *self.mean, *self.std]
        if self.resample not in RESAMPLES or len(self.mean) != 3 or len(self.std) != 3 \
                or not all(isinstance(n, (int, float)) and math.isfinite(n) for n in numbers) \
                or not all(value > 0 for value in self.std):
            raise ValueError("values")


@dataclass(frozen=True)
class SafetyCheckerDescription:
    network: str  # "stable-diffusion" or "classifier"
    input_name: str
    preprocessing: Preprocessing
    score_output: str  # (N,) or (N, classes)
    flag_output: str | None = None  # (N,) bool, when the graph decides itself
    layout: str = "nchw"  # "nhwc" for classifiers exported from Keras
    activation: str = "none"  # applied to the score output: "softmax" or "sigmoid" for logits
    unsafe_classes: tuple[int, ...] = ()  # of a (N, classes) output, whose scores add up
    labels: tuple[str, ...] = ()  # the classes' names, where the source said them
    threshold: float = 0.0  # a score above it (at or above, for classifiers) is flagged
    source: str = ""
    licence: str | None = None

    @property
    def summary(self) -> str:
        if self.network == STABLE_DIFFUSION:
            return "Stable Diffusion safety checker"
        return f"safety classifier ({self.preprocessing.size[1]} px)"

    def as_json(self) -> dict:
        data = asdict(self)
        return {"kind": SAFETY_CHECKER_KIND, "format": DESCRIPTION_FORMAT, **data}

    def save(self, folder: Path) -> None:
        text = json.dumps(self.as_json(), indent=2) + "\n"
        (Path(folder) / DESCRIPTION_FILE).write_text(text, encoding="utf-8")


def read_safety_description(folder: Path) -> SafetyCheckerDescription:
    """The description of the safety checker installed in ``folder``; ModelError in one
    sentence when it or its graph is missing or damaged."""
    return read_installed_graph(folder, "safety checker", _from_json)


def _from_json(data: object, name: str) -> SafetyCheckerDescription:
    damaged = ModelError(f"The description of safety checker '{name}' is damaged.")
    if not isinstance(data, dict) or data.get("kind") != SAFETY_CHECKER_KIND \
            or not isinstance(data.get("format"), int):
        raise damaged
    if data["format"] > DESCRIPTION_FORMAT:
        raise ModelError(f"Safety checker '{name}' was installed by a newer Easel; update "
                         f"Easel or import it again.")
    try:
        pre = dict(data["preprocessing"])
        preprocessing = Preprocessing(
            tuple(pre["size"]), pre.get("shortest_edge"), bool(pre.get("crop", True)),
            pre.get("resample", "bicubic"), float(pre["rescale"]), tuple(pre["mean"]),
            tuple(pre["std"]))
        description = SafetyCheckerDescription(
            data["network"], str(data["input_name"]), preprocessing, str(data["score_output"]),
            data.get("flag_output"), data.get("layout", "nchw"),
            data.get("activation", "none"), tuple(int(c) for c in data.get("unsafe_classes", ())),
            tuple(str(label) for label in data.get("labels", ())),
            float(data.get("threshold", 0.0)), str(data.get("source", "")), data.get("licence"))
    except (KeyError, TypeError, ValueError):
        raise damaged from None
    if (description.network not in NETWORKS or description.layout not in LAYOUTS
            or description.activation not in ACTIVATIONS
            or not (description.flag_output is None or isinstance(description.flag_output, str))
            or not (description.licence is None or isinstance(description.licence, str))
            or any(index < 0 for index in description.unsafe_classes)):
        raise damaged
    return description


# --- a lone graph: is it an image classifier? ------------------------------------------------

def picture_layout(signature: GraphSignature) -> str | None:
    """"nchw" or "nhwc" for a graph with one four-dimensional input of three channels (or
    channels it does not fix), None for any other graph."""
    if len(signature.inputs) != 1:
        return None
    (shape,) = signature.inputs.values()
    if len(shape) != 4:
        return None
    if shape[1] == 3 or not isinstance(shape[1], int) and shape[3] != 3:
        return "nchw"
    return "nhwc" if shape[3] == 3 else None


def score_outputs(signature: GraphSignature) -> list[str]:
    """The outputs that give per-picture scores: (N,) or (N, classes)."""
    return [name for name, shape in signature.outputs.items() if len(shape) in (1, 2)]


def looks_like_classifier(signature: GraphSignature) -> bool:
    """One picture in and only per-picture scores out: never a picture or map (upscalers,
    segmenters, annotators) nor boxes (face detectors), which give three or four dimensions."""
    outputs = score_outputs(signature)
    return picture_layout(signature) is not None and bool(outputs) and \
        len(outputs) == len(signature.outputs)
