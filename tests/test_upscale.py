"""Upscaling in the engine: our ONNX export of a Real-ESRGAN network against spandrel's PyTorch
model, tiles against one pass, the labelled Lanczos fallback, and bad input refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.errors import BadRequest
from engine.manifest import write_manifest
from engine.upscale import (
    LANCZOS_NAME,
    LANCZOS_WARNING,
    MAX_OUTPUT_SIDE,
    UpscalePipeline,
    UpscaleRequest,
    load_upscaler,
)
from engine.upscale.tiles import tile_starts, upscale_in_tiles

torch = pytest.importorskip("torch")


def _spandrel_or_skip() -> None:
    from engine.errors import ExportUnavailable
    from engine.export.upscaler_checkpoint import import_spandrel

    try:
        import_spandrel()  # importable without torchvision, which spandrel asks for
    except ExportUnavailable as error:
        pytest.skip(str(error), allow_module_level=True)


_spandrel_or_skip()


def rrdb_state(scale: int = 4, features: int = 8, blocks: int = 1, seed: int = 0) -> dict:
    """Random weights for Real-ESRGAN's RRDBNet, named as its released .pth files name them.

    spandrel fixes the growth channels at 32. The last layer is scaled down around a grey
    bias so the output varies around mid-grey instead of clipping at black or white."""
    generator = torch.Generator().manual_seed(seed)
    state: dict = {}

    def conv(name: str, out: int, into: int, gain: float = 1.0) -> None:
        state[f"{name}.weight"] = (torch.randn(out, into, 3, 3, generator=generator)
                                   * gain / (into * 9) ** 0.5)
        state[f"{name}.bias"] = torch.randn(out, generator=generator) * 0.01

    growth = 32
    conv("conv_first", features, 3 * (4 // scale) ** 2)  # x2 and x1 fold pixels into channels
    for block in range(blocks):
        for dense in (1, 2, 3):
            for layer in range(1, 6):
                conv(f"body.{block}.rdb{dense}.conv{layer}", features if layer == 5 else growth,
                     features + (layer - 1) * growth)
    for name in ("conv_body", "conv_up1", "conv_up2", "conv_hr"):
        conv(name, features, features)
    conv("conv_last", 3, features, gain=0.5)
    state["conv_last.bias"] = torch.full((3,), 0.5)
    return state


def export_tiny(destination: Path, scale: int = 4, **options) -> Path:
    """The tiny network exported by our exporter and installed as the model store would."""
    from safetensors.torch import save_file

    from engine.export.upscaler import import_upscaler

    checkpoint = destination.parent / f"{destination.name}.safetensors"
    save_file(rrdb_state(scale, **options), str(checkpoint))
    import_upscaler(checkpoint, destination)
    write_manifest(destination)
    return destination


def picture(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth shapes plus noise: structure for the network to respond to."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([np.sin(x / 7.0), np.cos(y / 5.0), np.sin((x + y) / 11.0)], axis=-1)
    noisy = (base * 0.35 + 0.5) * 255 + rng.normal(0, 12, (height, width, 3))
    return np.clip(noisy, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def tiny_x4(tmp_path_factory) -> Path:
    return export_tiny(tmp_path_factory.mktemp("upscalers") / "tiny-x4")


@pytest.fixture(scope="module")
def tiny_x2(tmp_path_factory) -> Path:
    return export_tiny(tmp_path_factory.mktemp("upscalers") / "tiny-x2", 2)


def spandrel_output(state: dict, sample: np.ndarray) -> np.ndarray:
    from engine.export.upscaler_checkpoint import import_spandrel

    model = import_spandrel().ModelLoader(device="cpu").load_from_state_dict(state)
    with torch.no_grad():
        return model.model.eval()(torch.from_numpy(sample)).numpy()


@pytest.mark.parametrize("scale", [4, 2])
def test_onnx_export_matches_spandrel_pytorch(scale, tiny_x4, tiny_x2):
    upscaler = load_upscaler(tiny_x4 if scale == 4 else tiny_x2)
    assert upscaler.description.scale == scale
    # Not the traced size, and not square: the height and width axes are dynamic.
    sample = picture(40, 56, seed=1).astype(np.float32).transpose(2, 0, 1)[np.newaxis] / 255
    (ours,) = upscaler.session.run({"image": sample}, ["upscaled"])
    theirs = spandrel_output(rrdb_state(scale), sample)
    assert ours.shape == theirs.shape == (1, 3, 40 * scale, 56 * scale)
    assert np.abs(ours - theirs).max() < 1e-3


def test_tiles_blend_to_the_untiled_result(tiny_x4):
    upscaler = load_upscaler(tiny_x4)
    source = picture(200, 168, seed=2)
    whole = UpscalePipeline(upscaler)(UpscaleRequest(source, tile=512)).images[0].pixels
    tiles = []
    tiled = UpscalePipeline(upscaler)(
        UpscaleRequest(source, tile=64, overlap=16),
        progress=lambda done, total: tiles.append((done, total))).images[0].pixels
    assert tiled.shape == whole.shape == (800, 672, 3)
    assert tiles[-1] == (len(tiles), len(tiles)) and len(tiles) > 9  # really in tiles
    difference = np.abs(tiled.astype(int) - whole.astype(int))
    assert difference.max() <= 2
    assert whole.std() > 10  # a picture, not a flat grey that any tiling would match


def test_a_4x_network_makes_2x_pictures_and_odd_sizes_work(tmp_path, tiny_x4):
    source = picture(37, 53, seed=3)
    result = UpscalePipeline(load_upscaler(tiny_x4))(UpscaleRequest(source, scale=2, tile=32,
                                                                    overlap=8))
    image = result.images[0]
    assert image.pixels.shape == (74, 106, 3)
    assert (image.parameters.operation, image.parameters.model_name) == ("upscale", "tiny-x4")
    assert (image.parameters.width, image.parameters.height) == (106, 74)
    assert result.warnings == ()


def test_a_2x_network_runs_twice_for_4x(tiny_x2):
    upscaler = load_upscaler(tiny_x2)
    assert upscaler.description.size_multiple > 1  # it folds pixels into channels first
    result = UpscalePipeline(upscaler)(UpscaleRequest(picture(30, 22), scale=4, tile=32,
                                                      overlap=8))
    assert result.images[0].pixels.shape == (120, 88, 3)


def test_lanczos_fallback_is_labelled(tmp_path):
    source = Image.fromarray(picture(20, 30))
    result = UpscalePipeline(None)(UpscaleRequest(source, scale=4))
    image = result.images[0]
    assert image.pixels.shape == (80, 120, 3)
    expected = np.asarray(source.resize((120, 80), Image.Resampling.LANCZOS))
    assert np.array_equal(image.pixels, expected)
    assert image.parameters.model_name == LANCZOS_NAME
    assert image.parameters.model_family == "lanczos" and image.parameters.operation == "upscale"
    assert result.warnings == (LANCZOS_WARNING,) and "Lanczos" in LANCZOS_WARNING


def test_the_source_settings_are_kept(tiny_x4):
    from engine.request import GenerationParameters

    made = GenerationParameters("a red chair", "", 24, 16, 20, 7.5, "euler", 42, "starter",
                                "abc", "sd1", operation="inpaint", strength=0.5, feather=4)
    result = UpscalePipeline(None)(UpscaleRequest(picture(16, 24), 2, source_parameters=made))
    parameters = result.images[0].parameters
    assert (parameters.prompt, parameters.seed, parameters.steps) == ("a red chair", 42, 20)
    assert (parameters.width, parameters.height, parameters.operation) == (48, 32, "upscale")
    assert parameters.strength is None and parameters.feather is None


def test_too_large_outputs_are_refused_before_any_work():
    pipeline = UpscalePipeline(None)
    side = MAX_OUTPUT_SIDE // 4 + 1
    # A PIL image is refused by its size alone, before its pixels are touched.
    with pytest.raises(BadRequest) as refused:
        pipeline.check_inputs(UpscaleRequest(Image.new("RGB", (side, 100)), scale=4))
    sentence = str(refused.value)
    assert f"{MAX_OUTPUT_SIDE} pixels a side" in sentence and sentence.count(". ") == 0
    pipeline.check_inputs(UpscaleRequest(Image.new("RGB", (side, 100)), scale=2))  # fits


def test_the_largest_output_can_be_opened_again_by_easel():
    from desktop.library.images import MAX_SIDE

    assert MAX_OUTPUT_SIDE <= MAX_SIDE
    # Easel treats Pillow's decompression-bomb warning as an error when opening files.
    assert MAX_OUTPUT_SIDE * MAX_OUTPUT_SIDE < Image.MAX_IMAGE_PIXELS


@pytest.mark.parametrize("image", ["picture.png", np.zeros((8, 8), np.uint8),
                                   np.zeros((16, 16, 3), np.float32), None])
def test_non_pictures_are_refused(image):
    with pytest.raises(BadRequest):
        UpscalePipeline(None)(UpscaleRequest(image))


def test_unsupported_scales_and_tiles_are_refused(tiny_x4):
    upscaler = load_upscaler(tiny_x4)
    for request in (UpscaleRequest(picture(16, 16), scale=3),
                    UpscaleRequest(picture(16, 16), tile=16),
                    UpscaleRequest(picture(16, 16), tile=64, overlap=40)):
        with pytest.raises(BadRequest):
            UpscalePipeline(upscaler).check_inputs(request)


def test_tile_starts_cover_the_side_with_the_overlap():
    assert tile_starts(100, 256, 32) == [0]
    starts = tile_starts(1024, 256, 32)
    assert starts[0] == 0 and starts[-1] == 1024 - 256
    assert all(later - earlier <= 256 - 32 for earlier, later in zip(starts[:-1], starts[1:],
                                                                     strict=True))


def test_blending_is_exact_for_an_identity_network():
    """Every output pixel's weights add up: tiles of a pixel-repeating "network" give exactly
    the repeated picture, whatever the tiling."""
    source = picture(70, 90, seed=5)

    def repeat(sample: np.ndarray) -> np.ndarray:
        return sample.repeat(2, axis=2).repeat(2, axis=3)

    expected = source.repeat(2, axis=0).repeat(2, axis=1)
    for tile, overlap in ((32, 8), (40, 10), (64, 0), (128, 16)):
        result = upscale_in_tiles(source, repeat, 2, tile=tile, overlap=overlap)
        assert np.array_equal(result, expected), (tile, overlap)


def test_upscaling_imports_neither_torch_nor_spandrel():
    import subprocess
    import sys

    script = ("import sys, engine.upscale, engine.upscale.pipeline; "
              "print(sorted({'torch', 'spandrel', 'onnx', 'safetensors'} & set(sys.modules)))")
    found = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           check=True, cwd=Path(__file__).parents[1]).stdout.strip()
    assert found == "[]"
