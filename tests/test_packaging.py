"""pyproject.toml lists its packages by hand (find cannot add easel_resources, the resources/
folder under its installed name): a new package folder left off the list would be missing
from every wheel and desktop package, while the editable checkout kept working."""

from __future__ import annotations

import tomllib
from pathlib import Path

from setuptools import find_packages

ROOT = Path(__file__).resolve().parents[1]


def _config() -> dict:
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)["tool"]["setuptools"]


def test_every_code_package_is_listed():
    found = set(find_packages(str(ROOT), include=["engine*", "desktop*"]))
    listed = set(_config()["packages"])
    assert found - listed == set(), "add these to [tool.setuptools] packages"
    assert listed - found == {"easel_resources"}


def test_the_resources_package_is_the_resources_folder():
    config = _config()
    assert config["package-dir"] == {"easel_resources": "resources"}
    assert (ROOT / "resources" / "__init__.py").is_file()
    # Each resource folder the code reads is in the wheel's package data.
    patterns = config["package-data"]["easel_resources"]
    for folder in ("models", "tokenizers", "configs", "icons", "filter"):
        assert any(p.startswith(f"{folder}/") for p in patterns), folder
