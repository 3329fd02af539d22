"""Small steps of installers/linux/build.sh that are easier in Python than in shell.

    python flavour.py constraints CONSTRAINTS          the pins, for this flavour's environment
    python flavour.py requirements WHEEL cpu|nvidia [EXTRA ...]
                                                       the app's requirements (and those of the
                                                       extras named), one a line
    python flavour.py control TEMPLATE key=value ...   DEBIAN/control from its template
    python flavour.py glibc BUNDLE                     the newest glibc symbol version it needs
    python flavour.py depends-check BUNDLE CONTROL     every system library the bundle needs is
                                                       in a package that Depends names

Runs in the build environment (it needs ``packaging``, which requirements-build.txt pins).
"""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

GPU, CPU = "onnxruntime-gpu", "onnxruntime"


def constraints(text: str) -> str:
    """The pins with the plain onnxruntime pin freed of its platform marker.

    installers/constraints.txt pins ``onnxruntime`` for macOS only (pyproject.toml asks for it
    there); the CPU flavour installs it on Linux too, so its pin must apply here, and it must
    be the version the tests ran with onnxruntime-gpu.
    """
    pins = {}
    lines = []
    for line in text.splitlines():
        entry = line.split("#", 1)[0].strip()
        if not entry:
            lines.append(line)
            continue
        requirement = Requirement(entry)
        name = canonicalize_name(requirement.name)
        pins[name] = requirement
        if name == CPU:
            requirement.marker = None
            line = str(requirement)
        lines.append(line)
    if CPU not in pins or GPU not in pins:
        raise SystemExit("flavour: installers/constraints.txt must pin both onnxruntime-gpu "
                         "and onnxruntime")
    if pins[CPU].specifier != pins[GPU].specifier:
        raise SystemExit(f"flavour: installers/constraints.txt pins {pins[CPU]} beside "
                         f"{pins[GPU]}; the two builds must be the same version")
    return "\n".join(lines) + "\n"


def requirements(wheel: Path, flavour: str, extras: tuple[str, ...] = ()) -> list[str]:
    """The wheel's own requirements for this machine, and those of ``extras``, with
    onnxruntime-gpu swapped for the plain onnxruntime in the CPU flavour."""
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = archive.read(name).decode()
    found = []
    for line in metadata.splitlines():
        if not line.startswith("Requires-Dist:"):
            continue
        requirement = Requirement(line.split(":", 1)[1].strip())
        if requirement.marker and not any(requirement.marker.evaluate({"extra": extra})
                                          for extra in ("", *extras)):
            continue
        requirement.marker = None
        if flavour == "cpu" and canonicalize_name(requirement.name) == GPU:
            requirement.name = CPU
        found.append(str(requirement))
    return found


def control(template: str, values: dict[str, str]) -> str:
    """The template with each ``@key@`` replaced (an unknown key is an error); a field left
    empty (``Provides:`` in the CPU flavour) is dropped."""
    def value(match: re.Match[str]) -> str:
        return values[match.group(1)]
    filled = re.sub(r"@(\w+)@", value, template)
    return "".join(line for line in filled.splitlines(keepends=True)
                   if not re.fullmatch(r"[A-Za-z-]+:\s*", line))


# Bundled files whose system libraries may be absent: Qt skips the plugin (GTK theme, Wayland,
# GLX) and carries on, so they are not worth a dependency.
# ONNX Runtime's TensorRT provider, likewise, loads only where TensorRT is installed.
OPTIONAL = ("plugins/platformthemes/libqgtk3.so", "plugins/platforms/libqwayland.so",
            "plugins/wayland-", "libQt6WaylandClient.so", "libQt6WlShellIntegration.so",
            "plugins/xcbglintegrations/libqxcb-glx-integration.so",
            "onnxruntime/capi/libonnxruntime_providers_tensorrt.so")
# The NVIDIA driver's own library: it comes with the driver, never from a package we can name.
DRIVER = ("libcuda.so.1",)


def elf_files(bundle: Path) -> Iterator[Path]:
    for path in sorted(bundle.rglob("*")):
        if path.is_file() and not path.is_symlink():
            with open(path, "rb") as stream:
                if stream.read(4) == b"\x7fELF":
                    yield path


def newest_glibc(bundle: Path) -> str:
    """The newest GLIBC_x.y symbol version any bundled file asks for (libc6's minimum)."""
    versions = {tuple(int(n) for n in found.split(b"."))
                for path in elf_files(bundle)
                for found in re.findall(rb"GLIBC_(2\.\d+(?:\.\d+)?)\x00", path.read_bytes())}
    return ".".join(str(n) for n in max(versions))


def system_libraries(bundle: Path) -> dict[str, list[str]]:
    """soname -> the bundled files that need it, for sonames the bundle does not hold."""
    from desktop.display_check import needed_libraries  # the installed app's ELF reader

    held = {path.name for path in bundle.rglob("*")}
    needed: dict[str, list[str]] = {}
    for path in elf_files(bundle):
        relative = path.relative_to(bundle).as_posix()
        if any(part in relative for part in OPTIONAL):
            continue
        for soname in needed_libraries(path):
            if soname not in held and soname not in DRIVER:
                needed.setdefault(soname, []).append(relative)
    return needed


def owning_package(soname: str) -> str | None:
    """The Debian package that provides ``soname`` on this machine (ldconfig, then dpkg)."""
    cache = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
    for line in cache.splitlines():
        name, _, path = line.strip().partition(" => ")
        if name.split(" ", 1)[0] != soname or "x86-64" not in name and "64bit" not in name:
            continue
        real = Path(path).resolve()
        # usrmerge: the cache says /lib/..., dpkg knows /usr/lib/... (or the other way round).
        candidates = {path, str(real), "/usr" + path, path.removeprefix("/usr"),
                      "/usr" + str(real), str(real).removeprefix("/usr")}
        for candidate in candidates:
            found = subprocess.run(["dpkg", "-S", candidate], capture_output=True, text=True)
            if found.returncode == 0:
                return found.stdout.split(":", 1)[0].strip()
    return None


def depends(control_text: str) -> set[str]:
    """The package names in a control file's Depends (alternatives included, versions not)."""
    match = re.search(r"^Depends:(.*(?:\n .*)*)", control_text, re.M)
    if not match:
        return set()
    return {re.split(r"[\s(:]", alternative.strip())[0]
            for entry in match.group(1).replace("\n", " ").split(",")
            for alternative in entry.split("|") if alternative.strip()}


def depends_check(bundle: Path, control_text: str) -> tuple[list[str], list[str]]:
    """(problems, notes): a problem for each system library the bundle needs from a package
    Depends does not name; a note for each this machine lacks, so it cannot say which."""
    declared = depends(control_text)
    problems, notes = [], []
    for soname, users in sorted(system_libraries(bundle).items()):
        package = owning_package(soname)
        # Debian 13 and Ubuntu 24.04 renamed some libraries libfoo -> libfoot64 (providing
        # the old name), so either satisfies a Depends on the old name.
        if package is None:
            notes.append(f"{soname} (needed by {users[0]}) is not installed here: "
                         "not checked against Depends")
        elif package not in declared and package.removesuffix("t64") not in declared:
            problems.append(f"{soname} (needed by {users[0]}) comes from {package}, "
                            "which Depends does not name")
    return problems, notes


def main(argv: list[str]) -> int:
    command, *rest = argv
    if command == "constraints":
        sys.stdout.write(constraints(Path(rest[0]).read_text()))
    elif command == "requirements":
        print("\n".join(requirements(Path(rest[0]), rest[1], tuple(rest[2:]))))
    elif command == "control":
        values = dict(item.split("=", 1) for item in rest[1:])
        sys.stdout.write(control(Path(rest[0]).read_text(), values))
    elif command == "glibc":
        print(newest_glibc(Path(rest[0])))
    elif command == "depends-check":
        problems, notes = depends_check(Path(rest[0]), Path(rest[1]).read_text())
        for line in [f"note: {note}" for note in notes] + problems:
            print(f"build: {line}", file=sys.stderr)
        return 1 if problems else 0
    else:
        raise SystemExit(f"flavour: unknown command {command}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
