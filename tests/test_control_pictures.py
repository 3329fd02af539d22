"""Control pictures: canny edges against a slow per-pixel reference of OpenCV's algorithm,
scribbles, the resize diffusers' ControlNet pipelines do, the control types and --control."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from engine.control.description import CONTROLS
from engine.control.pictures import (
    CONTROL_TYPES,
    MAX_SIDE,
    ControlOption,
    canny_edges,
    control_type_named,
    make_control_picture,
    parse_control_option,
    prepare_control_picture,
    scribble_picture,
)
from engine.errors import BadRequest

# --- A slow reference of cv2.Canny(image, low, high), one pixel at a time -----------------


def reference_canny(pixels: np.ndarray, low: int, high: int) -> np.ndarray:
    """OpenCV's Canny written plainly: per-channel 3×3 Sobel with repeated borders, the
    strongest channel (first on ties), L1 size, the fixed-point 4-direction suppression with
    its asymmetric ties, strict thresholds and an 8-connected flood from the strong pixels."""
    image = pixels.astype(int)
    if image.ndim == 2:
        image = image[..., None]
    height, width, channels = image.shape

    def at(y: int, x: int, c: int) -> int:
        return image[min(max(y, 0), height - 1), min(max(x, 0), width - 1), c]

    gx = np.zeros((height, width), int)
    gy = np.zeros((height, width), int)
    size = np.zeros((height, width), int)
    for y in range(height):
        for x in range(width):
            for c in range(channels):
                dx = sum(w * (at(y + k, x + 1, c) - at(y + k, x - 1, c))
                         for k, w in ((-1, 1), (0, 2), (1, 1)))
                dy = sum(w * (at(y + 1, x + k, c) - at(y - 1, x + k, c))
                         for k, w in ((-1, 1), (0, 2), (1, 1)))
                if c == 0 or abs(dx) + abs(dy) > size[y, x]:
                    gx[y, x], gy[y, x], size[y, x] = dx, dy, abs(dx) + abs(dy)

    def m(y: int, x: int) -> int:
        return size[y, x] if 0 <= y < height and 0 <= x < width else 0

    def is_peak(y: int, x: int) -> bool:
        here, ax, ay = size[y, x], abs(gx[y, x]), abs(gy[y, x]) << 15
        tan22 = ax * 13573
        if ay < tan22:
            return here > m(y, x - 1) and here >= m(y, x + 1)
        if ay > tan22 + (ax << 16):
            return here > m(y - 1, x) and here >= m(y + 1, x)
        s = -1 if (gx[y, x] < 0) != (gy[y, x] < 0) else 1
        return here > m(y - 1, x - s) and here > m(y + 1, x + s)

    candidate = {(y, x) for y in range(height) for x in range(width)
                 if size[y, x] > low and is_peak(y, x)}
    stack = [p for p in candidate if size[p] > high]
    edges = set(stack)
    while stack:
        y, x = stack.pop()
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                near = (y + dy, x + dx)
                if near in candidate and near not in edges:
                    edges.add(near)
                    stack.append(near)
    out = np.zeros((height, width), bool)
    for p in edges:
        out[p] = True
    return out


def blobs(seed: int, width: int = 56, height: int = 44) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (width, height), tuple(int(v) for v in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(image)
    for _ in range(8):
        x, y = rng.integers(0, width), rng.integers(0, height)
        r = int(rng.integers(3, 14))
        draw.ellipse([x - r, y - r, x + r, y + r],
                     fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    return np.asarray(image.filter(ImageFilter.GaussianBlur(1)))


def gradient_with_shapes(seed: int) -> np.ndarray:
    """Photo-like: smooth colour ramps, shapes, a thin line and a little noise."""
    y, x = np.mgrid[0:48, 0:60]
    ramp = np.stack([x * 4, y * 5, (x + y) * 2], axis=-1).astype(np.uint8)
    image = Image.fromarray(ramp)
    draw = ImageDraw.Draw(image)
    draw.rectangle([6, 8, 24, 30], fill=(200, 30, 60))
    draw.polygon([(40, 4), (56, 36), (30, 44)], fill=(10, 220, 90))
    draw.line([(0, 46), (59, 20)], fill=(255, 255, 255), width=1)
    noise = np.random.default_rng(seed).integers(-10, 11, (48, 60, 3))
    return np.clip(np.asarray(image).astype(int) + noise, 0, 255).astype(np.uint8)


PICTURES = {
    "blobs": blobs(0),
    "blobs-2": blobs(1, 40, 52),
    "gradient": gradient_with_shapes(2),
    "noise": np.random.default_rng(3).integers(0, 256, (23, 31, 3), dtype=np.uint8),
}


@pytest.mark.parametrize("name", sorted(PICTURES))
@pytest.mark.parametrize(("low", "high"), [(100, 200), (20, 60), (0, 0), (300, 900)])
def test_canny_equals_the_reference(name: str, low: int, high: int) -> None:
    picture = PICTURES[name]
    edges = canny_edges(picture, low, high)
    assert np.array_equal(edges[..., 0] > 0, reference_canny(picture, low, high))


def test_canny_of_a_grey_picture_equals_the_reference() -> None:
    grey = blobs(4)[..., 1].copy()
    assert np.array_equal(canny_edges(grey, 50, 120)[..., 0] > 0,
                          reference_canny(grey, 50, 120))


def test_canny_gives_white_edges_on_black_in_three_equal_channels() -> None:
    edges = canny_edges(PICTURES["blobs"])
    assert edges.dtype == np.uint8 and edges.shape == (44, 56, 3)
    assert set(np.unique(edges)) == {0, 255}
    assert np.array_equal(edges[..., 0], edges[..., 1])
    assert np.array_equal(edges[..., 0], edges[..., 2])


def test_canny_of_a_filled_square_is_its_outline() -> None:
    picture = np.zeros((40, 40, 3), np.uint8)
    picture[10:30, 10:30] = 255
    edges = canny_edges(picture)[..., 0] > 0
    band = np.zeros((40, 40), bool)
    band[9:31, 9:31] = True
    band[11:29, 11:29] = False  # within one pixel of the square's border
    assert not (edges & ~band).any()
    for i in range(11, 29):  # every row and column crossing the square crosses two edges
        assert edges[i, 9:11].sum() == 1 and edges[i, 29:31].sum() == 1
        assert edges[9:11, i].sum() == 1 and edges[29:31, i].sum() == 1


@pytest.mark.parametrize("value", [0, 128, 255])
def test_canny_of_a_flat_picture_is_empty(value: int) -> None:
    assert not canny_edges(np.full((32, 32, 3), value, np.uint8), 0, 0).any()


def test_raising_high_never_adds_edges() -> None:
    picture = gradient_with_shapes(5)
    previous = canny_edges(picture, 40, 40)
    for high in (80, 160, 320, 640, 2040):
        edges = canny_edges(picture, 40, high)
        assert not (edges & ~previous).any()
        previous = edges
    assert not previous.any()  # no gradient is above 2040


def test_canny_of_a_transparent_picture_sees_it_on_black() -> None:
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[..., :3] = 255
    rgba[8:24, 8:24, 3] = 255  # a white square; the rest transparent white
    on_black = np.zeros((32, 32, 3), np.uint8)
    on_black[8:24, 8:24] = 255
    assert np.array_equal(canny_edges(rgba), canny_edges(on_black))
    assert np.array_equal(canny_edges(Image.fromarray(rgba)), canny_edges(on_black))


@pytest.mark.parametrize(("low", "high"), [(200, 100), (-1, 100), (100, 2041), (1.5, 100),
                                           (True, 100), (100, "200")])
def test_bad_canny_thresholds_are_refused_in_one_sentence(low: object, high: object) -> None:
    with pytest.raises(BadRequest, match=r"^The canny (low|high) threshold [^\n]*\.$"):
        canny_edges(PICTURES["blobs"], low, high)  # type: ignore[arg-type]


# --- Scribbles -----------------------------------------------------------------------------


def drawing(stroke: int, paper: int) -> np.ndarray:
    image = Image.new("RGB", (40, 30), (paper,) * 3)
    ImageDraw.Draw(image).line([(4, 4), (36, 26)], fill=(stroke,) * 3, width=3)
    return np.asarray(image)


def lines_of(picture: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(picture).convert("L")) < 128


def test_a_dark_on_light_scribble_is_inverted_to_white_on_black() -> None:
    picture = drawing(stroke=20, paper=240)
    scribble = scribble_picture(picture)
    assert set(np.unique(scribble)) == {0, 255}
    assert np.array_equal(scribble[..., 0] == 255, lines_of(picture))
    assert np.array_equal(scribble[..., 0], scribble[..., 2])


def test_a_light_on_dark_scribble_keeps_its_lines() -> None:
    picture = drawing(stroke=230, paper=10)
    assert np.array_equal(scribble_picture(picture)[..., 0] == 255, ~lines_of(picture))


def test_a_scribble_on_transparency_takes_its_opaque_pixels_as_lines() -> None:
    strokes = Image.new("RGBA", (40, 30), (255, 255, 255, 0))
    ImageDraw.Draw(strokes).line([(4, 4), (36, 26)], fill=(0, 0, 0, 255), width=3)
    drawn = np.asarray(strokes)[..., 3] >= 128
    scribble = scribble_picture(strokes)
    assert drawn.any() and np.array_equal(scribble[..., 0] == 255, drawn)
    assert np.array_equal(scribble_picture(np.asarray(strokes)), scribble)


# --- The tensor a ControlNet reads ---------------------------------------------------------


def diffusers_control_tensor(picture: Image.Image, width: int, height: int) -> np.ndarray:
    pytest.importorskip("torch")
    image_processor = pytest.importorskip("diffusers.image_processor")
    # As StableDiffusionControlNetPipeline builds its control_image_processor.
    processor = image_processor.VaeImageProcessor(vae_scale_factor=8, do_convert_rgb=True,
                                                  do_normalize=False)
    return processor.preprocess(picture, height=height, width=width).numpy()


def test_prepare_resizes_as_diffusers_controlnet_pipeline_does() -> None:
    picture = gradient_with_shapes(6)  # 60×48
    tensor, note = prepare_control_picture(picture, 64, 40)
    expected = diffusers_control_tensor(Image.fromarray(picture), 64, 40)
    assert tensor.dtype == np.float32 and tensor.shape == (1, 3, 40, 64)
    assert np.abs(tensor - expected).max() <= 1e-6
    assert note == "The control picture was 60×48; it was resized to 64×40."


def test_prepare_keeps_a_picture_of_the_right_size_as_it_is() -> None:
    picture = blobs(7, 48, 32)
    tensor, note = prepare_control_picture(Image.fromarray(picture), 48, 32)
    assert note is None
    assert np.array_equal(tensor[0].transpose(1, 2, 0) * 255, picture.astype(np.float32))
    expected = diffusers_control_tensor(Image.fromarray(picture), 48, 32)
    assert np.abs(tensor - expected).max() <= 1e-6


def test_prepare_composites_transparency_onto_black() -> None:
    rgba = np.zeros((24, 24, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[:, 12:, 3] = 255
    tensor, _ = prepare_control_picture(rgba, 24, 24)
    assert (tensor[0, :, :, :12] == 0).all()
    assert np.allclose(tensor[0, :, :, 12:], 200 / 255)


@pytest.mark.parametrize(("width", "height"), [(0, 64), (64, -8), (64.0, 64), (True, 64)])
def test_prepare_refuses_a_bad_size(width: object, height: object) -> None:
    with pytest.raises(BadRequest, match=r"^The control picture's (width|height) must be"):
        prepare_control_picture(PICTURES["blobs"], width, height)  # type: ignore[arg-type]


def test_control_pictures_have_the_pipelines_ceiling() -> None:
    from engine.pipelines.diffusion import MAX_SIDE as PIPELINE_MAX_SIDE

    assert MAX_SIDE == PIPELINE_MAX_SIDE
    with pytest.raises(BadRequest, match="up to 8192 pixels a side"):
        canny_edges(Image.new("RGBA", (MAX_SIDE + 1, 8)))


@pytest.mark.parametrize("picture", [np.zeros((8, 8, 2), np.uint8),
                                     np.zeros((8, 8, 3), np.float32), "edges.png"])
def test_pictures_that_are_not_pixels_are_refused(picture: object) -> None:
    with pytest.raises(BadRequest, match="^The control picture must be"):
        make_control_picture("picture", picture)  # type: ignore[arg-type]


# --- Control types -------------------------------------------------------------------------


@pytest.mark.parametrize(("word", "name"), [("canny", "canny"), ("Pose", "openpose"),
                                            ("hed", "softedge"), ("as-is", "picture"),
                                            ("tile", "tile"), ("lineart", "lineart")])
def test_users_words_name_control_types(word: str, name: str) -> None:
    assert control_type_named(word).name == name


def test_every_control_type_is_described_and_its_words_are_unique() -> None:
    words = [w for t in CONTROL_TYPES for w in t.words]
    assert len(words) == len(set(words))
    assert all(t.description.endswith(".") for t in CONTROL_TYPES)
    for control_type in CONTROL_TYPES:  # the names installed ControlNets' descriptions use
        assert control_type.name in CONTROLS or control_type.name == "picture"
    built_in = {t.name for t in CONTROL_TYPES if t.annotator is None}
    assert built_in == {"canny", "scribble", "picture", "tile"}


@pytest.mark.parametrize(("word", "model"), [("depth", "depth"), ("pose", "pose"),
                                             ("lineart", "line art"), ("hed", "soft edge")])
def test_a_type_that_needs_an_annotator_names_the_model_to_import(word: str,
                                                                   model: str) -> None:
    with pytest.raises(BadRequest, match=f"import a {model} annotator model first"):
        make_control_picture(word, PICTURES["blobs"])


def test_make_control_picture_runs_the_built_in_types() -> None:
    picture = PICTURES["gradient"]
    assert np.array_equal(make_control_picture("canny", picture, low=30, high=90),
                          canny_edges(picture, 30, 90))
    assert np.array_equal(make_control_picture("scribble", picture), scribble_picture(picture))
    assert np.array_equal(make_control_picture("picture", Image.fromarray(picture)), picture)
    assert np.array_equal(make_control_picture("tile", picture), picture)


def test_make_control_picture_refuses_unknown_types_and_options() -> None:
    with pytest.raises(BadRequest, match="^'blur' is not a control type; Easel knows canny"):
        make_control_picture("blur", PICTURES["blobs"])
    with pytest.raises(BadRequest, match="^The scribble control takes no option 'low'.$"):
        make_control_picture("scribble", PICTURES["blobs"], low=3)


# --- --control TYPE[=CONTROLNET]:PICTURE[:WEIGHT[:START:END]] --------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("canny:edges.png", ControlOption("canny", Path("edges.png"))),
    ("Canny:edges.png:0.5", ControlOption("canny", Path("edges.png"), 0.5)),
    ("depth:d.png:1.5:0.1:0.6", ControlOption("depth", Path("d.png"), 1.5, 0.1, 0.6)),
    ("openpose=my-pose:C:\\pics\\me.png:0.8",
     ControlOption("openpose", Path("C:\\pics\\me.png"), 0.8, controlnet="my-pose")),
    ("scribble:c:/a b/x.png", ControlOption("scribble", Path("c:/a b/x.png"))),
    ("tile=sd15 tile:D:\\t.png:2:0:1",
     ControlOption("tile", Path("D:\\t.png"), 2.0, 0.0, 1.0, "sd15 tile")),
])
def test_parse_control_option(text: str, expected: ControlOption) -> None:
    assert parse_control_option(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("canny:edges.png:heavy", "The control weight in .* is not a number"),
    ("canny:edges.png:nan", "The control weight in .* is not a number"),
    ("canny:edges.png:1:soon:1", "The control start in .* is not a number"),
    ("canny:edges.png:2.5", "weight .* must be between 0 and 2 "),
    ("canny:edges.png:-0.1", "weight .* must be between 0 and 2 "),
    ("canny:edges.png:1:0.5:0.5", "start .* must be before its end"),
    ("canny:edges.png:1:0.8:0.2", "start .* must be before its end"),
    ("canny:edges.png:1:-0.1:0.5", "start .* must be between 0 and 1"),
    ("canny:edges.png:1:0:1.5", "end .* must be between 0 and 1"),
    ("canny:edges.png:1:0", "has 2 numbers after the picture"),
    ("canny", "gives no picture"),
    ("canny:", "gives no picture"),
    ("blur:edges.png", "'blur' is not a control type"),
    ("canny=:edges.png", "names no ControlNet"),
])
def test_bad_control_options_are_refused_in_one_sentence(text: str, message: str) -> None:
    with pytest.raises(BadRequest, match=message) as caught:
        parse_control_option(text)
    sentence = str(caught.value)
    assert sentence.endswith(".") and "\n" not in sentence
