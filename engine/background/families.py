"""The segmenter families Easel knows: how each reads a picture and what its output means.

Every rule is read from rembg 2.0.86 (PyPI, ``rembg/sessions/*.py``, the file named beside
each family) except BRIA RMBG-1.4, which rembg does not ship: its rules are BRIA's own
``utilities.py`` on the Hub (briaai/RMBG-1.4). rembg's common preprocessing
(``sessions/base.py``, ``BaseSession.normalize``) is: the picture as RGB, resized to the input
size with PIL's LANCZOS, divided by its own maximum (``im / max(np.max(im), 1e-6)``, not by
255), then ``(x - mean) / std`` per channel. Its common postprocessing (each session's
``predict``) is: the first output's first channel, min-max normalised, ``* 255`` truncated to
uint8, resized back to the picture's size with LANCZOS.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)
ONE = (1.0, 1.0, 1.0)
NON_COMMERCIAL = frozenset({"bria-rmbg-1.4", "CC-BY-NC-4.0"})


@dataclass(frozen=True)
class Family:
    """One segmenter family. ``scale`` is "max" (rembg: divided by the resized picture's
    maximum) or "255"; ``resample`` is the PIL filter name for the resize to the input;
    ``sigmoid`` says whether the output is logits that rembg passes through a sigmoid."""

    name: str
    side: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    licence: str
    label: str  # the network in a sentence
    sigmoid: bool = False
    scale: str = "max"
    resample: str = "lanczos"

    @property
    def non_commercial(self) -> bool:
        return self.licence in NON_COMMERCIAL


FAMILIES: dict[str, Family] = {family.name: family for family in (
    # sessions/u2net.py, u2netp.py, silueta.py, u2net_human_seg.py: 320×320, ImageNet mean
    # and std, no sigmoid (U^2-Net's side outputs are already sigmoids); 7 outputs, d0 first.
    Family("u2net", 320, IMAGENET_MEAN, IMAGENET_STD, "Apache-2.0", "U²-Net"),
    Family("u2netp", 320, IMAGENET_MEAN, IMAGENET_STD, "Apache-2.0", "U²-Net (small)"),
    Family("silueta", 320, IMAGENET_MEAN, IMAGENET_STD, "Apache-2.0", "Silueta (U²-Net)"),
    Family("u2net_human_seg", 320, IMAGENET_MEAN, IMAGENET_STD, "Apache-2.0",
           "U²-Net human segmentation"),
    # sessions/dis_general_use.py: 1024×1024, mean 0.5, std 1.0.
    Family("isnet-general-use", 1024, HALF, ONE, "Apache-2.0", "IS-Net (DIS)"),
    # sessions/dis_anime.py: 1024×1024, ImageNet mean with std 1.0 (not 0.5 as general-use).
    Family("isnet-anime", 1024, IMAGENET_MEAN, ONE, "Apache-2.0", "IS-Net anime"),
    # sessions/birefnet_general.py (and birefnet_general_lite.py, birefnet_portrait.py,
    # which subclass it): 1024×1024, ImageNet mean and std, ``self.sigmoid`` on the output.
    Family("birefnet-general", 1024, IMAGENET_MEAN, IMAGENET_STD, "MIT", "BiRefNet",
           sigmoid=True),
    Family("birefnet-general-lite", 1024, IMAGENET_MEAN, IMAGENET_STD, "MIT",
           "BiRefNet lite", sigmoid=True),
    Family("birefnet-portrait", 1024, IMAGENET_MEAN, IMAGENET_STD, "MIT",
           "BiRefNet portrait", sigmoid=True),
    # sessions/bria_rmbg.py (rembg's "bria-rmbg" is RMBG-2.0, BiRefNet-based): 1024×1024,
    # ImageNet mean and std, no sigmoid (the export ends in one).
    Family("bria-rmbg-2.0", 1024, IMAGENET_MEAN, IMAGENET_STD, "CC-BY-NC-4.0",
           "BRIA RMBG-2.0"),
    # BRIA's utilities.py for RMBG-1.4 (IS-Net-based): bilinear resize to 1024×1024,
    # / 255, mean 0.5, std 1.0; the output min-max normalised (bilinear back up there, LANCZOS
    # here as for every other family).
    Family("bria-rmbg-1.4", 1024, HALF, ONE, "bria-rmbg-1.4", "BRIA RMBG-1.4",
           scale="255", resample="bilinear"),
)}

def words_of(name: str) -> set[str]:
    return {word for word in re.split(r"[^a-z0-9]+", name.lower()) if word}


def family_in_names(names: tuple[str, ...]) -> str | None:
    """The family the first of ``names`` that names one says ("isnet-anime.onnx",
    "BiRefNet-general-bb_swin_v1_tiny-epoch_232.onnx", "u2net_human_seg.onnx", "RMBG-1.4"),
    else None."""
    for name in names:
        found = _family_in_name(name.lower(), words_of(name))
        if found is not None:
            return found
    return None


def _family_in_name(lowered: str, words: set[str]) -> str | None:
    if "rmbg" in lowered or "bria" in words:
        if re.search(r"1[._-]?4", lowered):
            return "bria-rmbg-1.4"
        return "bria-rmbg-2.0" if re.search(r"2[._-]?0", lowered) else None
    if "birefnet" in lowered:
        if "portrait" in words:
            return "birefnet-portrait"
        return "birefnet-general-lite" if words & {"lite", "tiny"} else "birefnet-general"
    if "u2netp" in words or "silueta" in words:
        return "u2netp" if "u2netp" in words else "silueta"
    if "u2net" in lowered:
        return "u2net_human_seg" if "human" in words else "u2net"
    if "isnet" in lowered or "dis" in words:
        return "isnet-anime" if "anime" in words else "isnet-general-use"
    return None
