"""Which device a session really runs on, and in words why a requested GPU is not used.

onnxruntime does not fail when a GPU provider cannot start: it logs the cause and quietly runs
on the CPU. The engine compares what it asked for with what the session uses, and finds the
cause itself by loading the provider's library the way onnxruntime does and reading the error.
A machine with no NVIDIA GPU at all is no fault: it gets a plain note, not a warning, and no
advice to install CUDA.
"""

from __future__ import annotations

import ctypes
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

from engine.runtime.errors import is_out_of_memory, ort_detail
from engine.runtime.providers import DISPLAY_NAMES, GPU_PROVIDERS, available_providers

# load(name, global_symbols) -> library handle; raises OSError like ctypes.CDLL.
Loader = Callable[[str, bool], object]

_CUDNN_MAJOR = 9  # every onnxruntime-gpu since 1.19 is built against cuDNN 9
_CUDA_SUCCESS = 0
_CUDA_ERROR_NO_DEVICE = 100
_MISSING_LIBRARY = re.compile(r"^(?P<name>[^\s:]+): cannot open shared object file")
_SONAME_MAJOR = re.compile(r"\.so\.(\d+)")
_NVIDIA_PROVIDERS = ("tensorrt", "cuda")
# The kernel driver's folder: there with an NVIDIA driver even when its libraries are not.
NVIDIA_KERNEL_DRIVER = Path("/proc/driver/nvidia")


@dataclass(frozen=True)
class DeviceReport:
    """What was asked for, what runs, and why they differ (``None`` when they do not).

    ``reason`` is a warning: a GPU is there but could not be used. ``note`` is information:
    a GPU provider was tried on a machine that has no NVIDIA GPU.
    """

    requested: tuple[str, ...]
    in_use: str
    reason: str | None
    cpu_threads: int = 0
    note: str | None = None

    @property
    def summary(self) -> str:
        """A few words for the status bar: "CUDA", "CPU (8 threads)"."""
        name = DISPLAY_NAMES.get(self.in_use, self.in_use)
        if self.in_use == "cpu" and self.cpu_threads:
            plural = "s" if self.cpu_threads != 1 else ""
            return f"{name} ({self.cpu_threads} thread{plural})"
        return name


def device_report(
    requested: Sequence[str],
    in_use: Sequence[str],
    *,
    cpu_threads: int,
    start_errors: Mapping[str, BaseException] | None = None,
    load: Loader | None = None,
    installed: Sequence[str] | None = None,
) -> DeviceReport:
    """Compare the providers asked for with those a session uses (short names, best first).

    ``start_errors`` holds what onnxruntime raised for a provider the engine then dropped.
    Only GPU providers ranked above the one in use need a reason: asking for ("cuda", "cpu")
    and running on CUDA is no surprise.
    """
    current = in_use[0] if in_use else "cpu"
    ranked = list(requested)
    passed_over = ranked[: ranked.index(current)] if current in ranked else ranked
    missing = [name for name in passed_over if name in GPU_PROVIDERS]
    note = None
    nvidia_passed_over = any(name in _NVIDIA_PROVIDERS for name in missing)
    if nvidia_passed_over and current not in _NVIDIA_PROVIDERS and no_nvidia_gpu(load):
        note = f"No NVIDIA GPU was found; Easel uses {_running_on(current)}."
        missing = [name for name in missing if name not in _NVIDIA_PROVIDERS]
    reason = None
    if missing:
        error = (start_errors or {}).get(missing[0])
        cause = explain_not_started(missing[0], error=error, load=load, installed=installed)
        others = "".join(f"; {DISPLAY_NAMES[name]} did not start either" for name in missing[1:])
        reason = (
            f"The GPU was not used: {DISPLAY_NAMES[missing[0]]} could not start: {cause}{others}; "
            f"running on {_running_on(current)}."
        )
    return DeviceReport(tuple(requested), current, reason,
                        cpu_threads if current == "cpu" else 0, note)


def no_nvidia_gpu(load: Loader | None = None) -> bool:
    """True when the machine plainly has no NVIDIA GPU: no driver at all, or a driver that
    sees none. A kernel driver without its library is a broken install, not "no GPU"."""
    try:
        driver = (load or _load_library)(_driver_library(), False)
    except OSError:
        return not NVIDIA_KERNEL_DRIVER.exists()
    try:
        return driver.cuInit(0) == _CUDA_ERROR_NO_DEVICE
    except (AttributeError, OSError):
        return False


def explain_not_started(
    provider: str,
    *,
    error: BaseException | None = None,
    load: Loader | None = None,
    installed: Sequence[str] | None = None,
) -> str:
    """Why ``provider`` did not start, as a clause: "the CUDA library X is missing (...)".

    ``load`` and ``installed`` default to the real ones; tests pass fakes.
    """
    load = load or _load_library
    installed = available_providers() if installed is None else installed
    if provider not in installed:
        return f"this onnxruntime package was built without it ({_INSTALL_HINTS[provider]})"
    if error is not None and is_out_of_memory(error):
        return "there is not enough GPU memory for this model"
    causes: list[str] = []
    if provider in _NVIDIA_PROVIDERS and no_nvidia_gpu(load):
        # Advice to install CUDA libraries would send the user after the wrong thing.
        return "no NVIDIA GPU was found"
    if provider in _NVIDIA_PROVIDERS:
        library_cause = _provider_library_problem(provider, load)
        driver_cause = _nvidia_driver_problem(load)
        causes = [cause for cause in (library_cause, driver_cause) if cause]
        if len(causes) == 2 and causes[0] == causes[1]:
            causes = causes[:1]
    if not causes and error is not None:
        causes.append(f"onnxruntime reported: {ort_detail(error)}")
    if not causes:
        causes.append(
            "onnxruntime did not say why (run with EASEL_ORT_LOG_SEVERITY=0 to see its log)"
        )
    return " and ".join(causes)


def _running_on(provider: str) -> str:
    return "the CPU" if provider == "cpu" else DISPLAY_NAMES.get(provider, provider)


_INSTALL_HINTS = {
    "tensorrt": "install onnxruntime-gpu and TensorRT",
    "cuda": "install onnxruntime-gpu in place of onnxruntime",
    "directml": "it needs onnxruntime-directml, on Windows",
    "coreml": "it needs the onnxruntime package for macOS",
}


def _provider_library_problem(provider: str, load: Loader) -> str | None:
    """Load onnxruntime's provider library as onnxruntime does; name what it lacks."""
    capi = Path(ort.__file__).parent / "capi"
    try:
        # The provider libraries resolve their bridge to onnxruntime through this one,
        # which onnxruntime itself loads with global symbols first.
        load(str(capi / _library_file("onnxruntime_providers_shared")), True)
        load(str(capi / _library_file(f"onnxruntime_providers_{provider}")), False)
    except OSError as error:
        return _describe_load_failure(str(error))
    return None


def _describe_load_failure(message: str) -> str:
    match = _MISSING_LIBRARY.match(message.strip())
    if not match:
        # Windows only says "Could not find module ... (or one of its dependencies)".
        detail = " ".join(message.split()).rstrip(".")
        return f"its libraries could not be loaded ({detail}; {_cuda_install_hint()})"
    name = os.path.basename(match.group("name"))
    if name.startswith("libcuda.so"):
        return f"no NVIDIA driver was found ({name} is missing)"
    if name.startswith("libcudnn"):
        return f"the cuDNN library {name} is missing ({_cuda_install_hint()})"
    if name.startswith(("libnvinfer", "libnvonnxparser")):
        major = _SONAME_MAJOR.search(name)
        version = f" {major.group(1)}" if major else ""
        return f"the TensorRT library {name} is missing (install TensorRT{version})"
    if name.startswith(("libcu", "libnv")):
        return f"the CUDA library {name} is missing ({_cuda_install_hint()})"
    return f"the library {name} is missing"


def _cuda_install_hint() -> str:
    cuda = getattr(ort, "cuda_version", "") or ""
    major = cuda.split(".")[0] if cuda else ""
    runtime = f"CUDA {major} runtime" if major else "CUDA runtime"
    package = f"{getattr(ort, 'package_name', 'onnxruntime-gpu')} {ort.__version__}"
    return (f"install the {runtime} and cuDNN {_CUDNN_MAJOR} that {package} needs, "
            f"or pip install \"easel[cuda]\"")


def _nvidia_driver_problem(load: Loader) -> str | None:
    """Whether the NVIDIA driver is there, sees a GPU, and is new enough for this build."""
    name = _driver_library()
    try:
        driver = load(name, False)
    except OSError:
        return f"the NVIDIA driver's library {name} is missing (reinstall the NVIDIA driver)"
    try:
        status = driver.cuInit(0)
        if status == _CUDA_ERROR_NO_DEVICE:
            return "the NVIDIA driver found no GPU"
        version = ctypes.c_int(0)
        driver.cuDriverGetVersion(ctypes.pointer(version))
    except (AttributeError, OSError):
        return None
    needed = _needed_cuda_major()
    have_major, have_minor = divmod(version.value, 1000)
    if needed and version.value and have_major < needed:
        return (
            f"the NVIDIA driver supports CUDA {have_major}.{have_minor // 10} but this "
            f"onnxruntime needs CUDA {needed} (update the driver)"
        )
    if status != _CUDA_SUCCESS:
        return f"the NVIDIA driver could not start (CUDA error {status})"
    return None


def _driver_library() -> str:
    return "nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1"


def _needed_cuda_major() -> int | None:
    cuda = getattr(ort, "cuda_version", "") or ""
    head = cuda.split(".")[0]
    return int(head) if head.isdigit() else None


def _library_file(stem: str) -> str:
    if sys.platform == "win32":
        return f"{stem}.dll"
    if sys.platform == "darwin":
        return f"lib{stem}.dylib"
    return f"lib{stem}.so"


def _load_library(name: str, global_symbols: bool) -> object:
    mode = ctypes.RTLD_GLOBAL if global_symbols else ctypes.RTLD_LOCAL
    return ctypes.CDLL(name, mode=mode)
