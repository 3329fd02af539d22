"""installers/constraints.txt pins every package, inside pyproject.toml's ranges, and is installed.

The pins are what a fresh clone installs (installers/setup.sh, tests/run.sh): a requirement
without a pin, or a pin outside its range, would make the next machine resolve something the
tests never saw.
"""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
CHECKED_EXTRAS = ("export", "test", "upscale")  # what setup.sh installs ("cuda" needs a GPU)


def read_pins(text: str) -> dict[str, Requirement]:
    pins = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            requirement = Requirement(line)
            pins[canonicalize_name(requirement.name)] = requirement
    return pins


def project_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = list(project["dependencies"])
    for extra in CHECKED_EXTRAS:
        lines += project["optional-dependencies"][extra]
    return [Requirement(line) for line in lines]


def pinned_version(requirement: Requirement) -> Version:
    (specifier,) = requirement.specifier
    assert specifier.operator == "==", f"{requirement} is not an exact pin"
    return Version(specifier.version)


PINS = read_pins((ROOT / "installers" / "constraints.txt").read_text())


@pytest.mark.parametrize("requirement", project_requirements(), ids=str)
def test_every_requirement_is_pinned_inside_its_range(requirement):
    name = canonicalize_name(requirement.name)
    assert name in PINS, f"{requirement.name} has no pin in installers/constraints.txt"
    version = pinned_version(PINS[name])
    assert requirement.specifier.contains(version, prereleases=True), (
        f"the pin {PINS[name]} is outside pyproject.toml's {requirement}")


def test_installed_versions_are_the_pinned_ones():
    environment = default_environment()
    drift = []
    for name, pin in PINS.items():
        if pin.marker is not None and not pin.marker.evaluate(environment):
            continue
        try:
            installed = Version(metadata.version(name))
        except metadata.PackageNotFoundError:
            continue  # pinned for an extra this environment does not have
        if Version(installed.public) != pinned_version(pin):
            drift.append(f"{name} {installed} (pinned {pinned_version(pin)})")
    assert not drift, ("installed versions differ from installers/constraints.txt: "
                       + ", ".join(drift))

