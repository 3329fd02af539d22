"""Which device a session really runs on, and in words why a requested GPU is not used.

onnxruntime does not fail when a GPU provider cannot start: it logs the cause and quietly runs
on the CPU. The engine compares what it asked for with what the session uses, and finds the
cause itself by loading the provider's library the way onnxruntime does and reading the error.
A machine with no NVIDIA GPU at all is no fault: it gets a plain note, not a warning, and no
advice to install CUDA.
"""

from __future__ import annotations

import ctypes
import functools
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import onnxruntime as ort

from engine.runtime.cuda_libraries import CUDNN_MAJOR, CudaLibrary, built_cuda_major, cuda_libraries
from engine.runtime.errors import is_out_of_memory, ort_detail
from engine.runtime.providers import DISPLAY_NAMES, GPU_PROVIDERS, available_providers

# load(name, global_symbols) -> library handle; raises OSError like ctypes.CDLL.
Loader = Callable[[str, bool], object]
# () -> the CUDA libraries found (engine.runtime.cuda_libraries.cuda_libraries; tests fake it).
LibraryFinder = Callable[[], Sequence[CudaLibrary]]

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
    a GPU provider was tried on a machine that has no NVIDIA GPU. ``libraries`` says which
    CUDA and cuDNN files were found and where, when an NVIDIA provider was asked for on a
    machine with an NVIDIA driver (it is detail: two reports that differ only there are equal).
    """

    requested: tuple[str, ...]
    in_use: str
    reason: str | None
    cpu_threads: int = 0
    note: str | None = None
    libraries: tuple[CudaLibrary, ...] = field(default=(), compare=False)
    gpu: Gpu | None = None  # the NVIDIA GPU a CUDA or TensorRT session runs on, when known
    precision: str | None = None  # "fp16" when the session computes in half precision

    @property
    def summary(self) -> str:
        """A few words for the status bar: "CUDA: NVIDIA H100 80GB HBM3, fp16",
        "CPU (8 threads)"."""
        name = DISPLAY_NAMES.get(self.in_use, self.in_use)
        if self.in_use == "cpu" and self.cpu_threads:
            plural = "s" if self.cpu_threads != 1 else ""
            name = f"{name} ({self.cpu_threads} thread{plural})"
            return f"{name}, {self.precision}" if self.precision else name
        details = [part for part in (self.gpu and self.gpu.name, self.precision) if part]
        return f"{name}: {', '.join(details)}" if details else name

    def library_lines(self) -> list[str]:
        """One line per CUDA library: where each copy was found and which one is in use."""
        return [library.describe() for library in self.libraries]


def device_report(
    requested: Sequence[str],
    in_use: Sequence[str],
    *,
    cpu_threads: int,
    start_errors: Mapping[str, BaseException] | None = None,
    load: Loader | None = None,
    installed: Sequence[str] | None = None,
    find_libraries: LibraryFinder | None = None,
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
    libraries: tuple[CudaLibrary, ...] = ()
    if note is None and any(name in _NVIDIA_PROVIDERS for name in requested):
        libraries = tuple((find_libraries or cuda_libraries)())
    gpu = None
    if current in _NVIDIA_PROVIDERS:
        # Sessions run on CUDA's device 0 (onnxruntime's default, which Easel keeps).
        gpus = nvidia_driver(load).gpus if load is not None else _gpus()
        gpu = gpus[0] if gpus else None
    return DeviceReport(tuple(requested), current, reason,
                        cpu_threads if current == "cpu" else 0, note, libraries, gpu)


@dataclass(frozen=True)
class Gpu:
    """One GPU as the driver names it, with its memory."""

    name: str  # "NVIDIA H100 80GB HBM3"
    memory_bytes: int

    def describe(self) -> str:
        """"NVIDIA H100 80GB HBM3, 79.2 GiB"."""
        return f"{self.name}, {self.memory_bytes / 2**30:.1f} GiB"


@dataclass(frozen=True)
class NvidiaDriver:
    """What the NVIDIA driver says about itself, as far as it could be asked."""

    library: str  # libcuda.so.1 or nvcuda.dll
    loaded: bool  # its library loads
    kernel_driver: bool  # /proc/driver/nvidia is there (Linux)
    init_status: int | None = None  # cuInit's answer; None when it could not be asked
    cuda_version: int | None = None  # cuDriverGetVersion: 12040 is CUDA 12.4
    gpu_count: int | None = None
    version: str | None = None  # the kernel module's version ("550.54.14"), Linux only
    gpus: tuple[Gpu, ...] = ()  # each GPU's name and memory, in CUDA's device order

    def describe(self) -> str:
        """One line for a report: "550.54.14, supports CUDA 12.4, sees 1 GPU"."""
        if not self.loaded:
            kernel = ("the kernel driver is loaded but its library is missing"
                      if self.kernel_driver else "no NVIDIA kernel driver either")
            return f"not found ({self.library} cannot be loaded; {kernel})"
        parts = [self.version or "version unknown"]
        if self.cuda_version:
            major, minor = divmod(self.cuda_version, 1000)
            parts.append(f"supports CUDA {major}.{minor // 10}")
        if self.init_status == _CUDA_ERROR_NO_DEVICE:
            parts.append("sees no GPU")
        elif self.init_status not in (None, _CUDA_SUCCESS):
            parts.append(f"could not start (CUDA error {self.init_status})")
        elif self.gpu_count is not None:
            parts.append(f"sees {self.gpu_count} GPU{'s' if self.gpu_count != 1 else ''}")
        text = ", ".join(parts)
        if self.gpus:
            text += ": " + "; ".join(f"{index}: {gpu.describe()}"
                                     for index, gpu in enumerate(self.gpus))
        return text


def nvidia_driver(load: Loader | None = None) -> NvidiaDriver:
    """Load the NVIDIA driver's library and ask it whether it starts, which CUDA it supports
    and how many GPUs it sees. Never raises."""
    name = _driver_library()
    kernel = NVIDIA_KERNEL_DRIVER.exists()
    version = _kernel_module_version()
    try:
        driver = (load or _load_library)(name, False)
    except OSError:
        return NvidiaDriver(name, False, kernel, version=version)
    try:
        status = driver.cuInit(0)
    except (AttributeError, OSError):
        return NvidiaDriver(name, True, kernel, version=version)
    cuda_version = gpus = None
    described: tuple[Gpu, ...] = ()
    try:
        answer = ctypes.c_int(0)
        driver.cuDriverGetVersion(ctypes.pointer(answer))
        cuda_version = answer.value
        if status == _CUDA_SUCCESS:
            count = ctypes.c_int(0)
            if driver.cuDeviceGetCount(ctypes.pointer(count)) == _CUDA_SUCCESS:
                gpus = count.value
                described = _describe_gpus(driver, gpus)
    except (AttributeError, OSError):
        pass
    return NvidiaDriver(name, True, kernel, status, cuda_version, gpus, version, described)


@functools.cache
def _gpus() -> tuple[Gpu, ...]:
    """The machine's GPUs, asked of the driver once per process: every session a model opens
    (three to five) reports its device, and the GPUs do not change while Easel runs."""
    return nvidia_driver().gpus


def _describe_gpus(driver: object, count: int) -> tuple[Gpu, ...]:
    """Each GPU's name and memory as the driver gives them (no CUDA context is made, so
    this costs nothing on the GPU); the GPUs it cannot describe are left out."""
    gpus = []
    for index in range(count):
        try:
            device = ctypes.c_int(0)
            if driver.cuDeviceGet(ctypes.pointer(device), index) != _CUDA_SUCCESS:
                continue
            name = ctypes.create_string_buffer(256)
            memory = ctypes.c_size_t(0)
            if (driver.cuDeviceGetName(name, len(name), device) != _CUDA_SUCCESS
                    or driver.cuDeviceTotalMem_v2(ctypes.pointer(memory), device)
                    != _CUDA_SUCCESS):
                continue
        except (AttributeError, OSError):
            continue
        gpus.append(Gpu(name.value.decode(errors="replace").strip() or "unnamed GPU",
                        memory.value))
    return tuple(gpus)


def _kernel_module_version() -> str | None:
    """The version in /proc/driver/nvidia/version ("NVRM version: ... Kernel Module  550.54.14
    ..."); None where there is none."""
    try:
        first = (NVIDIA_KERNEL_DRIVER / "version").read_text(errors="replace").splitlines()[0]
    except (OSError, IndexError):
        return None
    match = re.search(r"Kernel Module(?: for \S+)?\s+(\S+)", first)
    return match.group(1) if match else " ".join(first.split())


def no_nvidia_gpu(load: Loader | None = None) -> bool:
    """True when the machine plainly has no NVIDIA GPU: no driver at all, or a driver that
    sees none. A kernel driver without its library is a broken install, not "no GPU"."""
    driver = nvidia_driver(load)
    if not driver.loaded:
        return not driver.kernel_driver
    return driver.init_status == _CUDA_ERROR_NO_DEVICE


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
    return provider_problem(provider, error=error, load=load, installed=installed) or (
        "onnxruntime did not say why (run with EASEL_ORT_LOG_SEVERITY=0 to see its log)")


def provider_problem(
    provider: str,
    *,
    error: BaseException | None = None,
    load: Loader | None = None,
    installed: Sequence[str] | None = None,
) -> str | None:
    """What stops ``provider`` from starting, as a clause; None when nothing Easel can check
    does (the provider is built in and, for NVIDIA's, its libraries and the driver load).

    Only the NVIDIA providers can be checked without starting a session: for DirectML and
    CoreML, being built in is all that is known.
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
    return " and ".join(causes) or None


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
    return (f"install the {runtime} and cuDNN {CUDNN_MAJOR} that {package} needs, "
            f"or pip install \"easel[cuda]\"")


def _nvidia_driver_problem(load: Loader) -> str | None:
    """Whether the NVIDIA driver is there, sees a GPU, and is new enough for this build."""
    driver = nvidia_driver(load)
    if not driver.loaded:
        return (f"the NVIDIA driver's library {driver.library} is missing "
                f"(reinstall the NVIDIA driver)")
    if driver.init_status is None:
        return None
    if driver.init_status == _CUDA_ERROR_NO_DEVICE:
        return "the NVIDIA driver found no GPU"
    if driver.cuda_version is None:
        return None
    needed = built_cuda_major()
    have_major, have_minor = divmod(driver.cuda_version, 1000)
    if needed and driver.cuda_version and have_major < needed:
        return (
            f"the NVIDIA driver supports CUDA {have_major}.{have_minor // 10} but this "
            f"onnxruntime needs CUDA {needed} (update the driver)"
        )
    if driver.init_status != _CUDA_SUCCESS:
        return f"the NVIDIA driver could not start (CUDA error {driver.init_status})"
    return None


def _driver_library() -> str:
    return "nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1"


def _library_file(stem: str) -> str:
    if sys.platform == "win32":
        return f"{stem}.dll"
    if sys.platform == "darwin":
        return f"lib{stem}.dylib"
    return f"lib{stem}.so"


def _load_library(name: str, global_symbols: bool) -> object:
    mode = ctypes.RTLD_GLOBAL if global_symbols else ctypes.RTLD_LOCAL
    return ctypes.CDLL(name, mode=mode)
