"""The window's start-up check: Qt's X11 plugin needs system libraries that a stock desktop
may lack, and Qt aborts naming the wrong one; the check names them in one sentence first."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import desktop.app
from desktop import display_check
from desktop.display_check import missing_libraries_problem, needed_libraries, problem

X11 = {"DISPLAY": ":0"}
NOT_FOUND = "{}: cannot open shared object file: No such file or directory"

# What the PySide6 6.11 wheel's xcb plugin links against, in short.
FAKE_NEEDED = {
    "libqxcb.so": ["libQt6XcbQpa.so.6", "libQt6Gui.so.6", "libc.so.6"],
    "libQt6XcbQpa.so.6": ["libxcb-cursor.so.0", "libxcb-icccm.so.4", "libxcb-keysyms.so.1",
                          "libxcb-image.so.0", "libQt6Gui.so.6"],
    "libQt6Widgets.so.6": ["libQt6Gui.so.6"],
    "libQt6Gui.so.6": ["libEGL.so.1", "libxkbcommon.so.0"],
    "libQt6Network.so.6": ["libgssapi_krb5.so.2", "libbrotlidec.so.1", "libQt6Core.so.6"],
}


@pytest.fixture
def qt_folder(tmp_path) -> Path:
    """A Qt folder laid out as PySide6's, with empty files for the libraries."""
    folder = tmp_path / "Qt"
    (folder / "plugins" / "platforms").mkdir(parents=True)
    (folder / "lib").mkdir()
    (folder / "plugins" / "platforms" / "libqxcb.so").touch()
    for name in ("libQt6XcbQpa.so.6", "libQt6Widgets.so.6", "libQt6Gui.so.6",
                 "libQt6Network.so.6", "libQt6Core.so.6"):
        (folder / "lib" / name).touch()
    return folder


def fake_loader(missing: dict[str, str], loaded: list[str] | None = None):
    """A loader that fails for each soname in ``missing`` with the dlopen error naming the
    value (the library itself, or one it needs)."""
    def load(soname: str) -> object:
        if loaded is not None:
            loaded.append(soname)
        if soname in missing:
            raise OSError(NOT_FOUND.format(missing[soname]))
        return object()
    return load


def check(qt_folder: Path, missing: dict[str, str], environ=X11, system="linux") -> str | None:
    return problem(environ, system, qt_folder=qt_folder, load=fake_loader(missing),
                   needed=lambda path: FAKE_NEEDED.get(path.name, []))


def test_missing_xcb_libraries_are_named_with_their_packages(qt_folder):
    said = check(qt_folder, {"libxcb-icccm.so.4": "libxcb-icccm.so.4",
                             "libxcb-keysyms.so.1": "libxcb-keysyms.so.1"})
    assert said == (
        "the window cannot open: the system libraries libxcb-icccm.so.4 and libxcb-keysyms.so.1 "
        "are missing; install them with 'sudo apt install libxcb-icccm4 libxcb-keysyms1' "
        "(Debian, Ubuntu) or 'sudo dnf install xcb-util-wm xcb-util-keysyms' (Fedora).")
    assert "cursor" not in said  # Qt's own message blames libxcb-cursor0 whatever is missing


def test_a_library_missing_behind_another_is_the_one_named(qt_folder):
    # libxcb-image is there, but the libxcb-util it needs is not: dlopen names that one.
    said = check(qt_folder, {"libxcb-image.so.0": "/usr/lib/libxcb-util.so.1"})
    assert said == ("the window cannot open: the system library libxcb-util.so.1 is missing; "
                    "install it with 'sudo apt install libxcb-util1' (Debian, Ubuntu) or "
                    "'sudo dnf install xcb-util' (Fedora).")


def test_the_network_library_behind_the_single_window_socket_is_checked(qt_folder):
    # QtNetwork (the socket that keeps one window) needs Kerberos and Brotli, which a
    # minimal system may lack; Qt would fail to import it after the window had started.
    said = check(qt_folder, {"libgssapi_krb5.so.2": "libgssapi_krb5.so.2"})
    assert said == ("the window cannot open: the system library libgssapi_krb5.so.2 is "
                    "missing; install it with 'sudo apt install libgssapi-krb5-2' (Debian, "
                    "Ubuntu) or 'sudo dnf install krb5-libs' (Fedora).")


def test_libraries_of_qt_itself_are_checked_and_unknown_ones_named(qt_folder):
    said = check(qt_folder, {"libEGL.so.1": "libEGL.so.1", "libxkbcommon.so.0": "libfoo.so.3"})
    assert "libEGL.so.1 and libfoo.so.3 are missing" in said
    assert "'sudo apt install libegl1'" in said and "'sudo dnf install libglvnd-egl'" in said
    assert said.endswith(", and the packages that provide libfoo.so.3.")


def test_bundled_qt_libraries_are_followed_not_loaded(qt_folder):
    loaded: list[str] = []
    assert problem(X11, "linux", qt_folder=qt_folder, load=fake_loader({}, loaded),
                   needed=lambda path: FAKE_NEEDED.get(path.name, [])) is None
    assert sorted(loaded) == sorted(["libc.so.6", "libxcb-cursor.so.0", "libxcb-icccm.so.4",
                                     "libxcb-keysyms.so.1", "libxcb-image.so.0", "libEGL.so.1",
                                     "libxkbcommon.so.0", "libgssapi_krb5.so.2",
                                     "libbrotlidec.so.1"])


@pytest.mark.parametrize("environ", [
    {"QT_QPA_PLATFORM": "offscreen"},
    {"QT_QPA_PLATFORM": "wayland", "DISPLAY": ":0"},
    {"QT_QPA_PLATFORM": "wayland;xcb", "DISPLAY": ":0"},
    {"WAYLAND_DISPLAY": "wayland-0", "DISPLAY": ":0"},  # Qt tries Wayland first there
    {"XDG_SESSION_TYPE": "wayland", "DISPLAY": ":0"},
])
def test_no_check_when_qt_uses_another_platform(qt_folder, environ):
    assert check(qt_folder, {"libxcb-icccm.so.4": "libxcb-icccm.so.4"}, environ) is None


def test_xcb_named_explicitly_is_checked(qt_folder):
    said = check(qt_folder, {"libxcb-icccm.so.4": "libxcb-icccm.so.4"},
                 {"QT_QPA_PLATFORM": "xcb:nograb", "DISPLAY": ":0"})
    assert "libxcb-icccm.so.4 is missing" in said


def test_no_check_off_linux(qt_folder):
    for system in ("win32", "darwin"):
        assert check(qt_folder, {"libxcb-icccm.so.4": "libxcb-icccm.so.4"}, {}, system) is None


def test_no_screen_at_all_is_said(qt_folder):
    assert check(qt_folder, {}, {}) == display_check.NO_SCREEN
    assert check(qt_folder, {}, {"QT_QPA_PLATFORM": "xcb"}) == display_check.NO_SCREEN


def test_a_qt_folder_without_the_plugin_is_left_to_qt(tmp_path):
    assert check(tmp_path, {"libxcb-icccm.so.4": "libxcb-icccm.so.4"}) is None


def test_a_plugin_that_is_not_elf_does_not_block_the_start(qt_folder):
    # The fixture's files are empty: the real reader cannot read them, and says nothing.
    assert problem(X11, "linux", qt_folder=qt_folder,
                   load=fake_loader({"libxcb-icccm.so.4": "libxcb-icccm.so.4"})) is None


def test_the_window_is_not_started_when_the_check_fails(monkeypatch, capsys):
    monkeypatch.setattr(display_check, "problem", lambda: "the window cannot open: because.")
    monkeypatch.setitem(sys.modules, "desktop.app.launch", None)  # importing it would fail
    assert desktop.app.main([]) == 1
    assert capsys.readouterr().err == "easel: the window cannot open: because.\n"


# The real files ------------------------------------------------------------------------------

def _real_qt_folder() -> Path:
    folder = display_check._pyside_qt_folder()
    if not sys.platform.startswith("linux") or folder is None:
        pytest.skip("the xcb plugin is Linux only")
    if not (folder / "plugins/platforms/libqxcb.so").is_file():
        pytest.skip("this PySide6 has no xcb plugin")
    return folder


def test_the_real_plugin_is_read():
    folder = _real_qt_folder()
    plugin_needs = needed_libraries(folder / "plugins/platforms/libqxcb.so")
    assert "libQt6XcbQpa.so.6" in plugin_needs
    xcb_needs = needed_libraries(folder / "lib/libQt6XcbQpa.so.6")
    assert {"libxcb-icccm.so.4", "libxcb-keysyms.so.1", "libxcb-cursor.so.0"} <= set(xcb_needs)


def test_the_real_check_agrees_with_ldd():
    folder = _real_qt_folder()
    ldd = shutil.which("ldd")
    if ldd is None:
        pytest.skip("no ldd to compare with")
    listing = subprocess.run([ldd, str(folder / "plugins/platforms/libqxcb.so")],
                             capture_output=True, text=True, check=True).stdout
    not_found = sorted({line.split()[0] for line in listing.splitlines() if "not found" in line})
    said = missing_libraries_problem(qt_folder=folder)
    if not not_found:
        assert said is None
    else:
        assert all(name in said for name in not_found), (said, not_found)


def test_a_library_missing_for_real_is_named(tmp_path):
    """A copy of the real plugin's Qt library, renamed to need a library no system has."""
    folder = _real_qt_folder()
    copy = tmp_path / "Qt"
    (copy / "plugins/platforms").mkdir(parents=True)
    (copy / "lib").mkdir()
    shutil.copy(folder / "plugins/platforms/libqxcb.so", copy / "plugins/platforms")
    data = (folder / "lib/libQt6XcbQpa.so.6").read_bytes()
    assert b"libxcb-icccm.so.4\0" in data
    (copy / "lib/libQt6XcbQpa.so.6").write_bytes(
        data.replace(b"libxcb-icccm.so.4\0", b"libxcb-icccm.so.9\0"))
    said = missing_libraries_problem(qt_folder=copy)
    assert said is not None and "libxcb-icccm.so.9" in said


def test_the_command_for_installers():
    """`python -m desktop.display_check` loads no Qt and answers with its exit code."""
    run = subprocess.run(
        [sys.executable, "-c", "import sys, desktop.display_check as d; "
         "code = d.main(['--libraries']); "
         "assert not [m for m in sys.modules if m.startswith('PySide6')]; sys.exit(code)"],
        capture_output=True, text=True, timeout=60)
    assert run.returncode in (0, 1), run.stderr
    assert (run.returncode == 1) == bool(missing_libraries_problem())
    assert (run.stderr == "") == (run.returncode == 0)
