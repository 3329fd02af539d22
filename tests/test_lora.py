"""LoRAs: merged at session creation match diffusers' fused LoRAs; refusals in one sentence.

LoRA files are made here with random low-rank tensors on every attention, projection and
feed-forward layer of the tiny UNet and text encoders (and one 3x3 LoCon convolution), in
kohya/A1111 naming (SD 1.x with diffusers module names, SDXL with the original UNet's
input_blocks names as sd-scripts writes them) and in diffusers/PEFT naming. The reference is
diffusers: ``load_lora_weights`` + ``fuse_lora`` (peft is a test dependency), else diffusers' own
key conversion (``lora_state_dict`` + ``convert_unet_state_dict_to_peft``) with the weights
fused by hand, which is what fuse_lora computes.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import replace

import numpy as np
import pytest

from engine.errors import BadRequest, ModelError
from engine.lora import extract_lora_tags, parse_lora_option
from engine.model import load_model
from engine.request import TextToImageRequest
from tests import tiny_models, tiny_models_xl
from tests.test_sdxl_parity import HEIGHT, WIDTH, run_diffusers, run_ours

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
safetensors_torch = pytest.importorskip("safetensors.torch")

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

PROMPT = "a photo of an astronaut riding a horse"
STEPS, SEED, GUIDANCE = 3, 7, 5.0
_ATTENTION_PARTS = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj",
                    "ff.net.2")
_TEXT_PARTS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- making LoRA files ------------------------------------------------------------------------

def _text_name(module: str) -> str:
    # Checkpoints and LoRAs say text_model.encoder...; transformers 5's CLIPTextModel dropped
    # that level (CLIPTextModelWithProjection kept it).
    return module if module.startswith("text_model.") else f"text_model.{module}"


def lora_layers(pipe) -> list[tuple[str, str, tuple[int, ...]]]:
    """(component, module name, weight shape) of every layer the test LoRAs change."""
    layers = []
    for name, module in pipe.unet.named_modules():
        if name.endswith(_ATTENTION_PARTS) and hasattr(module, "weight"):
            layers.append(("unet", name, tuple(module.weight.shape)))
    layers.append(("unet", "down_blocks.0.resnets.0.conv1",  # LoCon on a 3x3 convolution
                   tuple(pipe.unet.down_blocks[0].resnets[0].conv1.weight.shape)))
    encoders = [("text_encoder", pipe.text_encoder)]
    if getattr(pipe, "text_encoder_2", None) is not None:
        encoders.append(("text_encoder_2", pipe.text_encoder_2))
    for component, encoder in encoders:
        for name, module in encoder.named_modules():
            if name.endswith(_TEXT_PARTS):
                layers.append((component, _text_name(name), tuple(module.weight.shape)))
    return layers


def _sgm_name(module: str, per_block: int = 2) -> str:
    """A diffusers UNet module name as the original (SGM) UNet names it, for the tiny
    2-block layout: what sd-scripts writes for SDXL."""
    parts = module.split(".")
    if parts[0] == "down_blocks":
        block, kind, index = int(parts[1]), parts[2], int(parts[3])
        slot = {"resnets": 0, "attentions": 1}[kind]
        inner = ".".join(parts[4:])
        inner = {"conv1": "in_layers.2"}.get(inner, inner)
        return f"input_blocks.{1 + block * (per_block + 1) + index}.{slot}.{inner}"
    if parts[0] == "up_blocks":
        block, kind, index = int(parts[1]), parts[2], int(parts[3])
        slot = {"resnets": 0, "attentions": 1}[kind]
        return f"output_blocks.{block * (per_block + 1) + index}.{slot}.{'.'.join(parts[4:])}"
    if parts[0] == "mid_block":
        slot = {"attentions": 1}[parts[1]]
        return f"middle_block.{slot}.{'.'.join(parts[3:])}"
    raise AssertionError(module)


def make_lora(pipe, path, naming: str, *, rank: int = 4, seed: int = 0, sgm: bool = False,
              swap: bool = False, only=None, keep=None) -> dict:
    """A random LoRA file for ``pipe`` in ``naming`` ("kohya" or "diffusers"); ``swap`` gives
    each self-attention's value and output layers each other's tensors (what a map that merged
    them into the wrong tensor would do); returns {(component, module): (down, up, alpha)}."""
    generator = torch.Generator().manual_seed(seed)
    layers = [layer for layer in lora_layers(pipe) if (only is None or layer[0] in only)
              and (keep is None or keep(layer[1]))]
    made, tensors = {}, {}
    for component, module, shape in layers:
        out, inputs = shape[0], shape[1]
        kernel = shape[2:] if len(shape) == 4 else ()
        down = torch.randn(rank, inputs, *kernel, generator=generator) / math.sqrt(
            inputs * max(1, math.prod(kernel)))
        up = torch.randn(out, rank, *((1, 1) if kernel else ()), generator=generator) * 0.15
        # kohya files carry each layer's alpha; diffusers/PEFT files carry none (alpha is the
        # rank there, a scale of 1), and diffusers refuses keys without "lora" in them.
        alpha = rank / 2 if naming == "kohya" else float(rank)
        made[(component, module)] = (down, up, alpha)
    order = list(made)
    for value in [key for key in order if swap and key[1].endswith("attn1.to_v")]:
        out = (value[0], value[1].replace("to_v", "to_out.0"))
        made[value], made[out] = made[out], made[value]
    for (component, module), (down, up, alpha) in made.items():
        if naming == "kohya":
            prefix = {"unet": "lora_unet_", "text_encoder": "lora_te1_" if sgm else "lora_te_",
                      "text_encoder_2": "lora_te2_"}[component]
            name = _sgm_name(module) if sgm and component == "unet" else module
            base = prefix + name.replace(".", "_")
            tensors[f"{base}.lora_down.weight"] = down.contiguous()
            tensors[f"{base}.lora_up.weight"] = up.contiguous()
            tensors[f"{base}.alpha"] = torch.tensor(alpha)
        else:
            base = f"{component}.{module}"
            tensors[f"{base}.lora_A.weight"] = down.contiguous()
            tensors[f"{base}.lora_B.weight"] = up.contiguous()
    safetensors_torch.save_file(tensors, str(path))
    return made


# --- the reference: diffusers' fused LoRA -----------------------------------------------------

def fuse_reference(pipe, path, weight: float) -> None:
    """Fuse the LoRA file ``path`` into ``pipe`` as diffusers does."""
    try:
        import peft  # noqa: F401
    except ImportError:
        _fuse_by_hand(pipe, path, weight)
        return
    pipe.load_lora_weights(str(path))
    pipe.fuse_lora(lora_scale=weight)
    pipe.unload_lora_weights()


def _fuse_by_hand(pipe, path, weight: float) -> None:
    """diffusers' own key conversion, one layer at a time (so each keeps its alpha), and
    ``W += weight * alpha / rank * up @ down`` as fuse_lora computes it."""
    from diffusers.utils import convert_unet_state_dict_to_peft

    state = safetensors_torch.load_file(str(path))
    bases = sorted({key.rsplit(".", 2)[0] if key.endswith(".weight") else key.rsplit(".", 1)[0]
                    for key in state})
    for base in bases:
        pair = {key: value for key, value in state.items()
                if key.startswith(base + ".") and key.count(".") - base.count(".") <= 2}
        alpha = float(pair.pop(f"{base}.alpha"))
        converted, _alphas = pipe.lora_state_dict(pair, unet_config=pipe.unet.config)
        if any(key.startswith("unet.") for key in converted):
            converted = convert_unet_state_dict_to_peft(converted)
        else:  # diffusers' DIFFUSERS_OLD_TO_PEFT / DIFFUSERS_TO_PEFT renames
            converted = {_text_encoder_peft_name(key): value for key, value in converted.items()}
        (down_key,) = [key for key in converted if key.endswith("lora_A.weight")]
        component, module = down_key.removesuffix(".lora_A.weight").split(".", 1)
        down, up = converted[down_key], converted[down_key.replace("lora_A", "lora_B")]
        target = _submodule(getattr(pipe, component), module)
        delta = (up.reshape(up.shape[0], -1) @ down.reshape(down.shape[0], -1))
        with torch.no_grad():
            target.weight += (weight * alpha / down.shape[0] * delta).reshape(target.weight.shape)


def _text_encoder_peft_name(key: str) -> str:
    for old, new in ((".to_q_lora.", ".q_proj.lora_linear_layer."),
                     (".to_k_lora.", ".k_proj.lora_linear_layer."),
                     (".to_v_lora.", ".v_proj.lora_linear_layer."),
                     (".to_out_lora.", ".out_proj.lora_linear_layer."),
                     (".lora_linear_layer.down.", ".lora_A."),
                     (".lora_linear_layer.up.", ".lora_B.")):
        key = key.replace(old, new)
    return key


def _submodule(root, name: str):
    try:
        return root.get_submodule(name)
    except AttributeError:
        return root.get_submodule(name.removeprefix("text_model."))


# --- fixtures ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sd1(tmp_path_factory):
    folder = tiny_models_xl.installed_copy(tiny_models.tiny_onnx("sd1"),
                                           tmp_path_factory.mktemp("m") / "tiny-sd1")
    return folder


@pytest.fixture(scope="module")
def sd1_external(sd1, tmp_path_factory):
    """The tiny SD 1.x with its UNet weights in model.onnx.data, as every real UNet has them
    (3.4 GB): merged weights then replace the graph's own as it loads."""
    import shutil

    import onnx

    from engine.manifest import write_manifest

    folder = tmp_path_factory.mktemp("m") / "tiny-sd1-external"
    shutil.copytree(sd1, folder)
    graph = folder / "unet" / "model.onnx"
    onnx.save_model(onnx.load(str(graph)), str(graph), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="model.onnx.data",
                    size_threshold=1024)
    (folder / "manifest.json").unlink(missing_ok=True)
    write_manifest(folder)
    return folder


@pytest.fixture(scope="module")
def sdxl(tmp_path_factory):
    folder = tiny_models_xl.installed_copy(tiny_models_xl.tiny_onnx("sdxl"),
                                           tmp_path_factory.mktemp("m") / "tiny-sdxl")
    return folder


@pytest.fixture
def request_model(request):
    return lambda family: request.getfixturevalue(family.replace("-", "_"))


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


def request() -> TextToImageRequest:
    return TextToImageRequest(PROMPT, width=WIDTH, height=HEIGHT, steps=STEPS,
                              guidance=GUIDANCE, scheduler="euler", seed=SEED)


def ours(folder, monkeypatch, loras=()):
    # On the request, as callers give them: every pipeline puts the request's LoRAs on the
    # model's sessions (none: the plain model).
    made = replace(request(), loras=tuple((str(path), weight) for path, weight in loras))
    return run_ours(load_model(folder), made, monkeypatch)


def theirs(pipe, monkeypatch):
    call = {"prompt": PROMPT, "num_inference_steps": STEPS, "guidance_scale": GUIDANCE}
    pixels = run_diffusers(pipe, SEED, monkeypatch, **call)
    latents = run_diffusers(pipe, SEED, monkeypatch, "latent", **call)
    return pixels, latents


def difference(first, second) -> int:
    return int(np.abs(first.astype(int) - second.astype(int)).max())


# --- parity -----------------------------------------------------------------------------------

CASES = [("sd1", "kohya", False), ("sd1", "diffusers", False),
         ("sd1-external", "kohya", False), ("sdxl", "kohya", True), ("sdxl", "diffusers", False)]


@pytest.mark.slow
@pytest.mark.parametrize(("family", "naming", "sgm"), CASES)
def test_lora_matches_diffusers_fused_lora(family, naming, sgm, request_model, tmp_path,
                                           monkeypatch):
    folder = request_model(family)
    pipe = sdxl_pipe() if family == "sdxl" else sd1_pipe()
    path = tmp_path / "style.safetensors"
    make_lora(pipe, path, naming, sgm=sgm)
    plain, _ = theirs(pipe, monkeypatch)
    fuse_reference(pipe, path, 0.8)
    their_pixels, their_latents = theirs(pipe, monkeypatch)
    our_pixels, our_latents = ours(folder, monkeypatch, [(path, 0.8)])
    assert difference(their_pixels, plain) > 20, "the LoRA must change the picture visibly"
    assert difference(our_pixels, their_pixels) <= 2
    np.testing.assert_allclose(our_latents, their_latents, rtol=1e-3, atol=1e-3)


@pytest.mark.slow
def test_the_optimised_graph_cache_is_used_where_it_kept_the_weights(sd1, tmp_path,
                                                                      monkeypatch):
    """Attention-only LoRAs replace weights in the cached optimised graph (onnxruntime keeps
    MatMul weights as exported); a LoCon convolution (reordered there) goes through the model
    file. Both still match diffusers."""
    from engine.runtime import RuntimeOptions

    runtime = RuntimeOptions(optimized_cache=tmp_path / "optimized")
    load_model(sd1, runtime).unet.run  # noqa: B018 - fills the cache
    for name, keep, cached in (("attention", lambda module: "attn" in module, True),
                               ("locon", lambda module: module.endswith("conv1"), False)):
        pipe = sd1_pipe()
        path = tmp_path / f"{name}.safetensors"
        make_lora(pipe, path, "kohya", only=("unet",), keep=keep)
        fuse_reference(pipe, path, 1.0)
        their_pixels, their_latents = theirs(pipe, monkeypatch)
        model = load_model(sd1, runtime)
        model.use_loras([(path, 1.0)])
        assert model.unet.loaded_from.is_relative_to(tmp_path / "optimized") is cached
        our_pixels, our_latents = run_ours(
            model, replace(request(), loras=((str(path), 1.0),)), monkeypatch)
        assert difference(our_pixels, their_pixels) <= 2
        np.testing.assert_allclose(our_latents, their_latents, rtol=1e-3, atol=1e-3)


@pytest.mark.slow
def test_a_lora_merged_into_the_wrong_tensor_fails_the_parity(sd1, tmp_path, monkeypatch):
    """The reference fuses the right LoRA; ours gets one whose self-attention value and
    output layers are swapped (what a wrong map would do): the pictures then differ."""
    pipe = sd1_pipe()
    right, wrong = tmp_path / "right.safetensors", tmp_path / "wrong.safetensors"
    make_lora(pipe, right, "kohya")
    make_lora(pipe, wrong, "kohya", swap=True)
    fuse_reference(pipe, right, 1.0)
    their_pixels, their_latents = theirs(pipe, monkeypatch)
    our_pixels, our_latents = ours(sd1, monkeypatch, [(wrong, 1.0)])
    assert difference(our_pixels, their_pixels) > 2
    assert not np.allclose(our_latents, their_latents, rtol=1e-3, atol=1e-3)


@pytest.mark.slow
def test_several_loras_combine(sd1, tmp_path, monkeypatch):
    pipe = sd1_pipe()
    first, second = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    make_lora(pipe, first, "kohya", seed=1)
    make_lora(pipe, second, "diffusers", seed=2, only=("unet",))
    fuse_reference(pipe, first, 0.7)
    fuse_reference(pipe, second, -0.5)
    their_pixels, their_latents = theirs(pipe, monkeypatch)
    our_pixels, our_latents = ours(sd1, monkeypatch, [(first, 0.7), (second, -0.5)])
    assert difference(our_pixels, their_pixels) <= 2
    np.testing.assert_allclose(our_latents, their_latents, rtol=1e-3, atol=1e-3)


def test_weight_zero_is_the_model_exactly(sd1, tmp_path, monkeypatch):
    path = tmp_path / "style.safetensors"
    make_lora(sd1_pipe(), path, "kohya")
    without, _ = ours(sd1, monkeypatch)
    with_zero, _ = ours(sd1, monkeypatch, [(path, 0.0)])
    with_lora, _ = ours(sd1, monkeypatch, [(path, 1.0)])
    assert np.array_equal(without, with_zero)
    assert not np.array_equal(without, with_lora)


def test_the_same_set_reuses_its_sessions_and_another_set_replaces_them(sd1, tmp_path):
    from engine.runtime import sessions

    path = tmp_path / "style.safetensors"
    make_lora(sd1_pipe(), path, "kohya")
    model = load_model(sd1)
    model.use_loras([(path, 1.0)])
    first = model.unet
    model.use_loras([(path, 1.0)])
    assert model.unet is first  # nothing merged again
    model.use_loras([(path, 0.5)])
    second = model.unet
    assert second is not first
    unet_sessions = [key for key in sessions._sessions if key[0] == first.path]
    assert len(unet_sessions) == 1  # the old merged set is let go


def test_merged_weights_land_in_the_mapped_initializers(sd1, tmp_path):
    """The map's transposed MatMul weights and convolutions get exactly W + s·up@down."""
    import onnx
    from onnx import numpy_helper

    from engine.lora.apply import prepare_loras

    path = tmp_path / "style.safetensors"
    made = make_lora(sd1_pipe(), path, "kohya")
    overrides, _ = prepare_loras(sd1, "sd1", "tiny", [(path, 0.5)]).overrides("unet").build()
    weights = json.loads((sd1 / "unet" / "weights_map.json").read_text())["weights"]
    graph = onnx.load(str(sd1 / "unet" / "model.onnx"))
    initial = {tensor.name: numpy_helper.to_array(tensor) for tensor in graph.graph.initializer}
    for module in ("down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k",
                   "down_blocks.1.attentions.0.proj_in", "down_blocks.0.resnets.0.conv1"):
        down, up, alpha = made[("unet", module)]
        entry = weights[module + ".weight"]
        delta = (up.reshape(up.shape[0], -1) @ down.reshape(down.shape[0], -1)).numpy()
        delta = 0.5 * alpha / down.shape[0] * delta.reshape(entry["shape"])
        expected = initial[entry["initializer"]] + (delta.T if entry["transposed"] else delta)
        np.testing.assert_allclose(overrides[entry["initializer"]], expected, atol=1e-6)
    assert any(entry["transposed"] for entry in weights.values())


# --- bad input --------------------------------------------------------------------------------

def test_a_lora_of_another_family_is_refused_before_any_work(sd1, tmp_path):
    path = tmp_path / "xl-style.safetensors"
    make_lora(sdxl_pipe(), path, "kohya", sgm=True)
    model = load_model(sd1)
    with pytest.raises(BadRequest) as refused:
        model.use_loras([(path, 1.0)])
    assert str(refused.value) == ("LoRA 'xl-style' is made for SDXL, but model 'tiny-sd1' is "
                                  "Stable Diffusion 1.x.")


def test_layers_that_match_no_weight_are_counted(sd1, tmp_path):
    path = tmp_path / "odd.safetensors"
    made = make_lora(sd1_pipe(), path, "kohya", only=("text_encoder",))
    tensors = safetensors_torch.load_file(str(path))
    tensors["lora_unet_no_such_block_to_q.lora_down.weight"] = torch.zeros(4, 32)
    tensors["lora_unet_no_such_block_to_q.lora_up.weight"] = torch.zeros(32, 4)
    tensors["lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight"] = torch.zeros(4, 99)
    safetensors_torch.save_file(tensors, str(path))
    with pytest.raises(BadRequest) as refused:
        load_model(sd1).use_loras([(path, 1.0)])
    message = str(refused.value)
    assert message.startswith(f"2 of the {len(made) + 1} layers of LoRA 'odd' match no weight "
                              f"of model 'tiny-sd1' (the first: ")
    assert message.endswith("), so it cannot be applied.") and message.count(". ") == 0


def test_a_missing_lora_file_and_an_old_model_are_one_sentence(sd1, tmp_path):
    with pytest.raises(ModelError, match=r"^The LoRA file .* is missing\.$"):
        load_model(sd1).use_loras([(tmp_path / "gone.safetensors", 1.0)])
    import shutil

    old = tmp_path / "old-model"
    shutil.copytree(sd1, old)
    (old / "unet" / "weights_map.json").unlink()
    path = tmp_path / "style.safetensors"
    make_lora(sd1_pipe(), path, "kohya")
    from engine.manifest import write_manifest

    write_manifest(old)
    with pytest.raises(ModelError) as refused:
        load_model(old).use_loras([(path, 1.0)])
    assert str(refused.value) == ("Model 'old-model' was installed before Easel could apply "
                                  "LoRAs to it; remove it and import it again to use LoRAs.")


def test_unsupported_networks_are_one_sentence(sd1, tmp_path):
    path = tmp_path / "loha.safetensors"
    safetensors_torch.save_file({"lora_unet_x.hada_w1_a": torch.zeros(2, 2)}, str(path))
    with pytest.raises(ModelError, match=r"^'loha' is a LoHa network, which Easel cannot apply "
                                         r"yet \(only LoRA and LoCon\)\.$"):
        load_model(sd1).use_loras([(path, 1.0)])


# --- prompt tags and the command-line option --------------------------------------------------

def test_prompt_tags_are_cut_out_with_their_weights():
    assert extract_lora_tags("a cat <lora:ink:0.6>, <lora:paper> on a mat <lora:ink:0.2>") == (
        "a cat ,  on a mat ", [("ink", pytest.approx(0.8)), ("paper", 1.0)])
    assert extract_lora_tags("no tags") == ("no tags", [])
    with pytest.raises(BadRequest, match=r"^The LoRA weight in '<lora:ink:x>' is not a "
                                         r"number\.$"):
        extract_lora_tags("a <lora:ink:x>")
    assert parse_lora_option("ink:0.5") == ("ink", 0.5)
    assert parse_lora_option("ink") == ("ink", 1.0)
    with pytest.raises(BadRequest):
        parse_lora_option(":0.5")


# --- the LoRA kind: import, list, remove, use by name -----------------------------------------

@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("EASEL_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _real_size_lora(path, family: str) -> None:
    """One cross-attention layer at a real model's width (768: SD 1.x), plus SDXL's second
    text encoder for "sdxl": what tells a LoRA's family."""
    width = {"sd1": 768, "sdxl": 2048}[family]
    tensors = {
        "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight":
            torch.randn(8, width),
        "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k.lora_up.weight":
            torch.randn(640, 8),
        "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k.alpha":
            torch.tensor(4.0)}
    if family == "sdxl":
        tensors["lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight"] = \
            torch.randn(8, 1280)
        tensors["lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight"] = \
            torch.randn(1280, 8)
    safetensors_torch.save_file(tensors, str(path))


def test_import_list_remove_a_lora_as_its_own_kind(home, tmp_path, capsys):
    from desktop.cli import main
    from desktop.model_store import ModelStore
    from desktop.paths import models_dir

    _real_size_lora(tmp_path / "ink.safetensors", "sd1")
    _real_size_lora(tmp_path / "xl-ink.safetensors", "sdxl")
    assert main(["models", "import", str(tmp_path / "ink.safetensors")]) == 0
    assert main(["models", "import", str(tmp_path / "xl-ink.safetensors")]) == 0
    capsys.readouterr()
    assert main(["models", "list"]) == 0
    listed = capsys.readouterr().out
    assert any(line.split()[:3] == ["ink", "lora", "sd1"] for line in listed.splitlines())
    assert any(line.split()[:3] == ["xl-ink", "lora", "sdxl"] for line in listed.splitlines())
    store = ModelStore(models_dir())
    description = json.loads((store.root / "ink" / "easel.json").read_text())
    assert description == {"format": 1, "kind": "lora", "family": "sd1", "rank": 8,
                           "layers": 1, "tensors": 3, "naming": "kohya", "licence": None,
                           "source": "ink.safetensors",
                           "source_hash": autov3((tmp_path / "ink.safetensors").read_bytes())}
    assert (store.root / "ink" / "lora.safetensors").read_bytes() == (
        tmp_path / "ink.safetensors").read_bytes()
    uses = {model.name: model.use for model in store.installed("lora")}
    assert uses["ink"].endswith("(rank 8, 1 layer)")
    assert uses["xl-ink"].endswith("(rank 8, 2 layers)")
    assert [model.name for model in store.list()] == []  # never offered to make pictures
    with pytest.raises(ModelError, match=r"^'ink' is a LoRA, not a model that makes "
                                         r"pictures; use it with: easel generate --lora"):
        store.path_of("ink")
    assert main(["models", "remove", "ink"]) == 0
    assert [model.name for model in store.installed("lora")] == ["xl-ink"]


def test_a_pickle_lora_is_read_as_plain_tensors(home, tmp_path):
    from desktop.model_store import ModelStore
    from desktop.paths import models_dir

    _real_size_lora(tmp_path / "ink.safetensors", "sd1")
    tensors = safetensors_torch.load_file(str(tmp_path / "ink.safetensors"))
    torch.save(tensors, tmp_path / "ink.pt")
    store = ModelStore(models_dir())
    installed = store.import_model(tmp_path / "ink.pt")
    assert (installed.kind, installed.family) == ("lora", "sd1")
    copied = safetensors_torch.load_file(str(installed.path / "lora.safetensors"))
    assert all(torch.equal(copied[name], tensors[name]) for name in tensors)
    # A1111 hashes a LoRA that is no .safetensors file whole; the converted copy differs.
    description = json.loads((installed.path / "easel.json").read_text())
    assert description["source_hash"] == hashlib.sha256((tmp_path / "ink.pt").read_bytes()
                                                        ).hexdigest()


def autov3(data: bytes) -> str:
    """A1111's hash of a .safetensors LoRA: the SHA-256 of what follows the header."""
    return hashlib.sha256(data[8 + int.from_bytes(data[:8], "little"):]).hexdigest()


def test_an_installed_lora_is_named_by_the_file_imported(tmp_path):
    from engine.lora.record import short_hash

    folder = tmp_path / "ink"
    folder.mkdir()
    _real_size_lora(folder / "lora.safetensors", "sd1")
    own = autov3((folder / "lora.safetensors").read_bytes())[:12]
    # Installed before imports kept the imported file's hash: the installed file's.
    (folder / "easel.json").write_text(json.dumps({"kind": "lora", "source": "ink.pt"}))
    assert short_hash(folder / "lora.safetensors") == own
    (folder / "easel.json").write_text(json.dumps({"kind": "lora", "source_hash": "cd" * 32}))
    assert short_hash(folder / "lora.safetensors") == "cd" * 6


def test_the_scan_offers_loras_for_import(tmp_path):
    from desktop.model_sources.scan import LORA, scan_folder

    (tmp_path / "loras").mkdir()
    _real_size_lora(tmp_path / "loras" / "ink.safetensors", "sd1")
    (found,) = scan_folder(tmp_path)
    assert (found.kind, found.importable, found.description) == (LORA, True, "LoRA")


@pytest.fixture(scope="module")
def home_with_tiny(tmp_path_factory):
    """A data folder with the tiny SD 1.x imported and a LoRA made for it."""
    from desktop.cli import main

    template = tmp_path_factory.mktemp("template") / "home"
    lora = template.parent / "tiny-ink.safetensors"
    make_lora(sd1_pipe(), lora, "kohya")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EASEL_HOME", str(template))
        assert main(["models", "import", str(tiny_models.tiny_diffusers("sd1")), "--name",
                     "tiny"]) == 0
        assert main(["models", "import", str(lora)]) == 0
    return template


def test_easel_generate_takes_loras_by_name(home, home_with_tiny, tmp_path, capsys):
    import shutil

    from desktop.cli import main

    shutil.copytree(home_with_tiny, home)

    def generate(name, *loras):
        command = ["generate", "a red chair", "--model", "tiny", "--width", "64", "--height",
                   "48", "--steps", "2", "--seed", "3", "-o", str(tmp_path / name)]
        assert main(command + [part for lora in loras for part in ("--lora", lora)]) == 0
        from PIL import Image

        with Image.open(tmp_path / name) as image:
            return np.asarray(image)

    plain = generate("plain.png")
    assert np.array_equal(generate("zero.png", "tiny-ink:0"), plain)
    styled = generate("styled.png", "tiny-ink:0.8")
    assert not np.array_equal(styled, plain)
    assert np.array_equal(generate("twice.png", "tiny-ink:0.5", "tiny-ink:0.3"), styled)
    # A1111's tag in the prompt does what --lora does; the tag itself is never encoded.
    command = ["generate", "a red chair <lora:tiny-ink:0.8>", "--model", "tiny", "--width",
               "64", "--height", "48", "--steps", "2", "--seed", "3", "-o",
               str(tmp_path / "tagged.png")]
    assert main(command) == 0
    from PIL import Image

    with Image.open(tmp_path / "tagged.png") as image:
        assert np.array_equal(np.asarray(image), styled)
        assert image.text["parameters"].startswith("a red chair <lora:tiny-ink:0.8>")
        # Named as A1111 names it, so model sites know it: the SHA-256 of its tensor data.
        data = (home / "models" / "tiny-ink" / "lora.safetensors").read_bytes()
        expected = autov3(data)[:12]
        assert f'Lora hashes: "tiny-ink: {expected}"' in image.text["parameters"]
        assert json.loads(image.text["easel"])["loras"] == [
            {"name": "tiny-ink", "weight": 0.8, "hash": expected}]
        image_id = json.loads(image.text["easel"])["image_id"]
    capsys.readouterr()
    assert main(["gallery", "show", image_id]) == 0
    assert f"tiny-ink 0.8 ({expected})" in capsys.readouterr().out
    # The editing commands take them too.
    assert main(["variations", str(tmp_path / "plain.png"), "--prompt", "<lora:tiny-ink:0.8>",
                 "--model", "tiny", "--steps", "2", "--count", "1", "--seed", "3", "-o",
                 str(tmp_path / "varied.png")]) == 0
    assert main(["variations", str(tmp_path / "plain.png"), "--model", "tiny", "--steps", "2",
                 "--count", "1", "--seed", "3", "--lora", "tiny-ink:0.8", "-o",
                 str(tmp_path / "unvaried.png")]) == 0
    assert main(["variations", str(tmp_path / "plain.png"), "--model", "tiny", "--steps", "2",
                 "--count", "1", "--seed", "3", "-o", str(tmp_path / "plainer.png")]) == 0
    with Image.open(tmp_path / "varied.png") as tag, \
            Image.open(tmp_path / "unvaried.png") as option, \
            Image.open(tmp_path / "plainer.png") as none:
        assert np.array_equal(np.asarray(tag), np.asarray(option))  # the tag, or --lora
        assert not np.array_equal(np.asarray(tag), np.asarray(none))
    capsys.readouterr()
    assert main(["generate", "x", "--model", "tiny", "--lora", "nope:1"]) == 1
    assert capsys.readouterr().err.strip().endswith(
        "No LoRA named 'nope' is installed (installed LoRAs: tiny-ink); add one with: easel "
        "models import FILE.safetensors.")


def test_a_picture_names_a_pickled_lora_by_the_file_imported(home, home_with_tiny, tmp_path):
    import shutil

    from PIL import Image

    from desktop.cli import main

    shutil.copytree(home_with_tiny, home)
    tensors = safetensors_torch.load_file(str(home / "models" / "tiny-ink" / "lora.safetensors"))
    torch.save(tensors, tmp_path / "pickled-ink.pt")
    assert main(["models", "import", str(tmp_path / "pickled-ink.pt")]) == 0
    expected = hashlib.sha256((tmp_path / "pickled-ink.pt").read_bytes()).hexdigest()[:12]
    converted = (home / "models" / "pickled-ink" / "lora.safetensors").read_bytes()
    assert autov3(converted)[:12] != expected  # what the record read before
    assert main(["generate", "a red chair <lora:pickled-ink:0.8>", "--model", "tiny",
                 "--width", "64", "--height", "48", "--steps", "2", "--seed", "3", "-o",
                 str(tmp_path / "tagged.png")]) == 0
    with Image.open(tmp_path / "tagged.png") as image:
        assert f'Lora hashes: "pickled-ink: {expected}"' in image.text["parameters"]
        assert json.loads(image.text["easel"])["loras"] == [
            {"name": "pickled-ink", "weight": 0.8, "hash": expected}]


def test_the_window_resolves_prompt_tags_to_files(home, home_with_tiny):
    import shutil

    from desktop.app.generation import with_prompt_loras
    from desktop.model_store import ModelStore
    from desktop.paths import models_dir
    from engine.request import HiresFixRequest

    shutil.copytree(home_with_tiny, home)
    store = ModelStore(models_dir())
    plain = TextToImageRequest("a red chair", width=64, height=48)
    assert with_prompt_loras(store, plain) is plain
    tagged = with_prompt_loras(store, HiresFixRequest(TextToImageRequest(
        "a red chair <lora:tiny-ink:0.5> <lora:tiny-ink:0.25>", width=64, height=48), 2.0))
    assert tagged.base.loras == ((str(store.root / "tiny-ink" / "lora.safetensors"), 0.75),)
    with pytest.raises(ModelError, match="No LoRA named 'nope' is installed"):
        with_prompt_loras(store, TextToImageRequest("<lora:nope:1> a cat"))


# --- maps for graphs exported elsewhere ---------------------------------------------------------

@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_a_map_from_node_names_agrees_with_the_map_by_value(family, tmp_path):
    """ONNX folders from other tools carry no map; theirs is derived from the module scopes in
    node names at import. On our own exports it must agree with the map found by value, for
    every MatMul, Gemm and Conv weight (all a LoRA can name)."""
    import shutil

    from engine.export.weights_map import write_weights_map_from_names

    source = tiny_models.tiny_onnx("sd1") if family == "sd1" else tiny_models_xl.tiny_onnx(
        "sdxl")
    components = ("text_encoder", "unet") + (("text_encoder_2",) if family == "sdxl" else ())
    for component in components:
        (tmp_path / component).mkdir()
        shutil.copyfile(source / component / "model.onnx", tmp_path / component / "model.onnx")
        write_weights_map_from_names(tmp_path / component / "model.onnx")
        by_name = json.loads((tmp_path / component / "weights_map.json").read_text())["weights"]
        by_value = json.loads((source / component / "weights_map.json").read_text())["weights"]
        assert by_name, component
        assert {name: by_value[name] for name in by_name} == by_name
        missing = {name for name in set(by_value) - set(by_name)
                   if "embedding" not in name}  # Gather tables: no LoRA names them
        assert not missing, sorted(missing)[:3]


def test_an_imported_onnx_folder_gets_a_map(tmp_path):
    import shutil

    from engine.export.onnx_folder import import_onnx_folder

    source = tmp_path / "optimum-like"
    shutil.copytree(tiny_models.tiny_onnx("sd1"), source)
    (source / "easel.json").unlink()
    for old in source.glob("*/weights_map.json"):
        old.unlink()
    import_onnx_folder(source, tmp_path / "installed")
    assert sorted(path.parent.name for path in (tmp_path / "installed").glob(
        "*/weights_map.json")) == ["text_encoder", "unet"]
