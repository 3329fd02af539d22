"""Execution providers in the user's words ("cuda", "cpu") and the order the engine tries them."""

from __future__ import annotations

from collections.abc import Sequence

import onnxruntime as ort

from engine.errors import BadRequest
from engine.runtime.cuda_libraries import Preload, preload_pip_libraries

# The user's word for each provider, in the order the settings list them.
ORT_NAMES: dict[str, str] = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "directml": "DmlExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
SHORT_NAMES: dict[str, str] = {ort_name: short for short, ort_name in ORT_NAMES.items()}

# How the status bar and messages spell each provider.
DISPLAY_NAMES: dict[str, str] = {
    "tensorrt": "TensorRT",
    "cuda": "CUDA",
    "directml": "DirectML",
    "coreml": "CoreML",
    "cpu": "CPU",
}

# TensorRT is never chosen by default: it builds an engine per model and shape on first use,
# which takes minutes and looks like a hang to someone who did not ask for it.
DEFAULT_ORDER: tuple[str, ...] = ("cuda", "directml", "coreml", "cpu")

GPU_PROVIDERS = frozenset({"tensorrt", "cuda", "directml", "coreml"})


def available_providers() -> list[str]:
    """Short names of the providers this onnxruntime package was built with."""
    installed = ort.get_available_providers()
    return [short for short, ort_name in ORT_NAMES.items() if ort_name in installed]


def normalize_providers(requested: Sequence[str]) -> tuple[str, ...]:
    """The request in short, lower-case names, duplicates dropped; unknown names are refused."""
    if isinstance(requested, str):
        # A bare string would otherwise be read letter by letter.
        requested = [requested]
    names: list[str] = []
    for word in requested:
        key = str(word).strip()
        short = SHORT_NAMES.get(key, key.lower())
        if short not in ORT_NAMES:
            valid = ", ".join(ORT_NAMES)
            raise BadRequest(f"Unknown execution provider {word!r}: choose from {valid}.")
        if short not in names:
            names.append(short)
    return tuple(names)


def requested_providers(requested: Sequence[str]) -> tuple[str, ...]:
    """What the user asked for, or the default order (of installed providers) when nothing."""
    names = normalize_providers(requested)
    if names:
        return names
    installed = available_providers()
    return tuple(name for name in DEFAULT_ORDER if name in installed)


def resolve_providers(requested: Sequence[str]) -> list[str]:
    """The providers to hand onnxruntime: the user's order, installed ones only, CPU last.

    CPU is always appended as the safety net, so a model with an operator the GPU provider
    lacks still runs; the device report says when the GPU was not used at all.
    """
    installed = available_providers()
    names = [name for name in requested_providers(requested) if name in installed]
    if "cpu" in names:
        # onnxruntime gives every node to the first provider that can run it, and the CPU can
        # run them all: whatever the user listed after "cpu" would never be used.
        names = names[: names.index("cpu")]
    return names + ["cpu"]


def ort_provider_names(providers: Sequence[str]) -> list[str]:
    """onnxruntime's names for a list of short names."""
    return [ORT_NAMES[name] for name in providers]


def short_provider_names(ort_names: Sequence[str]) -> list[str]:
    """Short names for onnxruntime's names; a provider this module does not know keeps its name."""
    return [SHORT_NAMES.get(name, name) for name in ort_names]


def load_pip_cuda_libraries() -> Preload:
    """Make CUDA and cuDNN installed from PyPI (``easel[cuda]``) visible to onnxruntime, once,
    before the first CUDA session; what happened is returned, never raised (see
    ``engine.runtime.cuda_libraries``)."""
    return preload_pip_libraries()
