"""Image prompts (IP-Adapter): imports through the model store, the graphs against
transformers/diffusers, the UNet with image tokens against diffusers' IPAdapterAttnProcessor,
and text to image through ImagePromptGuide against diffusers' pipeline with
``load_ip_adapter``. Tiny random models (tests/tiny_ip_adapters.py); each parity is shown to
fail when the scale is wrong or tokens are dropped.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from desktop.model_store import ModelStore
from engine.errors import BadRequest, ModelError
from engine.image_prompt.guide import ImagePromptGuide
from engine.image_prompt.prompt import ImagePrompt
from engine.image_prompt.unet_edit import IP_SCALE, IP_TOKENS, ip_unet_path
from engine.manifest import write_manifest
from engine.model import load_model
from engine.pipelines.text_to_image import TextToImagePipeline
from engine.request import TextToImageRequest
from engine.runtime import RuntimeOptions, get_session
from tests import tiny_ip_adapters as tiny

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning",
                                        "ignore::FutureWarning", "ignore::UserWarning")

WIDTH, HEIGHT, STEPS = 64, 48, 4
PROMPT, NEGATIVE = "a photo of an astronaut riding a horse", "blurry"
FILES = {"base": tiny.BASE_FILE, "plus": tiny.PLUS_FILE}


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def hub(tmp_path_factory) -> Path:
    """h94/IP-Adapter's layout, tiny: ``root/models/...``."""
    root = tmp_path_factory.mktemp("hub")
    tiny.save_hub_layout(root)
    return root


@pytest.fixture(scope="module")
def installed(hub, tmp_path_factory) -> dict[str, Path]:
    """The adapters (base, plus, base from the .bin pickle) and the encoder, imported."""
    store = ModelStore(tmp_path_factory.mktemp("store") / "models")
    models = hub / "models"
    found = {name: store.import_model(models / FILES[name], name, family="sd1").path
             for name in FILES}
    found["pickle"] = store.import_model(models / tiny.PICKLE_FILE, "pickle", family="sd1").path
    found["encoder"] = store.import_model(models / "image_encoder" / "model.safetensors",
                                          "encoder").path
    found["store"] = store.root
    return found


@pytest.fixture(scope="module")
def model(installed_tiny_sd1, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    return load_model(installed_tiny_sd1, RuntimeOptions(optimized_cache=cache))


def diffusers_pipe(folder: Path, hub: Path | None = None, variant: str = "base"):
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(
        folder, safety_checker=None, requires_safety_checker=False)
    if hub is not None:
        pipe.load_ip_adapter(str(hub), subfolder="models", weight_name=FILES[variant])
    pipe.set_progress_bar_config(disable=True)
    return pipe


def described(folder: Path) -> dict:
    return json.loads((folder / "easel.json").read_text(encoding="utf-8"))


# --- import --------------------------------------------------------------------------------

def test_the_store_imports_adapters_and_the_encoder(installed):
    base, plus = described(installed["base"]), described(installed["plus"])
    assert {key: base[key] for key in ("kind", "family", "variant", "tokens",
                                       "cross_attention_dim", "encoder_width", "layers")} == {
        "kind": "ip_adapter", "family": "sd1", "variant": "base", "tokens": 4,
        "cross_attention_dim": 32, "encoder_width": 16, "layers": 6}
    assert (plus["variant"], plus["tokens"], plus["encoder_width"]) == ("plus", 16, 32)
    pickle = described(installed["pickle"])
    assert {**pickle, "source": ""} == {**base, "source": ""}
    assert (installed["pickle"] / "ip_adapter.safetensors").read_bytes() == (
        installed["base"] / "ip_adapter.safetensors").read_bytes()
    encoder = described(installed["encoder"])
    assert (encoder["kind"], encoder["width"], encoder["projection"], encoder["image_size"],
            encoder["tokens"]) == ("image_encoder", 32, 16, 224, 257)
    store = ModelStore(installed["store"])
    kinds = {model.name: model.kind for model in store.installed()}
    assert kinds == {"base": "ip_adapter", "plus": "ip_adapter", "pickle": "ip_adapter",
                     "encoder": "image_encoder"}


def test_a_width_no_family_has_needs_the_family(hub, tmp_path):
    store = ModelStore(tmp_path / "models")
    with pytest.raises(ModelError, match="no family Easel knows.*--family"):
        store.import_model(hub / "models" / tiny.BASE_FILE)
    assert store.installed() == []


# --- the graphs ----------------------------------------------------------------------------

def test_the_encoder_graph_gives_what_transformers_gives(installed):
    encoder = tiny.tiny_image_encoder()
    pixels = np.random.default_rng(0).standard_normal((2, 3, 224, 224), dtype=np.float32)
    session = get_session(installed["encoder"] / "model.onnx")
    embeds, hidden = session.run({"pixel_values": pixels},
                                 ["image_embeds", "penultimate_hidden_states"])
    with torch.no_grad():
        output = encoder(torch.from_numpy(pixels), output_hidden_states=True)
    np.testing.assert_allclose(embeds, output.image_embeds.numpy(), atol=1e-4)
    np.testing.assert_allclose(hidden, output.hidden_states[-2].numpy(), atol=1e-4)
    assert np.abs(hidden - output.hidden_states[-1].numpy()).max() > 1e-2  # not the last


def test_pictures_are_read_as_clip_image_processor_reads_them(installed, model):
    from engine.image_prompt.sessions import ImageEncoder

    processor = transformers.CLIPImageProcessor(size=224, crop_size=224)
    encoder = ImageEncoder(installed["encoder"], model.runtime)
    rng = np.random.default_rng(1)
    for shape in ((224, 224, 3), (300, 260, 3), (200, 333, 3)):
        picture = rng.integers(0, 256, shape, dtype=np.uint8)
        theirs = processor(images=picture, return_tensors="np").pixel_values
        np.testing.assert_allclose(encoder.pixel_values(picture), theirs, atol=2e-2)


@pytest.mark.parametrize("variant", ["base", "plus"])
def test_the_projection_graph_gives_what_diffusers_gives(variant, installed, hub,
                                                         tiny_sd1_diffusers):
    pipe = diffusers_pipe(tiny_sd1_diffusers, hub, variant)
    projection = pipe.unet.encoder_hid_proj.image_projection_layers[0]
    shape = (2, 16) if variant == "base" else (2, 257, 32)
    encoded = np.random.default_rng(2).standard_normal(shape, dtype=np.float32)
    session = get_session(installed[variant] / "image_projection.onnx")
    (ours,) = session.run({session.input_names[0]: encoded}, ["ip_tokens"])
    with torch.no_grad():
        theirs = projection(torch.from_numpy(encoded)).numpy()
    assert ours.shape == (2, 4 if variant == "base" else 16, 32)
    np.testing.assert_allclose(ours, theirs, atol=1e-4)


class _Same(torch.nn.Module):
    """In place of diffusers' projection: the UNet then reads the tokens it is given."""

    def forward(self, tokens):
        return tokens


@pytest.mark.parametrize("variant", ["base", "plus"])
def test_the_unet_with_image_tokens_is_diffusers_unet_with_the_adapter(
        variant, installed, hub, model, tiny_sd1_diffusers):
    pipe = diffusers_pipe(tiny_sd1_diffusers, hub, variant)
    pipe.unet.encoder_hid_proj = _Same()
    adapter = installed[variant]
    path = ip_unet_path(model.folder, model.hash, adapter, "a" + variant,
                        model.runtime.optimized_cache)
    session = get_session(path)
    rng = np.random.default_rng(3)
    count = 4 if variant == "base" else 16
    feeds = {"sample": rng.standard_normal((2, 4, 12, 10), dtype=np.float32),
             "timestep": np.array([500.0, 500.0], np.float32),
             "encoder_hidden_states": rng.standard_normal((2, 7, 32), dtype=np.float32),
             IP_TOKENS: rng.standard_normal((2, 2 * count, 32), dtype=np.float32)}

    def theirs(scale: float, tokens: np.ndarray) -> np.ndarray:
        pipe.set_ip_adapter_scale(scale)
        pictures = torch.from_numpy(tokens).reshape(2, -1, count, 32)  # two pictures
        with torch.no_grad():
            return pipe.unet(torch.from_numpy(feeds["sample"]), torch.tensor([500.0, 500.0]),
                             torch.from_numpy(feeds["encoder_hidden_states"]),
                             added_cond_kwargs={"image_embeds": [pictures]},
                             return_dict=False)[0].numpy()

    def ours(scale: float, tokens: np.ndarray) -> np.ndarray:
        inputs = {**feeds, IP_TOKENS: tokens, IP_SCALE: np.full(2, scale, np.float32)}
        return session.run(inputs, ["out_sample"])[0]

    tokens = feeds[IP_TOKENS]
    expected = theirs(0.7, tokens)
    np.testing.assert_allclose(ours(0.7, tokens), expected, atol=1e-4)
    plain = model.unet.run({k: feeds[k] for k in ("sample", "timestep",
                                                  "encoder_hidden_states")}, ["out_sample"])[0]
    np.testing.assert_allclose(ours(0.0, tokens), plain, atol=1e-5)
    # It can fail: a wrong scale, or one picture's tokens dropped, is far off.
    assert np.abs(ours(0.35, tokens) - expected).max() > 1e-2
    assert np.abs(theirs(0.7, tokens[:, :count].repeat(2, axis=1)) - expected).max() > 1e-2
    assert np.abs(expected - plain).max() > 1e-2


def test_the_unet_with_image_tokens_takes_controlnet_residuals_too(installed, model):
    from engine.control.unet_variant import residual_names

    adapter = installed["base"]
    plain_path = ip_unet_path(model.folder, model.hash, adapter, "abase",
                              model.runtime.optimized_cache)
    both_path = ip_unet_path(model.folder, model.hash, adapter, "abase",
                             model.runtime.optimized_cache, control=True)
    plain, both = get_session(plain_path), get_session(both_path)
    names = residual_names(6)  # the tiny UNet: conv_in, 2 + 2 layers, one downsampler
    assert set(both.input_names) >= {IP_TOKENS, IP_SCALE, *names}
    rng = np.random.default_rng(4)
    feeds = {"sample": rng.standard_normal((1, 4, 8, 8), dtype=np.float32),
             "timestep": np.array([300.0], np.float32),
             "encoder_hidden_states": rng.standard_normal((1, 7, 32), dtype=np.float32),
             IP_TOKENS: rng.standard_normal((1, 4, 32), dtype=np.float32),
             IP_SCALE: np.array([0.9], np.float32)}
    expected = plain.run(feeds, ["out_sample"])[0]
    # Zero residuals of the sizes the ControlNet would give: the IP UNet's output.
    control_shapes = _residual_shapes(model, feeds)
    residuals = {name: np.zeros(shape, np.float32) for name, shape in
                 zip(names, control_shapes, strict=True)}
    np.testing.assert_allclose(both.run({**feeds, **residuals}, ["out_sample"])[0], expected,
                               atol=1e-5)


def _residual_shapes(model, feeds) -> list[tuple[int, ...]]:
    """The skip tensors' shapes of the tiny UNet at this latent size (channels from its
    config: 32 for conv_in and the first block, 64 after)."""
    height, width = feeds["sample"].shape[2:]
    half = (1, 64, height // 2, width // 2)
    return [(1, 32, height, width)] * 3 + [(1, 32, height // 2, width // 2)] + [half] * 3


def test_the_unet_edit_needs_neither_torch_nor_onnx(installed, model, tmp_path):
    code = (
        "import sys\n"
        "for name in ('torch', 'onnx', 'diffusers', 'transformers'): sys.modules[name] = None\n"
        "from pathlib import Path\n"
        "from engine.image_prompt.unet_edit import make_ip_unet\n"
        f"make_ip_unet(Path({str(model.folder / 'unet' / 'model.onnx')!r}),"
        f" Path({str(installed['base'])!r}), Path({str(tmp_path / 'made')!r}))\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])
    assert (tmp_path / "made" / "model.onnx").is_file()


# --- text to image through the guide -------------------------------------------------------

def run_ours(model, request, monkeypatch) -> tuple[np.ndarray, np.ndarray, tuple]:
    """Our picture, the latents it decoded and what it records of its image prompts."""
    pipeline = TextToImagePipeline(model)
    decode, final = pipeline.decode_latents, {}

    def keep(latents, cancel, notes=None):
        final["latents"] = latents
        return decode(latents, cancel, notes)

    monkeypatch.setattr(pipeline, "decode_latents", keep)
    image = pipeline(request).images[0]
    return image.pixels, final["latents"], image.parameters.image_prompts


def run_theirs(pipe, pictures, scale: float, latents: np.ndarray):
    from PIL import Image

    pipe.set_ip_adapter_scale(scale)
    pipe.scheduler = diffusers.EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    images = [Image.fromarray(picture) for picture in pictures]
    arguments = dict(prompt=PROMPT, negative_prompt=NEGATIVE, height=HEIGHT, width=WIDTH,
                     num_inference_steps=STEPS, guidance_scale=7.5,
                     latents=torch.from_numpy(latents),
                     ip_adapter_image=[images if len(images) > 1 else images[0]])
    with torch.no_grad():
        image = pipe(output_type="np", **arguments).images[0]
        final = pipe(output_type="latent", **arguments).images.numpy()
    return (image * 255).round().astype(np.uint8), final


@pytest.mark.slow
@pytest.mark.parametrize("variant,count", [("base", 1), ("plus", 1), ("base", 2)])
def test_text_to_image_matches_diffusers(variant, count, installed, hub, model,
                                         tiny_sd1_diffusers, monkeypatch):
    rng = np.random.default_rng(5)
    pictures = [rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for _ in range(count)]
    latents = rng.standard_normal((1, 4, HEIGHT // 2, WIDTH // 2), dtype=np.float32)
    prompts = [ImagePrompt(installed[variant], installed["encoder"], picture, 0.8)
               for picture in pictures]
    request = TextToImageRequest(PROMPT, NEGATIVE, width=WIDTH, height=HEIGHT, steps=STEPS,
                                 guidance=7.5, scheduler="euler", seed=5, latents=latents,
                                 image_prompts=tuple(prompts))
    ours, our_latents, recorded = run_ours(model, request, monkeypatch)
    pipe = diffusers_pipe(tiny_sd1_diffusers, hub, variant)
    theirs, their_latents = run_theirs(pipe, pictures, 0.8, latents)
    assert np.abs(ours.astype(int) - theirs.astype(int)).max() <= 2
    np.testing.assert_allclose(our_latents, their_latents, rtol=1e-3, atol=1e-3)
    # It can fail: another scale, or one picture fewer, is far off.
    _, other = run_theirs(pipe, pictures, 0.4, latents)
    assert np.abs(other - our_latents).max() > 1e-2
    if count > 1:
        _, fewer = run_theirs(pipe, pictures[:1], 0.8, latents)
        assert np.abs(fewer - our_latents).max() > 1e-2
    assert [(r.adapter, r.encoder, r.weight) for r in recorded] == [
        (variant, "encoder", 0.8)] * count


# --- bad input, one sentence each ------------------------------------------------------------

def test_bad_image_prompts_are_one_sentence(installed, model, hub, tmp_path):
    picture = np.zeros((64, 64, 3), np.uint8)
    other_family = ModelStore(installed["store"]).import_model(
        hub / "models" / tiny.BASE_FILE, "for-sd2", family="sd2").path
    with pytest.raises(BadRequest, match="is for Stable Diffusion 2.x models; .* is Stable "
                                         "Diffusion 1.x"):
        ImagePromptGuide(model, [ImagePrompt(other_family, installed["encoder"], picture)],
                         True)
    narrow = tmp_path / "narrow-encoder"
    shutil.copytree(installed["encoder"], narrow)
    data = described(narrow)
    (narrow / "easel.json").write_text(json.dumps({**data, "projection": 8}), encoding="utf-8")
    write_manifest(narrow)
    with pytest.raises(BadRequest, match="reads image embeddings 16 wide.*gives them 8 wide"):
        ImagePromptGuide(model, [ImagePrompt(installed["base"], narrow, picture)], True)
    unreadable = tmp_path / "picture.png"
    unreadable.write_text("not a picture", encoding="utf-8")
    with pytest.raises(BadRequest, match="'picture.png' cannot be read"):
        ImagePromptGuide(model, [ImagePrompt(installed["base"], installed["encoder"],
                                             unreadable)], True)
    with pytest.raises(BadRequest, match="one IP-Adapter at a time"):
        ImagePromptGuide(model, [ImagePrompt(installed["base"], installed["encoder"], picture),
                                 ImagePrompt(installed["plus"], installed["encoder"], picture)],
                         True)
    with pytest.raises(BadRequest, match="weight must be a number between 0 and 2"):
        ImagePrompt(installed["base"], installed["encoder"], picture, 3.0)


@pytest.mark.slow
def test_an_image_prompt_with_a_control_matches_diffusers(installed, hub, model,
                                                          tiny_sd1_diffusers, tmp_path,
                                                          monkeypatch):
    """Both at once: the UNet with image tokens, edited again to take ControlNet residuals,
    against diffusers' ControlNet pipeline with the adapter loaded."""
    from engine.control.control import Control
    from tests.test_controlnet_parity import install_controlnet
    from tests.tiny_controlnets import tiny_sd1_controlnet

    rng = np.random.default_rng(8)
    reference = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)
    control_picture = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    latents = rng.standard_normal((1, 4, HEIGHT // 2, WIDTH // 2), dtype=np.float32)
    controlnet = tiny_sd1_controlnet(seed=0)
    folder = install_controlnet(controlnet, tmp_path / "canny", "sd1")
    request = TextToImageRequest(
        PROMPT, NEGATIVE, width=WIDTH, height=HEIGHT, steps=STEPS, guidance=7.5,
        scheduler="euler", seed=5, latents=latents,
        image_prompts=(ImagePrompt(installed["base"], installed["encoder"], reference, 0.8),),
        controls=(Control(folder, control_picture, 0.9),))
    ours, our_latents, _ = run_ours(model, request, monkeypatch)

    from PIL import Image

    pipe = diffusers_pipe(tiny_sd1_diffusers, hub, "base")
    controlled = diffusers.StableDiffusionControlNetPipeline.from_pipe(pipe,
                                                                       controlnet=controlnet)
    controlled.set_ip_adapter_scale(0.8)
    controlled.scheduler = diffusers.EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    controlled.set_progress_bar_config(disable=True)
    arguments = dict(prompt=PROMPT, negative_prompt=NEGATIVE, height=HEIGHT, width=WIDTH,
                     num_inference_steps=STEPS, guidance_scale=7.5,
                     latents=torch.from_numpy(latents), image=Image.fromarray(control_picture),
                     controlnet_conditioning_scale=0.9,
                     ip_adapter_image=[Image.fromarray(reference)])
    with torch.no_grad():
        theirs = controlled(output_type="np", **arguments).images[0]
        their_latents = controlled(output_type="latent", **arguments).images.numpy()
        without = controlled(output_type="latent", **{**arguments,
                                                      "controlnet_conditioning_scale": 0.0}
                             ).images.numpy()
    theirs = (theirs * 255).round().astype(np.uint8)
    assert np.abs(ours.astype(int) - theirs.astype(int)).max() <= 2
    np.testing.assert_allclose(our_latents, their_latents, rtol=1e-3, atol=1e-3)
    assert np.abs(without - our_latents).max() > 1e-2, "the control must matter"


def test_layout_regions_take_image_prompts_as_text_to_image_does(installed, model):
    """Every prompt's row reads the reference's tokens, the negative prompt's row the
    negative ones: a layout whose one region repeats the global prompt is text to image."""
    from engine.pipelines.regions import RegionsPipeline
    from engine.request import RegionsRequest

    rng = np.random.default_rng(12)
    reference = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)
    prompts = (ImagePrompt(installed["base"], installed["encoder"], reference, 0.8),)
    settings = dict(width=WIDTH, height=HEIGHT, steps=3, guidance=7.5, scheduler="euler",
                    seed=4, image_prompts=prompts)
    text = TextToImagePipeline(model)(TextToImageRequest(PROMPT, **settings)).images[0]
    same = RegionsPipeline(model)(RegionsRequest(PROMPT, [((0, 0, 32, 32), PROMPT)],
                                                 **settings)).images[0]
    assert np.abs(text.pixels.astype(int) - same.pixels.astype(int)).max() <= 1
    assert same.parameters.image_prompts == text.parameters.image_prompts
    region = [((0, 0, 32, 32), "a bowl of soup")]
    steered = RegionsPipeline(model)(RegionsRequest(PROMPT, region, **settings)).images[0]
    plain = RegionsPipeline(model)(RegionsRequest(
        PROMPT, region, **{**settings, "image_prompts": ()})).images[0]
    assert np.abs(steered.pixels.astype(int) - plain.pixels.astype(int)).mean() > 0.5


def test_the_encoder_is_let_go_once_the_pictures_are_encoded(installed, model):
    """Its weights would otherwise stay in memory through the whole denoising."""
    from engine.runtime.sessions import is_loaded

    reference = np.zeros((224, 224, 3), np.uint8)
    guide = ImagePromptGuide(model, [ImagePrompt(installed["base"], installed["encoder"],
                                                 reference)], True)
    assert guide.positive is not None
    assert not is_loaded(installed["encoder"] / "model.onnx")
