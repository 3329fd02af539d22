"""Safety checkers -> an installed safety checker (engine.safety.description).

Sources:
- diffusers' ``StableDiffusionSafetyChecker`` as the Hub keeps it (CompVis/stable-diffusion-
  safety-checker, or a pipeline's ``safety_checker/`` folder): ``config.json`` naming the
  class, ``model.safetensors`` or a ``pytorch_model.bin`` pickle (read only as plain tensors,
  in a separate process), and ``preprocessor_config.json`` beside it or in the pipeline's
  ``feature_extractor/``. Exported to ONNX here: only the concept check, not diffusers'
  blacking out of flagged pictures (Easel never alters a picture for it);
- an ONNX image classifier (``describe_classifier``): the kind checks and copies the graph, and
  this module says how to read it, from its outputs and the ``config.json`` /
  ``preprocessor_config.json`` a Hugging Face export keeps beside it.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

from engine.control.description import read_graph_signature
from engine.errors import ModelError
from engine.safety.description import (
    CLASSIFIER,
    CLASSIFIER_THRESHOLD,
    CLIP_MEAN,
    CLIP_STD,
    GRAPH_FILE,
    STABLE_DIFFUSION,
    Preprocessing,
    SafetyCheckerDescription,
    looks_like_classifier,
    picture_layout,
    score_outputs,
)

CONFIG_FILE = "config.json"
PREPROCESSOR_FILE = "preprocessor_config.json"
CHECKER_CLASS = "StableDiffusionSafetyChecker"
CHECKER_NAMES = {"concept_embeds", "special_care_embeds"}
INPUT = "clip_input"
OUTPUTS = ("has_nsfw_concepts", "concept_score")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# PIL's resampling numbers, as preprocessor_config.json writes them.
PIL_RESAMPLES = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
# Words in a classifier's class names (id2label) that mean unsafe: Falconsai's "nsfw",
# GantMan's "porn", "hentai", "sexy", others' "unsafe", "explicit", "nude".
UNSAFE_WORDS = {"nsfw", "unsafe", "porn", "hentai", "sexy", "explicit", "nude", "nudity",
                "sexual", "adult"}
# Graph outputs already turned into probabilities, looked through the nodes that only reshape.
_PROBABILITY_OPS = {"Softmax": "softmax", "Sigmoid": "sigmoid"}
_SHAPE_OPS = {"Identity", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Cast"}


# --- recognising the diffusers checker --------------------------------------------------------

def is_checker_folder(source: Path) -> bool:
    """A transformers folder whose config names StableDiffusionSafetyChecker (its weights are
    checked at import, so a folder that lost them is told so in a sentence)."""
    config = _json(Path(source) / CONFIG_FILE) if Path(source).is_dir() else None
    return isinstance(config, dict) and CHECKER_CLASS in (config.get("architectures") or [])


def is_checker_names(names: set[str]) -> bool:
    """A safety checker's tensor names (or a pickle's strings): its concept embeddings."""
    return names >= CHECKER_NAMES


# --- the graph --------------------------------------------------------------------------------

class SafetyGraph:
    """``clip_input`` (N, 3, S, S) -> ``has_nsfw_concepts`` (N,) bool, ``concept_score`` (N,):
    diffusers' ``StableDiffusionSafetyChecker.forward_onnx`` step by step, with the largest
    concept score (the flag is whether it is above 0) in place of the blacked-out pictures."""

    def __new__(cls, checker):
        import torch
        from diffusers.pipelines.stable_diffusion.safety_checker import cosine_distance

        class Graph(torch.nn.Module):
            input_names = (INPUT,)
            output_names = OUTPUTS
            dynamic_axes = {INPUT: {0: "batch"}, OUTPUTS[0]: {0: "batch"},
                            OUTPUTS[1]: {0: "batch"}}

            def __init__(self) -> None:
                super().__init__()
                self.checker = checker

            def forward(self, clip_input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                checker = self.checker
                pooled_output = checker.vision_model(clip_input)[1]
                image_embeds = checker.visual_projection(pooled_output)
                special_cos_dist = cosine_distance(image_embeds, checker.special_care_embeds)
                cos_dist = cosine_distance(image_embeds, checker.concept_embeds)
                special_scores = special_cos_dist - checker.special_care_embeds_weights
                special_care = torch.any(special_scores > 0, dim=1)
                special_adjustment = (special_care * 0.01).unsqueeze(1).expand(
                    -1, cos_dist.shape[1])
                concept_scores = (cos_dist - checker.concept_embeds_weights) + special_adjustment
                return torch.any(concept_scores > 0, dim=1), concept_scores.max(dim=1).values

        return Graph()


def export_safety_checker(checker, folder: Path, description: SafetyCheckerDescription) -> None:
    """Write ``folder/model.onnx`` and ``easel.json`` for a StableDiffusionSafetyChecker."""
    from engine.export.graphs import _noise, export_graph

    height, width = description.preprocessing.size
    export_graph(SafetyGraph(checker.float().eval()), (_noise(2, 3, height, width),),
                 Path(folder) / GRAPH_FILE)
    description.save(folder)


def checker_description(vision_side: int, preprocessor: dict | None, source: str,
                        licence: str | None) -> SafetyCheckerDescription:
    """The description of an exported checker whose vision model reads ``vision_side``."""
    rules = preprocessing_from(preprocessor, (vision_side, vision_side), CLIP_MEAN, CLIP_STD,
                               "bicubic", source)
    if rules.size != (vision_side, vision_side):
        raise ModelError(f"The safety checker '{source}' reads {vision_side}×{vision_side} "
                         f"pictures, but its {PREPROCESSOR_FILE} crops them to "
                         f"{rules.size[1]}×{rules.size[0]}.")
    return SafetyCheckerDescription(STABLE_DIFFUSION, INPUT, rules, OUTPUTS[1], OUTPUTS[0],
                                    source=source, licence=licence)


def import_safety_checker(source: Path, building: Path) -> None:
    """Export the diffusers safety checker at ``source`` (its folder, or one weights file of
    it with ``config.json`` beside it) into ``building``."""
    source = Path(source)
    folder = source if source.is_dir() else source.parent
    if not (folder / CONFIG_FILE).is_file():
        raise ModelError(f"'{source.name}' needs the {CONFIG_FILE} of its safety checker "
                         f"beside it.")
    if not is_checker_folder(folder):
        raise ModelError(f"'{source.name}' is not a Stable Diffusion safety checker Easel can "
                         f"import (its {CONFIG_FILE} does not name {CHECKER_CLASS}).")
    weights = source if source.is_file() else _weights_in(folder)
    from engine.export.controlnet_source import _readme_licence

    with tempfile.TemporaryDirectory(prefix="easel-safety-", dir=building) as scratch:
        checker = _load_checker(folder, weights, Path(scratch))
    shown = folder.name if source.is_dir() else f"{folder.name}/{source.name}"
    preprocessor = _json(folder / PREPROCESSOR_FILE) or _json(
        folder.parent / "feature_extractor" / PREPROCESSOR_FILE)
    licence = _readme_licence(folder / "README.md") or _readme_licence(
        folder.parent / "README.md")
    side = int(checker.config.vision_config.image_size)
    export_safety_checker(checker, building,
                          checker_description(side, preprocessor, shown, licence))


def _weights_in(folder: Path) -> Path:
    from engine.export.image_encoder import WEIGHT_FILES

    found = next((folder / name for name in WEIGHT_FILES if (folder / name).is_file()), None)
    if found is None:
        raise ModelError(f"The safety checker '{folder.name}' has no weights file "
                         f"({' or '.join(WEIGHT_FILES)}).")
    return found


def _load_checker(folder: Path, weights: Path, scratch: Path):
    """The checker, read from plain tensors only; every weight must be in the file (transformers
    would fill a missing one with random numbers, and the check would judge at random)."""
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker

    from engine.export.image_encoder import _plain_tensors_folder

    readable = _plain_tensors_folder(folder, weights, scratch)
    try:
        checker, info = StableDiffusionSafetyChecker.from_pretrained(
            readable, use_safetensors=True, output_loading_info=True)
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as error:
        raise ModelError(f"The safety checker '{folder.name}' does not match its "
                         f"{CONFIG_FILE} ({str(error).splitlines()[0][:200]}).") from None
    missing = sorted(str(key[0] if isinstance(key, tuple) else key) for key in (
        *(info.get("missing_keys") or ()), *(info.get("mismatched_keys") or ())))
    if missing:
        raise ModelError(f"The safety checker '{folder.name}' lacks {len(missing)} of its "
                         f"weights (such as '{missing[0]}'); download it again.")
    return checker


# --- ONNX classifiers ------------------------------------------------------------------------

def describe_classifier(graph: Path, source: Path) -> SafetyCheckerDescription:
    """How to read the image classifier ``graph`` (the file ``source``, or in the folder
    ``source`` with its Hugging Face config files) as a safety checker; ModelError in one
    sentence when it is not one or Easel cannot tell which of its classes are unsafe."""
    signature = read_graph_signature(graph)
    if not looks_like_classifier(signature):
        raise ModelError(f"'{source.name}' is not an image classifier: a safety checker takes "
                         f"one picture (N×3×H×W) and gives per-picture scores.")
    (input_name, input_shape), = signature.inputs.items()
    layout = picture_layout(signature)
    output = _score_output(signature)
    shape = signature.outputs[output]
    classes = shape[1] if len(shape) == 2 else 1
    if not isinstance(classes, int) or classes < 1:
        raise ModelError(f"'{source.name}' does not fix how many classes its output "
                         f"'{output}' scores, so Easel cannot tell which mean unsafe.")
    folder = source if source.is_dir() else None
    config = _json(folder / CONFIG_FILE) if folder is not None else None
    labels = _labels(config, classes)
    fixed = input_shape[2:] if layout == "nchw" else input_shape[1:3]
    graph_size = tuple(fixed) if all(isinstance(side, int) and side > 0 for side in fixed) \
        else None
    preprocessor = _json(folder / PREPROCESSOR_FILE) if folder is not None else None
    rules = preprocessing_from(preprocessor, graph_size or (224, 224), IMAGENET_MEAN,
                               IMAGENET_STD, "bilinear", source.name)
    if graph_size is not None and rules.size != graph_size:
        raise ModelError(f"'{source.name}' reads {graph_size[1]}×{graph_size[0]} pictures, but "
                         f"its {PREPROCESSOR_FILE} makes {rules.size[1]}×{rules.size[0]}.")
    from engine.export.controlnet_source import _readme_licence

    return SafetyCheckerDescription(
        CLASSIFIER, input_name, rules, output, layout=layout,
        activation=_activation_needed(graph, output, classes),
        unsafe_classes=_unsafe_classes(labels, classes, source.name), labels=labels,
        threshold=CLASSIFIER_THRESHOLD, source=source.name,
        licence=_readme_licence(folder / "README.md") if folder is not None else None)


def _score_output(signature) -> str:
    """The output to read: the first (N, classes) one, else the first (N,) one."""
    outputs = score_outputs(signature)
    return next((name for name in outputs if len(signature.outputs[name]) == 2), outputs[0])


def _labels(config: object, classes: int) -> tuple[str, ...]:
    """The class names of a transformers config's ``id2label``, when it names every class."""
    id2label = config.get("id2label") if isinstance(config, dict) else None
    if not isinstance(id2label, dict):
        return ()
    try:
        names = {int(index): str(label) for index, label in id2label.items()}
    except (TypeError, ValueError):
        return ()
    return tuple(names[index] for index in range(classes)) if set(names) == set(
        range(classes)) else ()


def _unsafe_classes(labels: tuple[str, ...], classes: int, shown: str) -> tuple[int, ...]:
    """Classes named unsafe; with no names, a lone score is the unsafe score and of two
    classes the second is (Falconsai's and AdamCodd's order: normal/sfw, then nsfw)."""
    if labels:
        unsafe = tuple(index for index, label in enumerate(labels)
                       if set(re.split(r"[^a-z]+", label.lower())) & UNSAFE_WORDS)
        if not unsafe:
            raise ModelError(f"None of the classes of '{shown}' ({', '.join(labels)}) names "
                             f"unsafe content, so it cannot be a safety checker.")
        return unsafe
    if classes == 1:
        return ()
    if classes == 2:
        return (1,)
    raise ModelError(f"Easel cannot tell which of the {classes} classes of '{shown}' mean "
                     f"unsafe; import the folder with its {CONFIG_FILE} (id2label) beside the "
                     f"graph as model.onnx.")


def _activation_needed(graph: Path, output: str, classes: int) -> str:
    """"none" when the graph ends in a softmax or sigmoid (through reshapes), else what turns
    its logits into probabilities: a softmax over several classes, a sigmoid for one."""
    import onnx

    model = onnx.load(str(graph), load_external_data=False)
    producers = {name: node for node in model.graph.node for name in node.output}
    node = producers.get(output)
    while node is not None and node.op_type in _SHAPE_OPS and node.input:
        node = producers.get(node.input[0])
    if node is not None and node.op_type in _PROBABILITY_OPS:
        return "none"
    return "softmax" if classes > 1 else "sigmoid"


# --- preprocessor_config.json -----------------------------------------------------------------

def preprocessing_from(config: object, default_size: tuple[int, int], mean, std,
                       resample: str, shown: str) -> Preprocessing:
    """The rules a transformers ``preprocessor_config.json`` writes (size as ``shortest_edge``
    or height and width, the crop, resample, rescale, mean and std); without one, the short
    side resized to ``default_size`` and the centre kept, with ``mean``, ``std`` and
    ``resample``."""
    if not isinstance(config, dict):
        return Preprocessing(default_size, min(default_size), True, resample, 1 / 255,
                             tuple(mean), tuple(std))
    try:
        size = config.get("size", {}) if config.get("do_resize", True) else {}
        size = {"shortest_edge": size} if isinstance(size, int) else dict(size)
        crop = config.get("crop_size") if config.get("do_center_crop", False) else None
        crop = {"height": crop, "width": crop} if isinstance(crop, int) else crop
        edge = size.get("shortest_edge")
        if edge is not None:
            final = (int(crop["height"]), int(crop["width"])) if crop else (int(edge),) * 2
        else:
            final = (int(size["height"]), int(size["width"]))
        normalise = config.get("do_normalize", True)
        return Preprocessing(
            final, int(edge) if edge is not None else None, crop is not None or edge is None,
            PIL_RESAMPLES[int(config["resample"])] if "resample" in config else resample,
            float(config.get("rescale_factor", 1 / 255)) if config.get("do_rescale", True)
            else 1.0,
            tuple(config.get("image_mean", mean)) if normalise else (0.0, 0.0, 0.0),
            tuple(config.get("image_std", std)) if normalise else (1.0, 1.0, 1.0))
    except (KeyError, TypeError, ValueError):
        raise ModelError(f"The {PREPROCESSOR_FILE} of '{shown}' is not one Easel can "
                         f"read.") from None


def _json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
