"""Upscaling: super-resolution networks run in tiles, with a labelled Lanczos fallback.

Only onnxruntime, numpy and Pillow here, like the rest of the generation path; importing
upscalers (spandrel, torch) lives in engine.export.upscaler.
"""

from engine.upscale.description import UpscalerDescription, is_upscaler_folder
from engine.upscale.pipeline import (
    DEFAULT_OVERLAP,
    DEFAULT_TILE,
    LANCZOS_NAME,
    LANCZOS_WARNING,
    MAX_OUTPUT_SIDE,
    OPERATION,
    SCALES,
    UpscalePipeline,
    Upscaler,
    UpscaleRequest,
    load_upscaler,
)

__all__ = ["DEFAULT_OVERLAP", "DEFAULT_TILE", "LANCZOS_NAME", "LANCZOS_WARNING",
           "MAX_OUTPUT_SIDE", "OPERATION", "SCALES", "UpscalePipeline", "UpscaleRequest",
           "Upscaler", "UpscalerDescription", "is_upscaler_folder", "load_upscaler"]
