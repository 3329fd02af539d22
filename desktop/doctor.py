"""``easel doctor``: one plain-text report of this installation, to paste into a bug report.

It says which Easel and Python run, which ONNX Runtime build and whether each GPU provider can
start (and why not), which NVIDIA driver and CUDA libraries were found and where, whether the
window can open, where the data folder is and how much room it has, and whether each installed
model passes its checksum check.

Qt-free (the window check reads files, it never loads Qt) and offline. Every section is
guarded: whatever cannot be checked becomes a line "could not check X: <reason>", never an
exception. Nothing heavier than the standard library is imported until a section needs it, so
a broken onnxruntime or platformdirs still leaves a report.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from desktop.units import size_text
from engine.memory import memory_info

if TYPE_CHECKING:
    from engine.runtime import RuntimeOptions
    from engine.runtime.cuda_libraries import Preload

# The distributions that provide the ``onnxruntime`` module; they overwrite one another.
ORT_PACKAGES = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml")
_SOURCE_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Section:
    """A titled block of the report."""

    title: str
    lines: tuple[str, ...]

    def render(self) -> str:
        return "\n".join([f"== {self.title} =="] + [f"  {line}" for line in self.lines])


@dataclass(frozen=True)
class Check:
    """A section to build: ``what`` names it in "could not check <what>"."""

    title: str
    what: str
    lines: Callable[[bool], list[str]]  # full_checksums -> lines


def report(full_checksums: bool = False) -> str:
    """The whole report, as text. ``full_checksums`` hashes every model file (slow for large
    models) instead of the check done when a model is loaded."""
    header = ("Easel doctor report (paste all of it into a bug report; it names folders on "
              "this machine, nothing else of yours)")
    return "\n\n".join([header] + [section.render() for section in sections(full_checksums)]) + "\n"


def sections(full_checksums: bool = False, checks: Sequence[Check] | None = None
             ) -> list[Section]:
    """Each check's section; a check that fails becomes its one "could not check" line."""
    return [_guarded(check, full_checksums) for check in (checks or CHECKS)]


def run(arguments: argparse.Namespace | None = None) -> int:
    """``easel doctor``: print the report to stdout; 0, whatever it found.

    Reads ``arguments.full`` when the parser gave one (``--full``: hash every model file).
    """
    print(report(bool(getattr(arguments, "full", False))), end="", flush=True)
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The doctor's one option, for whichever parser runs it."""
    parser.add_argument("--full", action="store_true",
                        help="hash every model file (slow for large models) instead of the "
                             "quick check done when a model is loaded")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m desktop.doctor [--full]``."""
    parser = argparse.ArgumentParser(prog="python -m desktop.doctor",
                                     description="Print a report of this Easel installation "
                                                 "to paste into a bug report.")
    add_arguments(parser)
    return run(parser.parse_args(argv))


def _guarded(check: Check, full_checksums: bool) -> Section:
    try:
        lines = check.lines(full_checksums)
    except Exception as error:  # noqa: BLE001 - the report must come out whatever broke
        lines = [could_not_check(check.what, error)]
    return Section(check.title, tuple(lines))


def could_not_check(what: str, error: BaseException) -> str:
    return f"could not check {what}: {_reason(error)}"


def _reason(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _each(what: str, produce: Callable[[], str]) -> str:
    """One line of a section, guarded on its own so one bad item does not hide the rest."""
    try:
        return produce()
    except Exception as error:  # noqa: BLE001 - as above
        return could_not_check(what, error)


# Easel and Python ------------------------------------------------------------------------------

def _easel_lines(_full: bool) -> list[str]:
    version, how = easel_installation()
    return [
        f"Easel {version}, {how}",
        f"Python {platform.python_version()} ({platform.python_implementation()}) at "
        f"{sys.executable}",
        _each("the system", lambda: f"System: {platform.platform()}, "
                                    f"{platform.machine() or 'unknown machine'}"),
        _each("the processor and memory", _cpu_and_memory),
    ]


def easel_installation(root: Path = _SOURCE_ROOT) -> tuple[str, str]:
    """(version, how it runs): a frozen app, a source checkout, or an installed package."""
    if getattr(sys, "frozen", False):
        bundle = getattr(sys, "_MEIPASS", None) or Path(sys.executable).parent
        return _installed_version() or "(version unknown)", f"frozen app (PyInstaller) in {bundle}"
    installed = _installed_version()
    checkout = (root / "pyproject.toml").is_file() and (root / "engine").is_dir()
    if checkout:
        # The code that runs is the checkout's: its pyproject says the version.
        version = _pyproject_version(root)
        if not installed:
            return version, f"source checkout at {root}, not installed"
        kind = "an editable install" if _editable() else "installed"
        recorded = f", recorded as {installed}" if installed != version else ""
        return version, f"source checkout at {root} ({kind}{recorded})"
    if installed:
        return installed, f"installed package in {root}"
    return "(version unknown)", f"running from {root}, not installed"


def _installed_version() -> str | None:
    try:
        return importlib.metadata.version("easel")
    except importlib.metadata.PackageNotFoundError:
        return None


def _editable() -> bool:
    import json

    # Run from the checkout, its easel.egg-info is found first; pip's record is the other.
    for distribution in importlib.metadata.distributions(name="easel"):
        text = distribution.read_text("direct_url.json")
        if text and json.loads(text).get("dir_info", {}).get("editable"):
            return True
    return False


def _pyproject_version(root: Path) -> str:
    import tomllib

    with open(root / "pyproject.toml", "rb") as stream:
        return str(tomllib.load(stream)["project"]["version"])


def _cpu_and_memory() -> str:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 0
    line = f"Processor: {cores} core{'s' if cores != 1 else ''} usable"
    memory = memory_info()
    if memory:
        total, available = memory
        line += f"; memory {size_text(available)} free of {size_text(total)}"
    return line


# ONNX Runtime and its providers ----------------------------------------------------------------

def _onnxruntime_lines(_full: bool) -> list[str]:
    installed = [(name, _distribution_version(name)) for name in ORT_PACKAGES]
    installed = [(name, version) for name, version in installed if version]
    lines = []
    if len(installed) > 1:
        names = " and ".join(f"{name} {version}" for name, version in installed)
        lines.append(f"WARNING: {names} are all installed; they provide the same module and "
                     f"overwrite each other: uninstall all of them, then install one")
    import onnxruntime as ort

    package = getattr(ort, "package_name", None) or (installed[0][0] if installed else "?")
    cuda = getattr(ort, "cuda_version", "") or ""
    built = f", built for CUDA {cuda}" if cuda else ""
    lines.append(f"{package} {ort.__version__}{built} ({Path(ort.__file__).parent})")
    if not installed:
        lines.append("no onnxruntime package is registered with pip (a frozen app, or a "
                     "copied folder)")
    return lines + _provider_lines()


def _provider_lines() -> list[str]:
    from engine.runtime.device import provider_problem
    from engine.runtime.providers import DISPLAY_NAMES, GPU_PROVIDERS, ORT_NAMES
    from engine.runtime.providers import available_providers as built_in

    available = built_in()
    lines = []
    if {"cuda", "tensorrt"} & set(available):
        # What the engine does before its first CUDA session, so the checks below see the
        # libraries a session would (the next section says how it went).
        _preload()
    lines.append("Providers in this build: "
                 + ", ".join(f"{DISPLAY_NAMES[name]} ({ORT_NAMES[name]})" for name in available))
    for name in available:
        if name in GPU_PROVIDERS:
            lines.append("  " + _each(DISPLAY_NAMES[name], lambda name=name: _gpu_line(
                name, DISPLAY_NAMES[name], provider_problem(name, installed=available))))
    threads = _threads()
    lines.append(f"  CPU: always available ({threads} thread{'s' if threads != 1 else ''} "
                 f"by default)")
    missing = [DISPLAY_NAMES[name] for name in ORT_NAMES
               if name in GPU_PROVIDERS and name not in available]
    if missing:
        lines.append(f"Not in this build: {', '.join(missing)}")
    return lines


def _gpu_line(name: str, shown: str, problem: str | None) -> str:
    if problem is None:
        if name in ("cuda", "tensorrt"):
            return f"{shown}: can start (its libraries load and the driver sees a GPU)"
        return f"{shown}: built in (Easel cannot check more without starting a model)"
    return f"{shown}: cannot start: {problem}"


def _preload() -> Preload:
    from engine.runtime.cuda_libraries import preload_pip_libraries

    return preload_pip_libraries()


def _threads() -> int:
    from engine.runtime.sessions import RuntimeOptions

    return RuntimeOptions().thread_count


def _distribution_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


# Where pictures are made ------------------------------------------------------------------------

def _making_lines(_full: bool) -> list[str]:
    from desktop.model_prepare import command_line_runtime, saved_runtime

    command_line = "EASEL_PROVIDERS and defaults" if os.environ.get("EASEL_PROVIDERS") else (
        "defaults")
    return [f"The window (its settings): {_where(saved_runtime())}",
            f"The command line ({command_line}): {_where(command_line_runtime())}",
            "What really ran is said after each picture: on the status line, and by every "
            "command (\"running on …\")"]


def _where(runtime: RuntimeOptions) -> str:
    """"CUDA on NVIDIA H100 80GB HBM3 (79.2 GiB), fp16, CUDA graphs" or "CPU, 8 threads,
    fp32": where a model would run under ``runtime``, as far as can be known without one."""
    from engine.runtime.device import nvidia_driver
    from engine.runtime.providers import DISPLAY_NAMES, resolve_providers
    from engine.runtime.sessions import expected_providers, runs_in_half

    providers = expected_providers(resolve_providers(runtime.providers))
    first = providers[0]
    if first == "cpu":
        threads = runtime.thread_count
        return f"CPU, {threads} thread{'s' if threads != 1 else ''}, fp32"
    parts = [DISPLAY_NAMES[first]]
    if first in ("cuda", "tensorrt"):
        gpus = nvidia_driver().gpus
        if gpus:
            parts[0] += f" on {gpus[0].name} ({gpus[0].memory_bytes / 2**30:.1f} GiB)"
    parts.append("fp16 (the VAE falls back to fp32 if it overflows)"
                 if runs_in_half(runtime, providers) else "fp32")
    if first == "cuda" and runtime.cuda_graph:
        parts.append("CUDA graphs where the model allows")
    return ", ".join(parts)


# NVIDIA driver and CUDA libraries ---------------------------------------------------------------

def _nvidia_lines(_full: bool) -> list[str]:
    from engine.runtime.cuda_libraries import (
        built_cuda_major,
        cuda_libraries,
        nvidia_wheels,
        wanted_libraries,
    )
    from engine.runtime.device import nvidia_driver

    if not wanted_libraries():
        return [f"not checked: there is no CUDA on {platform.system() or sys.platform}"]
    lines = [_each("the NVIDIA driver", lambda: f"NVIDIA driver: {nvidia_driver().describe()}")]
    wheels = nvidia_wheels()
    listed = ", ".join(f"{name} {version}" for name, version in wheels) or "none installed"
    lines.append(f"nvidia-* wheels: {listed}")
    preload = _preload()
    if preload.ran or preload.failed:
        lines.append(f"Preloading them: {preload.detail}")
    if built_cuda_major() is None:
        lines.append("this onnxruntime has no CUDA: the CUDA libraries were not looked for")
    lines += [library.describe() for library in cuda_libraries()]
    return lines


# The window ------------------------------------------------------------------------------------

def _display_lines(_full: bool) -> list[str]:
    from desktop import display_check

    pyside = next(((name, version) for name in ("PySide6-Essentials", "PySide6")
                   if (version := _distribution_version(name))), None)
    lines = [f"Qt binding: {pyside[0]} {pyside[1]}" if pyside
             else "Qt binding: PySide6 is not installed (the window cannot open)"]
    platforms = display_check.qt_platforms(os.environ)
    lines.append("Qt platform plugins to try: " + (", ".join(platforms) if platforms
                                                   else "none (no DISPLAY or WAYLAND_DISPLAY)"))
    problem = display_check.problem()
    lines.append(f"Window: {problem}" if problem else "Window: can open as far as can be checked "
                                                       "without starting Qt")
    if sys.platform.startswith("linux"):
        missing = display_check.missing_libraries_problem()
        lines.append("System libraries for Qt's xcb plugin: "
                     + (missing if missing else "all found"))
    return lines


# Data folder and models -------------------------------------------------------------------------

def _data_lines(_full: bool) -> list[str]:
    from desktop import paths

    override = os.environ.get("EASEL_HOME")
    folder = paths.data_dir()
    where = f"(EASEL_HOME={override})" if override else "(the standard place)"
    usage = shutil.disk_usage(folder)
    return [
        f"Data folder: {folder} {where}",
        f"Writable: {_writable(folder)}",
        f"Free space: {size_text(usage.free)} of {size_text(usage.total)}",
    ]


def _writable(folder: Path) -> str:
    """'yes', or 'no (<why>)': found by writing a small file, as the app would."""
    try:
        handle, name = tempfile.mkstemp(prefix=".easel-doctor-", dir=folder)
    except OSError as error:
        return f"no ({error.strerror or error})"
    os.close(handle)
    os.unlink(name)
    return "yes"


def _model_lines(full: bool) -> list[str]:
    from desktop.cli.common import model_store
    from engine.manifest import verify_manifest

    store = model_store()
    models = store.list() + store.upscalers()
    how = "every file hashed" if full else "the check done at load"
    lines = [f"Models folder: {store.root}; built-in models: {store.built_in}",
             f"Checksums: {how}"]

    def checked(model) -> str:
        verify_manifest(model.path, full=full)
        return "checksums match"

    for model in models:
        where = ", built in" if model.built_in else ""
        label = f"{model.name} ({model.kind}, {model.family}, {size_text(model.size_bytes)}{where})"
        lines.append(f"{label}: " + _checked(lambda model=model: checked(model)))
    listed = {model.path for model in models}
    for folder in sorted(store.root.iterdir()):
        if folder.is_dir() and not folder.name.startswith(".") and folder not in listed:
            lines.append(f"{folder.name}: not a model Easel can use: "
                         + _checked(lambda folder=folder: _unreadable(folder)))
    if not models:
        lines.append("no models installed")
    return lines


def _checked(check: Callable[[], str]) -> str:
    """The check's answer, or the sentence it failed with (a damaged model is a finding)."""
    try:
        return check()
    except Exception as error:  # noqa: BLE001 - a model's failure is the report's content
        text = " ".join(str(error).split())
        return text or type(error).__name__


def _unreadable(folder: Path) -> str:
    """Why the store passed over ``folder``: the sentence its description raises."""
    from engine.description import ModelDescription
    from engine.upscale.description import UpscalerDescription, is_upscaler_folder

    (UpscalerDescription if is_upscaler_folder(folder) else ModelDescription).load(folder)
    return "its description reads, yet the store does not list it"


CHECKS: tuple[Check, ...] = (
    Check("Easel", "the Easel version", _easel_lines),
    Check("ONNX Runtime", "ONNX Runtime", _onnxruntime_lines),
    Check("Making pictures", "where pictures are made", _making_lines),
    Check("NVIDIA driver and CUDA libraries", "the NVIDIA driver and CUDA libraries",
          _nvidia_lines),
    Check("Window", "whether the window can open", _display_lines),
    Check("Data folder", "the data folder", _data_lines),
    Check("Models", "the installed models", _model_lines),
)


if __name__ == "__main__":
    sys.exit(main())
