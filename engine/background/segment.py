"""Running an installed segmenter on a picture as rembg runs it (engine.background.families
says where each rule comes from). The network runs at its own input size; only the final
resize of the uint8 mask touches the picture's full size, so memory stays bounded for any
picture Easel edits (8192 px a side: a 64 MB mask)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from engine.background.description import GRAPH_FILE, read_segmenter_description
from engine.background.families import Family
from engine.errors import GenerationFailed
from engine.manifest import verify_manifest
from engine.runtime import CancelToken, RuntimeOptions, get_session

_RESAMPLE = {"lanczos": Image.Resampling.LANCZOS, "bilinear": Image.Resampling.BILINEAR}


def network_input(rgb: np.ndarray, family: Family) -> np.ndarray:
    """float32 (1, 3, side, side): rembg's BaseSession.normalize (sessions/base.py) — resized
    with LANCZOS, divided by its own maximum, then (x - mean) / std; RMBG-1.4 (BRIA's
    utilities.py) divides by 255 after a bilinear resize."""
    resized = Image.fromarray(rgb).resize((family.side, family.side), _RESAMPLE[family.resample])
    pixels = np.asarray(resized, dtype=np.float64)
    divisor = 255.0 if family.scale == "255" else max(float(pixels.max()), 1e-6)
    pixels = (pixels / divisor - np.asarray(family.mean)) / np.asarray(family.std)
    return np.ascontiguousarray(pixels.transpose(2, 0, 1)[np.newaxis], dtype=np.float32)


def mask_from_output(output: np.ndarray, family: Family, size: tuple[int, int]) -> np.ndarray:
    """uint8 (height, width) from the first output, as each rembg session's ``predict``: its
    first channel (through a sigmoid for BiRefNet, sessions/birefnet_general.py), min-max
    normalised, * 255 truncated to uint8, resized to ``size`` with LANCZOS."""
    if output.ndim not in (3, 4) or output.shape[0] != 1:
        raise GenerationFailed(f"The segmenter gave an output of shape {output.shape}, not a "
                               f"mask; nothing was made.")
    plane = (output[0, 0] if output.ndim == 4 else output[0]).astype(np.float64)
    if not np.isfinite(plane).all():
        raise GenerationFailed("The segmenter produced invalid values (not-a-number); "
                               "nothing was made. Try the CPU provider.")
    if family.sigmoid:
        plane = 1.0 / (1.0 + np.exp(-plane))
    low, high = float(plane.min()), float(plane.max())
    if high <= low:
        raise GenerationFailed("The segmenter found no subject in this picture (its mask is "
                               "one flat value); nothing was made.")
    plane = np.clip((plane - low) / (high - low), 0.0, 1.0)  # u2net.py clips; others need not
    mask = Image.fromarray((plane * 255).astype(np.uint8), mode="L")
    return np.asarray(mask.resize((size[1], size[0]), Image.Resampling.LANCZOS))


def segment(folder: Path, rgb: np.ndarray, runtime: RuntimeOptions | None = None,
            cancel: CancelToken | None = None) -> tuple[np.ndarray, Family]:
    """The segmenter installed in ``folder`` run on ``rgb`` (uint8 H×W×3): its mask, uint8
    H×W (255 = subject), and its family."""
    folder = Path(folder)
    description = read_segmenter_description(folder)
    verify_manifest(folder)  # the cheap check, as every model's load
    family = description.settings
    session = get_session(folder / GRAPH_FILE, runtime)
    (output,) = session.run({description.input_name: network_input(rgb, family)},
                            [description.output_name], cancel)
    return mask_from_output(output, family, rgb.shape[:2]), family
