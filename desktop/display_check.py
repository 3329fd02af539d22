"""Whether Qt can open a window here, checked before Qt is loaded.

When Qt's X11 platform plugin (xcb) cannot be loaded, Qt aborts the whole process (exit 134)
with a message that names libxcb-cursor0 whichever library is really missing. So before any
Qt library is loaded, this module reads which system libraries the plugin and the Qt libraries
behind it link against, tries to load each one, and names what is missing in one sentence,
with the packages that provide it on Debian/Ubuntu and Fedora.

Qt-free, and quick (it runs at every start of the window). ``python -m desktop.display_check``
runs the same check for an installer; see ``main``.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import re
import struct
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

# load(soname) -> handle; raises OSError like ctypes.CDLL (tests pass fakes).
Loader = Callable[[str], object]
# needed(library file) -> the sonames it links against (its DT_NEEDED entries).
NeededReader = Callable[[Path], list[str]]

NO_SCREEN = ("there is no screen to open the window on (neither DISPLAY nor WAYLAND_DISPLAY "
             "is set); use the commands instead, e.g. easel generate \"a red chair\" "
             "(easel --help lists them).")

# The Qt files the window loads: the xcb plugin, the widget library and the network library
# (the single-window socket); the Qt libraries they need are followed inside the Qt folder,
# and everything else is a system library.
_QT_STARTS = ("plugins/platforms/libqxcb.so", "lib/libQt6Widgets.so.6",
              "lib/libQt6Network.so.6")

# System library (soname) -> (Debian/Ubuntu package, Fedora package).
PACKAGES: dict[str, tuple[str, str]] = {
    "libxcb-cursor.so.0": ("libxcb-cursor0", "xcb-util-cursor"),
    "libxcb-icccm.so.4": ("libxcb-icccm4", "xcb-util-wm"),
    "libxcb-keysyms.so.1": ("libxcb-keysyms1", "xcb-util-keysyms"),
    "libxcb-image.so.0": ("libxcb-image0", "xcb-util-image"),
    "libxcb-render-util.so.0": ("libxcb-render-util0", "xcb-util-renderutil"),
    "libxcb-util.so.1": ("libxcb-util1", "xcb-util"),
    "libxcb-randr.so.0": ("libxcb-randr0", "libxcb"),
    "libxcb-render.so.0": ("libxcb-render0", "libxcb"),
    "libxcb-shape.so.0": ("libxcb-shape0", "libxcb"),
    "libxcb-shm.so.0": ("libxcb-shm0", "libxcb"),
    "libxcb-sync.so.1": ("libxcb-sync1", "libxcb"),
    "libxcb-xfixes.so.0": ("libxcb-xfixes0", "libxcb"),
    "libxcb-xkb.so.1": ("libxcb-xkb1", "libxcb"),
    "libxcb.so.1": ("libxcb1", "libxcb"),
    "libxkbcommon.so.0": ("libxkbcommon0", "libxkbcommon"),
    "libxkbcommon-x11.so.0": ("libxkbcommon-x11-0", "libxkbcommon-x11"),
    "libX11.so.6": ("libx11-6", "libX11"),
    "libX11-xcb.so.1": ("libx11-xcb1", "libX11-xcb"),
    "libGL.so.1": ("libgl1", "libglvnd-glx"),
    "libEGL.so.1": ("libegl1", "libglvnd-egl"),
    "libfontconfig.so.1": ("libfontconfig1", "fontconfig"),
    "libfreetype.so.6": ("libfreetype6", "freetype"),
    "libglib-2.0.so.0": ("libglib2.0-0", "glib2"),
    "libgthread-2.0.so.0": ("libglib2.0-0", "glib2"),
    "libdbus-1.so.3": ("libdbus-1-3", "dbus-libs"),
    "libz.so.1": ("zlib1g", "zlib"),
    # QtNetwork's: Kerberos for HTTP authentication, Brotli for compressed replies.
    "libgssapi_krb5.so.2": ("libgssapi-krb5-2", "krb5-libs"),
    "libbrotlidec.so.1": ("libbrotli1", "libbrotli"),
    "libbrotlicommon.so.1": ("libbrotli1", "libbrotli"),
    "libzstd.so.1": ("libzstd1", "libzstd"),
    "libstdc++.so.6": ("libstdc++6", "libstdc++"),
    "libgcc_s.so.1": ("libgcc-s1", "libgcc"),
}

_MISSING = re.compile(r"^(?P<name>[^\s:]+): cannot open shared object file")


def problem(environ: Mapping[str, str] | None = None, system: str | None = None, *,
            qt_folder: Path | None = None, load: Loader | None = None,
            needed: NeededReader | None = None) -> str | None:
    """Why the window cannot open here, in one sentence; None when it can (or when Qt will
    use a platform other than X11, which this does not check).

    The defaults are the real environment, platform, PySide6 folder, loader and ELF reader.
    """
    environ = os.environ if environ is None else environ
    if not (system or sys.platform).startswith("linux"):
        return None
    platforms = qt_platforms(environ)
    if not platforms:
        return NO_SCREEN
    if platforms[0] != "xcb":
        return None  # offscreen, wayland, ...: Qt reports its own, and does not abort on xcb
    if not environ.get("DISPLAY"):
        return NO_SCREEN  # xcb named, but no X server to connect to: Qt would abort
    return missing_libraries_problem(qt_folder=qt_folder, load=load, needed=needed)


def qt_platforms(environ: Mapping[str, str]) -> list[str]:
    """The platform plugins Qt will try, in order, as QGuiApplication chooses them on Linux."""
    named = environ.get("QT_QPA_PLATFORM", "")
    if named:
        return [entry.split(":")[0].strip() for entry in named.split(";") if entry.strip()]
    order = []
    if environ.get("WAYLAND_DISPLAY") or environ.get("XDG_SESSION_TYPE") == "wayland":
        order.append("wayland")
    if environ.get("DISPLAY"):
        order.append("xcb")
    return order


def missing_libraries_problem(*, qt_folder: Path | None = None, load: Loader | None = None,
                              needed: NeededReader | None = None) -> str | None:
    """The sentence naming the system libraries Qt's xcb plugin lacks; None if none."""
    qt_folder = qt_folder or _pyside_qt_folder()
    if qt_folder is None or not (qt_folder / _QT_STARTS[0]).is_file():
        return None  # not the PySide6 wheel's layout: let Qt speak for itself
    try:
        libraries = system_libraries(qt_folder, needed or needed_libraries)
    except (OSError, ValueError, struct.error):
        return None  # a file we cannot read is no reason to refuse a start that may work
    missing = missing_libraries(libraries, load or _load)
    return sentence(missing) if missing else None


def system_libraries(qt_folder: Path, needed: NeededReader) -> list[str]:
    """The sonames outside the Qt folder that the xcb plugin and Qt's libraries need."""
    bundled = qt_folder / "lib"
    queue = [qt_folder / start for start in _QT_STARTS]
    seen: set[Path] = set()
    system: dict[str, None] = {}
    while queue:
        path = queue.pop()
        if path in seen or not path.is_file():
            continue
        seen.add(path)
        for name in needed(path):
            if (bundled / name).is_file():
                queue.append(bundled / name)  # resolved through the plugin's RUNPATH
            else:
                system[name] = None
    return list(system)


def missing_libraries(sonames: Iterable[str], load: Loader) -> list[str]:
    """The libraries that cannot be loaded, or that a library being loaded needs."""
    missing: dict[str, None] = {}
    for soname in sonames:
        try:
            load(soname)
        except OSError as error:
            match = _MISSING.match(str(error).strip())
            missing[os.path.basename(match.group("name")) if match else soname] = None
    return list(missing)


def sentence(missing: Sequence[str]) -> str:
    """One sentence naming the ``missing`` libraries and the packages that provide them."""
    plural = len(missing) > 1
    what = (f"the system libraries {_join(missing)} are missing" if plural
            else f"the system library {missing[0]} is missing")
    pronoun = "them" if plural else "it"
    known = [PACKAGES[name] for name in missing if name in PACKAGES]
    if not known:
        return f"the window cannot open: {what}; install the packages that provide {pronoun}."
    debian = " ".join(dict.fromkeys(package for package, _ in known))
    fedora = " ".join(dict.fromkeys(package for _, package in known))
    unknown = [name for name in missing if name not in PACKAGES]
    rest = f", and the packages that provide {_join(unknown)}" if unknown else ""
    return (f"the window cannot open: {what}; install {pronoun} with 'sudo apt install "
            f"{debian}' (Debian, Ubuntu) or 'sudo dnf install {fedora}' (Fedora){rest}.")


def _join(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


# Reading DT_NEEDED from an ELF file -----------------------------------------------------------

_PT_LOAD, _PT_DYNAMIC = 1, 2
_DT_NULL, _DT_NEEDED, _DT_STRTAB = 0, 1, 5


def needed_libraries(path: Path) -> list[str]:
    """The sonames an ELF shared library links against, read from its dynamic segment.

    Reads a few kilobytes (headers and the string table), never the code; a file that is not
    ELF is a ValueError.
    """
    with open(path, "rb") as stream:
        ident = stream.read(64)
        if ident[:4] != b"\x7fELF" or ident[4] not in (1, 2) or ident[5] not in (1, 2):
            raise ValueError(f"{path.name} is not an ELF file")
        wide = ident[4] == 2
        order = "<" if ident[5] == 1 else ">"
        word = "Q" if wide else "I"
        if wide:
            phoff, = struct.unpack_from(order + "Q", ident, 0x20)
            phentsize, phnum = struct.unpack_from(order + "HH", ident, 0x36)
        else:
            phoff, = struct.unpack_from(order + "I", ident, 0x1C)
            phentsize, phnum = struct.unpack_from(order + "HH", ident, 0x2A)
        stream.seek(phoff)
        table = stream.read(phentsize * phnum)
        loads, dynamic = [], None
        for index in range(phnum):
            kind, offset, address, size = _segment(table, index * phentsize, order, wide)
            if kind == _PT_LOAD:
                loads.append((address, offset, size))
            elif kind == _PT_DYNAMIC:
                dynamic = (offset, size)
        if dynamic is None:
            return []
        stream.seek(dynamic[0])
        entries = stream.read(dynamic[1])
        step = struct.calcsize(order + word * 2)
        needed_offsets, strtab = [], None
        for start in range(0, len(entries) - step + 1, step):
            tag, value = struct.unpack_from(order + word * 2, entries, start)
            if tag == _DT_NULL:
                break
            if tag == _DT_NEEDED:
                needed_offsets.append(value)
            elif tag == _DT_STRTAB:
                strtab = value
        if strtab is None:
            return []
        base = _file_offset(strtab, loads)
        return [_string_at(stream, base + offset) for offset in needed_offsets]


def _segment(table: bytes, start: int, order: str, wide: bool) -> tuple[int, int, int, int]:
    """(type, file offset, virtual address, file size) of one program header."""
    if wide:
        kind, _flags, offset, address, _physical, size = struct.unpack_from(
            order + "IIQQQQ", table, start)
    else:
        kind, offset, address, _physical, size = struct.unpack_from(order + "IIIII", table, start)
    return kind, offset, address, size


def _file_offset(address: int, loads: list[tuple[int, int, int]]) -> int:
    for segment_address, offset, size in loads:
        if segment_address <= address < segment_address + size:
            return address - segment_address + offset
    raise ValueError("the string table lies outside the file")


def _string_at(stream, offset: int) -> str:
    stream.seek(offset)
    data = stream.read(256)
    return data.split(b"\0", 1)[0].decode("utf-8", "replace")


def _pyside_qt_folder() -> Path | None:
    """PySide6's Qt folder, found without importing PySide6 (which would load Qt)."""
    spec = importlib.util.find_spec("PySide6")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "Qt"


def _load(soname: str) -> object:
    return ctypes.CDLL(soname)


# For installers -------------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    """Exit 0 when the window can open (or the check does not apply), 1 with one sentence on
    stderr when it cannot. ``--libraries`` checks only the system libraries, whatever the
    display (an installer may run where no desktop is)."""
    import argparse  # here only: the window's every start imports this module

    parser = argparse.ArgumentParser(prog="python -m desktop.display_check",
                                     description="Check that Easel's window can open here.")
    parser.add_argument("--libraries", action="store_true",
                        help="check only the system libraries the window needs on Linux")
    arguments = parser.parse_args(argv)
    if arguments.libraries:
        found = missing_libraries_problem() if sys.platform.startswith("linux") else None
    else:
        found = problem()
    if found:
        print(f"easel: {found}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
