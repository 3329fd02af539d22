"""The exporter: turns diffusers (PyTorch) models into the ONNX model folders the engine runs.

Only this package may import torch, diffusers, transformers and onnx, and only in its
submodules: importing ``engine.export`` itself stays cheap, so the application can ask whether
importing models is available without loading torch. The heavy code lives in
``engine.export.diffusers_folder`` (the entry point) and ``engine.export.graphs``.
"""

from __future__ import annotations

import importlib

from engine.errors import ExportUnavailable

# The packages of the "export" extra that the exporter imports.
EXPORT_DEPENDENCIES = ("torch", "diffusers", "transformers", "onnx")
UNAVAILABLE_SENTENCE = 'Importing models needs the export extra: pip install "easel[export]".'


def require_export_dependencies() -> None:
    """Raise ExportUnavailable unless torch, diffusers, transformers and onnx all import."""
    for name in EXPORT_DEPENDENCIES:
        try:
            importlib.import_module(name)
        except ImportError:  # a module set to None in sys.modules raises ImportError too
            raise ExportUnavailable(UNAVAILABLE_SENTENCE) from None
