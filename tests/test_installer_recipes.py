"""The Windows and macOS recipes (installers/windows, installers/macos) and the workflow that
builds them (.github/workflows/installers.yml) agree with each other and with the project.

Those packages are built only on GitHub's hosted runners, never on the machines Easel is
developed on, so what can break them without anyone here noticing is checked here instead:
a flavour the workflow asks for that the script does not know, a picture type one platform
offers and another does not, a version written into a recipe instead of read from
pyproject.toml, a pin swap that names no pinned package, an artefact name the workflow would
not find. None of this runs PyInstaller, Inno Setup, PowerShell or macOS's tools.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import plistlib
import re
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.test_constraints import read_pins as pins

ROOT = Path(__file__).resolve().parents[1]
INSTALLERS = ROOT / "installers"
WINDOWS = INSTALLERS / "windows"
MACOS = INSTALLERS / "macos"
LINUX = INSTALLERS / "linux"
WORKFLOW = ROOT / ".github" / "workflows" / "installers.yml"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
VERSION = PYPROJECT["project"]["version"]
CONSTRAINTS = (INSTALLERS / "constraints.txt").read_text(encoding="utf-8")

BUILD_PS1 = (WINDOWS / "build.ps1").read_text(encoding="utf-8")
ISS = (WINDOWS / "easel.iss").read_text(encoding="utf-8")
BUILD_SH = (MACOS / "build.sh").read_text(encoding="utf-8")


def load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


flavour = load(WINDOWS / "flavour.py", "windows_flavour")
bundle_info = load(MACOS / "bundle_info.py", "macos_bundle_info")


def workflow() -> dict:
    yaml = pytest.importorskip("yaml")
    return yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))


def pinned_version(requirement: Requirement) -> str:
    (specifier,) = requirement.specifier
    assert specifier.operator == "=="
    return specifier.version


# Flavours ---------------------------------------------------------------------------------------

def test_every_windows_flavour_is_built_by_the_workflow_and_known_to_each_recipe():
    matrix = workflow()["jobs"]["windows"]["strategy"]["matrix"]["flavour"]
    (accepted,) = re.findall(r"\[ValidateSet\(([^)]*)\)\]\s*\[string\]\s*\$Flavour", BUILD_PS1)
    script = re.findall(r"'(\w+)'", accepted)
    inno = re.findall(r'#(?:el)?if Flavour == "(\w+)"', ISS)
    assert sorted(matrix) == sorted(script) == sorted(inno) == sorted(flavour.FLAVOURS)


def test_the_linux_job_asks_for_flavours_the_linux_script_builds():
    script = LINUX / "build.sh"
    if not script.is_file():
        pytest.skip("installers/linux/build.sh is not there")
    usage = re.search(r"--flavour ([\w|]+)\]", script.read_text(encoding="utf-8"))
    assert usage, "installers/linux/build.sh no longer says its flavours as --flavour a|b"
    matrix = workflow()["jobs"]["linux"]["strategy"]["matrix"]["flavour"]
    assert set(matrix) <= set(usage.group(1).split("|"))


def test_the_workflow_runs_scripts_that_exist_with_the_projects_python():
    jobs = workflow()["jobs"]
    commands = " ".join(step.get("run", "") for job in jobs.values() for step in job["steps"])
    for script in re.findall(r"installers/[\w/]+\.(?:ps1|sh)", commands):
        assert (ROOT / script).is_file(), f"the workflow runs {script}, which is not there"
    python = PYPROJECT["project"]["requires-python"]
    for name, job in jobs.items():
        versions = [step["with"]["python-version"] for step in job["steps"]
                    if step.get("uses", "").startswith("actions/setup-python")]
        assert versions, f"the {name} job does not set up Python"
        assert all(f">={version}" in python for version in versions), (name, versions, python)


# Pins -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(flavour.FLAVOURS))
def test_each_flavour_replaces_the_tested_onnxruntime_pin_with_its_own(name):
    assert flavour.TESTED_PACKAGE in pins(CONSTRAINTS), (
        f"installers/constraints.txt no longer pins {flavour.TESTED_PACKAGE}, "
        "which the Windows flavours take their version from")
    swapped = pins(flavour.constraints(name, CONSTRAINTS))
    chosen = flavour.FLAVOURS[name]
    onnxruntimes = [package for package in swapped if package in flavour.ONNXRUNTIME_PACKAGES]
    assert onnxruntimes == [chosen.package]
    assert swapped[chosen.package].marker is None  # it applies on Windows
    tested = pinned_version(pins(CONSTRAINTS)[flavour.TESTED_PACKAGE])
    assert pinned_version(swapped[chosen.package]) == (chosen.version or tested)
    # Every other pin is kept as it is.
    others = {package: str(pin) for package, pin in pins(CONSTRAINTS).items()
              if package not in flavour.ONNXRUNTIME_PACKAGES}
    assert {package: str(swapped[package]) for package in others} == others


def test_a_flavour_with_a_version_of_its_own_is_inside_pyprojects_range():
    ranges = [Requirement(line) for line in PYPROJECT["project"]["dependencies"]]
    (gpu,) = [r for r in ranges if canonicalize_name(r.name) == flavour.TESTED_PACKAGE]
    for name, chosen in flavour.FLAVOURS.items():
        if chosen.version:
            assert gpu.specifier.contains(chosen.version), (name, chosen.version, str(gpu))


def requires_dist() -> str:
    """The wheel's Requires-Dist lines, as setuptools writes them from pyproject.toml."""
    lines = list(PYPROJECT["project"]["dependencies"])
    for extra, requirements in PYPROJECT["project"]["optional-dependencies"].items():
        for line in requirements:
            requirement = Requirement(line)
            condition = f"extra == '{extra}'"
            requirement.marker = Marker(f"({requirement.marker}) and {condition}"
                                        if requirement.marker else condition)
            lines.append(str(requirement))
    return "\n".join(f"Requires-Dist: {line}" for line in lines)


@pytest.mark.parametrize("name", sorted(flavour.FLAVOURS))
def test_the_wheels_requirements_on_windows_ask_for_the_flavours_onnxruntime_only(name):
    metadata = requires_dist()
    found = [Requirement(line) for line in flavour.requirements(
        name, metadata, {"sys_platform": "win32", "platform_system": "Windows"})]
    names = [canonicalize_name(r.name) for r in found]
    chosen = flavour.FLAVOURS[name]
    assert [n for n in names if n in flavour.ONNXRUNTIME_PACKAGES] == [chosen.package]
    (onnxruntime,) = [r for r in found if canonicalize_name(r.name) == chosen.package]
    assert onnxruntime.extras == set(chosen.extras)
    assert "torch" not in names  # the importer's stack is an extra, never bundled
    assert canonicalize_name("PySide6-Essentials") in names


def test_every_platform_freezes_with_the_same_pyinstaller():
    versions = {}
    for folder in (WINDOWS, MACOS, LINUX):
        requirements = folder / "requirements-build.txt"
        if requirements.is_file():
            text = requirements.read_text(encoding="utf-8")
            versions[folder.name] = str(pins(text)["pyinstaller"])
    assert {"windows", "macos"} <= set(versions)
    assert len(set(versions.values())) == 1, versions


# Versions ---------------------------------------------------------------------------------------

def test_the_windows_installer_takes_its_version_from_pyproject():
    assert flavour.project_version() == VERSION
    assert re.search(r'\$version = Get-Output \$py "\$here\\flavour\.py" version', BUILD_PS1)
    assert '"/DAppVersion=$version"' in BUILD_PS1
    assert '"/DNumericVersion=$numericVersion"' in BUILD_PS1
    assert re.search(r"(?m)^AppVersion=\{#AppVersion\}$", ISS)
    assert re.search(r"(?m)^VersionInfoVersion=\{#NumericVersion\}$", ISS)
    assert VERSION not in ISS and VERSION not in BUILD_PS1


@pytest.mark.parametrize(("version", "numeric"), [
    ("0.1.0", "0.1.0.0"), ("1.2", "1.2.0.0"), ("2.0.0rc1", "2.0.0.0"), ("1.2.3.4.5", "1.2.3.4"),
])
def test_windows_versions_are_four_numbers(version, numeric):
    assert flavour.numeric_version(version) == numeric


def test_the_macos_info_plist_takes_its_version_from_pyproject():
    assert bundle_info.project_version() == VERSION
    info = bundle_info.info_plist(bundle_info.project_version())
    assert info["CFBundleShortVersionString"] == VERSION
    assert re.fullmatch(r"\d+(\.\d+){0,2}", info["CFBundleVersion"])
    plistlib.loads(plistlib.dumps(info))  # only types an Info.plist can hold
    spec = (MACOS / "easel.spec").read_text(encoding="utf-8")
    assert "version = bundle_info.project_version()" in spec
    assert "info_plist=bundle_info.info_plist(version)" in spec
    assert VERSION not in spec and VERSION not in BUILD_SH


# Open with Easel --------------------------------------------------------------------------------

def windows_extensions(key: str) -> set[str]:
    if key == "OpenWithProgids":
        return set(re.findall(r'Subkey: "Software\\Classes\\(\.\w+)\\OpenWithProgids"', ISS))
    return set(re.findall(r'SupportedTypes"; ValueType: string; ValueName: "(\.\w+)"', ISS))


def test_open_with_easel_offers_the_same_picture_types_everywhere():
    mac = {extension for _, _, extensions in bundle_info.PICTURE_TYPES for extension in extensions}
    expected = {".png", ".jpg", ".jpeg", ".webp"}  # what `easel open` and the window read
    assert windows_extensions("OpenWithProgids") == expected
    assert windows_extensions("SupportedTypes") == expected
    assert {f".{extension}" for extension in mac} == expected == set(bundle_info.PICTURE_EXTENSIONS)
    linux = LINUX / "easel-open.desktop"
    if linux.is_file():
        types = re.search(r"(?m)^MimeType=(.*)$", linux.read_text(encoding="utf-8")).group(1)
        by_type = {"image/png": {".png"}, "image/jpeg": {".jpg", ".jpeg"}, "image/webp": {".webp"}}
        assert set().union(*(by_type[t] for t in types.split(";") if t)) == expected


def test_each_macos_document_type_names_its_uniform_type():
    utis = {extensions: uti for _, uti, extensions in bundle_info.PICTURE_TYPES}
    assert utis == {("png",): "public.png", ("jpg", "jpeg"): "public.jpeg",
                    ("webp",): "org.webmproject.webp"}
    for entry in bundle_info.info_plist(VERSION)["CFBundleDocumentTypes"]:
        assert entry["LSHandlerRank"] == "Alternate"  # offered, never taking over the default


def test_windows_opens_a_picture_with_the_open_command_of_the_windowless_program():
    commands = re.findall(r'ValueData: "(""\{app\}\\[^"]+"" [^;]*)"', ISS)
    assert commands and set(commands) == {'""{app}\\easelw.exe"" open ""%1""'}
    from desktop.cli import main

    with pytest.raises(SystemExit) as done:  # the command exists and takes one picture
        main(["open", "--help"])
    assert done.value.code == 0


def test_the_frozen_programs_run_the_easel_command():
    assert PYPROJECT["project"]["scripts"]["easel"] == "desktop.cli:main"
    for entry in (WINDOWS / "easel_entry.py", MACOS / "easel_entry.py"):
        assert "from desktop.cli import main" in entry.read_text(encoding="utf-8")
    spec = (WINDOWS / "easel.spec").read_text(encoding="utf-8")
    assert 'program("easel", console=True)' in spec and 'program("easelw", console=False)' in spec


# Uninstalling keeps the user's data ------------------------------------------------------------

def test_the_windows_installer_never_touches_the_data_folder():
    # platformdirs' user_data_dir("Easel", False) on Windows: %LOCALAPPDATA%\Easel.
    assert re.search(r"(?m)^DefaultDirName=\{autopf\}\\Easel$", ISS)
    assert "[UninstallDelete]" not in ISS
    assert "{localappdata}" not in ISS.lower() and "{userappdata}" not in ISS.lower()
    section = ISS.split("[InstallDelete]", 1)[1].split("\n[", 1)[0]
    deleted = re.findall(r'Name: "([^"]+)"', section)
    assert deleted and all(name.startswith("{app}\\") for name in deleted)


# Artefacts --------------------------------------------------------------------------------------

def test_the_workflow_uploads_the_files_the_recipes_make():
    jobs = workflow()["jobs"]
    made_setup = re.search(r"(?m)^OutputBaseFilename=(.+)$", ISS).group(1)
    # build.ps1 looks for the installer under the name Inno Setup gives it.
    looked_for = re.search(r'(?m)^\$setup = "\$out\\(.+)"$', BUILD_PS1).group(1)
    assert looked_for.replace("$version", "{#AppVersion}").replace(
        "$Flavour", "{#Flavour}") == made_setup + ".exe"
    made_setup = made_setup.replace("{#AppVersion}", VERSION)
    made_dmg = re.search(r"(?m)^dmg=\$out/(.+)$", BUILD_SH).group(1)
    made_dmg = made_dmg.replace("$version", VERSION).replace("$arch", "arm64")
    for flavour_name in flavour.FLAVOURS:
        windows = uploads(jobs["windows"], flavour_name)
        made = f"installers/windows/build/{flavour_name}/" + made_setup.replace(
            "{#Flavour}", flavour_name) + ".exe"
        assert any(fnmatch.fnmatch(made, pattern) for pattern in windows), (made, windows)
    macos = uploads(jobs["macos"], None)
    assert any(fnmatch.fnmatch(f"installers/macos/build/{made_dmg}", p) for p in macos), macos


def uploads(job: dict, flavour_name: str | None) -> list[str]:
    (step,) = [s for s in job["steps"] if s.get("uses", "").startswith("actions/upload-artifact")]
    paths = [line.strip() for line in step["with"]["path"].splitlines() if line.strip()]
    if flavour_name:
        paths = [p.replace("${{ matrix.flavour }}", flavour_name) for p in paths]
    return paths


# The CUDA libraries ----------------------------------------------------------------------------

def test_nvidia_dlls_keep_the_place_onnxruntime_preload_dlls_looks_in(tmp_path):
    """easel.spec collects each nvidia-* DLL at its path inside site-packages, because
    onnxruntime.preload_dlls() looks for them there, beside its own package."""
    onnxruntime = pytest.importorskip("onnxruntime")
    if not hasattr(onnxruntime, "_get_nvidia_dll_paths"):
        pytest.skip("this onnxruntime build does not preload CUDA libraries")
    wanted = onnxruntime._get_nvidia_dll_paths(is_windows=True)
    site_packages = tmp_path / "site-packages"
    for parts in wanted:
        (site_packages.joinpath(*parts)).parent.mkdir(parents=True, exist_ok=True)
        site_packages.joinpath(*parts).write_bytes(b"")
    (site_packages / "nvidia" / "cudnn" / "include").mkdir(parents=True, exist_ok=True)
    (site_packages / "nvidia" / "cudnn" / "include" / "cudnn.h").write_text("")
    collected = flavour.nvidia_binaries([str(site_packages / "nvidia")])
    placed = {Path(destination, Path(source).name).as_posix() for source, destination in collected}
    assert placed == {"/".join(parts) for parts in wanted}
