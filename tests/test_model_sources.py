"""Models the user already has: other apps' model folders scanned by content, and the Hugging
Face cache found by repo id, both read in place and never changed."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from desktop.model_sources import hf_cache
from desktop.model_sources.scan import (
    CONTROLNET,
    DIFFUSION,
    LORA,
    UPSCALER,
    app_of,
    scan_folder,
)
from engine.errors import EaselError, ModelError
from tests import tiny_models

torch = pytest.importorskip("torch")
from safetensors.torch import save_file  # noqa: E402

from tests.test_upscale_import import rrdb_state  # noqa: E402
from tests.tiny_checkpoints import write_tiny_checkpoint  # noqa: E402


def _fingerprint(folder: Path) -> dict[str, tuple[int, int, str]]:
    """Every file's size, modification time and content hash: what "never changed" means."""
    prints = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            stat = path.stat()
            prints[str(path)] = (stat.st_size, stat.st_mtime_ns,
                                 hashlib.sha256(path.read_bytes()).hexdigest())
    return prints


@pytest.fixture(scope="module")
def comfy(tmp_path_factory) -> Path:
    """A ComfyUI models folder with one of each kind Easel tells apart."""
    root = tmp_path_factory.mktemp("ComfyUI") / "models"
    for folder in ("checkpoints", "upscale_models", "loras", "controlnet", "diffusers"):
        (root / folder).mkdir(parents=True)
    write_tiny_checkpoint("sd1", root / "checkpoints" / "dreamy.safetensors")
    write_tiny_checkpoint("sd1", root / "checkpoints" / "fill.safetensors", in_channels=9)
    torch.save({"params_ema": rrdb_state(4)}, root / "upscale_models" / "4x-sharp.pth")
    save_file({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight":
               torch.zeros(4, 8)}, str(root / "loras" / "style.safetensors"))
    save_file({"control_model.input_hint_block.0.weight": torch.zeros(4, 3, 3, 3)},
              str(root / "controlnet" / "canny.safetensors"))
    shutil.copytree(tiny_models.tiny_diffusers("sd1"), root / "diffusers" / "tiny")
    (root / "checkpoints" / "notes.txt").write_text("not a model")
    (root / "checkpoints" / "broken.safetensors").write_bytes(b"\x00" * 64)
    return root


def test_a_comfyui_folder_is_told_apart_by_content(comfy):
    found = {path.path.relative_to(comfy).as_posix(): path for path in scan_folder(comfy)}
    assert found["checkpoints/dreamy.safetensors"].kind == DIFFUSION
    assert found["checkpoints/dreamy.safetensors"].description == "Stable Diffusion 1.x"
    assert found["checkpoints/fill.safetensors"].description == "Stable Diffusion 1.x inpainting"
    assert found["upscale_models/4x-sharp.pth"].kind == UPSCALER
    assert found["loras/style.safetensors"].kind == LORA
    assert found["loras/style.safetensors"].importable  # its own kind, since issue 17
    assert not found["controlnet/canny.safetensors"].importable
    assert "cannot use yet" in found["controlnet/canny.safetensors"].description
    assert found["controlnet/canny.safetensors"].kind == CONTROLNET
    # The diffusers folder is one model, not its dozen weight files.
    assert found["diffusers/tiny"].kind == DIFFUSION
    assert not any(key.startswith("diffusers/tiny/") for key in found)
    assert "checkpoints/notes.txt" not in found
    assert "checkpoints/broken.safetensors" not in found  # holds no model at all
    assert found["checkpoints/dreamy.safetensors"].size_bytes == \
        (comfy / "checkpoints" / "dreamy.safetensors").stat().st_size
    assert app_of(comfy.parent) == "ComfyUI"


def test_the_kind_comes_from_content_not_the_file_name(tmp_path):
    # An upscaler saved where a checkpoint would be, under a checkpoint's name.
    torch.save({"params_ema": rrdb_state(2)}, tmp_path / "sd15-final.ckpt")
    write_tiny_checkpoint("sd2", tmp_path / "RealESRGAN_x4plus.safetensors")
    found = {path.path.name: path for path in scan_folder(tmp_path)}
    assert found["sd15-final.ckpt"].kind == UPSCALER
    assert found["RealESRGAN_x4plus.safetensors"].kind == DIFFUSION
    assert found["RealESRGAN_x4plus.safetensors"].description == "Stable Diffusion 2.x"


def test_scanning_and_importing_in_place_change_nothing(comfy, tmp_path):
    from desktop.model_store import ModelStore

    before = _fingerprint(comfy)
    found = scan_folder(comfy)
    store = ModelStore(tmp_path / "models")
    upscaler = next(item for item in found if item.path.name == "4x-sharp.pth")
    store.import_model(upscaler.path, "sharp")
    assert [model.name for model in store.upscalers()] == ["sharp"]
    assert _fingerprint(comfy) == before


def test_a_checkpoint_the_import_would_refuse_says_why(tmp_path):
    # A Stable Diffusion UNet's first layer, but not the rest: the import's own reason.
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4)},
              str(tmp_path / "odd.safetensors"))
    (found,) = scan_folder(tmp_path)
    assert not found.importable
    assert "has no Stable Diffusion UNet" in found.description


def test_a_folder_of_configs_is_not_a_model(tmp_path):
    (tmp_path / "sd15" / "unet").mkdir(parents=True)
    (tmp_path / "sd15" / "model_index.json").write_text("{}")
    (tmp_path / "sd15" / "unet" / "config.json").write_text("{}")
    assert scan_folder(tmp_path) == []


def test_bad_folders_are_one_sentence(tmp_path):
    with pytest.raises(EaselError, match="does not exist"):
        scan_folder(tmp_path / "nowhere")
    (tmp_path / "one.safetensors").write_bytes(b"x")
    with pytest.raises(EaselError, match="is a file, not a folder"):
        scan_folder(tmp_path / "one.safetensors")
    assert scan_folder(tmp_path) == []  # a one-byte file is nothing, not an error


def test_an_automatic1111_folder_is_named(tmp_path):
    (tmp_path / "models" / "Stable-diffusion").mkdir(parents=True)
    assert app_of(tmp_path) == "AUTOMATIC1111 or Forge"
    assert app_of(tmp_path / "models") == "AUTOMATIC1111 or Forge"


# --- the Hugging Face cache ----------------------------------------------------------------

def _cache_with(root: Path, repo_id: str, source: Path, commit: str = "a" * 40) -> Path:
    """Lay ``source`` out as huggingface_hub caches a download: blobs, a snapshot of links, a
    ref naming the commit."""
    repo = root / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    for path in sorted(source.rglob("*")):
        if path.is_file():
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            blob = repo / "blobs" / digest
            blob.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, blob)
            link = snapshot / path.relative_to(source)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot


def test_a_cached_repo_is_found_by_id(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    snapshot = _cache_with(tmp_path / "hub", "someone/tiny-sd", tiny_models.tiny_diffusers("sd1"))
    found = hf_cache.cached_snapshot("someone/tiny-sd")
    assert (found.folder, found.commit, found.revision) == (snapshot, "a" * 40, "main")
    assert found.size_bytes == sum(p.stat().st_size
                                   for p in tiny_models.tiny_diffusers("sd1").rglob("*")
                                   if p.is_file())
    assert [model.repo_id for model in hf_cache.cached_models()] == ["someone/tiny-sd"]
    with pytest.raises(ModelError, match="is not in the Hugging Face cache"):
        hf_cache.cached_snapshot("someone/missing")
    with pytest.raises(ModelError, match="easel models get sd15"):
        hf_cache.cached_snapshot("someone/missing", hint="download it with: easel models get sd15")


def test_repo_ids_are_told_from_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert hf_cache.looks_like_repo_id("stabilityai/sd-turbo")
    assert not hf_cache.looks_like_repo_id("sd-turbo")
    assert not hf_cache.looks_like_repo_id("/models/sd-turbo")
    (tmp_path / "stabilityai" / "sd-turbo").mkdir(parents=True)
    assert not hf_cache.looks_like_repo_id("stabilityai/sd-turbo")  # the folder wins


def test_the_cache_location_follows_hf_home(tmp_path):
    # huggingface_hub reads the environment when it is imported: ask a fresh process.
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf")}
    env.pop("HF_HUB_CACHE", None)
    where = subprocess.run([sys.executable, "-c", "from desktop.model_sources import hf_cache; "
                            "print(hf_cache.cache_folder())"], env=env, capture_output=True,
                           text=True, check=True)
    assert where.stdout.strip() == str(tmp_path / "hf" / "hub")


# --- the commands ----------------------------------------------------------------------------

@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("EASEL_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_models_catalogue_marks_what_is_installed(home, capsys, tmp_path):
    from desktop.catalogue import load_catalogue
    from desktop.cli import main
    from desktop.model_store import ModelStore

    torch.save({"params_ema": rrdb_state(4)}, tmp_path / "x4.pth")
    ModelStore(home / "models").import_model(tmp_path / "x4.pth", "realesrgan-x4plus")
    assert main(["models", "catalogue"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for entry in load_catalogue().entries:
        line = next(line for line in lines if line.startswith(entry.id + " "))
        assert ("installed" in line) == (entry.install_as == "realesrgan-x4plus"), line
    turbo = lines.index(next(line for line in lines if line.startswith("sd-turbo ")))
    assert "no commercial use" in lines[turbo + 1]


def test_models_scan_lists_what_it_found(comfy, capsys):
    from desktop.cli import main

    assert main(["models", "scan", str(comfy.parent)]) == 0
    out = capsys.readouterr().out
    assert "(ComfyUI)" in out
    assert "dreamy.safetensors  Stable Diffusion 1.x" in out
    assert "style.safetensors  LoRA" in out
    assert "canny.safetensors  a ControlNet, which Easel cannot use yet" in out
    assert "[cannot be imported]" in out
    assert main(["models", "scan", str(comfy / "nowhere")]) == 1
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_models_import_takes_a_repo_id_from_the_cache(home, capsys, tmp_path, monkeypatch):
    from huggingface_hub import constants

    from desktop.cli import main

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.chdir(tmp_path)
    _cache_with(tmp_path / "hub", "someone/tiny-sd", tiny_models.tiny_diffusers("sd1"))
    assert main(["models", "import", "someone/tiny-sd"]) == 0
    assert "from the Hugging Face cache" in capsys.readouterr().err
    assert main(["models", "list"]) == 0
    assert capsys.readouterr().out.startswith("tiny-sd ")
    # Not cached: one sentence naming the catalogue entry to get, nothing installed.
    assert main(["models", "import", "stabilityai/sd-turbo"]) == 1
    assert "easel models get sd-turbo" in capsys.readouterr().err
    assert sorted(path.name for path in (home / "models").iterdir()) == ["tiny-sd"]
