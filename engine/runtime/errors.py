"""onnxruntime's failures turned into engine errors with one sentence a user can act on."""

from __future__ import annotations

import math
import re
from pathlib import Path

from onnxruntime.capi import onnxruntime_pybind11_state as _ort_state

from engine.errors import BadRequest, EaselError, GenerationFailed, ModelError

# What onnxruntime raises: its own classes (which derive from Exception, not RuntimeError),
# plus what its Python layer and a failed numpy allocation raise.
ORT_ERRORS: tuple[type[BaseException], ...] = tuple(
    value for value in vars(_ort_state).values()
    if isinstance(value, type) and issubclass(value, Exception)
) + (RuntimeError, MemoryError)

# How the CPU, CUDA, cuBLAS/cuDNN, DirectML and the C++ runtime say "no memory left".
_OUT_OF_MEMORY = re.compile(
    r"failed to allocate memory|bad_alloc|out of memory|cudaErrorMemoryAllocation"
    r"|CUBLAS_STATUS_ALLOC_FAILED|CUDNN_STATUS_ALLOC_FAILED|E_OUTOFMEMORY|8007000E"
    r"|not enough memory",
    re.IGNORECASE,
)
# "[ONNXRuntimeError] : 1 : FAIL : " before the message proper.
_STATUS_PREFIX = re.compile(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ")
# "/onnxruntime_src/.../bfc_arena.cc:360 void* onnxruntime::BFCArena::Allocate(size_t) "
_SOURCE_LOCATION = re.compile(r"^\S+\.(?:cc|cpp|cu|h):\d+ (?:[^()]*\([^()]*\)(?: const)? )?")
_MAX_DETAIL = 240

# onnxruntime's exception classes that mean the file itself is the problem.
_MODEL_FILE_ERRORS = frozenset({"InvalidProtobuf", "InvalidGraph", "NoModel", "NotImplemented"})


def ort_detail(error: BaseException) -> str:
    """The useful part of an onnxruntime message: no status prefix, source path or newline."""
    text = str(error).strip()
    text = _STATUS_PREFIX.sub("", text)
    if "Status Message: " in text:
        text = text.rsplit("Status Message: ", 1)[1]
    text = _SOURCE_LOCATION.sub("", text.strip())
    text = " ".join(text.split()).rstrip(".")
    if len(text) > _MAX_DETAIL:
        text = text[: _MAX_DETAIL - 1].rstrip() + "…"
    return text


def is_out_of_memory(error: BaseException | str) -> bool:
    return isinstance(error, MemoryError) or bool(_OUT_OF_MEMORY.search(str(error)))


class OutOfMemory(GenerationFailed):
    """A run that ran out of memory on ``device`` (a display name: "CUDA", "CPU"). The
    pipelines catch it to retry with fewer pictures per UNet call, or to say what size would
    fit (``out_of_memory_at``); nothing of the session is spoilt by it."""

    def __init__(self, message: str, device: str) -> None:
        super().__init__(message)
        self.device = device


def out_of_memory(device: str, *, loading: bool = False) -> GenerationFailed:
    """The error for running out of memory on ``device`` (a display name: "CUDA", "CPU")."""
    where = _where(device)
    if loading:
        fix = "close other programs"
        fix += "" if device == "CPU" else " or switch to the CPU"
        return GenerationFailed(f"There is not enough memory on {where} to load this model: {fix}.")
    fix = "lower the image size or the number of images"
    fix += ", or close other programs" if device == "CPU" else ", or switch to the CPU"
    return OutOfMemory(f"Out of memory on {where}: {fix}.", device)


def out_of_memory_at(device: str, width: int, height: int) -> OutOfMemory:
    """Out of memory drawing one ``width`` × ``height`` picture alone: the size to try
    instead (``smaller_size``), in one sentence."""
    where = _where(device)
    other = "close other programs" if device == "CPU" else "switch to the CPU"
    smaller = smaller_size(width, height)
    if smaller is None:
        return OutOfMemory(f"Out of memory on {where} drawing even one {width}×{height} "
                           f"picture: {other}.", device)
    return OutOfMemory(f"Out of memory on {where} drawing even one {width}×{height} picture: "
                       f"try {smaller[0]}×{smaller[1]} (at most half the pixels), or {other}.",
                       device)


def smaller_size(width: int, height: int, multiple: int = 64) -> tuple[int, int] | None:
    """At most half the pixels of ``width`` × ``height`` at about its shape: each side times
    √½, rounded down to ``multiple`` (64 suits every model family; at least one multiple).
    None when no such size has at most half the pixels (a picture near the smallest size)."""
    def side(value: int) -> int:
        return max(multiple, math.floor(value * math.sqrt(0.5) / multiple) * multiple)

    smaller = side(width), side(height)
    return smaller if 2 * smaller[0] * smaller[1] <= width * height else None


def _where(device: str) -> str:
    return "the computer" if device == "CPU" else f"the GPU ({device})"


def translate_run_error(error: BaseException, model: Path, device: str) -> EaselError:
    """An engine error for a failed ``run`` of ``model`` on ``device`` (a display name)."""
    if is_out_of_memory(error):
        return out_of_memory(device)
    detail = ort_detail(error)
    if type(error).__name__ == "InvalidArgument":
        # Usually shapes a static-shape export does not accept, e.g. an image size it was not
        # exported for: the request can change, the model cannot.
        return BadRequest(f"The model {_label(model)} cannot take this input ({detail}).")
    return GenerationFailed(f"The model {_label(model)} failed on {device} ({detail}).")


def translate_load_error(error: BaseException, model: Path, device: str) -> EaselError:
    """An engine error for a session that could not be created from ``model``."""
    if is_out_of_memory(error):
        return out_of_memory(device, loading=True)
    if type(error).__name__ == "NoSuchFile" or not model.exists():
        return ModelError(f"The model file {model} is missing.")
    return ModelError(
        f"The model file {model} is damaged or not a model this onnxruntime can read "
        f"({ort_detail(error)})."
    )


def is_model_file_error(error: BaseException) -> bool:
    """True when no other provider could do better: the file itself is broken or missing."""
    return type(error).__name__ in _MODEL_FILE_ERRORS | {"NoSuchFile"}


def _label(model: Path) -> str:
    # "unet/model.onnx" tells the user which part of the model folder; the full path is noise.
    return f"{model.parent.name}/{model.name}" if model.parent.name else model.name
