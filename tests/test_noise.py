"""The random generators a seed can be fed to (engine.noise).

torch-cpu must be torch.randn on the CPU, value for value; torch-cuda must be AUTOMATIC1111's
NV source (Philox4x32-10 and Box-Muller, as torch.randn lays it out on an NVIDIA GPU), checked
against a plain one-value-at-a-time Philox written here and A1111's published example. No
GPU runs these tests, so torch.randn(device="cuda") itself is not compared here.
"""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image, PngImagePlugin

from desktop.app.parameters import Form, form_from_image, request_from
from desktop.cli import main
from desktop.image_files import read_parameters, save_png
from desktop.library.metadata import read_info
from engine.errors import BadRequest
from engine.model import load_model
from engine.noise import (
    NUMPY_STORED_NAME,
    a1111_rng_name,
    generator_name,
    make_generator,
    stored_name,
)
from engine.pipelines import image_to_image, text_to_image
from engine.pipelines.image_to_image import ImageToImagePipeline
from engine.pipelines.text_to_image import TextToImagePipeline
from engine.request import (
    GENERATOR,
    GenerationParameters,
    ImageToImageRequest,
    TextToImageRequest,
)

SEEDS = [0, 1, 7, 42, 1234, 2**31 - 1, 2**32 - 1, 2**32 + 5, 987654321, 2**62 + 3]
# Sizes below 16 (one at a time), exactly 16, multiples of 16, odd tails, latents.
SHAPES = [(1,), (5,), (15,), (16,), (17,), (31,), (32,), (33,), (2, 3, 5), (1, 4, 8, 8),
          (1, 4, 24, 32), (1, 4, 64, 64), (4, 13, 7)]


def torch_cpu(seed: int) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(seed)


# --- torch-cpu ----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shape", SHAPES)
def test_torch_cpu_is_torch_randn_on_the_cpu(seed, shape):
    expected = torch.randn(shape, generator=torch_cpu(seed)).numpy()
    drawn = make_generator("torch-cpu", seed).standard_normal(shape, dtype=np.float32)
    assert drawn.dtype == np.float32 and drawn.shape == shape
    assert np.array_equal(drawn, expected)  # bit for bit


@pytest.mark.parametrize("seed", [0, 3, 2**32 - 1])
def test_torch_cpu_successive_draws_continue_torchs_stream(seed):
    # Small draws leave the second value of a Box-Muller pair in the generator, and a large
    # draw in between must not touch it, as in torch.
    shapes = [(3,), (40,), (5,), (1,), (100,), (1, 4, 8, 8), (7,), (2,), (16,), (9,)]
    ours, theirs = make_generator("torch-cpu", seed), torch_cpu(seed)
    for shape in shapes:
        expected = torch.randn(shape, generator=theirs).numpy()
        assert np.array_equal(ours.standard_normal(shape, dtype=np.float32), expected), shape


# --- torch-cuda ---------------------------------------------------------------------------


def philox_one(counter: list[int], key: list[int]) -> list[int]:
    """Philox4x32-10 on one counter, one 32-bit word at a time (Salmon et al., 2011)."""
    c, (k0, k1) = list(counter), key
    for round_number in range(10):
        if round_number:
            k0, k1 = (k0 + 0x9E3779B9) % 2**32, (k1 + 0xBB67AE85) % 2**32
        p0, p1 = 0xD2511F53 * c[0], 0xCD9E8D57 * c[2]
        c = [(p1 >> 32) ^ c[1] ^ k0, p1 % 2**32, (p0 >> 32) ^ c[3] ^ k1, p0 % 2**32]
    return c


def nv_reference(seed: int, call: int, count: int) -> np.ndarray:
    """A1111's NV values, one at a time: value i from the counter (call, 0, i, 0)."""
    scale = float(np.float32(2.3283064e-10))
    scale_2pi = float(np.float32(2.3283064e-10 * 6.2831855))
    values = []
    for index in range(count):
        x, y, _, _ = philox_one([call, 0, index, 0], [seed % 2**32, (seed >> 32) % 2**32])
        u, v = x * scale + scale / 2, y * scale_2pi + scale_2pi / 2
        values.append(math.sqrt(-2.0 * math.log(u)) * math.sin(v))
    return np.array(values, dtype=np.float32)


@pytest.mark.parametrize("seed", [0, 1, 42, 2**32 - 1, 2**32 + 7, 2**63 - 1])
def test_torch_cuda_is_philox_with_box_muller_call_after_call(seed):
    generator = make_generator("torch-cuda", seed)
    for call, shape in enumerate([(1, 4, 6, 5), (33,), (1, 4, 6, 5)]):
        drawn = generator.standard_normal(shape, dtype=np.float32)
        assert drawn.dtype == np.float32 and drawn.shape == shape
        expected = nv_reference(seed, call, math.prod(shape)).reshape(shape)
        np.testing.assert_allclose(drawn, expected, rtol=1e-6, atol=1e-7)


def test_torch_cuda_gives_a1111s_published_example():
    # modules/rng_philox.py's docstring: Generator(seed=0).randn(shape=(3, 4)), which are also
    # torch.randn((3, 4), device="cuda") after torch.manual_seed(0).
    published = [[-0.92466259, -0.42534415, -2.6438457, 0.14518388],
                 [-0.12086647, -0.57972564, -0.62285122, -0.32838709],
                 [-1.07454231, -0.36314407, -1.67105067, 2.26550497]]
    drawn = make_generator("torch-cuda", 0).standard_normal((3, 4), dtype=np.float32)
    np.testing.assert_allclose(drawn, published, atol=1e-6)


# --- numpy and names ----------------------------------------------------------------------


def test_numpy_is_todays_generator_and_keeps_its_stored_name():
    drawn = make_generator("numpy", 11).standard_normal((1, 4, 8, 8), dtype=np.float32)
    expected = np.random.default_rng(11).standard_normal((1, 4, 8, 8), dtype=np.float32)
    assert np.array_equal(drawn, expected)
    # Old pictures name numpy's generator by its long name; new ones still do.
    assert GENERATOR == NUMPY_STORED_NAME == "numpy-pcg64-standard-normal-float32"
    assert stored_name("numpy") == NUMPY_STORED_NAME
    assert generator_name(NUMPY_STORED_NAME) == "numpy"
    assert stored_name("torch-cpu") == "torch-cpu"
    assert stored_name(NUMPY_STORED_NAME) == NUMPY_STORED_NAME


def test_an_unknown_generator_is_refused_in_one_sentence():
    with pytest.raises(BadRequest, match=r"^Unknown random generator 'mt'; choose one of "
                                         r"numpy, torch-cpu, torch-cuda\.$"):
        TextToImageRequest("a dog", generator="mt")
    with pytest.raises(BadRequest, match="Unknown random generator"):
        ImageToImageRequest(np.zeros((8, 8, 3), np.uint8), generator="gpu")


# --- the pipelines draw as A1111 does -----------------------------------------------------


@pytest.fixture(scope="module")
def model(installed_tiny_sd1):
    return load_model(installed_tiny_sd1)


def recording(monkeypatch, module) -> dict[int, list[np.ndarray]]:
    """Every draw each image's generator makes in ``module``'s pipeline, by seed."""
    draws: dict[int, list[np.ndarray]] = {}

    class Recorder:
        def __init__(self, name: str, seed: int) -> None:
            self.inner, self.seen = make_generator(name, seed), draws.setdefault(seed, [])

        def standard_normal(self, shape, dtype=np.float32):
            self.seen.append(self.inner.standard_normal(shape, dtype=dtype))
            return self.seen[-1]

    monkeypatch.setattr(module, "make_generator", Recorder)
    return draws


def assert_torch_stream(draws: list[np.ndarray], seed: int) -> None:
    generator = torch_cpu(seed)
    for drawn in draws:
        assert np.array_equal(drawn, torch.randn(drawn.shape, generator=generator).numpy())


def test_text_to_image_draws_torchs_latents_then_its_per_step_noise(model, monkeypatch):
    draws = recording(monkeypatch, text_to_image)
    request = TextToImageRequest("a dog", width=64, height=48, steps=3, seed=5, count=2,
                                 scheduler="euler_ancestral", generator="torch-cpu")
    result = TextToImagePipeline(model)(request)
    # Image i: seed + i; its initial latents, then each step's noise, from one generator.
    assert sorted(draws) == [5, 6]
    for seed in (5, 6):
        assert [d.shape for d in draws[seed]] == [(1, 4, 24, 32)] * 4
        assert_torch_stream(draws[seed], seed)
    assert [image.parameters.generator for image in result.images] == ["torch-cpu"] * 2


def test_torch_cpu_seed_makes_the_picture_of_torch_randns_latents(model):
    settings = {"width": 64, "height": 48, "steps": 3, "scheduler": "euler"}
    pipeline = TextToImagePipeline(model)
    seeded = pipeline(TextToImageRequest("a dog", seed=9, generator="torch-cpu", **settings))
    latents = torch.randn((1, 4, 24, 32), generator=torch_cpu(9)).numpy()
    given = pipeline(TextToImageRequest("a dog", seed=9, latents=latents, **settings))
    assert np.array_equal(seeded.images[0].pixels, given.images[0].pixels)
    numpy_seeded = pipeline(TextToImageRequest("a dog", seed=9, **settings))
    assert not np.array_equal(numpy_seeded.images[0].pixels, seeded.images[0].pixels)
    assert numpy_seeded.images[0].parameters.generator == NUMPY_STORED_NAME


def test_image_to_image_draws_the_noise_then_the_vae_sample_then_steps(model, monkeypatch):
    draws = recording(monkeypatch, image_to_image)
    picture = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    request = ImageToImageRequest(picture, "a dog", strength=0.7, steps=4, seed=21,
                                  scheduler="euler_ancestral", generator="torch-cuda")
    result = ImageToImagePipeline(model)(request)
    (seen,) = draws.values()
    reference = make_generator("torch-cuda", 21)
    assert len(seen) >= 3
    for drawn in seen:
        assert np.array_equal(drawn, reference.standard_normal(drawn.shape))
    assert result.images[0].parameters.generator == "torch-cuda"


# --- pictures remember it, and Reuse parameters and the command line pass it on ----------


def test_a1111s_rng_setting_is_the_generators():
    assert a1111_rng_name("torch-cpu") == "CPU"
    assert a1111_rng_name("torch-cuda") == "NV"  # NV: the GPU's values on any machine
    assert a1111_rng_name("numpy") is None and a1111_rng_name(NUMPY_STORED_NAME) is None
    assert a1111_rng_name("philox-from-a-later-easel") is None


def parameters_with(generator: str) -> GenerationParameters:
    return GenerationParameters(
        prompt="a dog", negative_prompt="", width=64, height=48, steps=3, guidance=7.0,
        scheduler="euler_ancestral", seed=9, model_name="tiny", model_hash="abc",
        model_family="sd1", generator=generator)


def reused(path) -> Form:
    with Image.open(path) as image:
        info = read_info(dict(image.text), image.size)
    return form_from_image(Form(), info.prompt, info.negative_prompt, info.model, info.seed,
                           info.width, info.height, info.parameters)


@pytest.mark.parametrize(("stored", "generator"), [("torch-cpu", "torch-cpu"),
                                                   ("torch-cuda", "torch-cuda"),
                                                   (NUMPY_STORED_NAME, "numpy")])
def test_reuse_parameters_makes_the_request_with_the_pictures_generator(tmp_path, stored,
                                                                        generator):
    path = save_png(np.zeros((48, 64, 3), np.uint8), tmp_path / "made.png",
                    parameters_with(stored))
    assert read_parameters(path).generator == stored
    form = reused(path)
    assert form.generator == generator
    assert request_from(form).generator == generator
    assert request_from(replace(form, hires_scale=2.0)).base.generator == generator


@pytest.mark.parametrize(("settings", "generator"), [("", "torch-cuda"),
                                                     (", RNG: CPU", "torch-cpu"),
                                                     (", RNG: NV", "torch-cuda")])
def test_reusing_an_a1111_picture_picks_its_rng(tmp_path, settings, generator):
    text = PngImagePlugin.PngInfo()
    text.add_text("parameters", "a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 5, "
                                f"Size: 64x48, Model: cats{settings}")
    Image.new("RGB", (64, 48)).save(tmp_path / "a1111.png", pnginfo=text)
    form = reused(tmp_path / "a1111.png")
    assert (form.seed, form.generator) == (5, generator)
    assert request_from(form).generator == generator


def test_easel_generate_and_edits_take_rng(tiny_sd1_onnx, tmp_path, monkeypatch):
    monkeypatch.setenv("EASEL_HOME", str(tmp_path / "home"))
    assert main(["models", "import", str(tiny_sd1_onnx), "--name", "tiny"]) == 0
    common = ["--model", "tiny", "--steps", "2", "--seed", "4"]
    assert main(["generate", "a dog", "--width", "64", "--height", "48", *common,
                 "--rng", "torch-cpu", "-o", str(tmp_path / "cpu.png")]) == 0
    assert main(["generate", "a dog", "--width", "64", "--height", "48", *common,
                 "-o", str(tmp_path / "numpy.png")]) == 0
    assert main(["variations", str(tmp_path / "cpu.png"), *common, "--count", "1",
                 "--rng", "torch-cuda", "-o", str(tmp_path / "cuda.png")]) == 0
    stored = {name: read_parameters(tmp_path / f"{name}.png").generator
              for name in ("cpu", "numpy", "cuda")}
    assert stored == {"cpu": "torch-cpu", "numpy": NUMPY_STORED_NAME, "cuda": "torch-cuda"}
    with pytest.raises(SystemExit):  # argparse names the choices
        main(["generate", "a dog", "--rng", "mt19937"])


def test_the_window_s_editing_actions_use_the_form_s_generator():
    # After Reuse picks a torch generator, every action draws with it, not only Generate.
    from dataclasses import replace

    import numpy as np

    from desktop.app import editing, instructing
    from desktop.app.parameters import Form
    from desktop.app.viewmodels.regions import RegionsModel, regions_request

    form = replace(Form(seed=5), prompt="a cat", generator="torch-cpu", emphasis="none")
    source = editing.SourcePicture(np.zeros((64, 64, 3), np.uint8), "x.png", None)
    mask = np.zeros((64, 64), np.uint8)
    requests = [editing.variations_request(form, source),
                editing.inpaint_request(form, source, mask),
                editing.outpaint_request(form, source, editing.Sides(right=64)),
                instructing.instruct_request(form, source),
                regions_request(form, RegionsModel())]
    assert [request.generator for request in requests] == ["torch-cpu"] * len(requests)
    assert [request.emphasis for request in requests] == ["none"] * len(requests)
