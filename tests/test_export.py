"""The exporter: ONNX graphs match the PyTorch modules, bad folders are refused, and the
tokenizer files (ours in resources/, and the ones written with each model) match transformers'."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from engine.description import ModelDescription
from engine.errors import Cancelled, ModelError
from tests.tiny_models import CLIP_TOKENIZER, REPO

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

ASTRONAUT = "a photo of an astronaut riding a horse"
ASTRONAUT_IDS = [49406, 320, 1125, 539, 550, 18376, 6765, 320, 4558, 49407]
PROMPTS = [
    ASTRONAUT,
    "A Photo OF   an ASTRONAUT,\triding; a horse!!",
    "café naïve résumé 東京 🐱🚀 don't we'll it's",
    "masterpiece, (best quality:1.2), [cat|dog] 4k 1920x1080 $100 <lora:x:0.5>",
    "",
    " ".join(["an extremely detailed oil painting of a lighthouse on a cliff at dusk"] * 12),
]
# A non-square latent size and a batch other than the traced one (1); 13 is odd, so the
# UNet's upsamplers must take their output size from the skip connections.
BATCH = 2
LATENT_SIZES = [(32, 24), (13, 10)]


@pytest.fixture(params=["sd1", "sd2"])
def variant(request) -> str:
    return request.param


@pytest.fixture
def diffusers_folder(variant, request) -> Path:
    return request.getfixturevalue(f"tiny_{variant}_diffusers")


@pytest.fixture
def onnx_folder(variant, request) -> Path:
    return request.getfixturevalue(f"tiny_{variant}_onnx")


def session(path: Path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2  # the test machine is shared
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@lru_cache(maxsize=4)
def torch_components(folder: Path) -> dict:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    return {
        "text_encoder": CLIPTextModel.from_pretrained(folder / "text_encoder").eval(),
        "unet": UNet2DConditionModel.from_pretrained(folder / "unet").eval(),
        "vae": AutoencoderKL.from_pretrained(folder / "vae").eval(),
    }


def assert_close(actual: np.ndarray, expected: torch.Tensor, atol: float = 1e-4) -> None:
    expected = expected.detach().numpy()
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=0, atol=atol)


# --- the CLIP tokenizer files in resources/ ------------------------------------------------

def openai_clip_encode(text: str, vocab: dict[str, int], ranks: dict) -> list[int]:
    """OpenAI CLIP's SimpleTokenizer (without ftfy), an independent reference for the BPE."""
    import regex

    from resources.tokenizers.clip.derive_from_open_clip import bytes_to_unicode

    byte_symbols = bytes_to_unicode()
    text = " ".join(text.split()).lower()
    pattern = (r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d"
               r"|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+")
    ids = [vocab["<|startoftext|>"]]
    for word in regex.findall(pattern, text, regex.IGNORECASE):
        symbols = "".join(byte_symbols[byte] for byte in word.encode("utf-8"))
        ids += [vocab[part] for part in _bpe(symbols, ranks)]
    return ids + [vocab["<|endoftext|>"]]


def _bpe(symbols: str, ranks: dict) -> list[str]:
    word = [*symbols[:-1], symbols[-1] + "</w>"]
    while len(word) > 1:
        pairs = zip(word, word[1:], strict=False)
        rank, best = min((ranks.get(pair, float("inf")), pair) for pair in pairs)
        if rank == float("inf"):
            break
        merged, index = [], 0
        while index < len(word):
            if index < len(word) - 1 and (word[index], word[index + 1]) == best:
                merged.append(word[index] + word[index + 1])
                index += 2
            else:
                merged.append(word[index])
                index += 1
        word = merged
    return word


def test_clip_tokenizer_files_have_the_clip_vocabulary():
    vocab = json.loads((CLIP_TOKENIZER / "vocab.json").read_text(encoding="utf-8"))
    merges = (CLIP_TOKENIZER / "merges.txt").read_text(encoding="utf-8").splitlines()
    assert len(vocab) == 49408 and sorted(vocab.values()) == list(range(49408))
    assert merges[0] == "#version: 0.2" and len(merges) == 1 + 48894
    assert vocab["<|startoftext|>"] == 49406 and vocab["<|endoftext|>"] == 49407
    for name in ("LICENSE-open_clip.txt", "LICENSE-openai-clip.txt", "README.md"):
        assert (CLIP_TOKENIZER / name).is_file()


def test_clip_tokenizer_files_tokenize_like_clip():
    from transformers import CLIPTokenizer, CLIPTokenizerFast

    slow = CLIPTokenizer.from_pretrained(CLIP_TOKENIZER)
    fast = CLIPTokenizerFast.from_pretrained(CLIP_TOKENIZER)
    vocab = json.loads((CLIP_TOKENIZER / "vocab.json").read_text(encoding="utf-8"))
    merges = (CLIP_TOKENIZER / "merges.txt").read_text(encoding="utf-8").splitlines()[1:]
    ranks = {tuple(merge.split()): rank for rank, merge in enumerate(merges)}
    assert slow(ASTRONAUT).input_ids == ASTRONAUT_IDS
    for prompt in PROMPTS:
        expected = openai_clip_encode(prompt, vocab, ranks)
        assert slow(prompt).input_ids == expected, prompt
        assert fast(prompt).input_ids == expected, prompt


# --- exported graphs against PyTorch -------------------------------------------------------

def test_text_encoder_matches_pytorch(diffusers_folder, onnx_folder):
    text_encoder = torch_components(diffusers_folder)["text_encoder"]
    graph = session(onnx_folder / "text_encoder" / "model.onnx")
    tokenizer = _engine_tokenizer(onnx_folder)
    padded = np.array([encoding.ids for encoding in tokenizer.encode_batch(PROMPTS[:BATCH])],
                      dtype=np.int32)
    shorter = padded[:, :20].copy()
    shorter[:, -1] = 49407
    for ids in (padded, shorter):  # the traced sequence length, and another
        last_hidden_state, pooler_output = graph.run(None, {"input_ids": ids})
        with torch.no_grad():
            expected = text_encoder(input_ids=torch.from_numpy(ids).long())
        assert_close(last_hidden_state, expected.last_hidden_state)
        assert_close(pooler_output, expected.pooler_output)


@pytest.mark.parametrize("latent_size", LATENT_SIZES, ids=lambda size: "x".join(map(str, size)))
def test_unet_matches_pytorch(diffusers_folder, onnx_folder, latent_size):
    unet = torch_components(diffusers_folder)["unet"]
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(BATCH, 4, *latent_size, generator=generator)
    timestep = torch.tensor([999.0, 1.5])  # Euler-family timesteps are fractional
    context = torch.randn(BATCH, 77, 32, generator=generator)
    graph = session(onnx_folder / "unet" / "model.onnx")
    (out_sample,) = graph.run(None, {"sample": sample.numpy(), "timestep": timestep.numpy(),
                                     "encoder_hidden_states": context.numpy()})
    with torch.no_grad():
        assert_close(out_sample, unet(sample, timestep, context).sample)


def test_vae_decoder_matches_pytorch(diffusers_folder, onnx_folder):
    vae = torch_components(diffusers_folder)["vae"]
    latents = torch.randn(BATCH, 4, *LATENT_SIZES[0], generator=torch.Generator().manual_seed(1))
    (image,) = session(onnx_folder / "vae_decoder" / "model.onnx").run(
        None, {"latent_sample": latents.numpy()})
    assert image.shape == (BATCH, 3, 64, 48)
    with torch.no_grad():
        assert_close(image, vae.decode(latents).sample)


def test_vae_encoder_gives_the_distribution_parameters(diffusers_folder, onnx_folder):
    vae = torch_components(diffusers_folder)["vae"]
    image = torch.rand(BATCH, 3, 64, 48, generator=torch.Generator().manual_seed(2)) * 2 - 1
    (parameters,) = session(onnx_folder / "vae_encoder" / "model.onnx").run(
        None, {"sample": image.numpy()})
    with torch.no_grad():
        distribution = vae.encode(image).latent_dist
    mean, logvar = np.split(parameters, 2, axis=1)
    assert_close(mean, distribution.mean)
    assert_close(np.clip(logvar, -30.0, 20.0), distribution.logvar)


def test_export_writes_the_shared_layout(variant, onnx_folder, diffusers_folder):
    import onnx

    description = ModelDescription.load(onnx_folder)
    assert description.family == variant
    assert description.prediction_type == {"sd1": "epsilon", "sd2": "v_prediction"}[variant]
    assert (description.latent_channels, description.vae_scale_factor) == (4, 2)
    assert (description.default_width, description.default_height) == (64, 64)
    assert description.latent_scaling_factor == pytest.approx(0.18215)
    assert not (onnx_folder / "manifest.json").exists()
    index = json.loads((onnx_folder / "model_index.json").read_text())
    assert index["_class_name"] == "OnnxStableDiffusionPipeline"
    source_scheduler = (diffusers_folder / "scheduler" / "scheduler_config.json").read_text()
    assert (onnx_folder / "scheduler" / "scheduler_config.json").read_text() == source_scheduler
    signatures = {
        "text_encoder": ({"input_ids": ("int32", ["batch", "sequence"])},
                         ["last_hidden_state", "pooler_output"]),
        "unet": ({"sample": ("float", ["batch", 4, "height", "width"]),
                  "timestep": ("float", ["batch"]),
                  "encoder_hidden_states": ("float", ["batch", "sequence", 32])}, ["out_sample"]),
        "vae_decoder": ({"latent_sample": ("float", ["batch", 4, "height", "width"])},
                        ["sample"]),
        "vae_encoder": ({"sample": ("float", ["batch", 3, "height", "width"])},
                        ["latent_parameters"]),
    }
    for component, (inputs, outputs) in signatures.items():
        assert (onnx_folder / component / "config.json").is_file()
        graph = session(onnx_folder / component / "model.onnx")
        found = {i.name: (i.type[len("tensor("):-1], i.shape) for i in graph.get_inputs()}
        assert found == inputs
        assert [output.name for output in graph.get_outputs()] == outputs
        opset = onnx.load(onnx_folder / component / "model.onnx", load_external_data=False)
        assert max(entry.version for entry in opset.opset_import if entry.domain == "") >= 17


def test_diffusers_onnx_pipeline_reads_the_export(variant, diffusers_folder, onnx_folder):
    """Other tools read our folders: diffusers' own ONNX pipeline gives PyTorch's pixels."""
    import warnings

    from diffusers import StableDiffusionPipeline

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        try:  # deprecated by diffusers after 0.43
            from diffusers import OnnxStableDiffusionPipeline
        except ImportError:
            pytest.skip("this diffusers has no OnnxStableDiffusionPipeline")
        exported = OnnxStableDiffusionPipeline.from_pretrained(
            onnx_folder, provider="CPUExecutionProvider")
    reference = StableDiffusionPipeline.from_pretrained(diffusers_folder, safety_checker=None)
    latents = np.random.default_rng(0).standard_normal((1, 4, 32, 24), dtype=np.float32)
    settings = {"prompt": ASTRONAUT, "num_inference_steps": 3, "guidance_scale": 7.5,
                "output_type": "np"}
    expected = reference(latents=torch.from_numpy(latents), height=64, width=48,
                         **settings).images
    # diffusers' ONNX pipeline assumes 8 pixels per latent; only the latents' shape matters.
    actual = exported(latents=latents, height=256, width=192, **settings).images
    assert np.abs(actual - expected).max() * 255 < 0.5


# --- the tokenizer written with each model -------------------------------------------------

def _engine_tokenizer(onnx_folder: Path):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(onnx_folder / "tokenizer" / "tokenizer.json"))


def test_tokenizer_json_tokenizes_like_transformers(variant, onnx_folder, diffusers_folder):
    from transformers import CLIPTokenizer

    expected = CLIPTokenizer.from_pretrained(diffusers_folder / "tokenizer")
    assert expected.pad_token == {"sd1": "<|endoftext|>", "sd2": "!"}[variant]
    engine = _engine_tokenizer(onnx_folder)
    for prompt in PROMPTS:
        ids = expected(prompt, padding="max_length", max_length=77, truncation=True).input_ids
        assert engine.encode(prompt).ids == ids, prompt
    long = engine.encode(PROMPTS[-1]).ids
    assert len(long) == 77 and long[0] == 49406 and long[-1] == 49407
    short = engine.encode(ASTRONAUT).ids
    assert short[:10] == ASTRONAUT_IDS
    assert set(short[10:]) == {expected.pad_token_id}


# --- weights outside the graph (a real SD UNet is 3.4 GB) ----------------------------------

def test_large_weights_go_to_one_data_file(tmp_path, tiny_sd1_diffusers):
    from engine.export import graphs

    unet = torch_components(tiny_sd1_diffusers)["unet"]
    (tmp_path / "unet").mkdir()
    destination = tmp_path / "unet" / "model.onnx"
    graphs.export_graph(graphs.UNetGraph(unet), graphs.unet_example(unet), destination,
                        external_data_threshold=1_000_000)
    assert sorted(path.name for path in destination.parent.iterdir()) == [
        "model.onnx", "model.onnx.data"]
    assert destination.stat().st_size < 1_000_000 < (tmp_path / "unet" / "model.onnx.data"
                                                     ).stat().st_size
    sample, timestep, context = torch.randn(BATCH, 4, 32, 24), torch.tensor([10.0, 20.0]), \
        torch.randn(BATCH, 77, 32)
    (out_sample,) = session(destination).run(None, {
        "sample": sample.numpy(), "timestep": timestep.numpy(),
        "encoder_hidden_states": context.numpy()})
    with torch.no_grad():
        assert_close(out_sample, unet(sample, timestep, context).sample)


def test_save_model_merges_per_tensor_files_into_one(tmp_path, tiny_sd1_onnx):
    """Above 2 GB torch writes one file per tensor; the export keeps a single data file."""
    import onnx

    from engine.export.graphs import save_model

    scratch, final = tmp_path / "scratch", tmp_path / "final"
    scratch.mkdir(), final.mkdir()
    model = onnx.load(tiny_sd1_onnx / "vae_decoder" / "model.onnx")
    onnx.save_model(model, scratch / "model.onnx", save_as_external_data=True,
                    all_tensors_to_one_file=False, size_threshold=0)
    assert len(list(scratch.iterdir())) > 10
    save_model(scratch / "model.onnx", final / "model.onnx", external_data_threshold=0)
    assert sorted(path.name for path in final.iterdir()) == ["model.onnx", "model.onnx.data"]
    latents = np.random.default_rng(0).standard_normal((1, 4, 8, 6), dtype=np.float32)
    original = session(tiny_sd1_onnx / "vae_decoder" / "model.onnx")
    merged = session(final / "model.onnx")
    np.testing.assert_array_equal(merged.run(None, {"latent_sample": latents})[0],
                                  original.run(None, {"latent_sample": latents})[0])


# --- progress, cancellation and refusals ---------------------------------------------------

def test_progress_and_cancel_between_components(tmp_path, tiny_sd1_diffusers):
    from engine.export.diffusers_folder import export_diffusers_folder

    reported, asked = [], []

    def should_stop() -> bool:
        asked.append(True)
        return len(asked) > 1  # after the text encoder

    with pytest.raises(Cancelled):
        export_diffusers_folder(tiny_sd1_diffusers, tmp_path, should_stop=should_stop,
                                progress=lambda *report: reported.append(report))
    assert reported == [("text encoder", 1, 4)]
    assert (tmp_path / "text_encoder" / "model.onnx").is_file()
    assert not (tmp_path / "unet" / "model.onnx").exists()


def _copy(folder: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "model"
    shutil.copytree(folder, copy)
    return copy


def _refusal(source: Path, tmp_path: Path) -> str:
    from engine.export.diffusers_folder import export_diffusers_folder

    destination = tmp_path / "out"
    destination.mkdir()
    with pytest.raises(ModelError) as refused:
        export_diffusers_folder(source, destination)
    assert list(destination.iterdir()) == []  # refused before anything was written
    sentence = str(refused.value)
    assert sentence.endswith(".") and "\n" not in sentence
    return sentence


def test_refuses_a_folder_that_is_not_a_model(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.png").write_bytes(b"\x89PNG")
    assert "not a diffusers model folder" in _refusal(tmp_path / "photos", tmp_path)


def test_refuses_other_pipelines(tmp_path, tiny_sd1_diffusers):
    model = _copy(tiny_sd1_diffusers, tmp_path)
    index = json.loads((model / "model_index.json").read_text())
    (model / "model_index.json").write_text(json.dumps(
        {**index, "_class_name": "StableDiffusion3Pipeline"}))
    assert "not a Stable Diffusion 1.x/2.x" in _refusal(model, tmp_path)


@pytest.mark.parametrize("code", ["unet/attention.py", "pipeline.py"])
def test_refuses_a_model_that_ships_python_code(tmp_path, tiny_sd1_diffusers, code):
    model = _copy(tiny_sd1_diffusers, tmp_path)
    (model / code).write_text("import os\n")
    assert "never runs code" in _refusal(model, tmp_path)


def test_refuses_a_custom_pipeline_class(tmp_path, tiny_sd1_diffusers):
    model = _copy(tiny_sd1_diffusers, tmp_path)
    index = json.loads((model / "model_index.json").read_text())
    index["unet"] = ["my_unet", "FastUNet"]
    (model / "model_index.json").write_text(json.dumps(index))
    assert "never runs code" in _refusal(model, tmp_path)


def test_refuses_pickle_only_weights(tmp_path, tiny_sd1_diffusers):
    model = _copy(tiny_sd1_diffusers, tmp_path)
    weights = model / "unet" / "diffusion_pytorch_model.safetensors"
    weights.rename(weights.with_suffix(".bin"))
    sentence = _refusal(model, tmp_path)
    assert "pickle" in sentence and "later version" in sentence


def test_refuses_a_custom_tokenizer(tmp_path, tiny_sd1_diffusers):
    model = _copy(tiny_sd1_diffusers, tmp_path)
    config = model / "tokenizer" / "tokenizer_config.json"
    data = json.loads(config.read_text())
    custom = {"AutoTokenizer": ["tokenization_mine.MyTokenizer", None]}
    config.write_text(json.dumps({**data, "auto_map": custom}))
    assert "never runs code" in _refusal(model, tmp_path)


def test_refuses_damaged_weights(tmp_path, tiny_sd1_diffusers):
    from engine.export.diffusers_folder import export_diffusers_folder

    model = _copy(tiny_sd1_diffusers, tmp_path)
    weights = model / "text_encoder" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    (tmp_path / "out").mkdir()
    with pytest.raises(ModelError, match="damaged: its text_encoder weights cannot be read"):
        export_diffusers_folder(model, tmp_path / "out")


def test_accepts_the_hub_layout_of_sd15(tmp_path, tiny_sd1_diffusers):
    """SD 1.5's model_index names a safety checker and feature extractor we never load."""
    from engine.export.source import check_diffusers_folder

    model = _copy(tiny_sd1_diffusers, tmp_path)
    index = json.loads((model / "model_index.json").read_text())
    index.update(safety_checker=["stable_diffusion", "StableDiffusionSafetyChecker"],
                 feature_extractor=["transformers", "CLIPImageProcessor"])
    (model / "model_index.json").write_text(json.dumps(index))
    assert check_diffusers_folder(model).weight_variants["unet"] is None


def test_loads_fp16_only_weights_as_float32(tmp_path, tiny_sd1_diffusers):
    from safetensors.torch import load_file, save_file

    from engine.export.diffusers_folder import _load
    from engine.export.source import check_diffusers_folder

    model = _copy(tiny_sd1_diffusers, tmp_path)
    weights = model / "unet" / "diffusion_pytorch_model.safetensors"
    save_file({key: value.half() for key, value in load_file(weights).items()},
              weights.with_name("diffusion_pytorch_model.fp16.safetensors"))
    weights.unlink()
    source = check_diffusers_folder(model)
    assert source.weight_variants["unet"] == "fp16"
    assert {parameter.dtype for parameter in _load(source, "unet").parameters()} == {
        torch.float32}


def test_missing_exporter_says_how_to_install_it():
    script = (
        "import sys; sys.modules['torch'] = None\n"
        "import engine.export\n"
        "from engine.errors import ExportUnavailable\n"
        "try:\n"
        "    engine.export.require_export_dependencies()\n"
        "except ExportUnavailable as error:\n"
        "    print(error)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                            text=True, check=True, timeout=120)
    assert result.stdout.strip() == (
        'Importing models needs the export extra: pip install "easel[export]".')


def test_importing_the_export_package_does_not_import_torch():
    script = ("import sys, engine.export, engine.export.source\n"
              "print(sorted({'torch', 'diffusers', 'transformers'} & set(sys.modules)))\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                            text=True, check=True, timeout=120)
    assert result.stdout.strip() == "[]"
