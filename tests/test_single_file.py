"""Single-file checkpoints: headers are checked before anything is read, the format comes from
the content, the family from the tensors, and converting a checkpoint written in the original
layout gives back the diffusers model it was made from, tensor by tensor."""

from __future__ import annotations

import json
import os
import socket
import struct
import zipfile
from functools import cache
from pathlib import Path

import pytest

from engine.errors import ModelError
from tests import tiny_checkpoints
from tests.tiny_checkpoints import assert_same_weights, load_component, read_json

torch = pytest.importorskip("torch")
os.environ["HF_HUB_OFFLINE"] = "1"  # nothing here may reach the network

VARIANTS = ("sd1", "sd2", "sdxl")
PREDICTIONS = {"sd1": None, "sd2": "v_prediction", "sdxl": None}
PIPELINES = {"sd1": "StableDiffusionPipeline", "sd2": "StableDiffusionPipeline",
             "sdxl": "StableDiffusionXLPipeline"}
PAD_TOKENS = {"tokenizer": "<|endoftext|>", "tokenizer_2": "!"}


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Conversion is offline: any attempt to connect fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("the conversion tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def configs_root(tmp_path_factory) -> Path:
    """The tiny models' architectures laid out like resources/configs."""
    return tiny_checkpoints.write_configs_root(tmp_path_factory.mktemp("configs") / "configs")


def convert(checkpoint: Path, tmp_path: Path, configs_root: Path, **options):
    from engine.export.single_file import convert_single_file

    destination = tmp_path / "converted"
    destination.mkdir(exist_ok=True)
    return convert_single_file(checkpoint, destination, configs_root=configs_root, **options)


def refusal(checkpoint: Path, tmp_path: Path, configs_root: Path, **options) -> str:
    with pytest.raises(ModelError) as refused:
        convert(checkpoint, tmp_path, configs_root, **options)
    assert list((tmp_path / "converted").iterdir()) == []  # refused before writing anything
    return one_sentence(refused.value)


def one_sentence(error: Exception) -> str:
    sentence = str(error)
    assert sentence.endswith(".") and "\n" not in sentence
    return sentence


@cache
def _tiny_model(variant: str, in_channels: int) -> tuple[dict, dict]:
    components = tiny_checkpoints.tiny_components(variant, in_channels)
    return components, tiny_checkpoints.ldm_checkpoint(variant, components)


def ldm_state(variant: str, in_channels: int = 4) -> tuple[dict, dict]:
    """The tiny model's components and its original-layout state dict (a copy tests may
    change: entries are replaced, never modified in place)."""
    components, state = _tiny_model(variant, in_channels)
    return components, dict(state)


# --- converting back gives the original weights --------------------------------------------

@pytest.mark.parametrize("variant", VARIANTS)
def test_conversion_gives_back_the_original_weights(variant, tmp_path, configs_root):
    components, state = ldm_state(variant)
    checkpoint = tiny_checkpoints.save_checkpoint(state, tmp_path / "model.safetensors")
    result = convert(checkpoint, tmp_path, configs_root, prediction=PREDICTIONS[variant])

    folder = tmp_path / "converted"
    assert (result.folder, result.family, result.inpainting) == (folder, variant, False)
    for component, original in components.items():
        assert_same_weights(load_component(folder, component), original)
    index = read_json(folder / "model_index.json")
    assert index["_class_name"] == PIPELINES[variant]
    for component in ("unet", "vae", "scheduler", *components):
        assert index[component][1] and (folder / component).is_dir()
    scheduler = read_json(folder / "scheduler" / "scheduler_config.json")
    assert scheduler["prediction_type"] == result.prediction == (
        PREDICTIONS[variant] or "epsilon")


@pytest.mark.parametrize("variant", VARIANTS)
def test_tokenizers_pad_as_the_family_does(variant, tmp_path, configs_root):
    from transformers import CLIPTokenizer

    _, state = ldm_state(variant)
    checkpoint = tiny_checkpoints.save_checkpoint(state, tmp_path / "model.safetensors")
    convert(checkpoint, tmp_path, configs_root, prediction=PREDICTIONS[variant])
    folders = ["tokenizer", "tokenizer_2"] if variant == "sdxl" else ["tokenizer"]
    assert sorted(path.name for path in (tmp_path / "converted").glob("tokenizer*")) == folders
    for folder in folders:
        tokenizer = CLIPTokenizer.from_pretrained(tmp_path / "converted" / folder)
        pad = "!" if variant == "sd2" else PAD_TOKENS[folder]
        assert tokenizer.pad_token == pad
        assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368,
                                                           49407]


@pytest.mark.parametrize("variant", ["sd1", "sd2", "sdxl"])
def test_inpainting_models_keep_their_nine_channels(variant, tmp_path, configs_root):
    components, state = ldm_state(variant, in_channels=9)
    checkpoint = tiny_checkpoints.save_checkpoint(state, tmp_path / "inpaint.safetensors")
    result = convert(checkpoint, tmp_path, configs_root)  # SD 2.x inpainting is epsilon only

    folder = tmp_path / "converted"
    assert result.inpainting and result.prediction == "epsilon"
    assert read_json(folder / "unet" / "config.json")["in_channels"] == 9
    assert read_json(folder / "model_index.json")["_class_name"] == (
        PIPELINES[variant].replace("Pipeline", "InpaintPipeline"))
    assert_same_weights(load_component(folder, "unet"), components["unet"])


@pytest.mark.parametrize("variant", ["sd1", "sd2"])
def test_the_exporter_accepts_the_converted_folder(variant, tmp_path, configs_root):
    from engine.export.source import check_diffusers_folder, describe

    _, state = ldm_state(variant)
    checkpoint = tiny_checkpoints.save_checkpoint(state, tmp_path / "model.safetensors")
    convert(checkpoint, tmp_path, configs_root, prediction="epsilon")
    description = describe(check_diffusers_folder(tmp_path / "converted"))
    assert (description.family, description.prediction_type) == (variant, "epsilon")


@pytest.mark.slow
def test_a_converted_checkpoint_exports_to_onnx_with_the_same_outputs(tmp_path, configs_root):
    """The whole import path: original layout -> diffusers folder -> ONNX, outputs unchanged."""
    ort = pytest.importorskip("onnxruntime")
    from engine.export.diffusers_folder import export_diffusers_folder

    components, state = ldm_state("sd1")
    checkpoint = tiny_checkpoints.save_checkpoint(state, tmp_path / "model.safetensors")
    convert(checkpoint, tmp_path, configs_root)
    (tmp_path / "onnx").mkdir()
    assert export_diffusers_folder(tmp_path / "converted", tmp_path / "onnx").family == "sd1"
    generator = torch.Generator().manual_seed(0)
    sample, context = torch.randn(1, 4, 16, 16, generator=generator), torch.randn(
        1, 77, 32, generator=generator)
    timestep = torch.tensor([500.0])
    session = ort.InferenceSession(str(tmp_path / "onnx" / "unet" / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    (found,) = session.run(None, {"sample": sample.numpy(), "timestep": timestep.numpy(),
                                  "encoder_hidden_states": context.numpy()})
    with torch.no_grad():
        expected = components["unet"](sample, timestep, context).sample.numpy()
    assert abs(found - expected).max() < 1e-4


def test_progress_and_cancel_between_components(tmp_path, configs_root):
    from engine.errors import Cancelled

    _, state = ldm_state("sdxl")
    checkpoint = tiny_checkpoints.save_checkpoint(state, tmp_path / "model.safetensors")
    reported = []
    convert(checkpoint, tmp_path, configs_root, progress=lambda *step: reported.append(step))
    assert reported == [("UNet", 1, 4), ("VAE", 2, 4), ("text encoder", 3, 4),
                        ("second text encoder", 4, 4)]
    (tmp_path / "again").mkdir()
    with pytest.raises(Cancelled):
        convert(checkpoint, tmp_path / "again", configs_root, should_stop=lambda: True)
    assert list((tmp_path / "again" / "converted").iterdir()) == []


def test_sd2_asks_which_prediction_type(tmp_path, configs_root):
    _, state = ldm_state("sd2")
    checkpoint = tiny_checkpoints.save_checkpoint(state, tmp_path / "sd21.safetensors")
    sentence = refusal(checkpoint, tmp_path, configs_root)
    assert "'sd21.safetensors'" in sentence and "--prediction epsilon" in sentence
    assert "--prediction v_prediction" in sentence
    result = convert(checkpoint, tmp_path, configs_root, prediction="epsilon")
    assert result.prediction == "epsilon"
    # 512-pixel SD 2.x-base for epsilon (64 latents); 768 pixels are for v-prediction.
    assert read_json(tmp_path / "converted" / "unet" / "config.json")["sample_size"] == 64


def test_a_v_prediction_marker_in_the_file_is_followed(tmp_path, configs_root):
    _, state = ldm_state("sdxl")
    state["v_pred"] = torch.zeros(())
    checkpoint = tiny_checkpoints.save_checkpoint(state, tmp_path / "vpred.safetensors")
    assert convert(checkpoint, tmp_path, configs_root).prediction == "v_prediction"


@pytest.mark.parametrize("stated, expected", [("v", "v_prediction"), ("epsilon", "epsilon")])
def test_sd2_follows_the_prediction_type_in_the_metadata(tmp_path, configs_root, stated,
                                                         expected):
    from safetensors.torch import save_file

    _, state = ldm_state("sd2")
    checkpoint = tmp_path / "trained.safetensors"
    save_file({key: value.contiguous() for key, value in state.items()}, str(checkpoint),
              metadata={"modelspec.prediction_type": stated})
    assert convert(checkpoint, tmp_path, configs_root).prediction == expected


def test_a_family_the_file_contradicts_is_refused(tmp_path, configs_root):
    _, state = ldm_state("sd1")
    checkpoint = tiny_checkpoints.save_checkpoint(state, tmp_path / "model.safetensors")
    sentence = refusal(checkpoint, tmp_path, configs_root, family="sdxl")
    assert "is a Stable Diffusion 1.x checkpoint, not SDXL" in sentence
    assert "epsilon or v_prediction" in refusal(checkpoint, tmp_path, configs_root,
                                                prediction="flow")


# --- tensors that do not fit ---------------------------------------------------------------

UNET_ATTENTION = "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn1.to_q.weight"


def test_a_misshapen_tensor_is_refused(tmp_path, configs_root):
    _, state = ldm_state("sd1")
    state[UNET_ATTENTION] = torch.zeros(64, 32)  # a 64 x 64 projection in the tiny model
    checkpoint = tiny_checkpoints.save_checkpoint(state, tmp_path / "model.safetensors")
    sentence = refusal(checkpoint, tmp_path, configs_root)
    assert "does not fit the Stable Diffusion 1.x architecture" in sentence
    assert "(64, 32) where (64, 64) is expected" in sentence


def test_a_missing_tensor_is_refused(tmp_path, configs_root):
    _, state = ldm_state("sd1")
    del state["first_stage_model.decoder.conv_out.weight"]
    checkpoint = tiny_checkpoints.save_checkpoint(state, tmp_path / "model.safetensors")
    sentence = refusal(checkpoint, tmp_path, configs_root)
    assert "its vae has no decoder.conv_out.weight" in sentence


def test_a_checkpoint_of_another_size_is_refused(tmp_path, configs_root):
    """A tiny SD 1.x checkpoint against the real SD 1.5 architecture in resources/."""
    from engine.export.single_file import CONFIGS_ROOT

    _, state = ldm_state("sd1")
    checkpoint = tiny_checkpoints.save_checkpoint(state, tmp_path / "model.safetensors")
    assert "does not fit" in refusal(checkpoint, tmp_path, CONFIGS_ROOT)


def test_whole_numbers_are_not_weights(tmp_path, configs_root):
    _, state = ldm_state("sd1")
    state[UNET_ATTENTION] = state[UNET_ATTENTION].to(torch.int32)
    checkpoint = tiny_checkpoints.save_checkpoint(state, tmp_path / "model.safetensors")
    assert "stored as whole numbers" in refusal(checkpoint, tmp_path, configs_root)


def test_a_text_encoder_that_does_not_fit_the_unet_is_refused(tmp_path, configs_root):
    _, state = ldm_state("sd1")
    key = "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"
    state[key] = torch.zeros(49408, 48)
    checkpoint = tiny_checkpoints.save_checkpoint(state, tmp_path / "model.safetensors")
    assert "text encoder that does not fit its UNet" in refusal(checkpoint, tmp_path,
                                                                configs_root)


def test_odd_shapes_in_the_header_are_refused_not_crashed_on(tmp_path, configs_root):
    _, state = ldm_state("sd1")
    for key in ("cond_stage_model.transformer.text_model.embeddings.token_embedding.weight",
                "model.diffusion_model.out.2.weight"):
        odd = {**state, key: torch.zeros(())}
        checkpoint = tiny_checkpoints.save_checkpoint(odd, tmp_path / "odd.safetensors")
        refusal(checkpoint, tmp_path, configs_root)


@pytest.mark.parametrize("keep, expected", [
    ("first_stage_model.", "has no Stable Diffusion UNet"),  # a VAE file
    ("lora_unet_", "has no Stable Diffusion UNet"),
])
def test_add_on_files_are_not_models(tmp_path, configs_root, keep, expected):
    _, state = ldm_state("sd1")
    part = {key: value for key, value in state.items() if key.startswith(keep)} or {
        "lora_unet_down_blocks_0.lora_down.weight": torch.zeros(4, 32)}
    checkpoint = tiny_checkpoints.save_checkpoint(part, tmp_path / "add-on.safetensors")
    assert expected in refusal(checkpoint, tmp_path, configs_root)


def test_refuses_a_checkpoint_without_a_known_text_encoder_or_vae(tmp_path, configs_root):
    _, state = ldm_state("sd1")
    no_vae = {key: value for key, value in state.items()
              if not key.startswith("first_stage_model.")}
    checkpoint = tiny_checkpoints.save_checkpoint(no_vae, tmp_path / "a.safetensors")
    assert "has no VAE" in refusal(checkpoint, tmp_path, configs_root)
    no_text = {key: value for key, value in state.items()
               if not key.startswith("cond_stage_model.")}
    checkpoint = tiny_checkpoints.save_checkpoint(no_text, tmp_path / "b.safetensors")
    assert "no text encoder Easel recognises" in refusal(checkpoint, tmp_path, configs_root)


def test_other_unets_are_refused(tmp_path, configs_root):
    _, state = ldm_state("sd1", in_channels=8)  # instruct-pix2pix conditions on 8 channels
    checkpoint = tiny_checkpoints.save_checkpoint(state, tmp_path / "pix2pix.safetensors")
    assert "8 input channels" in refusal(checkpoint, tmp_path, configs_root)


def test_unet_tensors_the_architecture_does_not_use_are_refused(tmp_path, configs_root):
    _, state = ldm_state("sd1")
    state["model.diffusion_model.input_hint_block.0.weight"] = torch.zeros(3)  # a ControlNet's
    checkpoint = tiny_checkpoints.save_checkpoint(state, tmp_path / "extra.safetensors")
    assert "its unet has 1 tensor the architecture does not use" in refusal(
        checkpoint, tmp_path, configs_root)


@pytest.mark.parametrize("variant, key, expected", [
    ("sd2", "model.diffusion_model.label_emb.0.0.weight", "unCLIP"),
    ("sdxl", "edm_mean", "Playground v2.5"),
])
def test_other_models_of_the_same_layout_are_refused(tmp_path, configs_root, variant, key,
                                                     expected):
    _, state = ldm_state(variant)
    state[key] = torch.zeros(4, 4)
    checkpoint = tiny_checkpoints.save_checkpoint(state, tmp_path / "other.safetensors")
    assert expected in refusal(checkpoint, tmp_path, configs_root,
                               prediction=PREDICTIONS[variant])


def test_reading_a_header_does_not_import_torch():
    """The model store can tell formats and families apart without the export extra."""
    import subprocess
    import sys

    script = ("import sys\n"
              "import engine.export.formats, engine.export.safetensors_check\n"
              "import engine.export.checkpoint_family, engine.export.single_file\n"
              "import engine.export.pickle_convert\n"
              "print(sorted({'torch', 'diffusers', 'transformers'} & set(sys.modules)))\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=tiny_checkpoints.tiny_models.REPO,
                            capture_output=True, text=True, check=True, timeout=120)
    assert result.stdout.strip() == "[]"


def test_an_sdxl_refiner_is_refused(tmp_path, configs_root):
    _, state = ldm_state("sdxl")
    refiner = {key.replace("conditioner.embedders.1.", "conditioner.embedders.0."): value
               for key, value in state.items()
               if not key.startswith("conditioner.embedders.0.")}
    checkpoint = tiny_checkpoints.save_checkpoint(refiner, tmp_path / "refiner.safetensors")
    assert "SDXL refiner" in refusal(checkpoint, tmp_path, configs_root)


# --- the real architectures in resources/configs -------------------------------------------

def real_size_table(family: str, in_channels: int = 4) -> dict:
    """The header a real-size checkpoint of ``family`` has, laid out from shape-only tensors."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from engine.export.safetensors_check import TensorInfo
    from engine.export.single_file import CONFIG_FOLDERS, CONFIGS_ROOT

    folder = CONFIGS_ROOT / CONFIG_FOLDERS[family]
    with torch.device("meta"):
        components = {
            "unet": UNet2DConditionModel.from_config(
                {**read_json(folder / "unet" / "config.json"), "in_channels": in_channels}),
            "vae": AutoencoderKL.from_config(read_json(folder / "vae" / "config.json")),
            "text_encoder": CLIPTextModel(CLIPTextConfig.from_pretrained(
                folder / "text_encoder")),
        }
        if family == "sdxl":
            components["text_encoder_2"] = CLIPTextModelWithProjection(
                CLIPTextConfig.from_pretrained(folder / "text_encoder_2"))
    state = tiny_checkpoints.ldm_checkpoint(family, components)
    return {key: TensorInfo("F16" if value.is_floating_point() else "I64", tuple(value.shape))
            for key, value in state.items()}


@pytest.mark.parametrize("family, in_channels", [
    ("sd1", 4), ("sd2", 4), ("sdxl", 4), ("sd1", 9), ("sdxl", 9)])
def test_real_size_headers_fit_the_shipped_configs(family, in_channels):
    from engine.export.checkpoint_family import detect_checkpoint
    from engine.export.single_file import CONFIGS_ROOT, check_architecture, family_configs

    table = real_size_table(family, in_channels)
    kind = detect_checkpoint({key: info.shape for key, info in table.items()}, "real")
    assert (kind.family, kind.in_channels) == (family, in_channels)
    configs = family_configs(CONFIGS_ROOT, kind, "epsilon")
    check_architecture(table, kind, configs, "real")  # raises ModelError if anything is off
    if family == "sd2":  # OpenCLIP ViT-H: 24 layers trained, the penultimate one used
        assert "cond_stage_model.model.transformer.resblocks.23.ln_1.weight" in table
        assert configs["text_encoder"]["num_hidden_layers"] == 23


def test_shipped_configs_describe_the_published_sizes():
    root = tiny_checkpoints.tiny_models.REPO / "resources" / "configs"
    sd2, sdxl = root / "sd2", root / "sdxl"
    assert read_json(sd2 / "unet" / "config.json")["cross_attention_dim"] == 1024
    assert read_json(sd2 / "unet" / "config.json")["attention_head_dim"] == [5, 10, 20, 20]
    assert read_json(sd2 / "text_encoder" / "config.json")["hidden_act"] == "gelu"
    unet = read_json(sdxl / "unet" / "config.json")
    assert unet["transformer_layers_per_block"] == [1, 2, 10]
    assert unet["projection_class_embeddings_input_dim"] == 6 * 256 + 1280
    assert unet["cross_attention_dim"] == 768 + 1280
    assert read_json(sdxl / "text_encoder_2" / "config.json")["architectures"] == [
        "CLIPTextModelWithProjection"]
    for folder in (sd2, sdxl):
        assert (folder / "README.md").is_file()


def test_half_precision_checkpoints_stay_half_precision(tmp_path, configs_root):
    from engine.export.safetensors_check import check_safetensors

    components, state = ldm_state("sd1")
    half = {key: value.half() if value.is_floating_point() else value
            for key, value in state.items()}
    checkpoint = tiny_checkpoints.save_checkpoint(half, tmp_path / "fp16.safetensors")
    convert(checkpoint, tmp_path, configs_root)
    weights = tmp_path / "converted" / "unet" / "diffusion_pytorch_model.safetensors"
    assert {info.dtype for info in check_safetensors(weights).values()} == {"F16"}
    unet = load_component(tmp_path / "converted", "unet")
    expected = components["unet"].state_dict()
    for key, tensor in unet.state_dict().items():
        assert torch.equal(tensor, expected[key].half().to(tensor.dtype)), key


# --- writing safetensors -------------------------------------------------------------------

def test_the_streaming_writer_writes_what_safetensors_reads(tmp_path):
    from safetensors import safe_open

    from engine.export.safetensors_check import check_safetensors
    from engine.export.safetensors_write import save_safetensors

    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    tensors = {"f32": base, "f16": base.half(), "bf16": base.bfloat16(),
               "f8": base.to(torch.float8_e4m3fn), "transposed": base.T, "slice": base[1:3],
               "scalar": torch.tensor(2.5), "empty": torch.zeros(0, 3),
               "ids": torch.arange(5), "mask": base > 3}
    path = tmp_path / "written.safetensors"
    save_safetensors(tensors, path, metadata={"format": "pt"})
    assert set(check_safetensors(path)) == set(tensors)
    with safe_open(str(path), framework="pt") as file:
        assert file.metadata() == {"format": "pt"}
        for name, tensor in tensors.items():
            found = file.get_tensor(name)
            assert found.dtype == tensor.dtype and torch.equal(
                found.float() if name == "f8" else found,
                tensor.float() if name == "f8" else tensor), name


# --- safetensors headers -------------------------------------------------------------------

def write_safetensors(path: Path, header: dict, data: bytes, length: int | None = None) -> Path:
    encoded = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(encoded) if length is None else length)
                     + encoded + data)
    return path


GOOD_HEADER = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
               "b": {"dtype": "F16", "shape": [2, 2], "data_offsets": [8, 16]},
               "__metadata__": {"format": "pt"}}


def test_a_sound_header_gives_the_tensor_table(tmp_path):
    from engine.export.safetensors_check import (
        TensorInfo,
        check_safetensors,
        check_safetensors_header,
    )

    path = write_safetensors(tmp_path / "good.safetensors", GOOD_HEADER, bytes(16))
    assert check_safetensors(path) == {"a": TensorInfo("F32", (2,)),
                                       "b": TensorInfo("F16", (2, 2))}
    assert check_safetensors_header(path).metadata == {"format": "pt"}


def _entry(**changes) -> dict:
    return {**GOOD_HEADER, "b": {**GOOD_HEADER["b"], **changes}}


@pytest.mark.parametrize("header, data, length, expected", [
    (GOOD_HEADER, b"", 2**40, "claims a header of"),
    (GOOD_HEADER, b"", 10_000, "runs past the end of the file"),
    (_entry(data_offsets=[4, 12]), bytes(16), None, "overlaps another tensor"),
    (_entry(shape=[3, 2]), bytes(16), None, "takes 8 bytes but its shape needs 12"),
    (_entry(data_offsets=[8, 24]), bytes(16), None, "points outside the file's data"),
    (_entry(dtype="F4"), bytes(16), None, "unknown type 'F4'"),
    (_entry(shape=[-2, 2]), bytes(16), None, "invalid shape"),
    (_entry(shape=[True, 2]), bytes(16), None, "invalid shape"),
    (GOOD_HEADER, bytes(24), None, "data area does not match its header"),
    ({"a": GOOD_HEADER["a"], "b": {**GOOD_HEADER["b"], "data_offsets": [12, 20]}}, bytes(20),
     None, "belong to no tensor"),
    ({**GOOD_HEADER, "__metadata__": {"step": 3}}, bytes(16), None, "metadata"),
    ([1, 2], b"", None, "not a table of tensors"),
], ids=["absurd-length", "length-beyond-file", "overlap", "size-lies", "outside",
        "unknown-dtype", "negative-shape", "boolean-shape", "hidden-bytes", "gap", "metadata",
        "not-a-table"])
def test_damaged_headers_are_refused(tmp_path, header, data, length, expected):
    from engine.export.safetensors_check import check_safetensors

    path = write_safetensors(tmp_path / "bad.safetensors", header, data, length)
    with pytest.raises(ModelError) as refused:
        check_safetensors(path)
    sentence = one_sentence(refused.value)
    assert sentence.startswith("'bad.safetensors' is not a valid .safetensors file")
    assert expected in sentence


def test_truncated_files_and_broken_json_are_refused(tmp_path):
    from engine.export.safetensors_check import check_safetensors

    good = write_safetensors(tmp_path / "good.safetensors", GOOD_HEADER, bytes(16))
    cases = {"short.safetensors": good.read_bytes()[:5],
             "cut.safetensors": good.read_bytes()[:-3],
             "json.safetensors": struct.pack("<Q", 5) + b"{oops",
             "twice.safetensors": struct.pack("<Q", 33) + b'{"a": {}, "a": {}}' + b" " * 15}
    expected = {"short.safetensors": "too short", "cut.safetensors": "points outside",
                "json.safetensors": "not readable JSON", "twice.safetensors": "not readable"}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ModelError, match=expected[name]):
            check_safetensors(tmp_path / name)


def test_scrambled_headers_give_a_sentence_or_a_model_never_a_crash(tmp_path, configs_root):
    import random

    from engine.export.single_file import convert_single_file

    _, state = ldm_state("sd1")
    original = tiny_checkpoints.save_checkpoint(state, tmp_path / "model.safetensors")
    content = original.read_bytes()
    header_end = 8 + struct.unpack("<Q", content[:8])[0]
    generator = random.Random(0)
    for attempt in range(60):
        scrambled = bytearray(content)
        for _ in range(generator.randint(1, 4)):
            scrambled[generator.randrange(8, header_end)] = generator.choice(b'0123456789[]{}":-')
        path = tmp_path / "scrambled.safetensors"
        path.write_bytes(bytes(scrambled))
        destination = tmp_path / f"out-{attempt}"
        destination.mkdir()
        try:
            convert_single_file(path, destination, configs_root=configs_root)
        except ModelError as error:
            one_sentence(error)


def test_a_damaged_checkpoint_is_refused_before_conversion(tmp_path, configs_root):
    _, state = ldm_state("sd1")
    checkpoint = tiny_checkpoints.save_checkpoint(state, tmp_path / "model.safetensors")
    checkpoint.write_bytes(checkpoint.read_bytes()[:-100])
    assert "points outside the file's data" in refusal(checkpoint, tmp_path, configs_root)


# --- telling formats apart by content ------------------------------------------------------

def test_formats_are_told_apart_by_content(tmp_path):
    from engine.export.formats import detect_format

    disguised = write_safetensors(tmp_path / "model.ckpt", GOOD_HEADER, bytes(16))
    assert detect_format(disguised) == "safetensors"
    pickled = tmp_path / "model.safetensors"
    torch.save({"w": torch.zeros(2)}, pickled)
    assert detect_format(pickled) == "pickle"
    legacy = tmp_path / "legacy.bin"
    torch.save({"w": torch.zeros(2)}, legacy, _use_new_zipfile_serialization=False)
    assert detect_format(legacy) == "pickle"
    (tmp_path / "diffusers" / "unet").mkdir(parents=True)
    (tmp_path / "diffusers" / "model_index.json").write_text("{}")
    assert detect_format(tmp_path / "diffusers") == "diffusers-folder"
    (tmp_path / "onnx" / "unet").mkdir(parents=True)
    (tmp_path / "onnx" / "unet" / "model.onnx").write_bytes(b"\x08\x07")
    assert detect_format(tmp_path / "onnx") == "onnx-folder"


def test_unknown_formats_are_refused(tmp_path):
    from engine.export.formats import detect_format

    (tmp_path / "cat.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    (tmp_path / "notes.safetensors").write_text("not a model")
    with zipfile.ZipFile(tmp_path / "photos.ckpt", "w") as archive:
        archive.writestr("photo.jpg", b"\xff\xd8")
    (tmp_path / "empty").mkdir()
    (tmp_path / "tiny.bin").write_bytes(b"\x80")
    for name in ("cat.png", "notes.safetensors", "photos.ckpt", "empty", "tiny.bin"):
        with pytest.raises(ModelError) as refused:
            detect_format(tmp_path / name)
        sentence = one_sentence(refused.value)
        assert sentence.startswith(f"'{name}' is not a model Easel can import")
    with pytest.raises(ModelError, match="does not exist"):
        detect_format(tmp_path / "missing.safetensors")
