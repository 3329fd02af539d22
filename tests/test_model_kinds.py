"""The registry of model kinds (desktop.model_kinds): each kind recognises its own sources by
content, the store imports, lists, finds and removes every kind through the same code (a kind
registered here needs no change in the store), and a source two kinds claim is refused in one
sentence that names them."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path
from typing import Any

import pytest

from desktop import model_kinds
from desktop.model_kinds import InstalledModel, diffusion, kind_for_source, upscaler
from desktop.model_store import DIFFUSION, UPSCALER, ModelStore
from engine.errors import ModelError
from engine.export.formats import (
    DIFFUSERS_FOLDER,
    ONNX_FOLDER,
    ONNX_UPSCALER,
    SAFETENSORS,
    detect_format,
)


def weights_file(path: Path, names: list[str], metadata: dict | None = None) -> Path:
    """A .safetensors file with one float per tensor, written by hand (no torch needed)."""
    header: dict[str, Any] = {name: {"dtype": "F32", "shape": [1],
                                     "data_offsets": [4 * i, 4 * i + 4]}
                              for i, name in enumerate(names)}
    if metadata:
        header["__metadata__"] = metadata
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + bytes(4 * len(names)))
    return path


def _metadata(path: Path) -> dict:
    (size,) = struct.unpack("<Q", path.read_bytes()[:8])
    return json.loads(path.read_bytes()[8:8 + size]).get("__metadata__", {})


class SketchKind:
    """A third kind, as the next issues add them: a weights file that says it is a sketch
    model, installed as that file plus its own description.json."""

    name = "sketch"
    noun = "a sketch model"
    fallback_formats: tuple[str, ...] = ()

    def recognises(self, source: Path, format: str) -> bool:
        return format == SAFETENSORS and _metadata(source).get("kind") == "sketch"

    def needs_exporter(self, source: Path, format: str) -> bool:
        return False

    def import_into(self, source: Path, building: Path, progress, should_stop,
                    **options: Any) -> None:
        shutil.copyfile(source, building / "sketch.safetensors")
        (building / "description.json").write_text(json.dumps({"kind": self.name}))

    def is_installed_folder(self, folder: Path) -> bool:
        try:
            return json.loads((folder / "description.json").read_text())["kind"] == self.name
        except (OSError, ValueError, KeyError):
            return False

    def describe(self, folder: Path) -> InstalledModel:
        size = (folder / "sketch.safetensors").stat().st_size
        return InstalledModel(folder.name, "sd1", "", size, folder, kind=self.name,
                              use="draws sketches")

    def use_with(self, name: str) -> str:
        return f"easel sketch --model {name}"


@pytest.fixture
def with_sketches(monkeypatch) -> SketchKind:
    kind = SketchKind()
    monkeypatch.setattr(model_kinds, "KINDS", (*model_kinds.KINDS, kind))
    return kind


@pytest.fixture
def store(tmp_path) -> ModelStore:
    return ModelStore(tmp_path / "models")


@pytest.fixture
def upscaler_checkpoint(tmp_path) -> Path:
    return weights_file(tmp_path / "RealESRGAN_x4plus.safetensors",
                        ["conv_first.weight", "body.0.rdb1.conv1.weight"])


def _kind_of(source: Path) -> str:
    return kind_for_source(source, detect_format(source)).name


def test_each_kind_recognises_its_own_sources_and_not_the_others(tmp_path, tiny_sd1_diffusers,
                                                                tiny_sd1_onnx,
                                                                upscaler_checkpoint):
    lone_graph = tmp_path / "x4.onnx"
    lone_graph.write_bytes(b"\x08\x07" + bytes(30))  # an ONNX ModelProto's opening bytes
    for source, format in [(tiny_sd1_diffusers, DIFFUSERS_FOLDER), (tiny_sd1_onnx, ONNX_FOLDER)]:
        assert detect_format(source) == format
        assert diffusion.recognises(source, format) and not upscaler.recognises(source, format)
    assert detect_format(upscaler_checkpoint) == SAFETENSORS
    assert upscaler.recognises(upscaler_checkpoint, SAFETENSORS)
    assert not diffusion.recognises(upscaler_checkpoint, SAFETENSORS)
    # A lone graph no kind knows by its names is the upscaler kind's by fallback.
    assert detect_format(lone_graph) == ONNX_UPSCALER
    assert ONNX_UPSCALER in upscaler.fallback_formats
    assert not diffusion.recognises(lone_graph, ONNX_UPSCALER)
    assert [_kind_of(source) for source in (tiny_sd1_diffusers, tiny_sd1_onnx,
                                            upscaler_checkpoint, lone_graph)] == [
        DIFFUSION, DIFFUSION, UPSCALER, UPSCALER]


def test_a_checkpoint_no_kind_recognises_goes_to_the_stable_diffusion_converter(tmp_path):
    # Its converter is the one that can say what does not fit, as before kinds existed.
    checkpoint = weights_file(tmp_path / "v1-5.safetensors",
                              ["model.diffusion_model.input_blocks.0.0.weight"])
    assert not upscaler.recognises(checkpoint, SAFETENSORS)
    assert _kind_of(checkpoint) == DIFFUSION
    unknown = weights_file(tmp_path / "something.safetensors", ["mystery.weight"])
    assert _kind_of(unknown) == DIFFUSION


def test_a_registered_kind_is_imported_listed_found_and_removed_by_the_same_store(
        tmp_path, store, with_sketches, tiny_sd1_onnx):
    source = weights_file(tmp_path / "pencil.safetensors", ["w"], {"kind": "sketch"})
    shutil.copytree(tiny_sd1_onnx, store.root / "painter")  # a model installed earlier

    installed = store.import_model(source)

    assert (installed.name, installed.kind, installed.use) == ("pencil", "sketch",
                                                                "draws sketches")
    assert (installed.path / "manifest.json").is_file()  # checksummed like every model
    assert [(model.name, model.kind) for model in store.installed()] == [
        ("painter", DIFFUSION), ("pencil", "sketch")]
    assert [model.name for model in store.installed("sketch")] == ["pencil"]
    assert [model.name for model in store.list()] == ["painter"]
    assert store.upscalers() == []
    assert store.path_of("pencil", kind=None) == installed.path
    with pytest.raises(ModelError, match=r"^'pencil' is a sketch model, not a model that makes "
                                         r"pictures; use it with: easel sketch --model pencil\.$"):
        store.path_of("pencil")
    store.remove("pencil")
    assert [model.name for model in store.installed()] == ["painter"]


def test_a_source_two_kinds_recognise_is_refused_until_the_kind_is_named(
        tmp_path, store, with_sketches):
    both = weights_file(tmp_path / "both.safetensors", ["conv_first.weight"],
                        {"kind": "sketch"})
    with pytest.raises(ModelError) as refusal:
        store.import_model(both)
    assert str(refusal.value) == ("'both.safetensors' could be an upscaler or a sketch model; "
                                  "say which with --kind upscaler or --kind sketch.")
    assert list(store.root.iterdir()) == []  # nothing half-written

    assert store.import_model(both, kind="sketch").kind == "sketch"


def test_a_named_kind_must_exist_and_fit_the_source(store, tiny_sd1_onnx):
    from desktop.model_kinds import KINDS

    names = [kind.name for kind in KINDS]
    listed = f"{', '.join(names[:-1])} or {names[-1]}"
    assert names[:4] == ["diffusion", "upscaler", "lora", "embedding"]
    with pytest.raises(ModelError, match=rf"^There is no kind of model called 'hologram'; the "
                                         rf"kinds are {listed}\.$"):
        store.import_model(tiny_sd1_onnx, kind="hologram")
    with pytest.raises(ModelError, match=r"is not an upscaler\.$"):
        store.import_model(tiny_sd1_onnx, kind="upscaler")
    assert list(store.root.iterdir()) == []


def test_folders_from_earlier_versions_are_listed_with_their_kind(store, tiny_sd1_onnx):
    # easel.json without a "kind" (diffusion, as written before kinds existed) and an
    # upscaler's description; a stray folder and a damaged description are passed over.
    shutil.copytree(tiny_sd1_onnx, store.root / "tiny")
    assert "kind" not in json.loads((store.root / "tiny" / "easel.json").read_text())
    sharp = store.root / "sharp"
    sharp.mkdir()
    (sharp / "easel.json").write_text(json.dumps(
        {"kind": "upscaler", "format": 1, "scale": 4, "architecture": "ESRGAN"}))
    (store.root / "holiday photos").mkdir()
    (store.root / "broken").mkdir()
    (store.root / "broken" / "easel.json").write_text("{")

    models = store.installed()

    assert [(model.name, model.kind, model.family, model.use) for model in models] == [
        ("sharp", UPSCALER, "4x upscaler (ESRGAN)", "enlarges pictures 4x"),
        ("tiny", DIFFUSION, "sd1", "makes pictures from a prompt")]
    assert store.installed(UPSCALER) == store.upscalers()
    assert store.installed(DIFFUSION) == store.list()
    assert store.path_of("broken") == store.root / "broken"  # loading it says what is wrong
    assert store.upscaler_path("sharp") == sharp


def test_the_command_line_lists_every_kind_and_takes_kind(tmp_path, monkeypatch, capsys,
                                                          tiny_sd1_onnx):
    from desktop.cli import main

    monkeypatch.setenv("EASEL_HOME", str(tmp_path / "home"))
    store = ModelStore(tmp_path / "home" / "models")
    shutil.copytree(tiny_sd1_onnx, store.root / "tiny")
    sharp = store.root / "sharp"
    sharp.mkdir()
    (sharp / "easel.json").write_text(json.dumps(
        {"kind": "upscaler", "format": 1, "scale": 4, "architecture": "ESRGAN"}))
    assert main(["models", "list"]) == 0
    rows = {line.split()[0]: line.split()[1] for line in capsys.readouterr().out.splitlines()}
    assert rows == {"sharp": UPSCALER, "tiny": DIFFUSION, "starter": DIFFUSION}
    assert main(["models", "import", str(tiny_sd1_onnx), "--name", "x", "--kind",
                 "upscaler"]) == 1
    assert capsys.readouterr().err.rstrip().endswith("is not an upscaler.")
    assert not (store.root / "x").exists()
