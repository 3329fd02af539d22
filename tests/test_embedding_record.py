"""A picture records the embeddings its prompts used as AUTOMATIC1111 does ("TI hashes"): the
ones named, each with the first 12 digits of its file's SHA-256 (for an installed one, of the
file it was imported from, which model sites know)."""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from engine.embeddings import prepare_embeddings
from engine.embeddings.record import recorded_embeddings, short_hash
from engine.tokenizer import PromptTokenizer
from tests import tiny_models

VECTORS = 2


@pytest.fixture(scope="module")
def sd1() -> Path:
    return tiny_models.tiny_onnx("sd1")


@pytest.fixture(scope="module")
def tokenizer(sd1) -> PromptTokenizer:
    return PromptTokenizer(sd1 / "tokenizer", 77)


@pytest.fixture(scope="module")
def model(tokenizer) -> SimpleNamespace:
    """What recording reads of a model: its tokenizer."""
    return SimpleNamespace(tokenizer=tokenizer)


def write_embedding(path: Path, width: int, seed: int = 0) -> Path:
    """An A1111 .safetensors embedding (``emb_params``), written by hand."""
    values = np.random.default_rng(seed).standard_normal((VECTORS, width)).astype("<f4")
    header = json.dumps({"emb_params": {"dtype": "F32", "shape": [VECTORS, width],
                                        "data_offsets": [0, values.nbytes]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + values.tobytes())
    return path


def token_width(model: Path) -> int:
    weights = json.loads((model / "text_encoder" / "weights_map.json").read_text())["weights"]
    return next(entry["shape"][1] for key, entry in weights.items()
                if key.endswith("token_embedding.weight"))


def test_the_hash_is_the_sha256_of_the_whole_file(tmp_path):
    path = write_embedding(tmp_path / "ink.safetensors", 32)
    assert short_hash(path) == hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    write_embedding(path, 32, seed=1)  # the same size: a new time tells the new file
    os.utime(path, ns=(1, 1))
    assert short_hash(path) == hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def test_only_the_embeddings_a_prompt_names_are_recorded(tmp_path, model):
    ink = write_embedding(tmp_path / "ink.safetensors", 32)
    fog = write_embedding(tmp_path / "fog.safetensors", 32, seed=2)
    offered = [("inkstyle", str(ink)), ("fogstyle", str(fog))]
    assert recorded_embeddings(offered, "a photo, (inkstyle:1.2)", "",
                               model=model) == (("inkstyle", short_hash(ink)),)
    assert recorded_embeddings(offered, "a photo", "fogstyle", model=model) == (
        ("fogstyle", short_hash(fog)),)
    assert recorded_embeddings(offered, "a photo", "", model=model) == ()
    # A word that only begins like the name is not the name: its tokens differ.
    assert recorded_embeddings(offered, "inkstyles", "", model=model) == ()
    # A prompt the encoder will refuse records nothing rather than failing here.
    assert recorded_embeddings(offered, "inkstyle)", "", model=model) == ()


def test_the_longer_name_wins_where_both_could_start(tmp_path, model):
    ink = write_embedding(tmp_path / "ink.safetensors", 32)
    ink_style = write_embedding(tmp_path / "ink-style.safetensors", 32, seed=3)
    offered = [("ink", str(ink)), ("ink-style", str(ink_style))]
    assert recorded_embeddings(offered, "ink-style portrait", "", model=model) == (
        ("ink-style", short_hash(ink_style)),)
    assert recorded_embeddings(offered, "ink-style, ink", "", model=model) == (
        ("ink", short_hash(ink)), ("ink-style", short_hash(ink_style)))


@pytest.mark.parametrize("prompt", ["a photo, inkstyle", "myinkstyle", "inkstyles",
                                    "ink-style and ink", "[ink:0.5] BREAK inkstyle", "ink"])
def test_the_names_recorded_are_the_ones_the_encoder_replaces(tmp_path, sd1, tokenizer,
                                                              model, prompt):
    """The same names as engine.embeddings.EmbeddingSet.find turns into vectors."""
    width = token_width(sd1)
    offered = [(name, str(write_embedding(tmp_path / f"{name}.safetensors", width, seed)))
               for seed, name in enumerate(["ink", "inkstyle", "ink-style"])]
    found = prepare_embeddings(sd1, "sd1", "tiny", offered)
    rows = found.table("text_encoder")[1]
    runs = {tuple(range(rows + VECTORS * index, rows + VECTORS * (index + 1))): name
            for index, (name, _path) in enumerate(offered)}
    from engine.prompt_syntax import parse_prompt

    replaced = {runs[item] for section in parse_prompt(prompt).sections
                for piece, _weight in section
                for item in found.find("text_encoder", tokenizer.piece_ids,
                                       tokenizer.piece_ids(piece)) if isinstance(item, tuple)}
    recorded = recorded_embeddings(offered, prompt, model=model)
    assert {name for name, _hash in recorded} == replaced
    assert replaced or prompt == "inkstyles"  # the cases mean something


def test_a_request_without_embeddings_reads_no_tokenizer():
    assert recorded_embeddings((), "inkstyle", model=None) == ()  # None has no tokenizer


# --- through the command line -----------------------------------------------------------------

@pytest.fixture
def tiny_home(tmp_path, monkeypatch, installed_tiny_sd1) -> Path:
    """A data folder with the tiny SD 1.x installed."""
    import shutil

    home = tmp_path / "home"
    shutil.copytree(installed_tiny_sd1, home / "models" / "tiny")
    monkeypatch.setenv("EASEL_HOME", str(home))
    return home


def tiny_vectors(folder: Path, width: int) -> None:
    """Replace the installed embedding in ``folder`` by vectors the tiny model reads (an import
    knows only real widths, the tiny model's 32 fits none); its easel.json stays."""
    from desktop.model_kinds.embedding import write_vectors

    vectors = np.random.default_rng(4).standard_normal((VECTORS, width))
    write_vectors({"text_encoder": vectors.astype(np.float32)}, folder / "embedding.safetensors")


@pytest.fixture
def home(tiny_home, sd1):
    """The tiny SD 1.x and an embedding installed before imports kept the imported file's hash
    (its easel.json has no "source_sha256")."""
    folder = tiny_home / "models" / "inkstyle"
    folder.mkdir()
    tiny_vectors(folder, token_width(sd1))
    (folder / "easel.json").write_text(json.dumps(
        {"format": 1, "kind": "embedding", "family": "sd1", "vectors": VECTORS,
         "licence": None, "source": "inkstyle.safetensors"}))
    return tiny_home


def generate(prompt: str, path: Path) -> dict:
    """``easel generate`` with the tiny model: the picture's A1111 text and Easel's JSON."""
    from PIL import Image

    from desktop.cli import main

    assert main(["generate", prompt, "--model", "tiny", "--width", "64", "--height", "48",
                 "--steps", "2", "--seed", "3", "-o", str(path)]) == 0
    with Image.open(path) as image:
        return {"parameters": image.text["parameters"], **json.loads(image.text["easel"])}


def test_easel_generate_records_the_embeddings_its_prompt_used(home, tmp_path, capsys):
    from desktop.cli import main

    # Installed before imports kept the imported file's hash: the installed file's, then.
    data = (home / "models" / "inkstyle" / "embedding.safetensors").read_bytes()
    expected = hashlib.sha256(data).hexdigest()[:12]
    used = generate("a red chair, inkstyle", tmp_path / "used.png")
    assert f'TI hashes: "inkstyle: {expected}"' in used["parameters"]
    assert used["embeddings"] == [{"name": "inkstyle", "hash": expected}]
    plain = generate("a red chair", tmp_path / "plain.png")  # offered, but not named: not recorded
    assert "TI hashes" not in plain["parameters"] and "embeddings" not in plain
    capsys.readouterr()
    assert main(["gallery", "show", used["image_id"]]) == 0
    assert f"Embeddings:      inkstyle ({expected})" in capsys.readouterr().out.splitlines()
    assert main(["gallery", "show", plain["image_id"]]) == 0
    assert "Embeddings:" not in capsys.readouterr().out


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_a_picture_names_an_imported_embedding_by_the_file_imported(tiny_home, sd1, tmp_path,
                                                                     suffix):
    """The import rewrites the file; the hash recorded is still the downloaded file's."""
    from desktop.model_store import ModelStore
    from desktop.paths import models_dir

    source = tmp_path / f"downloaded{suffix}"
    if suffix == ".pt":
        torch = pytest.importorskip("torch")  # only to write A1111's pickle
        torch.save({"string_to_token": {"*": 265}, "name": "downloaded", "step": 100,
                    "string_to_param": {"*": torch.ones(VECTORS, 768)}}, source)
    else:
        write_embedding(source, 768)
    installed = ModelStore(models_dir()).import_model(source, "inkstyle")
    tiny_vectors(installed.path, token_width(sd1))
    expected = hashlib.sha256(source.read_bytes()).hexdigest()
    assert json.loads((installed.path / "easel.json").read_text())["source_sha256"] == expected
    installed_file = (installed.path / "embedding.safetensors").read_bytes()
    assert hashlib.sha256(installed_file).hexdigest() != expected  # the import rewrote it
    used = generate("a red chair, inkstyle", tmp_path / "used.png")
    assert f'TI hashes: "inkstyle: {expected[:12]}"' in used["parameters"]
    assert used["embeddings"] == [{"name": "inkstyle", "hash": expected[:12]}]


def test_only_an_installed_embeddings_easel_json_gives_its_hash(tmp_path):
    folder = tmp_path / "inkstyle"
    folder.mkdir()
    path = write_embedding(folder / "embedding.safetensors", 32)
    own = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    assert short_hash(path) == own  # no easel.json
    for stored in ["", "not a hash", 7, "A" * 64]:
        (folder / "easel.json").write_text(json.dumps({"source_sha256": stored}))
        assert short_hash(path) == own
    (folder / "easel.json").write_text(json.dumps({"source_sha256": "ab" * 32}))
    assert short_hash(path) == "ab" * 6
    # A file used where it lies is its own, whatever lies beside it.
    assert short_hash(write_embedding(folder / "other.safetensors", 32)) == hashlib.sha256(
        (folder / "other.safetensors").read_bytes()).hexdigest()[:12]


# --- every pipeline that draws from a prompt --------------------------------------------------

def test_every_pipeline_records_the_embeddings_its_texts_named(tmp_path, installed_tiny_sd1):
    from engine.model import load_model
    from engine.pipelines.hires_fix import HiresFixPipeline
    from engine.pipelines.image_to_image import ImageToImagePipeline
    from engine.pipelines.inpaint import InpaintPipeline
    from engine.pipelines.outpaint import OutpaintPipeline
    from engine.pipelines.regions import RegionsPipeline
    from engine.request import (
        HiresFixRequest,
        ImageToImageRequest,
        InpaintRequest,
        OutpaintRequest,
        RegionsRequest,
        TextToImageRequest,
    )

    model = load_model(installed_tiny_sd1)
    path = write_embedding(tmp_path / "inkstyle.safetensors", token_width(installed_tiny_sd1))
    offered = (("inkstyle", str(path)),)
    expected = (("inkstyle", short_hash(path)),)
    picture = np.full((48, 64, 3), 120, np.uint8)
    mask = np.zeros((48, 64), np.uint8)
    mask[:, 32:] = 255
    quick = {"steps": 2, "seed": 1, "embeddings": offered}
    made = {
        "image to image": ImageToImagePipeline(model)(ImageToImageRequest(
            picture, prompt="inkstyle", **quick)),
        "inpaint (negative prompt)": InpaintPipeline(model)(InpaintRequest(
            picture, mask, prompt="a chair", negative_prompt="inkstyle", **quick)),
        "outpaint": OutpaintPipeline(model)(OutpaintRequest(
            picture, right=16, prompt="inkstyle", **quick)),
        "regions (a region's prompt)": RegionsPipeline(model)(RegionsRequest(
            "a field", [((0, 0, 32, 48), "inkstyle")], width=64, height=48, **quick)),
        "hires fix": HiresFixPipeline(model)(HiresFixRequest(TextToImageRequest(
            "inkstyle", width=64, height=48, **quick), scale=1.5)),
    }
    recorded = {name: result.images[0].parameters.embeddings for name, result in made.items()}
    assert recorded == dict.fromkeys(made, expected)
    plain = ImageToImagePipeline(model)(ImageToImageRequest(picture, prompt="a chair", **quick))
    assert plain.images[0].parameters.embeddings == ()


def test_an_instruction_records_the_embeddings_it_named(tmp_path):
    from engine.model import load_model
    from engine.pipelines.instruct_pix2pix import InstructPix2PixPipeline
    from engine.request import InstructPix2PixRequest
    from tests import tiny_models_pix2pix
    from tests.tiny_models_xl import installed_copy

    folder = installed_copy(tiny_models_pix2pix.tiny_pix2pix_onnx(), tmp_path / "pix2pix")
    path = write_embedding(tmp_path / "inkstyle.safetensors", token_width(folder))
    request = InstructPix2PixRequest(np.full((48, 64, 3), 120, np.uint8),
                                     "make it inkstyle", steps=2, seed=1,
                                     embeddings=(("inkstyle", str(path)),))
    (image,) = InstructPix2PixPipeline(load_model(folder))(request).images
    assert image.parameters.embeddings == (("inkstyle", short_hash(path)),)
