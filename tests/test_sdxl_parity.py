"""SDXL: our export and ONNX pipeline make the same pixels as diffusers' StableDiffusionXLPipeline.

A tiny random-weight SDXL (two text encoders, size-conditioned UNet) exported by our exporter;
same initial latents and per-step noise for both; every pixel within 2/255 and the final
latents close. Also: the exported graphs' names and shapes, the description, and the
refusals that come with the families (inpainting / InstructPix2Pix labels).
"""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest

from engine.description import ModelDescription
from engine.errors import BadRequest, ModelError
from engine.model import load_model
from engine.pipelines.text_to_image import TextToImagePipeline
from engine.request import TextToImageRequest
from tests import tiny_models_xl

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
ort = pytest.importorskip("onnxruntime")

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

WIDTH, HEIGHT = 64, 48  # tiny VAE: factor 2 → 32×24 latents, non-square
PROMPT = "a photo of an astronaut riding a horse"
NEGATIVE = "blurry, low quality"
DIFFUSERS_SCHEDULERS = {
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_ancestral": ("EulerAncestralDiscreteScheduler", {}),
    "dpmpp_2m_karras": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++",
                                                        "solver_order": 2,
                                                        "use_karras_sigmas": True}),
}


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The tiny models run several times faster on one torch thread than on two that
    compete with ONNX Runtime's (and anything else on a 2-core machine); results are the same."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def sdxl_diffusers():
    return tiny_models_xl.tiny_diffusers("sdxl")


@pytest.fixture(scope="module")
def sdxl_onnx():
    return tiny_models_xl.tiny_onnx("sdxl")


@pytest.fixture(scope="module")
def sdxl_model(sdxl_onnx, tmp_path_factory):
    folder = tiny_models_xl.installed_copy(sdxl_onnx, tmp_path_factory.mktemp("m") / "sdxl")
    return load_model(folder)


# --- running both pipelines (also used by tests/test_few_step_parity.py) -------------------

def with_scheduler(pipe, scheduler_name: str | None):
    """``pipe`` with diffusers' namesake of our scheduler (None: the folder's own)."""
    if scheduler_name is not None:
        class_name, options = DIFFUSERS_SCHEDULERS[scheduler_name]
        pipe.scheduler = getattr(diffusers, class_name).from_config(pipe.scheduler.config,
                                                                     **options)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run_diffusers(pipe, seed: int, monkeypatch, output_type: str = "np",
                  **call) -> np.ndarray:
    """Feed diffusers our initial latents and, for stochastic steps, our per-step noise."""
    rng = np.random.default_rng(seed)
    factor = pipe.vae_scale_factor
    latents = rng.standard_normal((1, pipe.unet.config.in_channels, HEIGHT // factor,
                                   WIDTH // factor), dtype=np.float32)

    def our_noise(shape, generator=None, device=None, dtype=None, layout=None):
        return torch.from_numpy(rng.standard_normal(tuple(shape), dtype=np.float32))

    monkeypatch.setattr(sys.modules[type(pipe.scheduler).__module__], "randn_tensor",
                        our_noise, raising=False)
    with torch.no_grad():
        output = pipe(height=HEIGHT, width=WIDTH, latents=torch.from_numpy(latents),
                      output_type=output_type, **call)
    if output_type == "latent":
        return output.images.numpy()
    return (output.images[0] * 255).round().astype(np.uint8)


def run_ours(model, request: TextToImageRequest, monkeypatch) -> tuple[np.ndarray, np.ndarray]:
    """Our pixels and the final latents handed to the VAE."""
    pipeline = TextToImagePipeline(model)
    final = {}
    decode = pipeline.decode_latents

    def keep_latents(latents, cancel, notes=None):
        final["latents"] = latents
        return decode(latents, cancel, notes)

    monkeypatch.setattr(pipeline, "decode_latents", keep_latents)
    return pipeline(request).images[0].pixels, final["latents"]


def assert_same_picture(ours: np.ndarray, theirs: np.ndarray, our_latents: np.ndarray,
                        their_latents: np.ndarray) -> None:
    assert ours.shape == theirs.shape == (HEIGHT, WIDTH, 3)
    difference = np.abs(ours.astype(int) - theirs.astype(int))
    assert difference.max() <= 2, f"max pixel difference {difference.max()}/255"
    # The tiny VAE flattens small errors, so the latents are compared too, much more tightly.
    np.testing.assert_allclose(our_latents, their_latents, rtol=1e-3, atol=1e-3)
    assert ours.std() > 0


# --- parity ---------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize(("scheduler", "guidance", "negative"), [
    ("euler", 5.0, ""),  # an empty negative prompt is zeros (force_zeros_for_empty_prompt)
    ("euler", 5.0, NEGATIVE),
    ("euler_ancestral", 7.5, NEGATIVE),
    ("dpmpp_2m_karras", 1.0, ""),  # no guidance: one UNet pass per step
])
def test_sdxl_pixels_match_diffusers(sdxl_diffusers, sdxl_model, scheduler, guidance, negative,
                                     monkeypatch):
    steps, seed = 5, 42
    request = TextToImageRequest(PROMPT, negative, width=WIDTH, height=HEIGHT, steps=steps,
                                 guidance=guidance, scheduler=scheduler, seed=seed)
    ours, our_latents = run_ours(sdxl_model, request, monkeypatch)
    pipe = with_scheduler(diffusers.StableDiffusionXLPipeline.from_pretrained(
        sdxl_diffusers, add_watermarker=False), scheduler)
    # diffusers zeroes the negative only when none is given at all; "" means none to us.
    call = {"prompt": PROMPT, "negative_prompt": negative or None,
            "num_inference_steps": steps, "guidance_scale": guidance}
    theirs = run_diffusers(pipe, seed, monkeypatch, **call)
    their_latents = run_diffusers(pipe, seed, monkeypatch, "latent", **call)
    assert_same_picture(ours, theirs, our_latents, their_latents)


def test_sdxl_prompt_and_size_conditioning_matter(sdxl_model):
    pipeline = TextToImagePipeline(sdxl_model)

    def image(prompt, width=WIDTH, guidance=5.0):
        request = TextToImageRequest(prompt, width=width, height=HEIGHT, steps=2,
                                     guidance=guidance, scheduler="euler", seed=1)
        return pipeline(request).images[0].pixels.astype(int)

    base = image(PROMPT)
    assert np.array_equal(base, image(PROMPT))
    assert np.abs(base - image("a bowl of soup")).mean() > 0.1
    assert image(PROMPT, width=80).shape == (HEIGHT, 80, 3)


# --- the export -----------------------------------------------------------------------------

def _session(path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def test_sdxl_export_layout_and_description(sdxl_onnx):
    description = ModelDescription.load(sdxl_onnx)
    assert (description.family, description.text_encoders) == ("sdxl", 2)
    assert description.text_hidden_state == "penultimate"
    assert description.size_conditioning and description.force_zeros_for_empty_prompt
    assert (description.default_guidance, description.default_scheduler) == (5.0, "dpmpp_2m_karras")
    assert description.latent_scaling_factor == pytest.approx(0.13025)
    assert (description.variant, description.distillation) == ("text-to-image", None)
    assert json.loads((sdxl_onnx / "easel.json").read_text())["format"] == 2
    index = json.loads((sdxl_onnx / "model_index.json").read_text())
    assert index["text_encoder_2"] == ["diffusers", "OnnxRuntimeModel"]
    assert (sdxl_onnx / "tokenizer_2" / "tokenizer.json").is_file()
    assert (sdxl_onnx / "text_encoder_2" / "config.json").is_file()
    layers = [f"hidden_states.{index}" for index in range(6)]  # 5 layers + the embeddings
    first = [o.name for o in _session(sdxl_onnx / "text_encoder" / "model.onnx").get_outputs()]
    assert first == ["last_hidden_state", "pooler_output", *layers]
    second = [o.name for o in _session(sdxl_onnx / "text_encoder_2" / "model.onnx").get_outputs()]
    assert second == ["text_embeds", "last_hidden_state", *layers]
    unet = _session(sdxl_onnx / "unet" / "model.onnx")
    inputs = {i.name: i.shape for i in unet.get_inputs()}
    assert inputs == {"sample": ["batch", 4, "height", "width"], "timestep": ["batch"],
                      "encoder_hidden_states": ["batch", "sequence", 64],
                      "text_embeds": ["batch", 32], "time_ids": ["batch", 6]}


def test_sdxl_graphs_match_pytorch_at_another_batch_and_size(sdxl_diffusers, sdxl_onnx):
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModelWithProjection

    rng = np.random.default_rng(0)
    ids = np.array([[49406, 320, 1125, 539, 49407] + [0] * 72] * 2, dtype=np.int32)
    encoder = CLIPTextModelWithProjection.from_pretrained(sdxl_diffusers / "text_encoder_2")
    with torch.no_grad():
        expected = encoder(torch.from_numpy(ids).long(), output_hidden_states=True)
    outputs = _session(sdxl_onnx / "text_encoder_2" / "model.onnx").run(None, {"input_ids": ids})
    np.testing.assert_allclose(outputs[0], expected.text_embeds.numpy(), atol=1e-4)
    np.testing.assert_allclose(outputs[-2], expected.hidden_states[-2].numpy(), atol=1e-4)

    unet = UNet2DConditionModel.from_pretrained(sdxl_diffusers / "unet").eval()
    feeds = {
        "sample": rng.standard_normal((2, 4, 13, 10), dtype=np.float32),
        "timestep": np.array([500.0, 20.0], dtype=np.float32),
        "encoder_hidden_states": rng.standard_normal((2, 77, 64), dtype=np.float32),
        "text_embeds": rng.standard_normal((2, 32), dtype=np.float32),
        "time_ids": np.array([[104, 80, 0, 0, 104, 80], [512, 512, 8, 0, 256, 256]],
                             dtype=np.float32),
    }
    (actual,) = _session(sdxl_onnx / "unet" / "model.onnx").run(["out_sample"], feeds)
    tensors = {name: torch.from_numpy(value) for name, value in feeds.items()}
    with torch.no_grad():
        expected = unet(tensors["sample"], tensors["timestep"], tensors["encoder_hidden_states"],
                        added_cond_kwargs={"text_embeds": tensors["text_embeds"],
                                           "time_ids": tensors["time_ids"]}).sample
    np.testing.assert_allclose(actual, expected.numpy(), atol=1e-4)


def test_progress_names_the_second_text_encoder(sdxl_diffusers, tmp_path):
    from engine.export.diffusers_folder import export_diffusers_folder

    seen = []

    def stop_after_two():
        return len(seen) >= 2

    destination = tmp_path / "out"
    destination.mkdir()
    with pytest.raises(Exception, match="cancelled"):
        export_diffusers_folder(sdxl_diffusers, destination,
                                lambda *report: seen.append(report), stop_after_two)
    assert seen == [("text encoder", 1, 5), ("second text encoder", 2, 5)]


# --- what the configs say: families, variants, refusals --------------------------------------

def _edited_copy(source, tmp_path, component, **changes):
    model = tmp_path / "model"
    shutil.copytree(source, model)
    name = "model_index.json" if component is None else f"{component}/config.json"
    path = model / name
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
    return model


@pytest.mark.parametrize(("channels", "variant"), [(9, "inpainting"), (8, "instruct-pix2pix")])
def test_editing_unets_are_recognised_and_labelled(sdxl_diffusers, tiny_sd1_diffusers, tmp_path,
                                                   channels, variant):
    from engine.export.source import check_diffusers_folder, describe

    for number, source in enumerate((tiny_sd1_diffusers, sdxl_diffusers)):
        model = _edited_copy(source, tmp_path / str(number), "unet", in_channels=channels)
        assert describe(check_diffusers_folder(model)).variant == variant


def test_unknown_unet_channels_are_refused(tiny_sd1_diffusers, tmp_path):
    from engine.export.source import check_diffusers_folder

    model = _edited_copy(tiny_sd1_diffusers, tmp_path, "unet", in_channels=7)
    with pytest.raises(ModelError, match="7 input channels"):
        check_diffusers_folder(model)


def test_an_sdxl_label_on_a_one_encoder_folder_is_refused(tiny_sd1_diffusers, tmp_path):
    from engine.export.source import check_diffusers_folder

    model = _edited_copy(tiny_sd1_diffusers, tmp_path, None,
                         _class_name="StableDiffusionXLPipeline")
    with pytest.raises(ModelError, match="has no text_encoder_2"):
        check_diffusers_folder(model)


def test_an_sdxl_unet_without_size_conditioning_is_refused(sdxl_diffusers, tmp_path):
    from engine.export.source import check_diffusers_folder

    model = _edited_copy(sdxl_diffusers, tmp_path, "unet", addition_embed_type=None)
    with pytest.raises(ModelError, match="size and pooled-text conditioning"):
        check_diffusers_folder(model)


@pytest.mark.parametrize("variant", ["inpainting", "instruct-pix2pix"])
def test_text_to_image_refuses_editing_models_with_one_sentence(tiny_sd1_onnx, tmp_path,
                                                                variant):
    folder = tmp_path / "editing"
    shutil.copytree(tiny_sd1_onnx, folder)
    description = json.loads((folder / "easel.json").read_text())
    (folder / "easel.json").write_text(json.dumps({**description, "variant": variant}))
    model = load_model(tiny_models_xl.installed_copy(folder, tmp_path / "installed"))
    with pytest.raises(BadRequest) as refused:
        TextToImagePipeline(model)(TextToImageRequest("a cat", steps=1))
    sentence = str(refused.value)
    assert sentence.count(".") == 1 and "cannot make a picture from text alone" in sentence


def test_descriptions_without_the_new_fields_still_load(tiny_sd1_onnx, tmp_path):
    data = json.loads((tiny_sd1_onnx / "easel.json").read_text())
    old = {key: value for key, value in data.items()
           if key not in ("variant", "text_encoders", "text_hidden_state", "size_conditioning",
                          "force_zeros_for_empty_prompt", "guidance_embedding_dim",
                          "distillation")}
    (tmp_path / "easel.json").write_text(json.dumps({**old, "format": 1}))
    description = ModelDescription.load(tmp_path)
    assert (description.variant, description.text_encoders, description.distillation) == (
        "text-to-image", 1, None)
    assert not description.size_conditioning and description.guidance_embedding_dim == 0
    # A plain SD model is still written as format 1, which older Easels read.
    assert json.loads(description.to_json())["format"] == 1
    (tmp_path / "easel.json").write_text(json.dumps({**old, "format": 3}))
    with pytest.raises(ModelError, match="newer Easel"):
        ModelDescription.load(tmp_path)
    (tmp_path / "easel.json").write_text(json.dumps({**old, "variant": "outpainting"}))
    with pytest.raises(ModelError, match="unknown variant"):
        ModelDescription.load(tmp_path)
