"""The invisible watermark (desktop.provenance.watermark): found after a PNG round trip, absent
from unmarked pictures, nearly invisible, and read both ways by the `invisible-watermark`
package (imwatermark), which works on BGR arrays."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from desktop.provenance.watermark import (
    MESSAGE,
    WatermarkError,
    add_watermark,
    find_watermark,
    read_watermark,
)

SD_MESSAGE = b"StableDiffusionV1"  # what the SD 1.x reference scripts embed


def _scene(height: int = 512, width: int = 512) -> np.ndarray:
    """A smooth photo-like picture: sky, a sun, hills, a little sensor noise."""
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    sky = np.stack([90 + 80 * y, 140 + 60 * y, 230 - 40 * y], axis=-1)
    sun = np.exp(-((x - 0.7) ** 2 + (y - 0.25) ** 2) / 0.005)[..., None] * [150, 110, 0]
    hills = (y > 0.55 + 0.1 * np.sin(6 * x))[..., None]
    ground = np.stack([60 + 50 * x, 120 + 40 * np.cos(9 * x * y), 40 + 20 * y], axis=-1)
    picture = np.where(hills, ground, sky + sun) + rng.normal(0, 2, (height, width, 3))
    return np.clip(picture, 0, 255).astype(np.uint8)


def _gradient(height: int = 512, width: int = 512) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    return np.stack([255 * x, 255 * y, 220 - 200 * x], axis=-1).astype(np.uint8)


def _random(height: int = 512, width: int = 512) -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _flat(height: int = 512, width: int = 512) -> np.ndarray:
    return np.full((height, width, 3), (118, 131, 160), np.uint8)


def _png_round_trip(pixels: np.ndarray) -> np.ndarray:
    stream = io.BytesIO()
    Image.fromarray(pixels).save(stream, format="PNG")
    stream.seek(0)
    with Image.open(stream) as image:
        return np.asarray(image).copy()


def _psnr(original: np.ndarray, marked: np.ndarray) -> float:
    error = np.mean((original.astype(np.float64) - marked.astype(np.float64)) ** 2)
    return float(10 * np.log10(255**2 / error))


@pytest.mark.parametrize(
    "picture",
    [_scene(), _gradient(), _random(), _flat(), _scene(301, 263), _scene(768, 1024)],
    ids=["scene", "gradient", "random", "flat", "odd-size", "landscape"],
)
def test_mark_survives_a_png_round_trip(picture: np.ndarray) -> None:
    marked = _png_round_trip(add_watermark(picture))
    assert find_watermark(marked)
    assert read_watermark(marked, len(MESSAGE)) == MESSAGE


def test_another_message_is_carried_and_told_apart() -> None:
    marked = add_watermark(_scene(), SD_MESSAGE)
    assert read_watermark(marked, len(SD_MESSAGE)) == SD_MESSAGE
    assert find_watermark(marked, SD_MESSAGE)
    assert not find_watermark(marked)  # Easel's own message is not there


@pytest.mark.parametrize(
    "picture",
    [_random(), _flat(), _gradient(), _scene()],
    ids=["random", "flat", "gradient", "scene"],
)
def test_unmarked_pictures_are_not_found(picture: np.ndarray) -> None:
    assert not find_watermark(picture)
    assert read_watermark(picture, len(MESSAGE)) != MESSAGE


@pytest.mark.parametrize(
    "picture", [_scene(), _gradient(), _flat()], ids=["scene", "gradient", "flat"]
)
def test_mark_changes_pixels_only_a_little(picture: np.ndarray) -> None:
    marked = add_watermark(picture)
    psnr = _psnr(picture, marked)
    print(f"PSNR {psnr:.1f} dB")
    assert psnr > 35
    difference = np.abs(marked.astype(int) - picture.astype(int))
    assert difference.max() <= 80
    # One 2x2 group of pixels in each 8x8 block carries the bit; a few more make way for it.
    assert np.mean(difference.any(axis=-1)) < 0.25
    assert not np.array_equal(marked, picture)


def test_edges_outside_whole_blocks_are_left_alone() -> None:
    picture = _scene(301, 263)
    marked = add_watermark(picture)
    np.testing.assert_array_equal(marked[296:], picture[296:])
    np.testing.assert_array_equal(marked[:, 256:], picture[:, 256:])


def test_rgba_alpha_is_kept_bit_for_bit() -> None:
    alpha = np.random.default_rng(5).integers(0, 256, (512, 512, 1), dtype=np.uint8)
    picture = np.concatenate([_scene(), alpha], axis=-1)
    marked = add_watermark(picture)
    assert marked.shape == picture.shape and marked.dtype == np.uint8
    np.testing.assert_array_equal(marked[..., 3], picture[..., 3])
    assert find_watermark(_png_round_trip(marked))
    assert not find_watermark(picture)


def test_input_is_not_changed_in_place() -> None:
    picture = _scene()
    kept = picture.copy()
    add_watermark(picture)
    np.testing.assert_array_equal(picture, kept)


def _one_sentence(error: pytest.ExceptionInfo[WatermarkError]) -> str:
    text = str(error.value)
    assert text.endswith(".") and "\n" not in text and text.count(". ") == 0, text
    return text


@pytest.mark.parametrize("size", [(255, 256), (200, 300), (4096, 8)])
def test_too_small_pictures_are_refused_in_one_sentence(size: tuple[int, int]) -> None:
    picture = _scene(*size)
    with pytest.raises(WatermarkError) as error:
        add_watermark(picture)
    assert "too small" in _one_sentence(error)
    assert isinstance(error.value, ValueError)


def test_too_small_pictures_read_as_unmarked() -> None:
    assert not find_watermark(_scene(32, 32))
    with pytest.raises(WatermarkError) as error:
        read_watermark(_scene(32, 32), len(MESSAGE))
    assert "too small" in _one_sentence(error)


@pytest.mark.parametrize(
    "pixels",
    [
        _scene().astype(np.float32),
        _scene().astype(np.uint16),
        _scene()[..., 0],
        _scene()[..., :2],
        np.zeros((512, 512, 5), np.uint8),
        [[0, 0, 0]],
    ],
    ids=["float32", "uint16", "grey", "two-channels", "five-channels", "list"],
)
def test_wrong_pixels_are_refused_in_one_sentence(pixels: np.ndarray) -> None:
    for call in (add_watermark, find_watermark, lambda p: read_watermark(p, 5)):
        with pytest.raises(WatermarkError) as error:
            call(pixels)
        assert "8-bit RGB or RGBA" in _one_sentence(error)


def test_empty_message_and_length_are_refused_in_one_sentence() -> None:
    with pytest.raises(WatermarkError) as error:
        add_watermark(_scene(), b"")
    _one_sentence(error)
    with pytest.raises(WatermarkError) as error:
        read_watermark(_scene(), 0)
    _one_sentence(error)


# --- cross-compatibility with the `invisible-watermark` package -------------------------------


@pytest.fixture(scope="module")
def imwatermark():
    return pytest.importorskip("imwatermark")


def _their_read(imwatermark, rgb: np.ndarray, length: int) -> bytes:
    decoder = imwatermark.WatermarkDecoder("bytes", 8 * length)
    return decoder.decode(np.ascontiguousarray(rgb[..., ::-1]), "dwtDct")


def _their_mark(imwatermark, rgb: np.ndarray, message: bytes) -> np.ndarray:
    encoder = imwatermark.WatermarkEncoder()
    encoder.set_watermark("bytes", message)
    return np.ascontiguousarray(
        encoder.encode(np.ascontiguousarray(rgb[..., ::-1]), "dwtDct")[..., ::-1]
    )


@pytest.mark.parametrize(
    "picture",
    [_scene(), _gradient(), _random(), _flat(), _scene(301, 263)],
    ids=["scene", "gradient", "random", "flat", "odd-size"],
)
@pytest.mark.parametrize("message", [MESSAGE, SD_MESSAGE])
def test_imwatermark_reads_our_mark(imwatermark, picture: np.ndarray, message: bytes) -> None:
    marked = _png_round_trip(add_watermark(picture, message))
    assert _their_read(imwatermark, marked, len(message)) == message


def _textured(height: int, width: int) -> np.ndarray:
    noise = np.random.default_rng(11).normal(0, 30, (height, width, 3))
    return np.clip(_scene(height, width) + noise, 0, 255).astype(np.uint8)


# Pictures on which the package reads back its own mark: it loses it on smooth ones (its reader
# can pick up another value than the one it marked), which the bit-for-bit test covers instead.
@pytest.mark.parametrize(
    "picture",
    [_random(), np.full((512, 512, 3), 128, np.uint8), _textured(768, 1024)],
    ids=["random", "grey", "textured-landscape"],
)
@pytest.mark.parametrize("message", [MESSAGE, SD_MESSAGE])
def test_we_read_imwatermark_s_mark(imwatermark, picture: np.ndarray, message: bytes) -> None:
    marked = _png_round_trip(_their_mark(imwatermark, picture, message))
    assert _their_read(imwatermark, marked, len(message)) == message  # it reads its own mark
    assert find_watermark(marked, message)
    assert not find_watermark(picture, message)


@pytest.mark.parametrize(
    "picture",
    [_random(), _scene(), _gradient(), _scene(301, 263)],
    ids=["random", "scene", "gradient", "odd-size"],
)
def test_we_read_what_imwatermark_reads_bit_for_bit(imwatermark, picture: np.ndarray) -> None:
    # Unmarked pictures, and pictures it marked where it misreads its own mark (smooth ones):
    # the same colour conversion, wavelet floats and vote give the same garbage too.
    for shown in (picture, _their_mark(imwatermark, picture, MESSAGE)):
        for length in (len(MESSAGE), len(SD_MESSAGE)):
            assert read_watermark(shown, length) == _their_read(imwatermark, shown, length)
