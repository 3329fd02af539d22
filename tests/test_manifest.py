"""The checksum manifest catches damaged and tampered model files."""

import os

import pytest

from engine.description import ModelDescription
from engine.errors import ModelError
from engine.manifest import manifest_hash, verify_manifest, write_manifest


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "model.onnx").write_bytes(b"graph" * 100)
    (tmp_path / "easel.json").write_text("{}")
    write_manifest(tmp_path)
    return tmp_path


def test_untouched_folder_verifies(folder):
    verify_manifest(folder)
    verify_manifest(folder, full=True)


def test_changed_content_with_same_size_is_caught(folder):
    path = folder / "unet" / "model.onnx"
    path.write_bytes(b"GRAPH" * 100)  # same size, new modification time
    with pytest.raises(ModelError, match="does not match its checksum"):
        verify_manifest(folder)


def test_touched_but_unchanged_file_is_accepted(folder):
    path = folder / "unet" / "model.onnx"
    os.utime(path, ns=(1, 1))
    verify_manifest(folder)


def test_truncated_and_missing_files_are_caught(folder):
    path = folder / "unet" / "model.onnx"
    path.write_bytes(b"graph")
    with pytest.raises(ModelError, match="wrong size"):
        verify_manifest(folder)
    path.unlink()
    with pytest.raises(ModelError, match="missing"):
        verify_manifest(folder)


def test_unlisted_graph_is_refused(folder):
    (folder / "unet" / "extra.onnx").write_bytes(b"x")
    with pytest.raises(ModelError, match="does not list"):
        verify_manifest(folder)


def test_damaged_manifest_is_one_sentence(folder):
    (folder / "manifest.json").write_text("{not json")
    with pytest.raises(ModelError, match="manifest .* is damaged"):
        verify_manifest(folder)


def test_model_hash_is_short_and_follows_content(folder):
    first = manifest_hash(folder)
    assert len(first) == 10 and int(first, 16) >= 0
    (folder / "unet" / "model.onnx").write_bytes(b"other" * 100)
    write_manifest(folder)
    assert manifest_hash(folder) != first


def test_description_round_trip_and_newer_format(tmp_path):
    description = ModelDescription(
        family="sd1", latent_channels=4, vae_scale_factor=8, latent_scaling_factor=0.18215,
        prediction_type="epsilon", default_width=512, default_height=512, default_steps=25,
        default_guidance=7.5, default_scheduler="euler",
        preview_rgb_factors=((1, 0, 0), (0, 1, 0), (0, 0, 1), (0, 0, 0)))
    description.save(tmp_path)
    assert ModelDescription.load(tmp_path) == description
    (tmp_path / "easel.json").write_text('{"format": 99}')
    with pytest.raises(ModelError, match="newer Easel"):
        ModelDescription.load(tmp_path)
    with pytest.raises(ModelError, match="not an Easel model"):
        ModelDescription.load(tmp_path / "nowhere")
