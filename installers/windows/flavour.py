"""The steps of installers/windows/build.ps1 that are easier in Python than in PowerShell.

    python flavour.py version                                 Easel's version (pyproject.toml)
    python flavour.py numeric-version                         the same as four numbers, a.b.c.d
    python flavour.py constraints FLAVOUR CONSTRAINTS OUT     the pins for this flavour
    python flavour.py requirements FLAVOUR WHEEL OUT          the app's requirements, one a line
    python flavour.py check FLAVOUR                           the build environment's onnxruntime

A flavour is one ONNX Runtime package. onnxruntime, onnxruntime-gpu and onnxruntime-directml
all provide the module ``onnxruntime`` and cannot share an environment, so each flavour is its
own build. Files are written by Python, not by PowerShell's ``>`` (UTF-16 in Windows
PowerShell, which pip cannot read). Runs in the build environment: it needs ``packaging``,
which requirements-build.txt pins.
"""

from __future__ import annotations

import re
import sys
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]

# The ONNX Runtime builds Easel's requirements and pins name; a flavour replaces them.
ONNXRUNTIME_PACKAGES = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml")
# The build the tests run with (installers/constraints.txt): its version is the other flavours'.
TESTED_PACKAGE = "onnxruntime-gpu"


@dataclass(frozen=True)
class Flavour:
    package: str            # the ONNX Runtime distribution this flavour installs
    provider: str           # the execution provider it must offer (besides the CPU)
    extras: tuple[str, ...] = ()
    version: str | None = None  # None: the version installers/constraints.txt pins for the tests


FLAVOURS: dict[str, Flavour] = {
    "cpu": Flavour("onnxruntime", "CPUExecutionProvider"),
    # The [cuda,cudnn] extras bring CUDA and cuDNN as nvidia-* wheels; easel.spec collects their
    # DLLs, which onnxruntime.preload_dlls() loads by path (engine/runtime/providers.py).
    "cuda": Flavour("onnxruntime-gpu", "CUDAExecutionProvider", extras=("cuda", "cudnn")),
    # The DirectML build stopped at 1.24 (1.24.4 is the newest on PyPI), so this flavour runs an
    # older ONNX Runtime than the tests: inside pyproject.toml's range, but never tested here.
    "directml": Flavour("onnxruntime-directml", "DmlExecutionProvider", version="1.24.4"),
}


def project_version(pyproject: Path = ROOT / "pyproject.toml") -> str:
    return tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["version"]


def numeric_version(version: str) -> str:
    """Windows' file and setup versions are four numbers: 0.1.0 -> 0.1.0.0, 1.2rc1 -> 1.2.0.0."""
    match = re.match(r"\d+(\.\d+)*", version)
    if not match:
        raise SystemExit(f"flavour: the version {version!r} does not start with a number")
    numbers = match.group().split(".")[:4]
    return ".".join(numbers + ["0"] * (4 - len(numbers)))


def flavour_pin(flavour: str, constraints: str) -> str:
    """The flavour's ONNX Runtime pin, e.g. ``onnxruntime==1.31.1``."""
    chosen = FLAVOURS[flavour]
    version = chosen.version
    if version is None:
        pins = _pins(constraints)
        if TESTED_PACKAGE not in pins:
            raise SystemExit(f"flavour: installers/constraints.txt does not pin {TESTED_PACKAGE}")
        (specifier,) = pins[TESTED_PACKAGE].specifier
        version = specifier.version
    return f"{chosen.package}=={version}"


def constraints(flavour: str, text: str) -> str:
    """installers/constraints.txt with every ONNX Runtime pin replaced by the flavour's one."""
    pin = flavour_pin(flavour, text)
    kept = [line for line in text.splitlines() if _pinned_name(line) not in ONNXRUNTIME_PACKAGES]
    return "\n".join(kept + [f"# {flavour} flavour (installers/windows/flavour.py)", pin]) + "\n"


def requirements(flavour: str, metadata: str,
                 environment: dict[str, str] | None = None) -> list[str]:
    """The wheel's own requirements (no extras) on this machine, the ONNX Runtime one replaced
    by the flavour's package. ``environment`` overrides marker values (tests use it)."""
    chosen = FLAVOURS[flavour]
    found = []
    swapped = False
    for line in metadata.splitlines():
        if not line.startswith("Requires-Dist:"):
            continue
        requirement = Requirement(line.split(":", 1)[1].strip())
        if requirement.marker and not requirement.marker.evaluate({"extra": "",
                                                                   **(environment or {})}):
            continue
        requirement.marker = None
        if canonicalize_name(requirement.name) in ONNXRUNTIME_PACKAGES:
            requirement.name = chosen.package
            requirement.extras = set(chosen.extras)
            swapped = True
        found.append(str(requirement))
    if not swapped:
        raise SystemExit("flavour: the wheel does not ask for ONNX Runtime on this machine")
    return found


def nvidia_binaries(folders: list[str] | None = None) -> list[tuple[str, str]]:
    """The nvidia-* wheels' DLLs as PyInstaller binaries, each at its place under ``nvidia/``.

    onnxruntime.preload_dlls() looks for them beside its own package, by their path inside
    site-packages (nvidia/cudnn/bin/..., and for CUDA 13 nvidia/cu13/bin/x86_64/...), so the
    bundle keeps that layout whatever it is. ``folders``: the ``nvidia`` namespace package's
    folders (default: found in this environment).
    """
    if folders is None:
        import importlib.util

        spec = importlib.util.find_spec("nvidia")
        folders = list(spec.submodule_search_locations) if spec else []
    binaries = []
    for folder in map(Path, folders):
        for dll in sorted(folder.rglob("*.dll")):
            binaries.append((str(dll), str(Path("nvidia") / dll.parent.relative_to(folder))))
    return binaries


def version_info(version: str, file_name: str):
    """The Windows version resource of one of the app's programs (Explorer's "Open with"
    list names the program by its FileDescription)."""
    from PyInstaller.utils.win32 import versioninfo as v

    numbers = tuple(int(part) for part in numeric_version(version).split("."))
    strings = [
        v.StringStruct("CompanyName", "Easel"),
        v.StringStruct("FileDescription", "Easel"),
        v.StringStruct("FileVersion", version),
        v.StringStruct("InternalName", Path(file_name).stem),
        v.StringStruct("OriginalFilename", file_name),
        v.StringStruct("ProductName", "Easel"),
        v.StringStruct("ProductVersion", version),
    ]
    return v.VSVersionInfo(
        ffi=v.FixedFileInfo(filevers=numbers, prodvers=numbers),
        kids=[v.StringFileInfo([v.StringTable("040904B0", strings)]),
              v.VarFileInfo([v.VarStruct("Translation", [0x0409, 1200])])])


def wheel_metadata(wheel: Path) -> str:
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        return archive.read(name).decode("utf-8")


def check(flavour: str) -> str:
    """Fails unless the environment's onnxruntime is the flavour's and offers its provider."""
    from importlib import metadata

    import onnxruntime

    chosen = FLAVOURS[flavour]
    installed = [name for name in ONNXRUNTIME_PACKAGES if _installed(metadata, name)]
    if installed != [chosen.package]:
        raise SystemExit(f"flavour: the {flavour} build needs {chosen.package} alone, "
                         f"but the environment has {', '.join(installed) or 'none'}")
    providers = onnxruntime.get_available_providers()
    if chosen.provider not in providers:
        raise SystemExit(f"flavour: {chosen.package} offers {', '.join(providers)}, "
                         f"not {chosen.provider}")
    return f"{chosen.package} {onnxruntime.__version__}: {', '.join(providers)}"


def _installed(metadata, name: str) -> bool:
    try:
        metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return False
    return True


def _pinned_name(line: str) -> str | None:
    entry = line.split("#", 1)[0].strip()
    return canonicalize_name(Requirement(entry).name) if entry else None


def _pins(text: str) -> dict[str, Requirement]:
    pins = {}
    for line in text.splitlines():
        entry = line.split("#", 1)[0].strip()
        if entry:
            requirement = Requirement(entry)
            pins[canonicalize_name(requirement.name)] = requirement
    return pins


def main(argv: list[str]) -> int:
    command, *rest = argv
    if command == "version":
        print(project_version())
    elif command == "numeric-version":
        print(numeric_version(project_version()))
    elif command == "constraints":
        flavour, source, target = rest
        Path(target).write_text(constraints(flavour, Path(source).read_text(encoding="utf-8")),
                                encoding="utf-8")
    elif command == "requirements":
        flavour, wheel, target = rest
        lines = requirements(flavour, wheel_metadata(Path(wheel)))
        Path(target).write_text("\n".join(lines) + "\n", encoding="utf-8")
    elif command == "check":
        print(check(rest[0]))
    else:
        raise SystemExit(f"flavour: unknown command {command}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
