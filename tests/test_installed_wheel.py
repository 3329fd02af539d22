"""Easel installed from its wheel, not from the source checkout: a fresh virtual environment,
the locked versions, commands run from a folder outside the source tree.

An editable install finds resources/ beside the code whatever pyproject.toml says; only a real
wheel shows whether the starter model, the tokenizer files, the family configs and the icons
ship (they did not before easel_resources). One environment serves the whole module: first
the app alone (what the desktop packages hold), then with the export extra (the importer).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import tiny_models

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / "installers" / "constraints.txt"


def _run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=600, **kwargs)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    # The build backend from the test environment: no download, and the same setuptools.
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                  "-q", "-w", str(dist), str(ROOT)])
    assert built.returncode == 0, built.stderr
    (found,) = dist.glob("easel-*.whl")
    return found


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("installed") / "venv"
    made = _run([sys.executable, "-m", "venv", str(folder)])
    assert made.returncode == 0, made.stderr
    installed = _run([str(folder / "bin" / "python"), "-m", "pip", "install", "-q",
                      "--disable-pip-version-check", "-c", str(CONSTRAINTS), str(wheel)])
    assert installed.returncode == 0, installed.stderr
    return folder


@pytest.fixture
def outside(tmp_path) -> dict:
    """A working folder and data folder outside the source tree, as a user's would be."""
    (tmp_path / "work").mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("EASEL_HOME", "EASEL_BUILT_IN_MODELS", "PYTHONPATH")}
    env.update(EASEL_HOME=str(tmp_path / "home"), QT_QPA_PLATFORM="offscreen")
    return {"cwd": tmp_path / "work", "env": env, "home": tmp_path / "home"}


def _easel(venv: Path, outside: dict, *args: str) -> subprocess.CompletedProcess:
    return _run([str(venv / "bin" / "easel"), *args], cwd=outside["cwd"], env=outside["env"])


def test_the_code_and_resources_come_from_the_installed_package(venv, outside):
    shown = _run([str(venv / "bin" / "python"), "-c",
                  "import engine, easel_resources, desktop.paths as p;"
                  "print(engine.__file__); print(p.built_in_models_dir())"],
                 cwd=outside["cwd"], env=outside["env"])
    assert shown.returncode == 0, shown.stderr
    for line in shown.stdout.split():
        assert Path(line).is_relative_to(venv), line
    site = next((venv / "lib").glob("python3.*/site-packages"))
    assert not (site / "easel_resources" / "docs").exists()  # the README's pages stay out
    assert (site / "easel_resources" / "tokenizers" / "clip" / "vocab.json").is_file()


def test_installed_generate_draws_with_the_starter_model(venv, outside):
    made = _easel(venv, outside, "generate", "a dog on the left", "--count", "1")
    assert made.returncode == 0, made.stderr + made.stdout
    pictures = list((outside["home"] / "images").rglob("*.png"))
    assert len(pictures) == 1


def test_installed_window_starts_offscreen(venv, outside):
    window = subprocess.Popen([str(venv / "bin" / "easel")], cwd=outside["cwd"],
                              env=outside["env"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        # The window opens the library before it shows; then it should stay up.
        while time.monotonic() < deadline and not (outside["home"] / "library").exists():
            assert window.poll() is None, window.communicate()[1]
            time.sleep(0.2)
        time.sleep(4)
        assert window.poll() is None, window.communicate()[1]
    finally:
        window.terminate()
        _, errors = window.communicate(timeout=30)
    assert "Traceback" not in errors, errors


def test_import_without_the_importer_says_what_to_install(venv, outside):
    refused = _easel(venv, outside, "models", "import", str(tiny_models.tiny_diffusers("sd1")))
    assert refused.returncode == 1
    assert 'pip install "easel[export]"' in refused.stderr
    assert "Traceback" not in refused.stderr


def test_import_with_the_importer_installs_a_model(venv, wheel, outside):
    # The export extra, as a user adds it; torch first, pinned, so pip takes the CPU build.
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
           "--disable-pip-version-check", "-c", str(CONSTRAINTS)]
    for step in (["torch==2.13.0"], [f"easel[export] @ {wheel.as_uri()}"]):
        added = _run(pip + step)
        assert added.returncode == 0, added.stderr
    source = outside["cwd"] / "tiny"
    shutil.copytree(tiny_models.tiny_diffusers("sd1"), source)
    imported = _easel(venv, outside, "models", "import", str(source), "--name", "tiny")
    assert imported.returncode == 0, imported.stderr + imported.stdout
    listed = _easel(venv, outside, "models", "list")
    assert "tiny" in listed.stdout
    made = _easel(venv, outside, "generate", "a cat", "--model", "tiny", "--steps", "2",
                  "--width", "64", "--height", "64")
    assert made.returncode == 0, made.stderr + made.stdout
