"""Errors the engine raises: each one carries a sentence a user can read as it is."""


class EaselError(Exception):
    """Base class: ``str(error)`` is one clear sentence for the user."""


class BadRequest(EaselError):
    """The request asks for something the model or the engine cannot do."""


class ModelError(EaselError):
    """A model folder is missing, damaged, tampered with or not a model at all."""


class GenerationFailed(EaselError):
    """The model ran but produced no usable image (NaN, flat black, out of memory)."""


class Cancelled(EaselError):
    """The job was cancelled; nothing was produced."""


class ExportUnavailable(EaselError):
    """The exporter's optional dependencies (torch, diffusers, transformers) are missing."""
