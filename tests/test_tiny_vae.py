"""The tiny VAE kind (issue 23): a tiny random-weight diffusers AutoencoderTiny, saved as the
Hub keeps madebyollin/taesd and as madebyollin's single decoder file (bare Sequential names),
imported through the store, decodes latents to the pixels diffusers' AutoencoderTiny.decode
gives (within 2/255), both imports giving the same pictures; the family comes from the option,
else from "xl" in a name; an encoder file alone, a 16-channel tiny VAE and damaged or missing
weights are one sentence; the full VAE (AutoencoderKL) is not taken for one; find_tiny_vae
picks the one that fits."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import desktop.model_kinds as kinds
from desktop.model_kinds import tiny_vae as kind
from desktop.model_kinds.tiny_vae import find_tiny_vae
from desktop.model_store import ModelStore
from engine.errors import BadRequest, GenerationFailed, ModelError
from engine.export.formats import detect_format
from engine.tiny_vae import load_tiny_vae, read_tiny_vae_description
from engine.tiny_vae.description import decide_variant

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("onnx")
from diffusers import AutoencoderKL, AutoencoderTiny  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

pytestmark = pytest.mark.slow
CHANNELS = (8, 8, 8, 8)  # four stages: pictures 8 times the latents' side, as TAESD's


def one_sentence(error: pytest.ExceptionInfo) -> str:
    sentence = str(error.value)
    assert sentence.endswith(".") and "\n" not in sentence
    return sentence


# --- tiny random tiny VAEs --------------------------------------------------------------------

def random_vae(latent_channels: int = 4, seed: int = 0) -> AutoencoderTiny:
    """A tiny AutoencoderTiny whose decoder gives pictures with a spread of colours: random
    convolutions at their default scale give dim, nearly flat ones, half of them clipped to
    black, which would hide differences; widened and lifted, hardly any value is clipped."""
    torch.manual_seed(seed)
    vae = AutoencoderTiny(latent_channels=latent_channels, encoder_block_out_channels=CHANNELS,
                          decoder_block_out_channels=CHANNELS, num_encoder_blocks=(1, 1, 1, 1),
                          num_decoder_blocks=(1, 2, 1, 1)).eval()
    with torch.no_grad():
        for parameter in vae.decoder.parameters():
            parameter.mul_(1.5)
        vae.decoder.layers[-1].bias.add_(0.5)
    return vae


def latents(batch: int = 2, height: int = 6, width: int = 10, seed: int = 3) -> np.ndarray:
    """As the UNet works in them: standard normal, scaled about as SD's final latents."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((batch, 4, height, width)) * 1.5).astype(np.float32)


def diffusers_pixels(vae: AutoencoderTiny, values: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, 3) from diffusers' own decode, converted as Easel converts the full
    VAE's output (engine.images.to_pixels)."""
    with torch.no_grad():
        sample = vae.decode(torch.from_numpy(values)).sample.numpy()
    image = np.clip(sample / 2 + 0.5, 0.0, 1.0).transpose(0, 2, 3, 1)
    return (image * 255).round().astype(np.uint8)


def hub_folder(vae: AutoencoderTiny, folder: Path, licence: str | None = None) -> Path:
    """The layout of madebyollin/taesd: config.json and diffusion_pytorch_model.safetensors."""
    vae.save_pretrained(folder)
    if licence is not None:
        (folder / "README.md").write_text(f"---\nlicense: {licence}\n---\n# TAESD\n")
    return folder


def bare_decoder(vae: AutoencoderTiny) -> dict:
    """The decoder's weights under madebyollin's names: its layer 0 is a clamp with no
    weights, so diffusers' layer i is madebyollin's i + 1."""
    tensors = {}
    for name, tensor in vae.decoder.state_dict().items():
        index, rest = name.removeprefix("layers.").split(".", 1)
        tensors[f"{int(index) + 1}.{rest}"] = tensor.clone().contiguous()
    return tensors


def bare_encoder(vae: AutoencoderTiny) -> dict:
    return {name.removeprefix("layers."): tensor.clone().contiguous()
            for name, tensor in vae.encoder.state_dict().items()}


def single_file(tensors: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))
    return path


@pytest.fixture
def store(tmp_path) -> ModelStore:
    return ModelStore(tmp_path / "models")


@pytest.fixture(scope="module")
def vae() -> AutoencoderTiny:
    return random_vae()


# --- parity with diffusers --------------------------------------------------------------------

def test_a_diffusers_folder_decodes_as_diffusers_does(tmp_path, store, vae):
    folder = hub_folder(vae, tmp_path / "taesd", licence="mit")
    assert kinds.kind_for_source(folder, detect_format(folder)) is kind

    installed = store.import_model(folder)

    assert installed.kind == "tiny_vae" and installed.family == "tiny VAE for sd1, sd2"
    assert installed.licence == "mit"
    values = latents()
    expected = diffusers_pixels(vae, values)
    # The premise: pictures with a spread of colours, hardly any clipped (which hides errors).
    assert expected.std() > 30 and ((expected == 0) | (expected == 255)).mean() < 0.01
    tiny = load_tiny_vae(installed.path)
    pictures = tiny.decode(values)
    assert pictures.shape == (2, 48, 80, 3) and pictures.dtype == np.uint8
    assert np.abs(pictures.astype(int) - expected).max() <= 2
    # Another size and batch than the traced one: the graph's sizes are not frozen.
    other = latents(1, 9, 4, seed=5)
    assert np.abs(tiny.decode(other).astype(int) - diffusers_pixels(vae, other)).max() <= 2
    assert np.array_equal(tiny.preview(values), pictures[0])
    assert tiny.fits("sd1") and tiny.fits("sd2") and not tiny.fits("sdxl")


def test_a_single_decoder_file_gives_the_same_pictures_as_the_folder(tmp_path, store, vae):
    folder_model = store.import_model(hub_folder(vae, tmp_path / "taesd"), name="folder")
    source = single_file(bare_decoder(vae), tmp_path / "files" / "taesd_decoder.safetensors")
    assert kinds.kind_for_source(source, detect_format(source)) is kind

    installed = store.import_model(source)

    assert installed.name == "taesd_decoder" and installed.kind == "tiny_vae"
    values = latents()
    from_file = load_tiny_vae(installed.path).decode(values)
    assert np.array_equal(from_file, load_tiny_vae(folder_model.path).decode(values))
    assert np.abs(from_file.astype(int) - diffusers_pixels(vae, values)).max() <= 2


def test_a_pickled_decoder_is_read_as_plain_tensors_and_named_xl(tmp_path, store, vae):
    source = tmp_path / "taesdxl_decoder.pth"
    torch.save(bare_decoder(vae), source)
    assert kinds.kind_for_source(source, detect_format(source)) is kind

    installed = store.import_model(source)

    description = read_tiny_vae_description(installed.path)
    assert (description.families, description.variant, description.decided_by) == (
        ("sdxl",), "taesdxl", "name")
    values = latents(1)
    assert np.abs(load_tiny_vae(installed.path).decode(values).astype(int)
                  - diffusers_pixels(vae, values)).max() <= 2


# --- families ---------------------------------------------------------------------------------

def test_the_family_comes_from_the_option_else_from_xl_in_a_name():
    assert decide_variant("sd2", ["taesdxl_decoder.safetensors"]) == ("taesd", "option")
    assert decide_variant("sdxl", ["taesd"]) == ("taesdxl", "option")
    assert decide_variant(None, ["decoder.safetensors", "TAESDXL"]) == ("taesdxl", "name")
    assert decide_variant(None, ["taesd_decoder.pth"]) == ("taesd", "default")
    with pytest.raises(ModelError) as refused:
        decide_variant("sd3", ["taesd"])
    assert "not the family 'sd3'" in one_sentence(refused)


def test_the_family_option_decides_the_import(tmp_path, store, vae):
    # As the Hugging Face cache keeps madebyollin/taesdxl: the folder is named by a commit.
    folder = hub_folder(vae, tmp_path / "models--madebyollin--taesdxl" / "snapshots" / "0a1b2c")
    by_name = store.import_model(folder, name="by-name")
    by_option = store.import_model(folder, name="by-option", family="sd1")

    assert by_name.family == "tiny VAE for sdxl"
    assert read_tiny_vae_description(by_name.path).decided_by == "name"
    described = read_tiny_vae_description(by_option.path)
    assert (described.families, described.decided_by) == (("sd1", "sd2"), "option")
    with pytest.raises(ModelError) as refused:
        store.import_model(folder, name="bad", family="flux")
    one_sentence(refused)
    assert sorted(model.name for model in store.installed("tiny_vae")) == [
        "by-name", "by-option"]


# --- what is refused --------------------------------------------------------------------------

def test_an_encoder_file_alone_is_refused_with_the_decoder_asked_for(tmp_path, store, vae):
    source = single_file(bare_encoder(vae), tmp_path / "taesd_encoder.safetensors")
    assert kinds.kind_for_source(source, detect_format(source)) is kind
    with pytest.raises(ModelError) as refused:
        store.import_model(source)
    assert "Easel needs the decoder file" in one_sentence(refused)
    assert store.installed() == []


def test_a_folder_of_madebyollin_files_gives_its_decoder(tmp_path, vae):
    from engine.export.tiny_vae import import_tiny_vae

    folder = tmp_path / "taesd-main"
    single_file(bare_encoder(vae), folder / "taesdxl_encoder.safetensors")
    single_file(bare_decoder(vae), folder / "taesdxl_decoder.safetensors")
    (folder / "taesd.py").write_text("raise SystemExit('never run')\n")
    assert kind.recognises(folder, "") and not kind.recognises(tmp_path, "")
    building = tmp_path / "building"
    building.mkdir()

    import_tiny_vae(folder, building)

    assert sorted(path.name for path in building.iterdir()) == ["easel.json", "model.onnx"]
    assert json.loads((building / "easel.json").read_text())["families"] == ["sdxl"]

    single_file(bare_decoder(vae), folder / "taesd_decoder.safetensors")
    with pytest.raises(ModelError) as refused:
        import_tiny_vae(folder, tmp_path)
    assert "several tiny VAE decoders" in one_sentence(refused)


def test_a_tiny_vae_of_16_channel_latents_is_refused(tmp_path, store):
    wide = random_vae(latent_channels=16)
    with pytest.raises(ModelError) as refused:
        store.import_model(hub_folder(wide, tmp_path / "taef1"))
    assert "16-channel latents (TAESD3 or TAEF1" in one_sentence(refused)
    source = single_file(bare_decoder(wide), tmp_path / "taesd3_decoder.safetensors")
    with pytest.raises(ModelError) as refused:
        store.import_model(source)
    assert "16-channel" in one_sentence(refused)
    assert store.installed() == []


def test_missing_or_misfit_weights_are_one_sentence(tmp_path, store, vae):
    folder = hub_folder(vae, tmp_path / "lost")
    (folder / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(ModelError) as refused:
        store.import_model(folder)
    assert "has no weights file" in one_sentence(refused)

    tensors = bare_decoder(vae)
    del tensors["6.conv.2.weight"]
    with pytest.raises(ModelError) as refused:
        store.import_model(single_file(tensors, tmp_path / "short" / "taesd_decoder.safetensors"))
    assert "lacks 1 of its decoder's weights (such as '6.conv.2.weight')" in one_sentence(refused)

    tensors = bare_decoder(vae)
    tensors["6.conv.2.weight"] = torch.zeros(8, 8, 1, 1)
    with pytest.raises(ModelError) as refused:
        store.import_model(single_file(tensors, tmp_path / "odd" / "taesd_decoder.safetensors"))
    assert "'6.conv.2.weight' has no place of its shape" in one_sentence(refused)

    whole = single_file(bare_decoder(vae), tmp_path / "cut" / "taesd_decoder.safetensors")
    whole.write_bytes(whole.read_bytes()[:-100])
    with pytest.raises(ModelError) as refused:
        store.import_model(whole)
    one_sentence(refused)
    assert store.installed() == []


def test_a_damaged_installed_tiny_vae_or_bad_latents_are_one_sentence(tmp_path, store, vae):
    installed = store.import_model(hub_folder(vae, tmp_path / "taesd"))
    tiny = load_tiny_vae(installed.path)
    with pytest.raises(BadRequest) as refused:
        tiny.decode(np.zeros((1, 3, 8, 8), np.float32))
    assert "(N, 4, h, w)" in one_sentence(refused)
    broken = latents(1)
    broken[0, :, 2, 3] = np.nan
    with pytest.raises(GenerationFailed) as refused:
        tiny.decode(broken)
    one_sentence(refused)

    graph = installed.path / "model.onnx"
    graph.write_bytes(graph.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(ModelError) as refused:
        load_tiny_vae(installed.path)
    one_sentence(refused)
    description = installed.path / "easel.json"
    data = json.loads(description.read_text())
    description.write_text(json.dumps({**data, "families": ["sdxl"]}))
    with pytest.raises(ModelError) as refused:
        load_tiny_vae(installed.path)
    assert one_sentence(refused) == "The description of tiny VAE 'taesd' is damaged."
    assert store.installed("tiny_vae") == []  # listing skips it, as every kind's


# --- other kinds keep their own ---------------------------------------------------------------

def test_the_full_vae_is_not_taken_for_a_tiny_one(tmp_path):
    torch.manual_seed(0)
    full = AutoencoderKL(block_out_channels=(8,), norm_num_groups=4, layers_per_block=1)
    folder = tmp_path / "vae"
    full.save_pretrained(folder)
    assert not kind.recognises(folder, detect_format(folder))
    weights = folder / "diffusion_pytorch_model.safetensors"
    assert not kind.recognises(weights, detect_format(weights))
    renamed = single_file({name: tensor.contiguous() for name, tensor in full.state_dict().items()},
                          tmp_path / "taesd_like_name.safetensors")
    assert kinds.kind_for_source(renamed, detect_format(renamed)).name == "diffusion"


# --- finding the one that fits ----------------------------------------------------------------

def test_find_tiny_vae_picks_the_one_that_fits(tmp_path, store, vae):
    assert find_tiny_vae(store, "sd1") is None  # none installed: optional
    folder = hub_folder(vae, tmp_path / "source")
    for name, family in (("b-taesd", "sd1"), ("a-taesdxl", "sdxl"), ("c-taesd", "sd2")):
        store.import_model(folder, name=name, family=family)

    assert find_tiny_vae(store, "sd2") == store.root / "b-taesd"  # the first by name
    assert find_tiny_vae(store, "sdxl") == store.root / "a-taesdxl"
    assert find_tiny_vae(store, "sd1", "c-taesd") == store.root / "c-taesd"
    with pytest.raises(ModelError) as refused:
        find_tiny_vae(store, "sdxl", "c-taesd")
    assert "decodes the latents of sd1, sd2 models, not of sdxl ones" in one_sentence(refused)
    with pytest.raises(ModelError) as refused:
        find_tiny_vae(store, "sd1", "missing")
    assert "No tiny VAE named 'missing'" in one_sentence(refused)
    shutil.rmtree(store.root / "a-taesdxl")
    assert find_tiny_vae(store, "sdxl") is None
