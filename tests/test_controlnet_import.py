"""Importing ControlNets (desktop.model_kinds.controlnet): every form people share them in,
through the model store, gives a graph whose outputs are the diffusers ControlNet's.

Tiny random ControlNets of SD 1.x and SDXL are saved as a diffusers folder (safetensors and
.bin), as one .safetensors file in diffusers' names and in the original lllyasviel names
(renamed here from diffusers' names, so diffusers' own converter has to undo it), as a .pth
pickle, and as ONNX graphs (Amuse's ``controlnet/model.onnx`` and a lone file). Single files
carry no attention heads, group-norm groups or size-embedding width, so the tiny models keep
their families' conventions there (SD 1.x: 8 heads; SDXL: heads 64 wide, 256-wide size
embedding; 32 groups), as every released ControlNet does.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from desktop.model_store import ModelStore
from engine.control.description import (
    MID_RESIDUAL,
    down_residual,
    read_controlnet_description,
)
from engine.errors import ModelError

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
safetensors_torch = pytest.importorskip("safetensors.torch")

pytestmark = pytest.mark.slow

CONFIGS = {
    "sd1": {"block_out_channels": (32, 64), "layers_per_block": 2, "cross_attention_dim": 32,
            "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D")},
    "sdxl": {"block_out_channels": (64, 128), "layers_per_block": 2, "cross_attention_dim": 64,
             "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
             "attention_head_dim": (1, 2), "use_linear_projection": True,
             "transformer_layers_per_block": (1, 2), "addition_embed_type": "text_time",
             "addition_time_embed_dim": 256,
             "projection_class_embeddings_input_dim": 6 * 256 + 32},
}
RESIDUALS = {"sd1": 6, "sdxl": 6}  # conv_in, 2 + 2 layers, 1 downsampler
LATENT_SIDE = 8


def tiny_controlnet(family: str, seed: int = 0):
    """A random ControlNet; its zero-initialised convolutions get weights too, or every
    residual would be zero and any graph would match."""
    torch.manual_seed(seed)
    model = diffusers.ControlNetModel(**CONFIGS[family]).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if not parameter.any():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
    return model


@pytest.fixture(scope="module")
def sd1():
    return tiny_controlnet("sd1")


@pytest.fixture(scope="module")
def sdxl():
    return tiny_controlnet("sdxl", seed=1)


@pytest.fixture
def store(tmp_path) -> ModelStore:
    return ModelStore(tmp_path / "models")


# --- the forms ControlNets come in ------------------------------------------------------------

_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
           "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
_FIXED = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
          "conv_in": "input_blocks.0.0", "add_embedding.linear_1": "label_emb.0.0",
          "add_embedding.linear_2": "label_emb.0.2",
          "controlnet_cond_embedding.conv_in": "input_hint_block.0",
          "controlnet_cond_embedding.conv_out": "input_hint_block.14",
          "controlnet_mid_block": "middle_block_out.0"}


def original_name(key: str, layers: int) -> str:
    """A diffusers ControlNet tensor's name in lllyasviel's ControlNet (cldm) layout."""
    module, _, parameter = key.rpartition(".")

    def block(down: str, layer: str) -> int:  # input_blocks: conv_in, then layers + downsampler
        return 1 + int(down) * (layers + 1) + int(layer)

    rules = [
        (r"controlnet_cond_embedding\.blocks\.(\d+)",
         lambda m: f"input_hint_block.{2 * (int(m[1]) + 1)}"),
        (r"controlnet_down_blocks\.(\d+)", lambda m: f"zero_convs.{m[1]}.0"),
        (r"down_blocks\.(\d+)\.resnets\.(\d+)\.(\w+)",
         lambda m: f"input_blocks.{block(m[1], m[2])}.0.{_RESNET[m[3]]}"),
        (r"down_blocks\.(\d+)\.attentions\.(\d+)(\..+)?",
         lambda m: f"input_blocks.{block(m[1], m[2])}.1{m[3] or ''}"),
        (r"down_blocks\.(\d+)\.downsamplers\.0\.conv",
         lambda m: f"input_blocks.{(int(m[1]) + 1) * (layers + 1)}.0.op"),
        (r"mid_block\.resnets\.(\d+)\.(\w+)",
         lambda m: f"middle_block.{2 * int(m[1])}.{_RESNET[m[2]]}"),
        (r"mid_block\.attentions\.0(\..+)?", lambda m: f"middle_block.1{m[1] or ''}"),
    ]
    if module in _FIXED:
        return f"control_model.{_FIXED[module]}.{parameter}"
    for pattern, rename in rules:
        match = re.fullmatch(pattern, module)
        if match:
            return f"control_model.{rename(match)}.{parameter}"
    raise AssertionError(f"no original name for {key}")


def original_tensors(model, dtype=None) -> dict:
    layers = model.config.layers_per_block
    return {original_name(key, layers): value.to(dtype or value.dtype).contiguous()
            for key, value in model.state_dict().items()}


def save_original(model, path: Path, dtype=None) -> Path:
    safetensors_torch.save_file(original_tensors(model, dtype), str(path))
    return path


def rounded(model, dtype):
    """The model with its weights rounded to ``dtype`` (as a file of that type holds them)."""
    copy = diffusers.ControlNetModel.from_config(model.config).eval()
    copy.load_state_dict({key: value.to(dtype).float()
                          for key, value in model.state_dict().items()})
    return copy


def save_single(model, path: Path) -> Path:
    state = {key: value.contiguous() for key, value in model.state_dict().items()}
    safetensors_torch.save_file(state, str(path))
    return path


def export_onnx(model, folder: Path) -> Path:
    from engine.export.controlnet import export_controlnet

    export_controlnet(model, folder)
    return folder


# --- checking what was installed -------------------------------------------------------------

def _feed(spec, value: np.ndarray) -> np.ndarray:
    """``value`` as the graph declares the input: its rank (a scale may be [] or [1]) and
    element type (a timestep may be int64)."""
    dtype = {"tensor(float)": np.float32, "tensor(int64)": np.int64,
             "tensor(float16)": np.float16}[spec.type]
    return value.reshape([1] * len(spec.shape) if value.size == 1 else value.shape).astype(dtype)


def assert_same_outputs(folder: Path, model) -> None:
    """The installed graph's residuals equal the diffusers ControlNet's on a random input."""
    config = model.config
    rng = np.random.default_rng(7)
    factor = 2 ** (len(config.conditioning_embedding_out_channels) - 1)
    values = {
        "sample": rng.standard_normal((1, config.in_channels, LATENT_SIDE, LATENT_SIDE),
                                      dtype=np.float32),
        "timestep": np.array([431.0], dtype=np.float32),
        "encoder_hidden_states": rng.standard_normal((1, 7, config.cross_attention_dim),
                                                     dtype=np.float32),
        "controlnet_cond": rng.random((1, 3, LATENT_SIDE * factor, LATENT_SIDE * factor),
                                      dtype=np.float32),
        "conditioning_scale": np.array(0.8, dtype=np.float32),
    }
    added = None
    if config.addition_embed_type == "text_time":
        text = config.projection_class_embeddings_input_dim - 6 * config.addition_time_embed_dim
        values["text_embeds"] = rng.standard_normal((1, text), dtype=np.float32)
        values["time_ids"] = np.array([[64, 64, 0, 0, 64, 64]], dtype=np.float32)
        added = {name: torch.from_numpy(values[name]) for name in ("text_embeds", "time_ids")}
    session = ort.InferenceSession(str(folder / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    feeds = {spec.name: _feed(spec, values[spec.name]) for spec in session.get_inputs()}
    names = [output.name for output in session.get_outputs()]
    ours = dict(zip(names, session.run(None, feeds), strict=True))
    with torch.no_grad():
        down, mid = model(torch.from_numpy(values["sample"]), torch.tensor(431.0),
                          torch.from_numpy(values["encoder_hidden_states"]),
                          controlnet_cond=torch.from_numpy(values["controlnet_cond"]),
                          conditioning_scale=0.8, added_cond_kwargs=added, return_dict=False)
    expected = {down_residual(i): value for i, value in enumerate(down)}
    expected[MID_RESIDUAL] = mid
    assert sorted(ours) == sorted(expected)
    for name, value in expected.items():
        value = value.numpy()
        assert np.abs(value).max() > 1e-3, f"{name} is zero: the comparison would prove nothing"
        np.testing.assert_allclose(ours[name], value, atol=1e-4, rtol=0, err_msg=name)


def described(store: ModelStore, name: str) -> dict:
    return json.loads((store.root / name / "easel.json").read_text(encoding="utf-8"))


def assert_nothing_installed(store: ModelStore) -> None:
    assert store.installed() == []
    assert [path.name for path in store.root.iterdir()] == []  # no half-built folder either


# --- PyTorch sources --------------------------------------------------------------------------

def test_a_diffusers_folder_is_exported_with_the_diffusers_outputs(sd1, sdxl, store,
                                                                   tmp_path):
    sd1.save_pretrained(tmp_path / "control_v11p_sd15_canny")
    sdxl.save_pretrained(tmp_path / "controlnet-depth-sdxl-1.0")
    first = store.import_model(tmp_path / "control_v11p_sd15_canny", "edges")
    second = store.import_model(tmp_path / "controlnet-depth-sdxl-1.0", "xl-depth")
    assert (first.kind, first.family, second.kind, second.family) == (
        "controlnet", "sd1", "controlnet", "sdxl")
    assert described(store, "edges") == {
        "kind": "controlnet", "format": 1, "family": "sd1", "control": "canny",
        "residuals": RESIDUALS["sd1"], "source": "control_v11p_sd15_canny", "licence": None}
    assert read_controlnet_description(second.path).control == "depth"
    config = json.loads((second.path / "config.json").read_text())
    assert config["_class_name"] == "ControlNetModel"
    assert_same_outputs(first.path, sd1)
    assert_same_outputs(second.path, sdxl)


def test_a_diffusers_folder_of_pickle_weights_is_read_as_plain_tensors(sd1, store, tmp_path):
    folder = tmp_path / "controlnet-scribble"
    sd1.save_pretrained(folder, safe_serialization=False)
    assert (folder / "diffusion_pytorch_model.bin").is_file()
    installed = store.import_model(folder)
    assert read_controlnet_description(installed.path).control == "scribble"
    assert_same_outputs(installed.path, sd1)


def test_a_hugging_face_cache_snapshot_is_named_by_its_repository(sd1, store, tmp_path):
    repo = tmp_path / "hub" / "models--lllyasviel--control_v11p_sd15_canny"
    sd1.save_pretrained(repo / "blobs")
    snapshot = repo / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    for blob in (repo / "blobs").iterdir():  # the cache's files are links into blobs/
        (snapshot / blob.name).symlink_to(Path("..", "..", "blobs", blob.name))
    installed = store.import_model(snapshot, "canny")
    assert read_controlnet_description(installed.path).control == "canny"
    assert_same_outputs(installed.path, sd1)


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_a_single_file_in_diffusers_names(family, sd1, sdxl, store, tmp_path):
    model = {"sd1": sd1, "sdxl": sdxl}[family]
    source = save_single(model, tmp_path / f"diffusers_{family}_openpose.safetensors")
    installed = store.import_model(source)
    assert installed.name == f"diffusers_{family}_openpose"
    description = read_controlnet_description(installed.path)
    assert (description.family, description.control) == (family, "openpose")
    assert description.residuals == RESIDUALS[family]
    assert_same_outputs(installed.path, model)


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_a_single_file_in_the_original_names_goes_through_diffusers_converter(
        family, sd1, sdxl, store, tmp_path):
    model = {"sd1": sd1, "sdxl": sdxl}[family]
    # Shared as float16, as most are: read as float32, the rounded weights exactly.
    source = save_original(model, tmp_path / f"control_v11p_{family}_canny.safetensors",
                           torch.float16)
    names = set(safetensors_torch.load_file(str(source)))
    assert "control_model.input_hint_block.0.weight" in names
    assert "control_model.middle_block_out.0.weight" in names
    assert not any(name.startswith(("down_blocks", "controlnet_")) for name in names)
    installed = store.import_model(source, "canny")
    assert described(store, "canny")["family"] == family
    assert described(store, "canny")["control"] == "canny"
    assert_same_outputs(installed.path, rounded(model, torch.float16))


def test_a_pth_pickle_is_read_as_plain_tensors(sd1, store, tmp_path):
    torch.save(original_tensors(sd1), tmp_path / "control_sd15_depth.pth")
    installed = store.import_model(tmp_path / "control_sd15_depth.pth")
    assert described(store, "control_sd15_depth")["control"] == "depth"
    assert described(store, "control_sd15_depth")["source"] == "control_sd15_depth.pth"
    assert_same_outputs(installed.path, sd1)


def test_a_name_that_says_no_control_leaves_it_unknown(sd1, store, tmp_path):
    installed = store.import_model(save_single(sd1, tmp_path / "my_controlnet.safetensors"))
    assert read_controlnet_description(installed.path).control is None


# --- ONNX sources -----------------------------------------------------------------------------

def test_an_amuse_folder_is_checked_and_copied(sd1, store, tmp_path):
    exported = export_onnx(sd1, tmp_path / "export")
    amuse = tmp_path / "ControlNet-Canny"
    (amuse / "controlnet").mkdir(parents=True)
    for file in exported.iterdir():  # Amuse keeps the graph alone, without our config
        if file.name.startswith("model.onnx"):
            shutil.copyfile(file, amuse / "controlnet" / file.name)
    # A tiny graph's text width (32) names no family, and Amuse keeps no config.
    with pytest.raises(ModelError, match=r"say which with --family sd1"):
        store.import_model(amuse)
    assert_nothing_installed(store)
    installed = store.import_model(amuse, family="sd1")
    assert described(store, "ControlNet-Canny") == {
        "kind": "controlnet", "format": 1, "family": "sd1", "control": "canny",
        "residuals": RESIDUALS["sd1"], "source": "ControlNet-Canny", "licence": None}
    assert (installed.path / "model.onnx").read_bytes() == (
        exported / "model.onnx").read_bytes()
    assert_same_outputs(installed.path, sd1)


def test_a_lone_sdxl_graph_names_its_family_by_its_size_inputs(sdxl, store, tmp_path):
    exported = export_onnx(sdxl, tmp_path / "export")
    graph = shutil.copyfile(exported / "model.onnx", tmp_path / "xl_tile.onnx")
    # An upscaler is a lone graph too: the user says which (--kind controlnet).
    installed = store.import_model(graph, kind="controlnet")
    description = read_controlnet_description(installed.path)
    assert (description.family, description.control, description.residuals) == (
        "sdxl", "tile", RESIDUALS["sdxl"])
    assert_same_outputs(installed.path, sdxl)


def _graph(path: Path, inputs: list[str], outputs: list[str]) -> Path:
    """A graph with these names that passes its first input through."""
    from onnx import TensorProto, helper

    values = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 4, 8, 8])
              for name in inputs]
    results = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 4, 8, 8])
               for name in outputs]
    nodes = [helper.make_node("Identity", [inputs[0]], [name]) for name in outputs]
    model = helper.make_model(helper.make_graph(nodes, "g", values, results))
    onnx.save(model, str(path))
    return path


def test_a_graph_missing_a_controlnet_name_is_refused(store, tmp_path):
    graph = _graph(tmp_path / "half.onnx", ["sample", "controlnet_cond"],
                   [down_residual(0), MID_RESIDUAL])
    with pytest.raises(ModelError, match=r"^'half.onnx' has no timestep, so it is not a "
                                         r"ControlNet graph Easel can run"):
        store.import_model(graph, kind="controlnet")
    no_mid = _graph(tmp_path / "no-mid.onnx", ["sample", "timestep", "encoder_hidden_states",
                                               "controlnet_cond", "conditioning_scale"],
                    [down_residual(0)])
    with pytest.raises(ModelError, match=rf"has no {MID_RESIDUAL}"):
        store.import_model(no_mid, kind="controlnet")
    assert_nothing_installed(store)


# --- refusals ---------------------------------------------------------------------------------

def _names_file(path: Path, names: list[str]) -> Path:
    """A .safetensors file with one float per tensor, written by hand."""
    header = {name: {"dtype": "F32", "shape": [1], "data_offsets": [4 * i, 4 * i + 4]}
              for i, name in enumerate(names)}
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + bytes(4 * len(names)))
    return path


@pytest.mark.parametrize(("names", "sentence"), [
    (["adapter.conv_in.weight", "adapter.body.0.resnets.0.block1.weight"],
     r"^'other.safetensors' is a T2I-Adapter, not a ControlNet; Easel does not use "
     r"T2I-Adapters\.$"),
    (["conv_in.weight", "body.0.block1.weight"], r"is a T2I-Adapter, not a ControlNet"),
    (["lora_controlnet", "input_hint_block.0.weight", "zero_convs.0.0.weight",
      "input_blocks.1.0.in_layers.2.up"],
     r"^'other.safetensors' is a Control-LoRA, not a ControlNet; Easel does not use "
     r"Control-LoRAs\.$"),
    (["lllite_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.conditioning1.0.weight"],
     r"is a ControlNet-LLLite \(kohya's controllllite\), not a ControlNet"),
    (["controlnet_cond_embedding.conv_in.weight", "task_embedding",
      "control_add_embedding.linear_1.weight"], r"is a ControlNet Union model"),
])
def test_control_models_that_are_not_controlnets_are_one_sentence(names, sentence, store,
                                                                  tmp_path):
    source = _names_file(tmp_path / "other.safetensors", names)
    with pytest.raises(ModelError, match=sentence):
        store.import_model(source)
    assert_nothing_installed(store)


def test_a_file_that_is_no_controlnet_is_refused(store, tmp_path):
    source = _names_file(tmp_path / "random.safetensors", ["foo.weight", "bar.bias"])
    with pytest.raises(ModelError, match=r"^'random.safetensors' is not a ControlNet\.$"):
        store.import_model(source, kind="controlnet")
    with pytest.raises(ModelError, match=r"^'random.safetensors' has no Stable Diffusion UNet"):
        store.import_model(source)  # no kind claims it: the checkpoint converter says why
    assert_nothing_installed(store)


def test_damaged_files_are_refused(sd1, store, tmp_path):
    whole = save_original(sd1, tmp_path / "whole.safetensors").read_bytes()
    cut = tmp_path / "control_v11p_sd15_canny.safetensors"
    cut.write_bytes(whole[:len(whole) // 2])
    with pytest.raises(ModelError, match=r"is not a valid \.safetensors file"):
        store.import_model(cut)
    pth = tmp_path / "control_sd15_depth.pth"
    torch.save(original_tensors(sd1), pth)
    pth.write_bytes(pth.read_bytes()[:4096])
    with pytest.raises(ModelError):
        store.import_model(pth, kind="controlnet")
    graph = tmp_path / "broken.onnx"
    graph.write_bytes((export_onnx(sd1, tmp_path / "export") / "model.onnx").read_bytes()[:5000])
    with pytest.raises(ModelError):
        store.import_model(graph, kind="controlnet")
    assert_nothing_installed(store)


def test_an_original_file_with_tensors_no_controlnet_has_is_refused(sd1, store, tmp_path):
    tensors = original_tensors(sd1)
    tensors["control_model.output_blocks.0.0.in_layers.0.weight"] = torch.zeros(3)
    safetensors_torch.save_file(tensors, str(tmp_path / "odd.safetensors"))
    with pytest.raises(ModelError, match=r"^'odd.safetensors' has 1 tensor that no ControlNet "
                                         r"has, so it is not one Easel knows\.$"):
        store.import_model(tmp_path / "odd.safetensors")
    del tensors["control_model.output_blocks.0.0.in_layers.0.weight"]
    tensors["control_model.input_blocks.1.0.in_layers.9.weight"] = torch.zeros(3)
    safetensors_torch.save_file(tensors, str(tmp_path / "odd.safetensors"))
    with pytest.raises(ModelError, match=r"does not fit the ControlNet architecture its "
                                         r"tensors describe: it has an unknown tensor "
                                         r"down_blocks\.0\.resnets\.0\.in_layers\.9\.weight"):
        store.import_model(tmp_path / "odd.safetensors")
    assert_nothing_installed(store)


def test_a_family_the_file_contradicts_is_refused(sd1, store, tmp_path):
    source = save_single(sd1, tmp_path / "edges.safetensors")
    with pytest.raises(ModelError, match=r"^'edges.safetensors' is a ControlNet for Stable "
                                         r"Diffusion 1\.x, not for SDXL\.$"):
        store.import_model(source, family="sdxl")
    assert_nothing_installed(store)


def test_a_diffusers_folder_with_code_is_refused(sd1, store, tmp_path):
    folder = tmp_path / "controlnet-canny"
    sd1.save_pretrained(folder)
    (folder / "pipeline.py").write_text("print('hello')\n")
    with pytest.raises(ModelError, match=r"ships Python code \(pipeline.py\)"):
        store.import_model(folder)
    assert_nothing_installed(store)


# --- the command line -------------------------------------------------------------------------

def test_the_command_line_lists_and_removes_controlnets(sd1, tmp_path, monkeypatch, capsys):
    from desktop.cli import main
    from desktop.paths import models_dir

    monkeypatch.setenv("EASEL_HOME", str(tmp_path / "home"))
    source = save_original(sd1, tmp_path / "control_v11p_sd15_canny.safetensors")
    assert main(["models", "import", str(source), "--name", "edges"]) == 0
    capsys.readouterr()
    assert main(["models", "list"]) == 0
    listed = capsys.readouterr().out
    assert any(line.split()[:3] == ["edges", "controlnet", "sd1"] for line in listed.splitlines())
    store = ModelStore(models_dir())
    (model,) = store.installed("controlnet")
    assert "ControlNet (canny) for Stable Diffusion 1.x" in model.use
    assert store.list() == []  # never offered to make pictures
    with pytest.raises(ModelError, match=r"^'edges' is a ControlNet, not a model that makes "
                                         r"pictures; use it with: easel generate --control "
                                         r"\"TYPE=edges:PICTURE\""):
        store.path_of("edges")
    assert main(["models", "remove", "edges"]) == 0
    assert store.installed() == []
