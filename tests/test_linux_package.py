"""installers/linux: the parts of the .deb and AppImage recipe that can break without a build.

The build itself (PyInstaller, dpkg-deb, apt-get install, the installed app under Xvfb) runs in
installers/linux/ci-check.sh, after pytest; these are the quick checks of its inputs.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import tomllib
import zipfile
from pathlib import Path

import pytest

from desktop import display_check

ROOT = Path(__file__).resolve().parents[1]
LINUX = ROOT / "installers" / "linux"
DESKTOP_FILES = ("easel.desktop", "easel-open.desktop")


def _flavour():
    spec = importlib.util.spec_from_file_location("linux_flavour", LINUX / "flavour.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


flavour = _flavour()


def _entry(name: str) -> dict[str, str]:
    lines = (LINUX / name).read_text().splitlines()
    assert lines[0] == "[Desktop Entry]"
    return dict(line.split("=", 1) for line in lines[1:] if "=" in line)


def _control(**values: str) -> str:
    defaults = {"package": "easel", "version": "1.0", "arch": "amd64",
                "conflicts": "easel-nvidia", "provides": "", "glibc": "2.35",
                "installed_size": "1000"}
    return flavour.control((LINUX / "control.in").read_text(), defaults | values)


@pytest.mark.skipif(shutil.which("desktop-file-validate") is None,
                    reason="desktop-file-validate is not installed (Debian: desktop-file-utils)")
@pytest.mark.parametrize("name", DESKTOP_FILES)
def test_desktop_files_are_valid(name):
    result = subprocess.run(["desktop-file-validate", str(LINUX / name)],
                            capture_output=True, text=True)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_pictures_open_with_easel_and_the_menu_entry_opens_the_window():
    opener = _entry("easel-open.desktop")
    assert opener["Exec"] == "easel open %f"
    assert set(opener["MimeType"].rstrip(";").split(";")) == {
        "image/png", "image/jpeg", "image/webp"}
    window = _entry("easel.desktop")
    assert window["Exec"] == "easel" and "MimeType" not in window
    assert window.get("NoDisplay", "false") == "false"
    assert window["Icon"] == opener["Icon"] == "easel"


def test_depends_names_every_package_the_display_check_says_qt_needs():
    qt_folder = display_check._pyside_qt_folder()
    if qt_folder is None or not (qt_folder / "plugins/platforms/libqxcb.so").is_file():
        pytest.skip("PySide6's Qt folder with the xcb plugin is not in this environment")
    depends = flavour.depends(_control())
    uncovered = []
    for soname in display_check.system_libraries(qt_folder, display_check.needed_libraries):
        debian = display_check.PACKAGES.get(soname, ("libc6",))[0]  # the rest is glibc's
        if debian not in depends:
            uncovered.append(f"{soname} ({debian})")
    assert not uncovered, f"control.in's Depends lacks {', '.join(uncovered)}"


def test_depends_reads_continuation_lines_and_alternatives():
    text = "Package: x\nDepends: libc6 (>= 2.35), libfoo1 | libfoo1t64,\n libbar2:any\nX: y\n"
    assert flavour.depends(text) == {"libc6", "libfoo1", "libfoo1t64", "libbar2"}


def test_the_version_is_pyprojects_and_the_flavours_exclude_each_other():
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert "@version@" in (LINUX / "control.in").read_text()
    assert 'tomllib.load(open("pyproject.toml"' in (LINUX / "build.sh").read_text()
    cpu = _control(version=version)
    assert f"\nVersion: {version}\n" in cpu
    assert "\nConflicts: easel-nvidia\n" in cpu and "Provides:" not in cpu
    nvidia = _control(package="easel-nvidia", conflicts="easel", provides="easel")
    assert "\nConflicts: easel\n" in nvidia and "\nProvides: easel\n" in nvidia


def test_the_spec_collects_the_resources_and_leaves_torch_out():
    spec = (LINUX / "easel.spec").read_text()
    assert 'collect_data_files("easel_resources"' in spec
    assert '"easel_resources"' in spec.split("hiddenimports=", 1)[1].split("\n", 1)[0]
    excludes = spec.split("excludes = [", 1)[1].split("]", 1)[0]
    for module in ("torch", "diffusers", "transformers", "tkinter", "PySide6.QtQml"):
        assert f'"{module}"' in excludes


def test_the_cpu_flavour_pins_the_plain_onnxruntime_at_the_gpu_builds_version():
    text = flavour.constraints((ROOT / "installers" / "constraints.txt").read_text())
    lines = [line for line in text.splitlines() if line.startswith(("onnxruntime==",
                                                                    "onnxruntime-gpu=="))]
    versions = dict(line.split("==", 1) for line in lines)
    assert set(versions) == {"onnxruntime", "onnxruntime-gpu"}  # no marker left on either
    assert versions["onnxruntime"] == versions["onnxruntime-gpu"]


def test_the_cpu_flavour_swaps_onnxruntime_gpu_for_the_plain_build(tmp_path):
    wheel = tmp_path / "easel-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("easel-1.0.dist-info/METADATA", "\n".join([
            "Name: easel", "Version: 1.0",
            "Requires-Dist: numpy>=1.26",
            "Requires-Dist: onnxruntime-gpu>=1.20; sys_platform == 'linux'",
            "Requires-Dist: onnxruntime>=1.20; sys_platform == 'darwin'",
            "Requires-Dist: torch<3,>=2.4; extra == 'export'",
        ]))
    if not flavour.Requirement("x; sys_platform == 'linux'").marker.evaluate():
        pytest.skip("the flavours are Linux's")
    assert flavour.requirements(wheel, "cpu") == ["numpy>=1.26", "onnxruntime>=1.20"]
    assert flavour.requirements(wheel, "nvidia") == ["numpy>=1.26", "onnxruntime-gpu>=1.20"]


def test_the_importer_takes_the_export_extra_too(tmp_path):
    wheel = tmp_path / "easel-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("easel-1.0.dist-info/METADATA", "\n".join([
            "Name: easel", "Version: 1.0", "Requires-Dist: numpy>=1.26",
            "Requires-Dist: torch<3,>=2.4; extra == 'export'",
            "Requires-Dist: pytest>=8; extra == 'test'",
        ]))
    assert flavour.requirements(wheel, "cpu", ("export",)) == ["numpy>=1.26", "torch<3,>=2.4"]


def test_the_importer_spec_freezes_the_export_stack_without_qt():
    spec = (LINUX / "easel-importer.spec").read_text()
    assert 'name="easel-importer"' in spec and "importer_entry.py" in spec
    excludes = spec.split("excludes = [", 1)[1].split("]", 1)[0]
    for module in ("PySide6", "shiboken6", "desktop.app"):
        assert f'"{module}"' in excludes
    for module in ("torch", "diffusers", "transformers", "onnx", "onnxscript", "safetensors",
                   "accelerate", "spandrel", "einops"):
        assert f'"{module}"' not in excludes
    hidden = spec.split("hiddenimports = [", 1)[1].split("]", 1)[0]
    for module in ("easel_resources", "diffusers", "transformers", "onnx", "spandrel"):
        assert f'"{module}"' in hidden
    # The pickle converter's isolated process runs this file by its path.
    assert "export/safetensors_write.py" in spec
    build = (LINUX / "build.sh").read_text()
    assert "--importer)" in build and "spandrel einops" in build and "grep -vi '^pyside6'" in build


def test_the_importer_control_file_names_its_package_and_no_graphics():
    values = {"package": "easel-importer", "version": "1.0", "arch": "amd64",
              "glibc": "2.35", "installed_size": "1000"}
    control = flavour.control((LINUX / "importer-control.in").read_text(), values)
    assert control.startswith("Package: easel-importer\n")
    assert "import models from diffusers folders and checkpoints" in control
    depends = flavour.depends(control)
    assert "libc6" in depends and not {"libx11-6", "libegl1", "libfontconfig1"} & depends
    # The app finds the program where the package puts it (desktop/importer.py).
    from desktop.importer import INSTALLED_IMPORTERS

    assert Path("/opt/easel-importer/easel-importer") in INSTALLED_IMPORTERS
    assert 'ln -s "/opt/$program/$program"' in (LINUX / "build.sh").read_text()
