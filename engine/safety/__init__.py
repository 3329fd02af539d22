"""The optional safety check (issue 21): an installed safety checker's verdict on pictures.

A safety checker is diffusers' Stable Diffusion safety checker exported to ONNX at import
(engine.export.safety_checker) or any ONNX image classifier (engine.safety.description says
how each is read). The check only judges; what a flagged picture becomes (blurred in the
gallery until clicked, never deleted) is the application's choice.
"""

from engine.safety.check import SafetyVerdict, check_picture, check_pictures
from engine.safety.description import (
    SAFETY_CHECKER_KIND,
    SafetyCheckerDescription,
    read_safety_description,
)

__all__ = ["SAFETY_CHECKER_KIND", "SafetyCheckerDescription", "SafetyVerdict", "check_picture",
           "check_pictures", "read_safety_description"]
