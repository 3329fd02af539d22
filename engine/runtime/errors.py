"""onnxruntime's failures turned into engine errors with one sentence a user can act on."""

from __future__ import annotations

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


def out_of_memory(device: str, *, loading: bool = False) -> GenerationFailed:
    """The error for running out of memory on ``device`` (a display name: "CUDA", "CPU")."""
    where = "the computer" if device == "CPU" else f"the GPU ({device})"
    if loading:
        fix = "close other programs"
        fix += "" if device == "CPU" else " or switch to the CPU"
        return GenerationFailed(f"There is not enough memory on {where} to load this model: {fix}.")
    fix = "lower the image size or the number of images"
    fix += ", or close other programs" if device == "CPU" else ", or switch to the CPU"
    return GenerationFailed(f"Out of memory on {where}: {fix}.")


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
