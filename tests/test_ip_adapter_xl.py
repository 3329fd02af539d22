"""Image prompts on SDXL: tiny SDXL IP-Adapters (tests/tiny_ip_adapters.py, h94's
``sdxl_models/`` layout) imported through the model store, the UNet with image tokens against
diffusers' SDXL UNet with the adapter loaded, and text to image against
``StableDiffusionXLPipeline`` with ``load_ip_adapter`` (and with an SDXL ControlNet at the
same time). The tiny SDXL UNet has two transformer layers per attention (twelve
cross-attentions), so a layer taken in another order than diffusers numbers them shows. Each
parity is shown to fail at another scale.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from desktop.model_store import ModelStore
from engine.image_prompt.prompt import ImagePrompt
from engine.image_prompt.unet_edit import IP_SCALE, IP_TOKENS, ip_unet_path
from engine.model import load_model
from engine.request import TextToImageRequest
from engine.runtime import RuntimeOptions, get_session
from tests import tiny_ip_adapters as tiny
from tests import tiny_models_xl
from tests.test_ip_adapter import run_ours

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
pytest.importorskip("transformers")

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning",
                                        "ignore::FutureWarning", "ignore::UserWarning")

WIDTH, HEIGHT, STEPS = 64, 48, 4
PROMPT, NEGATIVE = "a photo of an astronaut riding a horse", "blurry"
WIDTH_XL = tiny.XL_CROSS_ATTENTION_DIM
# Each adapter's file and the encoder folder diffusers reads it with (h94's layout: the
# "_vit-h" adapters read the SD 1.x encoder in models/image_encoder/).
ADAPTERS = {"base": (tiny.XL_BASE_FILE, "image_encoder", "encoder-bigg"),
            "plus": (tiny.XL_PLUS_FILE, "models/image_encoder", "encoder-h")}
TOKENS = {"base": tiny.BASE_TOKENS, "plus": tiny.PLUS_TOKENS}


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def hub(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hub")
    tiny.save_xl_hub_layout(root)
    return root


@pytest.fixture(scope="module")
def installed(hub, tmp_path_factory) -> dict[str, Path]:
    """Both adapters imported with ``family="sdxl"`` (64 is no family's width), and both
    encoders."""
    store = ModelStore(tmp_path_factory.mktemp("store") / "models")
    models = hub / "sdxl_models"
    found = {name: store.import_model(models / file, name, family="sdxl").path
             for name, (file, _, _) in ADAPTERS.items()}
    found["encoder-bigg"] = store.import_model(
        models / "image_encoder" / "model.safetensors", "encoder-bigg").path
    found["encoder-h"] = store.import_model(
        hub / "models" / "image_encoder" / "model.safetensors", "encoder-h").path
    return found


@pytest.fixture(scope="module")
def sdxl_diffusers() -> Path:
    return tiny_models_xl.tiny_diffusers("sdxl")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tiny_models_xl.installed_copy(tiny_models_xl.tiny_onnx("sdxl"),
                                           tmp_path_factory.mktemp("m") / "sdxl")
    return load_model(folder, RuntimeOptions(optimized_cache=tmp_path_factory.mktemp("cache")))


def diffusers_pipe(folder: Path, hub: Path, variant: str):
    file, encoder, _ = ADAPTERS[variant]
    pipe = diffusers.StableDiffusionXLPipeline.from_pretrained(folder, add_watermarker=False)
    pipe.load_ip_adapter(str(hub), subfolder="sdxl_models", weight_name=file,
                         image_encoder_folder=encoder)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def described(folder: Path) -> dict:
    return json.loads((folder / "easel.json").read_text(encoding="utf-8"))


def test_the_store_imports_sdxl_adapters(installed):
    base, plus = described(installed["base"]), described(installed["plus"])
    shape = ("kind", "family", "variant", "tokens", "cross_attention_dim", "encoder_width",
             "layers")
    assert [base[key] for key in shape] == ["ip_adapter", "sdxl", "base", 4, 64, 24, 12]
    assert [plus[key] for key in shape] == ["ip_adapter", "sdxl", "plus", 16, 64, 32, 12]
    assert described(installed["encoder-bigg"])["projection"] == 24
    assert described(installed["encoder-h"])["width"] == 32


class _Same(torch.nn.Module):
    """In place of diffusers' projection: the UNet then reads the tokens it is given."""

    def forward(self, tokens):
        return tokens


@pytest.mark.parametrize("variant", ["base", "plus"])
def test_the_sdxl_unet_with_image_tokens_is_diffusers_unet_with_the_adapter(
        variant, installed, hub, model, sdxl_diffusers):
    pipe = diffusers_pipe(sdxl_diffusers, hub, variant)
    pipe.unet.encoder_hid_proj = _Same()
    path = ip_unet_path(model.folder, model.hash, installed[variant], "xl" + variant,
                        model.runtime.optimized_cache)
    session = get_session(path)
    rng = np.random.default_rng(3)
    count = TOKENS[variant]
    feeds = {"sample": rng.standard_normal((2, 4, 12, 10), dtype=np.float32),
             "timestep": np.array([500.0, 500.0], np.float32),
             "encoder_hidden_states": rng.standard_normal((2, 7, WIDTH_XL), dtype=np.float32),
             "text_embeds": rng.standard_normal((2, 32), dtype=np.float32),
             "time_ids": np.array([[48, 64, 0, 0, 48, 64]] * 2, np.float32)}
    tokens = rng.standard_normal((2, count, WIDTH_XL), dtype=np.float32)

    def theirs(scale: float) -> np.ndarray:
        pipe.set_ip_adapter_scale(scale)
        t = {name: torch.from_numpy(value) for name, value in feeds.items()}
        with torch.no_grad():
            return pipe.unet(t["sample"], t["timestep"], t["encoder_hidden_states"],
                             added_cond_kwargs={"text_embeds": t["text_embeds"],
                                                "time_ids": t["time_ids"],
                                                "image_embeds": [torch.from_numpy(tokens)]},
                             return_dict=False)[0].numpy()

    def ours(scale: float) -> np.ndarray:
        inputs = {**feeds, IP_TOKENS: tokens, IP_SCALE: np.full(2, scale, np.float32)}
        return session.run(inputs, ["out_sample"])[0]

    expected = theirs(0.7)
    np.testing.assert_allclose(ours(0.7), expected, atol=1e-4)
    plain = model.unet.run(feeds, ["out_sample"])[0]
    np.testing.assert_allclose(ours(0.0), plain, atol=1e-5)
    # It can fail: another scale is far off, and the adapter changes the output.
    assert np.abs(ours(0.35) - expected).max() > 1e-2
    assert np.abs(expected - plain).max() > 1e-2


def run_theirs(pipe, picture: np.ndarray, scale: float, latents: np.ndarray):
    from PIL import Image

    pipe.set_ip_adapter_scale(scale)
    pipe.scheduler = diffusers.EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    arguments = dict(prompt=PROMPT, negative_prompt=NEGATIVE, height=HEIGHT, width=WIDTH,
                     num_inference_steps=STEPS, guidance_scale=5.0,
                     latents=torch.from_numpy(latents),
                     ip_adapter_image=[Image.fromarray(picture)])
    with torch.no_grad():
        image = pipe(output_type="np", **arguments).images[0]
        final = pipe(output_type="latent", **arguments).images.numpy()
    return (image * 255).round().astype(np.uint8), final


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["base", "plus"])
def test_sdxl_text_to_image_matches_diffusers(variant, installed, hub, model, sdxl_diffusers,
                                              monkeypatch):
    rng = np.random.default_rng(5)
    picture = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)
    latents = rng.standard_normal((1, 4, HEIGHT // 2, WIDTH // 2), dtype=np.float32)
    encoder = installed[ADAPTERS[variant][2]]
    request = TextToImageRequest(
        PROMPT, NEGATIVE, width=WIDTH, height=HEIGHT, steps=STEPS, guidance=5.0,
        scheduler="euler", seed=5, latents=latents,
        image_prompts=(ImagePrompt(installed[variant], encoder, picture, 0.8),))
    ours, our_latents, recorded = run_ours(model, request, monkeypatch)
    pipe = diffusers_pipe(sdxl_diffusers, hub, variant)
    theirs, their_latents = run_theirs(pipe, picture, 0.8, latents)
    assert np.abs(ours.astype(int) - theirs.astype(int)).max() <= 2
    np.testing.assert_allclose(our_latents, their_latents, rtol=1e-3, atol=1e-3)
    # It can fail: another scale is far off.
    _, other = run_theirs(pipe, picture, 0.4, latents)
    assert np.abs(other - our_latents).max() > 1e-2
    assert [(r.adapter, r.weight) for r in recorded] == [(variant, 0.8)]


def test_layers_and_heads_follow_diffusers_on_sdxls_layout(tmp_path):
    """SDXL's own layout at a tiny width, too big to export in a test: three blocks, heads
    differing per block, and ten transformer layers in the last (SDXL's (1, 2, 10)), where
    "transformer_blocks.10" sorts before ".2" as text. The edit's order and heads, read from
    a weights map and config.json as an export writes them, are diffusers'."""
    from diffusers import UNet2DConditionModel

    from engine.image_prompt import unet_edit

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64, 128), layers_per_block=2, attention_head_dim=(1, 2, 4),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2, 10), cross_attention_dim=32, norm_num_groups=8,
        use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, projection_class_embeddings_input_dim=6 * 8 + 32)
    unet.save_config(tmp_path)
    weights = {name: {"initializer": f"unet.{name}", "shape": list(value.shape)}
               for name, value in unet.state_dict().items()
               if name.endswith(("attn2.to_q.weight", "attn2.to_out.0.weight"))}
    (tmp_path / "weights_map.json").write_text(json.dumps({"format": 1, "weights": weights}))
    theirs = [name.removesuffix(".processor") for name in unet.attn_processors
              if name.endswith("attn2.processor")]  # what load_ip_adapter numbers 1, 3, …
    ours = unet_edit._attention_modules(tmp_path)
    assert len(theirs) == 2 * 2 + 2 * 10 + 3 * 10 + 3 * 2 + 10  # 70, as SDXL has
    assert [module for module, _ in ours] == theirs
    heads = unet_edit._heads(tmp_path)
    for module, names in ours:
        attention = unet.get_submodule(module)
        assert (heads(module), names["inner"]) == (attention.heads, attention.inner_dim)


@pytest.mark.slow
def test_an_sdxl_image_prompt_with_a_control_matches_diffusers(installed, hub, model,
                                                               sdxl_diffusers, tmp_path,
                                                               monkeypatch):
    """The UNet with image tokens, edited again to take an SDXL ControlNet's residuals,
    against diffusers' SDXL ControlNet pipeline with the adapter loaded."""
    from PIL import Image

    from engine.control.control import Control
    from tests.test_controlnet_parity import install_controlnet
    from tests.tiny_controlnets import tiny_sdxl_controlnet

    rng = np.random.default_rng(8)
    reference = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)
    control_picture = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    latents = rng.standard_normal((1, 4, HEIGHT // 2, WIDTH // 2), dtype=np.float32)
    controlnet = tiny_sdxl_controlnet(seed=0)
    folder = install_controlnet(controlnet, tmp_path / "canny", "sdxl")
    request = TextToImageRequest(
        PROMPT, NEGATIVE, width=WIDTH, height=HEIGHT, steps=STEPS, guidance=5.0,
        scheduler="euler", seed=5, latents=latents,
        image_prompts=(ImagePrompt(installed["plus"], installed["encoder-h"], reference, 0.8),),
        controls=(Control(folder, control_picture, 0.9),))
    ours, our_latents, _ = run_ours(model, request, monkeypatch)

    pipe = diffusers_pipe(sdxl_diffusers, hub, "plus")
    controlled = diffusers.StableDiffusionXLControlNetPipeline.from_pipe(pipe,
                                                                         controlnet=controlnet)
    controlled.set_ip_adapter_scale(0.8)
    controlled.scheduler = diffusers.EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    controlled.set_progress_bar_config(disable=True)
    arguments = dict(prompt=PROMPT, negative_prompt=NEGATIVE, height=HEIGHT, width=WIDTH,
                     num_inference_steps=STEPS, guidance_scale=5.0,
                     latents=torch.from_numpy(latents), image=Image.fromarray(control_picture),
                     controlnet_conditioning_scale=0.9,
                     ip_adapter_image=[Image.fromarray(reference)])
    with torch.no_grad():
        theirs = controlled(output_type="np", **arguments).images[0]
        their_latents = controlled(output_type="latent", **arguments).images.numpy()
        without = controlled(output_type="latent", **{
            **arguments, "controlnet_conditioning_scale": 0.0}).images.numpy()
        controlled.set_ip_adapter_scale(0.4)
        other = controlled(output_type="latent", **arguments).images.numpy()
    theirs = (theirs * 255).round().astype(np.uint8)
    assert np.abs(ours.astype(int) - theirs.astype(int)).max() <= 2
    np.testing.assert_allclose(our_latents, their_latents, rtol=1e-3, atol=1e-3)
    assert np.abs(without - our_latents).max() > 1e-2, "the control must matter"
    assert np.abs(other - our_latents).max() > 1e-2, "the image prompt's scale must matter"
