"""An installed segmenter: ``model.onnx`` (+ its weights file) and ``easel.json`` marked
``"kind": "segmenter"``, and how a graph is told to be one by its inputs and outputs.

The graph is read from the protobuf (engine.control.description.read_graph_signature): no
torch, no onnx. One picture in (1×3×S×S), one-channel maps out: U²-Net's family gives seven at
320×320, IS-Net several at 1024×1024, BiRefNet and RMBG-2.0 one at 1024×1024; the file name
then picks the family where the graph cannot (ModelError naming what to rename otherwise).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from engine.background.families import FAMILIES, Family, family_in_names
from engine.control.description import GraphSignature, read_graph_signature, read_installed_graph
from engine.errors import ModelError

SEGMENTER_KIND = "segmenter"
DESCRIPTION_FILE = "easel.json"
GRAPH_FILE = "model.onnx"
DESCRIPTION_FORMAT = 1
U2NET_OUTPUTS = 7  # U²-Net's fused map d0 and its six side outputs


def input_side(signature: GraphSignature) -> int | None:
    """The side of the square picture a one-picture graph fixes, None when it takes any."""
    if len(signature.inputs) != 1:
        return None
    (shape,) = signature.inputs.values()
    if len(shape) != 4:
        return None
    height, width = shape[2], shape[3]
    return height if isinstance(height, int) and height == width else None


def _one_picture_to_maps(signature: GraphSignature) -> bool:
    if len(signature.inputs) != 1 or not signature.outputs:
        return False
    (shape,) = signature.inputs.values()
    if len(shape) != 4 or isinstance(shape[1], int) and shape[1] != 3:
        return False
    return all(len(out) == 4 and not (isinstance(out[1], int) and out[1] != 1)
               for out in signature.outputs.values())


def looks_like_segmenter(signature: GraphSignature, names: tuple[str, ...] = ()) -> bool:
    """One picture in, one-channel maps out, and either a segmenter's fixed size and output
    count (U²-Net: seven maps at 320; the 1024 families: a 1024×1024 input) or a segmenter's
    name on the file. Depth annotators (an output named "depth") are never claimed."""
    if not _one_picture_to_maps(signature):
        return False
    if any("depth" in name.lower() for name in signature.outputs):
        return False
    side = input_side(signature)
    by_shape = side == 320 and len(signature.outputs) == U2NET_OUTPUTS or side == 1024
    return by_shape or family_in_names(names) is not None


def family_of(signature: GraphSignature, names: tuple[str, ...],
              chosen: str | None = None) -> Family:
    """The family of a segmenter graph: the user's choice, else the file name's, else the
    graph's shape where only one family has it; ModelError in one sentence otherwise."""
    shown = names[0] if names else "the graph"
    if not looks_like_segmenter(signature, names) and chosen is None:
        raise ModelError(f"'{shown}' is not a background removal model: a segmenter takes one "
                         f"picture and gives one-channel masks.")
    if chosen is not None and chosen not in FAMILIES:
        raise ModelError(f"There is no segmenter family called '{chosen}'; the families are "
                         f"{', '.join(FAMILIES)}.")
    found = chosen or family_in_names(names) or _family_by_shape(signature)
    if found is None:
        raise ModelError(f"Neither the graph nor the file name of '{shown}' says which "
                         f"segmenter it is; rename the file after its model as rembg names it "
                         f"(isnet-general-use, isnet-anime, BiRefNet-general, RMBG-1.4, "
                         f"RMBG-2.0) and import it again.")
    family = FAMILIES[found]
    side = input_side(signature)
    if side is not None and side != family.side:
        raise ModelError(f"'{shown}' takes {side}×{side} pictures, but a {family.label} "
                         f"segmenter takes {family.side}×{family.side}.")
    return family


def _family_by_shape(signature: GraphSignature) -> str | None:
    """Seven maps at 320: U²-Net (u2netp, silueta and human_seg read pictures the same way).
    Several maps at 1024: IS-Net. One map at 1024 is BiRefNet's or RMBG-2.0's, which differ
    (logits or not): only the name tells them apart."""
    side, count = input_side(signature), len(signature.outputs)
    if side == 320 and count == U2NET_OUTPUTS:
        return "u2net"
    if side == 1024 and count > 1:
        return "isnet-general-use"
    return None


@dataclass(frozen=True)
class SegmenterDescription:
    family: str  # a key of FAMILIES
    input_name: str
    output_name: str  # the first output: the mask
    source: str = ""
    licence: str | None = None

    @property
    def settings(self) -> Family:
        return FAMILIES[self.family]

    def as_json(self) -> dict:
        settings = self.settings
        return {"kind": SEGMENTER_KIND, "format": DESCRIPTION_FORMAT, "family": self.family,
                "input_name": self.input_name, "output_name": self.output_name,
                "input_size": [settings.side, settings.side],
                "normalisation": {"divide_by": settings.scale, "mean": list(settings.mean),
                                  "std": list(settings.std), "resize": settings.resample},
                "sigmoid": settings.sigmoid, "source": self.source, "licence": self.licence}

    def save(self, folder: Path) -> None:
        text = json.dumps(self.as_json(), indent=2) + "\n"
        (Path(folder) / DESCRIPTION_FILE).write_text(text, encoding="utf-8")


def describe_graph(graph: Path, names: tuple[str, ...],
                   chosen: str | None = None) -> SegmenterDescription:
    """The description of the segmenter graph ``graph``, from its signature and ``names``."""
    signature = read_graph_signature(graph)
    family = family_of(signature, names, chosen)
    if len(signature.inputs) != 1:
        raise ModelError(f"'{names[0] if names else graph.name}' takes "
                         f"{len(signature.inputs)} inputs; a segmenter takes one picture.")
    (input_name,) = signature.inputs
    return SegmenterDescription(family.name, input_name, next(iter(signature.outputs)),
                                names[0] if names else "", family.licence)


def read_segmenter_description(folder: Path) -> SegmenterDescription:
    """The description of the segmenter installed in ``folder``; ModelError in one sentence
    when it or its graph is missing or damaged."""
    return read_installed_graph(folder, "segmenter", _from_json)


def _from_json(data: object, name: str) -> SegmenterDescription:
    damaged = ModelError(f"The description of segmenter '{name}' is damaged.")
    if not isinstance(data, dict) or data.get("kind") != SEGMENTER_KIND \
            or not isinstance(data.get("format"), int):
        raise damaged
    if data["format"] > DESCRIPTION_FORMAT:
        raise ModelError(f"Segmenter '{name}' was installed by a newer Easel; update Easel or "
                         f"import it again.")
    if (data.get("family") not in FAMILIES or not isinstance(data.get("input_name"), str)
            or not isinstance(data.get("output_name"), str)
            or not (data.get("licence") is None or isinstance(data["licence"], str))):
        raise damaged
    return SegmenterDescription(data["family"], data["input_name"], data["output_name"],
                                str(data.get("source", "")), data.get("licence"))
