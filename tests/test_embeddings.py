"""Textual-inversion embeddings: a kind of their own, and the pictures diffusers makes.

Embedding files are made here with random vectors in every format people share (A1111's .pt
and .safetensors, diffusers' learned_embeds, SDXL's clip_l + clip_g). The reference is
diffusers' ``load_textual_inversion``, which adds the name's tokens to the tokenizer and rows
to the text encoder's embedding table, as Easel does at session creation.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine.errors import BadRequest, ModelError
from engine.model import load_model
from engine.prompt_chunks import SpecialTokens, make_chunks
from engine.request import TextToImageRequest
from tests import tiny_models, tiny_models_xl
from tests.test_sdxl_parity import HEIGHT, WIDTH, run_diffusers, run_ours

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
safetensors_torch = pytest.importorskip("safetensors.torch")

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

NAME = "inkstyle"
PROMPT = f"a photo of an astronaut riding a horse, {NAME}"
STEPS, SEED, GUIDANCE = 3, 7, 5.0
VECTORS = 3


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("EASEL_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture(scope="module")
def sd1(tmp_path_factory):
    return tiny_models_xl.installed_copy(tiny_models.tiny_onnx("sd1"),
                                         tmp_path_factory.mktemp("m") / "tiny-sd1")


@pytest.fixture(scope="module")
def sdxl(tmp_path_factory):
    return tiny_models_xl.installed_copy(tiny_models_xl.tiny_onnx("sdxl"),
                                         tmp_path_factory.mktemp("m") / "tiny-sdxl")


def vectors(count: int, width: int, seed: int = 1) -> torch.Tensor:
    # Larger than the tiny model's token vectors, so the embedding visibly changes a picture.
    return torch.from_numpy(np.random.default_rng(seed).standard_normal(
        (count, width), dtype=np.float32) * 2)


def request(prompt: str = PROMPT, embeddings=()) -> TextToImageRequest:
    return TextToImageRequest(prompt, width=WIDTH, height=HEIGHT, steps=STEPS,
                              guidance=GUIDANCE, scheduler="euler", seed=SEED,
                              embeddings=tuple(embeddings))


def ours(folder, monkeypatch, prompt=PROMPT, embeddings=()):
    model = load_model(folder)
    model.use_embeddings(embeddings)
    return run_ours(model, request(prompt, embeddings), monkeypatch)


def theirs(pipe, monkeypatch, prompt=PROMPT):
    call = {"prompt": prompt, "num_inference_steps": STEPS, "guidance_scale": GUIDANCE}
    return (run_diffusers(pipe, SEED, monkeypatch, **call),
            run_diffusers(pipe, SEED, monkeypatch, "latent", **call))


def difference(first, second) -> int:
    return int(np.abs(first.astype(int) - second.astype(int)).max())


def sd1_pipe():
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(
        tiny_models.tiny_diffusers("sd1"), safety_checker=None, requires_safety_checker=False)
    pipe.scheduler = diffusers.EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sdxl_pipe():
    pipe = diffusers.StableDiffusionXLPipeline.from_pretrained(
        tiny_models_xl.tiny_diffusers("sdxl"), add_watermarker=False)
    pipe.scheduler = diffusers.EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# --- parity -----------------------------------------------------------------------------------

@pytest.mark.slow
def test_an_embedding_matches_diffusers_load_textual_inversion(sd1, tmp_path, monkeypatch):
    pipe = sd1_pipe()
    width = pipe.text_encoder.config.hidden_size
    path = tmp_path / f"{NAME}.safetensors"
    safetensors_torch.save_file({"emb_params": vectors(VECTORS, width)}, str(path))
    plain, _ = theirs(pipe, monkeypatch)
    pipe.load_textual_inversion(str(path), token=NAME)
    their_pixels, their_latents = theirs(pipe, monkeypatch)
    our_pixels, our_latents = ours(sd1, monkeypatch, embeddings=[(NAME, str(path))])
    assert difference(their_pixels, plain) > 4, "the embedding must change the picture"
    assert difference(our_pixels, their_pixels) <= 2
    np.testing.assert_allclose(our_latents, their_latents, rtol=1e-3, atol=1e-3)


@pytest.mark.slow
def test_an_sdxl_embedding_matches_diffusers(sdxl, tmp_path, monkeypatch):
    pipe = sdxl_pipe()
    path = tmp_path / f"{NAME}.safetensors"
    clip_l = vectors(VECTORS, pipe.text_encoder.config.hidden_size, 1)
    clip_g = vectors(VECTORS, pipe.text_encoder_2.config.hidden_size, 2)
    safetensors_torch.save_file({"clip_l": clip_l, "clip_g": clip_g}, str(path))
    plain, _ = theirs(pipe, monkeypatch)
    # diffusers reads SDXL files one encoder at a time (its documented way).
    pipe.load_textual_inversion(clip_l, token=NAME, text_encoder=pipe.text_encoder,
                                tokenizer=pipe.tokenizer)
    pipe.load_textual_inversion(clip_g, token=NAME, text_encoder=pipe.text_encoder_2,
                                tokenizer=pipe.tokenizer_2)
    their_pixels, their_latents = theirs(pipe, monkeypatch)
    our_pixels, our_latents = ours(sdxl, monkeypatch, embeddings=[(NAME, str(path))])
    assert difference(their_pixels, plain) > 4, "the embedding must change the picture"
    assert difference(our_pixels, their_pixels) <= 2
    np.testing.assert_allclose(our_latents, their_latents, rtol=1e-3, atol=1e-3)


def test_a_prompt_without_the_name_is_unchanged_bit_for_bit(sd1, tmp_path, monkeypatch):
    path = tmp_path / f"{NAME}.safetensors"
    safetensors_torch.save_file({"emb_params": vectors(VECTORS, 32)}, str(path))
    prompt = "a photo of an astronaut riding a horse, ink style"  # the name's words apart
    plain, _ = ours(sd1, monkeypatch, prompt)
    offered, _ = ours(sd1, monkeypatch, prompt, [(NAME, str(path))])
    named, _ = ours(sd1, monkeypatch, PROMPT, [(NAME, str(path))])
    assert np.array_equal(plain, offered)
    assert difference(named, plain) > 0


# --- chunks -----------------------------------------------------------------------------------

TOKENS = SpecialTokens(start=1, end=2, pad=2, comma=3)


def test_an_embedding_at_a_chunk_boundary_moves_whole_to_the_next_chunk():
    run = (100, 101, 102)
    chunks = make_chunks([[([10] * 73 + [run] + [11], 1.0)]], TOKENS)
    assert len(chunks) == 2
    assert chunks[0].ids[1:75] == (10,) * 73 + (2,)  # 73 words, then padding
    assert chunks[1].ids[1:5] == (*run, 11)
    fits = make_chunks([[([10] * 72 + [run], 1.0)]], TOKENS)
    assert len(fits) == 1 and fits[0].ids[73:76] == run


def test_embedding_tokens_replace_the_name_where_written(sd1, tmp_path):
    path = tmp_path / "e.safetensors"
    safetensors_torch.save_file({"emb_params": vectors(VECTORS, 32)}, str(path))
    model = load_model(sd1)
    model.use_embeddings([(NAME, str(path)), ("ink", str(path))])
    tokenizer = model.tokenizer
    ids = tokenizer.piece_ids(f"red {NAME}, ink")
    found = model.embeddings.find("text_encoder", tokenizer.piece_ids, ids)
    vocabulary = model.embeddings.table("text_encoder")[1]
    start = vocabulary + VECTORS
    assert found == [ids[0], tuple(range(vocabulary, vocabulary + VECTORS)),
                     tokenizer.piece_ids(",")[0], tuple(range(start, start + VECTORS))]
    other = tokenizer.piece_ids("inky red")
    assert model.embeddings.find("text_encoder", tokenizer.piece_ids, other) == other


# --- the kind -----------------------------------------------------------------------------------

def _files(folder):
    """One file of each format: name -> (path, family, vectors)."""
    files = {}
    path = folder / "a1111.pt"
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": vectors(2, 768)},
                "name": "a1111", "step": 100}, path)
    files["a1111"] = (path, "sd1", 2)
    path = folder / "emb.safetensors"
    safetensors_torch.save_file({"emb_params": vectors(4, 1024)}, str(path))
    files["emb"] = (path, "sd2", 4)
    path = folder / "learned_embeds.bin"
    torch.save({"<cat-toy>": vectors(1, 768)[0]}, path)
    files["learned_embeds"] = (path, "sd1", 1)
    path = folder / "xl.safetensors"
    safetensors_torch.save_file({"clip_l": vectors(3, 768), "clip_g": vectors(3, 1280)},
                                str(path))
    files["xl"] = (path, "sdxl", 3)
    return files


def test_import_list_remove_embeddings_as_their_own_kind(home, tmp_path, capsys):
    from desktop.cli import main
    from desktop.model_kinds.embedding import installed_embeddings
    from desktop.model_store import ModelStore
    from desktop.paths import models_dir
    from engine.embeddings import read_embedding

    files = _files(tmp_path)
    for path, _family, _count in files.values():
        assert main(["models", "import", str(path)]) == 0, capsys.readouterr().err
    capsys.readouterr()
    assert main(["models", "list"]) == 0
    lines = [line.split()[:3] for line in capsys.readouterr().out.splitlines()]
    store = ModelStore(models_dir())
    for name, (_path, family, count) in files.items():
        assert [name, "embedding", family] in lines
        description = json.loads((store.root / name / "easel.json").read_text())
        assert description["kind"] == "embedding" and description["vectors"] == count
        found, vectors_read = read_embedding(store.root / name / "embedding.safetensors")
        assert found == family and len(vectors_read["text_encoder"]) == count
    uses = {model.name: model.use for model in store.installed("embedding")}
    assert "(1 vector)" in uses["learned_embeds"] and "(2 vectors)" in uses["a1111"]
    assert [model.name for model in store.list()] == []  # never offered to make pictures
    assert [name for name, _ in installed_embeddings(store, "sd1")] == ["a1111",
                                                                        "learned_embeds"]
    assert main(["models", "remove", "emb"]) == 0
    assert installed_embeddings(store, "sd2") == ()


def test_the_vectors_survive_the_import(home, tmp_path):
    from desktop.model_store import ModelStore
    from desktop.paths import models_dir
    from engine.embeddings import read_embedding

    files = _files(tmp_path)
    store = ModelStore(models_dir())
    installed = store.import_model(files["a1111"][0])
    _family, read = read_embedding(installed.path / "embedding.safetensors")
    assert np.array_equal(read["text_encoder"], vectors(2, 768).numpy())
    installed = store.import_model(files["xl"][0])
    _family, read = read_embedding(installed.path / "embedding.safetensors")
    assert np.array_equal(read["text_encoder_2"], vectors(3, 1280, 1).numpy())


# --- bad input ----------------------------------------------------------------------------------

def test_a_file_that_is_no_embedding_is_refused_in_one_sentence(tmp_path):
    from desktop.model_kinds import embedding

    path = tmp_path / "two.safetensors"
    safetensors_torch.save_file({"a": vectors(2, 768), "b": vectors(2, 768)}, str(path))
    assert not embedding.recognises(path, "safetensors")
    with pytest.raises(ModelError) as error:
        embedding.import_into(path, tmp_path, None, None)
    message = str(error.value)
    assert message.startswith("'two.safetensors' is not a textual-inversion embedding")
    assert message.count(". ") == 0 and message.endswith(".")
    safetensors_torch.save_file({"emb_params": vectors(2, 640)}, str(path))
    with pytest.raises(ModelError, match=r"640 wide, which fit no model family"):
        embedding.import_into(path, tmp_path, None, None)


def test_an_embedding_of_another_family_is_refused_before_any_work(sd1, tmp_path):
    path = tmp_path / "sd2.safetensors"
    safetensors_torch.save_file({"emb_params": vectors(2, 1024)}, str(path))
    with pytest.raises(BadRequest, match=r"^Embedding 'sd2' is made for Stable Diffusion "
                                         r"2\.x, but model 'tiny-sd1' is Stable Diffusion "
                                         r"1\.x\.$"):
        load_model(sd1).use_embeddings([("sd2", str(path))])
    with pytest.raises(ModelError, match=r"^The embedding file .* is missing\.$"):
        load_model(sd1).use_embeddings([("gone", str(tmp_path / "gone.safetensors"))])


def test_embeddings_work_through_the_optimised_graph_cache(sd1, tmp_path, monkeypatch):
    """The enlarged table replaces the cached optimised graph's too (or the model file's
    when onnxruntime will not), with the same pixels either way."""
    from engine.runtime import RuntimeOptions, clear_sessions

    path = tmp_path / f"{NAME}.safetensors"
    safetensors_torch.save_file({"emb_params": vectors(VECTORS, 32)}, str(path))
    embeddings = [(NAME, str(path))]
    expected, _ = ours(sd1, monkeypatch, embeddings=embeddings)
    options = RuntimeOptions(optimized_cache=tmp_path / "cache")
    for _ in range(2):  # the first run fills the cache with the plain graphs
        clear_sessions()
        model = load_model(sd1, options)
        run_ours(model, request(), monkeypatch)
        model.use_embeddings(embeddings)
        pixels, _ = run_ours(model, request(embeddings=embeddings), monkeypatch)
        assert np.array_equal(pixels, expected)


def test_the_window_and_the_editing_commands_offer_every_fitting_embedding(tmp_path):
    from desktop.app.generation import with_embeddings
    from desktop.model_store import ModelStore
    from engine.request import HiresFixRequest

    store = ModelStore(tmp_path / "models")
    safetensors_torch.save_file({"emb_params": torch.zeros(2, 768)},
                                str(tmp_path / "ink.safetensors"))
    store.import_model(tmp_path / "ink.safetensors")
    hires = with_embeddings(store, HiresFixRequest(TextToImageRequest("ink", width=64,
                                                                      height=64)), "sd1")
    assert hires.base.embeddings == (("ink", str(store.root / "ink" / "embedding.safetensors")),)
    assert with_embeddings(store, TextToImageRequest("ink"), "sdxl").embeddings == ()
