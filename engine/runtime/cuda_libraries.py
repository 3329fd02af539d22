"""Where the CUDA and cuDNN libraries of the NVIDIA flavour come from, and loading the PyPI ones.

onnxruntime-gpu links against CUDA, cuBLAS and cuDNN without shipping them. They come from a
system install (found by the dynamic loader), from the ``nvidia-*`` wheels (``easel[cuda]``,
under site-packages/nvidia, where the loader does not look), or, in a frozen app, from the
bundle's own folder. onnxruntime (1.21 and later) loads the wheels' copies by path with
``preload_dlls``; ``preload_pip_libraries`` does that once, before the first CUDA session.

``cuda_libraries`` says, for each library, every copy found and the one this process has
loaded, so a report can tell a user which CUDA they really run on.
"""

from __future__ import annotations

import contextlib
import ctypes.util
import functools
import importlib.metadata
import importlib.util
import io
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import onnxruntime as ort

CUDNN_MAJOR = 9  # every onnxruntime-gpu since 1.19 is built against cuDNN 9
_CURAND_MAJOR = 10  # cuRAND kept its soname through CUDA 11, 12 and 13

# Where a copy was found, in the order the loader prefers them once the wheels are preloaded.
BUNDLE, WHEEL, SYSTEM = "bundled with the app", "pip wheel", "system"

# file name -> the paths of the system's copies (tests pass their own).
SystemSearch = Callable[[str], list[Path]]
T = TypeVar("T")

_LDCONFIG_LINE = re.compile(r"^\s*(?P<name>\S+)\s+\((?P<flags>[^)]*)\)\s+=>\s+(?P<path>\S.*)$")
_FAILED_TO_LOAD = re.compile(r"^Failed to load (?P<what>\S+?):\s*(?P<why>.*)$")
_WARNING = re.compile(r"WARNING:\s*(?P<text>.*?)(?:\x1b\[0m)?$")


@dataclass(frozen=True)
class LibraryCopy:
    """One file of a library, and where it comes from (``BUNDLE``, ``WHEEL`` or ``SYSTEM``)."""

    path: Path
    origin: str


@dataclass(frozen=True)
class CudaLibrary:
    """A library the NVIDIA flavour needs, every copy found, and the copy in use."""

    label: str  # in words: "cuDNN 9"
    file: str  # the name the loader looks for: "libcudnn.so.9"
    copies: tuple[LibraryCopy, ...] = ()
    loaded: Path | None = None  # the file this process has loaded, when it has

    @property
    def found(self) -> bool:
        return bool(self.copies) or self.loaded is not None

    def describe(self) -> str:
        """One line: "cuDNN 9 (libcudnn.so.9): in use from /x (pip wheel); also /y (system)"."""
        head = f"{self.label} ({self.file})"
        if not self.found:
            return f"{head}: not found"
        listed = [f"{copy.path} ({copy.origin})" for copy in self.copies]
        if self.loaded is None:
            return f"{head}: found at {'; '.join(listed)}"
        in_use = next((text for copy, text in zip(self.copies, listed, strict=True)
                       if _same_file(copy.path, self.loaded)), f"{self.loaded} (elsewhere)")
        others = [text for text in listed if text != in_use]
        also = f"; also {'; '.join(others)}" if others else ""
        return f"{head}: in use from {in_use}{also}"


@dataclass(frozen=True)
class Preload:
    """What ``preload_pip_libraries`` did, in one sentence (``ran`` False: it did nothing)."""

    ran: bool
    detail: str
    failed: bool = False


def wanted_libraries(cuda_major: int | None = None,
                     system: str | None = None) -> list[tuple[str, str]]:
    """(label, file name) of the driver and the libraries this onnxruntime build loads.

    ``cuda_major`` defaults to the CUDA this onnxruntime was built for; without one (a CPU
    build) only the driver is listed. macOS has no CUDA: nothing.
    """
    system = system or sys.platform
    cuda_major = cuda_major if cuda_major is not None else built_cuda_major()
    windows = system == "win32"
    if not (windows or system.startswith("linux")):
        return []
    wanted = [("CUDA driver", "nvcuda.dll" if windows else "libcuda.so.1")]
    if cuda_major is None:
        return wanted
    names = {
        f"CUDA runtime {cuda_major}": ("cudart64_{}.dll", "libcudart.so.{}", cuda_major),
        f"cuBLAS {cuda_major}": ("cublas64_{}.dll", "libcublas.so.{}", cuda_major),
        f"cuBLASLt {cuda_major}": ("cublasLt64_{}.dll", "libcublasLt.so.{}", cuda_major),
        "cuRAND": ("curand64_{}.dll", "libcurand.so.{}", _CURAND_MAJOR),
        f"cuDNN {CUDNN_MAJOR}": ("cudnn64_{}.dll", "libcudnn.so.{}", CUDNN_MAJOR),
    }
    for label, (windows_name, linux_name, major) in names.items():
        wanted.append((label, (windows_name if windows else linux_name).format(major)))
    return wanted


def built_cuda_major() -> int | None:
    """The CUDA major version this onnxruntime package was built for; None for a CPU build."""
    head = (getattr(ort, "cuda_version", "") or "").split(".")[0]
    return int(head) if head.isdigit() else None


def cuda_libraries(
    wanted: Sequence[tuple[str, str]] | None = None,
    *,
    bundle: Path | None = None,
    wheel_roots: Sequence[Path] | None = None,
    search_system: SystemSearch | None = None,
    loaded: Sequence[Path] | None = None,
) -> list[CudaLibrary]:
    """Each wanted library with every copy found and the one loaded in this process.

    The defaults are the real ones: the PyInstaller bundle (``sys._MEIPASS``), the folders of
    the ``nvidia`` package, the system loader's paths, and ``/proc/self/maps``. Nothing is
    loaded here: looking must not change which copy a later session gets.
    """
    wanted = wanted_libraries() if wanted is None else wanted
    bundle = bundle_folder() if bundle is None else bundle
    wheel_roots = nvidia_package_roots() if wheel_roots is None else wheel_roots
    search_system = search_system or system_library_paths
    loaded = loaded_libraries() if loaded is None else loaded
    folders: list[tuple[Path, str]] = []
    if bundle is not None:
        folders += [(bundle, BUNDLE)] + [(f, BUNDLE) for f in _wheel_folders(bundle / "nvidia")]
    for root in wheel_roots:
        folders += [(folder, WHEEL) for folder in _wheel_folders(root)]
    found = []
    for label, name in wanted:
        copies = [LibraryCopy(folder / name, origin) for folder, origin in folders
                  if (folder / name).is_file()]
        copies += [LibraryCopy(path, SYSTEM) for path in search_system(name)]
        copies = _unique(copies, lambda copy: copy.path)
        found.append(CudaLibrary(label, name, tuple(copies), _loaded_copy(name, copies, loaded)))
    return found


def bundle_folder() -> Path | None:
    """A PyInstaller app's folder of bundled files; None when not frozen."""
    folder = getattr(sys, "_MEIPASS", None)
    return Path(folder) if getattr(sys, "frozen", False) and folder else None


def nvidia_package_roots() -> list[Path]:
    """The folders of the ``nvidia`` namespace package the ``nvidia-*`` wheels install into."""
    try:
        spec = importlib.util.find_spec("nvidia")
    except (ImportError, ValueError):
        return []
    if spec is None or not spec.submodule_search_locations:
        return []
    return [Path(location) for location in spec.submodule_search_locations]


def nvidia_wheels() -> list[tuple[str, str]]:
    """(name, version) of the installed ``nvidia-*`` distributions, by name."""
    found = {}
    for distribution in importlib.metadata.distributions():
        name = distribution.metadata["Name"] or ""
        if name.lower().startswith("nvidia-"):
            found[name] = distribution.version
    return sorted(found.items())


def _wheel_folders(root: Path) -> list[Path]:
    """The library folders of the wheels under ``root``: nvidia/cudnn/lib (Linux),
    nvidia/cudnn/bin (Windows) and CUDA 13's nvidia/cu13/bin/x86_64."""
    if not root.is_dir():
        return []
    patterns = ("*/lib", "*/bin", "*/bin/*")
    return [folder for pattern in patterns for folder in sorted(root.glob(pattern))
            if folder.is_dir()]


def system_library_paths(name: str) -> list[Path]:
    """Where the system loader would find ``name``: LD_LIBRARY_PATH (PATH on Windows), the
    loader's cache (``ldconfig -p``), and ``ctypes.util.find_library`` where it gives a path."""
    variable = "PATH" if sys.platform == "win32" else "LD_LIBRARY_PATH"
    folders = [Path(entry) for entry in os.environ.get(variable, "").split(os.pathsep) if entry]
    paths = [folder / name for folder in folders if (folder / name).is_file()]
    paths += [path for path in _loader_cache().get(name, []) if path.is_file()]
    stem = _stem(name)
    located = ctypes.util.find_library(stem) if stem else None
    if located and os.path.isabs(located) and Path(located).name == name:
        paths.append(Path(located))  # Windows and macOS give paths; Linux only a name
    return _unique(paths, lambda path: path)


@functools.cache
def _loader_cache() -> dict[str, list[Path]]:
    """The glibc loader's cache: file name -> paths. Empty where there is no ldconfig."""
    if not sys.platform.startswith("linux"):
        return {}
    for command in ("/sbin/ldconfig", "/usr/sbin/ldconfig", "ldconfig"):
        try:
            listing = subprocess.run([command, "-p"], capture_output=True, text=True,
                                     timeout=10, check=False).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        return parse_ldconfig(listing)
    return {}


def parse_ldconfig(listing: str) -> dict[str, list[Path]]:
    """``ldconfig -p``'s lines ("\tlibcudart.so.13 (libc6,x86-64) => /path") as a table."""
    table: dict[str, list[Path]] = {}
    for line in listing.splitlines():
        match = _LDCONFIG_LINE.match(line)
        if match:
            table.setdefault(match.group("name"), []).append(Path(match.group("path").strip()))
    return table


def loaded_libraries(maps: Path = Path("/proc/self/maps")) -> list[Path]:
    """The shared libraries this process has mapped (Linux; elsewhere none are known)."""
    try:
        text = maps.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    loaded: dict[str, None] = {}
    for line in text.splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5].startswith("/") and ".so" in fields[5]:
            loaded[fields[5].strip()] = None
    return [Path(path) for path in loaded]


def _loaded_copy(name: str, copies: Sequence[LibraryCopy],
                 loaded: Sequence[Path]) -> Path | None:
    """The mapped file that is ``name``: one of its copies, or a file named after it."""
    # The loader maps the real file (libcuda.so.550.54.14) behind the name (libcuda.so.1).
    mapped = {os.path.realpath(path): path for path in loaded}
    for copy in copies:
        if os.path.realpath(copy.path) in mapped:
            return mapped[os.path.realpath(copy.path)]
    return next((path for path in loaded
                 if path.name == name or path.name.startswith(name + ".")), None)


def _stem(name: str) -> str:
    """"libcudart.so.13" -> "cudart"; "cudart64_13.dll" -> "cudart64_13"."""
    if name.endswith(".dll"):
        return name[:-4]
    base = name.split(".so")[0]
    return base[3:] if base.startswith("lib") else base


def _unique(items: Iterable[T], path_of: Callable[[T], Path]) -> list[T]:
    """First of each file (a symlink and its target, or one folder reached twice, count once)."""
    seen: set[str] = set()
    kept = []
    for item in items:
        key = os.path.realpath(path_of(item))
        if key not in seen:
            seen.add(key)
            kept.append(item)
    return kept


def _same_file(one: Path, other: Path) -> bool:
    return os.path.realpath(one) == os.path.realpath(other)


# Preloading the wheels' libraries -------------------------------------------------------------

@functools.cache
def preload_pip_libraries() -> Preload:
    """Load CUDA and cuDNN from the ``nvidia-*`` wheels so onnxruntime's CUDA provider finds
    them; once per process. Never raises: what went wrong is in the result."""
    return preload(ort)


def preload(runtime: object, wheels_present: Callable[[], bool] | None = None) -> Preload:
    """``runtime.preload_dlls`` when there are wheels to load and it exists (tests pass fakes).

    onnxruntime prints its advice to stdout, which would end up in the user's pipes: it is
    kept, and its "Failed to load" lines become the result's sentence.
    """
    if not (wheels_present or _wheels_present)():
        return Preload(False, "no nvidia-* wheels are installed; CUDA and cuDNN come from the "
                              "system")
    if not hasattr(runtime, "preload_dlls"):
        version = getattr(runtime, "__version__", "?")
        return Preload(False, f"onnxruntime {version} cannot load the nvidia-* wheels' "
                              f"libraries (that needs onnxruntime 1.21 or newer)", failed=True)
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            # "": the wheels in site-packages, then the loader's own paths.
            runtime.preload_dlls(directory="")
    except Exception as error:  # noqa: BLE001 - a failed preload is reported, never raised
        return Preload(True, f"loading the nvidia-* wheels' libraries failed: "
                             f"{' '.join(str(error).split()) or type(error).__name__}",
                       failed=True)
    lines = printed.getvalue().splitlines()
    failures = [f"{match.group('what')} ({' '.join(match.group('why').split())})"
                for match in map(_FAILED_TO_LOAD.match, lines) if match]
    if failures:
        return Preload(True, f"onnxruntime could not load {'; '.join(failures)}", failed=True)
    warnings = [match.group("text") for line in lines if (match := _WARNING.search(line))]
    if warnings:
        return Preload(True, f"onnxruntime did not load them: {' '.join(warnings)}",
                       failed=True)
    return Preload(True, "the nvidia-* wheels' CUDA and cuDNN libraries were loaded")


def _wheels_present() -> bool:
    bundle = bundle_folder()
    return bool(nvidia_package_roots()) or (bundle is not None and (bundle / "nvidia").is_dir())
