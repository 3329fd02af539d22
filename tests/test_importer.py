"""The model importer as a separate program (desktop.importer): a desktop package without torch
hands imports to ``easel-importer`` when it is installed, and otherwise says what to install."""

from __future__ import annotations

import os
import shutil
import sys
import textwrap
from pathlib import Path

import pytest

import engine.export
from desktop import importer
from desktop.model_store import ModelStore
from engine.errors import Cancelled, ExportUnavailable, ModelError


@pytest.fixture
def without_exporter(monkeypatch):
    """This process cannot import models, as in a desktop package."""
    def missing() -> None:
        raise ExportUnavailable(engine.export.UNAVAILABLE_SENTENCE)

    monkeypatch.setattr(engine.export, "require_export_dependencies", missing)
    monkeypatch.delenv(importer.DELEGATED_ENV, raising=False)


def _fake_importer(folder: Path, body: str) -> Path:
    """An executable that stands in for easel-importer; it records its arguments and
    environment in ``folder``."""
    program = folder / "easel-importer"
    program.write_text(f"#!{sys.executable}\n" + textwrap.dedent("""
        import json, os, shutil, sys, time
        from pathlib import Path
        here = Path(__file__).parent
        (here / "called.json").write_text(json.dumps(
            {"argv": sys.argv[1:], "delegated": os.environ.get("EASEL_IMPORTING_FOR_APP")}))
        """) + textwrap.dedent(body))
    program.chmod(0o755)
    return program


def test_the_importer_installs_the_model_and_reports_progress(
        tmp_path, monkeypatch, without_exporter, installed_tiny_sd1, tiny_sd1_diffusers):
    store = ModelStore(tmp_path / "models")
    fake = _fake_importer(tmp_path, f"""
        print("easel: [1/2] exporting the text encoder", file=sys.stderr, flush=True)
        print("easel: [2/2] exporting the UNet", file=sys.stderr, flush=True)
        shutil.copytree({str(installed_tiny_sd1)!r}, {str(store.root)!r} + "/" + sys.argv[5])
        print("Installed it.")
        """)
    monkeypatch.setenv(importer.IMPORTER_ENV, str(fake))
    seen = []
    model = store.import_model(tiny_sd1_diffusers, "mine",
                               lambda stage, done, total: seen.append((stage, done, total)),
                               family="sd1", kind="diffusion")
    assert model.name == "mine" and not model.built_in
    assert seen == [("exporting the text encoder", 1, 2), ("exporting the UNet", 2, 2)]
    called = __import__("json").loads((tmp_path / "called.json").read_text())
    assert called["argv"] == ["models", "import", str(tiny_sd1_diffusers), "--name", "mine",
                              "--few-step", "auto", "--family", "sd1", "--kind", "diffusion"]
    assert called["delegated"] == "1"  # so the importer never hands the work back


def test_the_importers_sentence_is_passed_on(tmp_path, monkeypatch, without_exporter,
                                             tiny_sd1_diffusers):
    fake = _fake_importer(tmp_path, """
        print("easel: error: That checkpoint is damaged (truncated).", file=sys.stderr)
        sys.exit(1)
        """)
    monkeypatch.setenv(importer.IMPORTER_ENV, str(fake))
    with pytest.raises(ModelError, match=r"^That checkpoint is damaged \(truncated\)\.$"):
        ModelStore(tmp_path / "models").import_model(tiny_sd1_diffusers)


def test_cancelling_stops_the_importer(tmp_path, monkeypatch, without_exporter,
                                       tiny_sd1_diffusers):
    fake = _fake_importer(tmp_path, """
        for i in range(600):
            print(f"easel: [{i}/600] working", file=sys.stderr, flush=True)
            time.sleep(0.1)
        Path(here / "finished").touch()
        """)
    monkeypatch.setenv(importer.IMPORTER_ENV, str(fake))
    store = ModelStore(tmp_path / "models")
    with pytest.raises(Cancelled):
        store.import_model(tiny_sd1_diffusers, should_stop=lambda: True)
    assert not (tmp_path / "finished").exists()
    assert store.list() == []


def test_without_an_importer_the_sentence_says_what_to_install(tmp_path, monkeypatch,
                                                               without_exporter,
                                                               tiny_sd1_diffusers):
    monkeypatch.setenv(importer.IMPORTER_ENV, str(tmp_path / "not-there"))
    store = ModelStore(tmp_path / "models")
    with pytest.raises(ExportUnavailable, match=r'pip install "easel\[export\]"'):
        store.import_model(tiny_sd1_diffusers)
    monkeypatch.setattr(sys, "frozen", True, raising=False)  # a PyInstaller package
    with pytest.raises(ExportUnavailable) as refused:
        store.import_model(tiny_sd1_diffusers)
    assert str(refused.value) == importer.FROZEN_SENTENCE
    assert "easel-importer package" in importer.FROZEN_SENTENCE


def test_the_importer_itself_never_hands_the_work_on(tmp_path, monkeypatch, without_exporter,
                                                     tiny_sd1_diffusers):
    fake = _fake_importer(tmp_path, "")
    monkeypatch.setenv(importer.IMPORTER_ENV, str(fake))
    monkeypatch.setenv(importer.DELEGATED_ENV, "1")
    with pytest.raises(ExportUnavailable):
        ModelStore(tmp_path / "models").import_model(tiny_sd1_diffusers)
    assert not (tmp_path / "called.json").exists()


def test_the_importer_is_found_on_path(tmp_path, monkeypatch):
    fake = _fake_importer(tmp_path, "")
    monkeypatch.delenv(importer.IMPORTER_ENV, raising=False)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert importer.find_importer() == fake
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(importer, "INSTALLED_IMPORTERS", ())
    assert importer.find_importer() is None


@pytest.mark.slow
def test_a_real_import_through_the_easel_program(tmp_path, monkeypatch, without_exporter,
                                                 tiny_sd1_diffusers):
    """The test environment's own ``easel`` (which has the exporter) as the importer: the
    model it exports into the shared data folder is the one the store returns."""
    program = shutil.which("easel", path=str(Path(sys.executable).parent))
    assert program
    monkeypatch.setenv(importer.IMPORTER_ENV, program)
    monkeypatch.setenv("EASEL_HOME", str(tmp_path / "home"))
    store = ModelStore(tmp_path / "home" / "models")
    stages = []
    model = store.import_model(tiny_sd1_diffusers, "tiny",
                               lambda stage, done, total: stages.append(stage))
    assert model.name == "tiny" and model.family == "sd1"
    assert stages  # the importer's progress came through
    assert (store.path_of("tiny") / "unet" / "model.onnx").is_file()
