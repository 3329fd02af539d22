"""Background removal (engine.background, the segmenter kind): tiny ONNX graphs with the
rembg families' input and output signatures, imported through the model store; the
preprocessing checked against a plain reimplementation of rembg's rules (rembg 2.0.86,
sessions/base.py and each family's session file); a scene whose subject a test "segmenter"
knows, cut out end to end; the flood fill on the starter model's scenes and a product shot on
white; the guided-filter refine keeping hair; one sentence for what cannot be cut out."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

import desktop.model_kinds as kinds
from desktop.model_kinds import annotator, segmenter, upscaler
from desktop.model_store import ModelStore
from engine.background import apply_alpha, cut_out
from engine.background.families import FAMILIES
from engine.background.segment import network_input
from engine.errors import BadRequest, ModelError
from engine.export.formats import ONNX_UPSCALER
from engine.starter import scenes as sc

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
nn = torch.nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# --- tiny networks with the real ones' signatures --------------------------------------------

class TinySegmenter(nn.Module):
    """``outputs`` one-channel maps at the input's size. The first is ``gain`` times channel
    ``channel`` minus ``offset`` (a subject a test scene marks by that channel), box-blurred
    over ``blur`` pixels, through a sigmoid unless ``logits``; the rest are fixed convs, as
    U²-Net's and IS-Net's side outputs."""

    def __init__(self, outputs: int, channel: int = 1, gain: float = 20.0, offset: float = 0.0,
                 blur: int = 1, logits: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.sides = nn.ModuleList(nn.Conv2d(3, 1, 3, padding=1) for _ in range(outputs - 1))
        self.channel, self.gain, self.offset = channel, gain, offset
        self.blur, self.logits = blur, logits

    def forward(self, picture):
        score = self.gain * (picture[:, self.channel:self.channel + 1] - self.offset)
        if self.blur > 1:
            score = nn.functional.avg_pool2d(score, self.blur, stride=1,
                                             padding=self.blur // 2, count_include_pad=False)
        first = score if self.logits else torch.sigmoid(score)
        return (first, *(torch.sigmoid(side(picture)) for side in self.sides))


def export(module: nn.Module, path: Path, side: int, input_name: str = "input.1") -> Path:
    count = len(module.sides) + 1
    torch.onnx.export(module.eval(), (torch.rand(1, 3, side, side),), str(path), dynamo=False,
                      opset_version=17, input_names=[input_name],
                      output_names=[f"out{index}" for index in range(count)])
    return path


@pytest.fixture
def store(tmp_path) -> ModelStore:
    return ModelStore(tmp_path / "models")


@pytest.fixture(scope="module")
def graphs(tmp_path_factory) -> dict[str, Path]:
    """u2net-like (7 maps at 320), isnet-like (2 maps at 1024), BiRefNet-like (logits at
    1024), RMBG-1.4-like (one map at 1024), each under its rembg/BRIA file name."""
    folder = tmp_path_factory.mktemp("graphs")
    return {
        "u2net": export(TinySegmenter(7, offset=0.2), folder / "u2net.onnx", 320),
        "isnet": export(TinySegmenter(2, offset=0.1), folder / "isnet-general-use.onnx",
                        1024, "input_image"),
        "birefnet": export(TinySegmenter(1, gain=4.0, logits=True),
                           folder / "BiRefNet-general-epoch_244.onnx", 1024, "input_image"),
        "rmbg": export(TinySegmenter(1, offset=0.1), folder / "RMBG-1.4.onnx", 1024, "input"),
    }


def described(folder: Path) -> dict:
    return json.loads((folder / "easel.json").read_text(encoding="utf-8"))


def photo_scene(height: int = 300, width: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """A photo-like picture (a textured red-blue ground, green kept low) with a subject (a
    disc and a bar, green high, shaded), and its subject mask."""
    y, x = np.mgrid[0:height, 0:width]
    rng = np.random.default_rng(3)
    noise = rng.integers(-12, 13, (height, width, 3))
    picture = np.stack([120 + 80 * np.sin(x / 23.0), 40 + 0 * x, 100 + y * 120 // height],
                       axis=2) + noise
    subject = ((x - 150) ** 2 + (y - 140) ** 2 < 70**2) | \
        ((x > 200) & (x < 330) & (y > 180) & (y < 230))
    shade = 180 + 50 * np.cos(x / 17.0)
    picture[subject] = np.stack([shade, 210 + 0 * shade, 255 - shade], axis=2)[subject] + \
        noise[subject] // 2
    return np.clip(picture, 0, 255).astype(np.uint8), subject


# --- rembg's rules, written out plainly ------------------------------------------------------

def rembg_input(picture: np.ndarray, side: int, mean, std, by_255: bool = False,
                resample=Image.Resampling.LANCZOS) -> np.ndarray:
    """rembg sessions/base.py BaseSession.normalize (RMBG-1.4: BRIA's / 255)."""
    im = np.array(Image.fromarray(picture).convert("RGB").resize((side, side), resample))
    im = im / 255.0 if by_255 else im / max(np.max(im), 1e-6)
    out = np.zeros((side, side, 3))
    for channel in range(3):
        out[:, :, channel] = (im[:, :, channel] - mean[channel]) / std[channel]
    return np.expand_dims(out.transpose((2, 0, 1)), 0).astype(np.float32)


def rembg_mask(graph: Path, picture: np.ndarray, sample: np.ndarray,
               sigmoid: bool = False) -> np.ndarray:
    """rembg's predict: the first output's first channel, (sigmoid,) min-max, * 255 as
    uint8, LANCZOS to the picture's size."""
    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    pred = session.run(None, {session.get_inputs()[0].name: sample})[0][:, 0, :, :]
    if sigmoid:
        pred = 1 / (1 + np.exp(-pred))
    pred = np.squeeze((pred - pred.min()) / (pred.max() - pred.min()))
    mask = Image.fromarray((pred * 255).astype("uint8"), mode="L")
    return np.asarray(mask.resize((picture.shape[1], picture.shape[0]),
                                  Image.Resampling.LANCZOS))


@pytest.mark.parametrize(("family", "mean", "std", "by_255", "resample"), [
    ("u2net", IMAGENET_MEAN, IMAGENET_STD, False, Image.Resampling.LANCZOS),
    ("isnet-general-use", (0.5,) * 3, (1.0,) * 3, False, Image.Resampling.LANCZOS),
    ("isnet-anime", IMAGENET_MEAN, (1.0,) * 3, False, Image.Resampling.LANCZOS),
    ("birefnet-general", IMAGENET_MEAN, IMAGENET_STD, False, Image.Resampling.LANCZOS),
    ("bria-rmbg-2.0", IMAGENET_MEAN, IMAGENET_STD, False, Image.Resampling.LANCZOS),
    ("bria-rmbg-1.4", (0.5,) * 3, (1.0,) * 3, True, Image.Resampling.BILINEAR),
])
def test_each_family_reads_a_picture_as_its_reference_does(family, mean, std, by_255,
                                                           resample):
    picture, _ = photo_scene(90, 130)
    picture = picture // 2  # its maximum below 255: rembg divides by the picture's own
    settings = FAMILIES[family]
    expected = rembg_input(picture, settings.side, mean, std, by_255, resample)
    made = network_input(picture, settings)
    assert made.dtype == np.float32 and made.shape == expected.shape
    assert np.abs(made - expected).max() < 1e-5


# --- import: recognised by content, described ------------------------------------------------

@pytest.mark.parametrize(("key", "family", "licence", "outputs"), [
    ("u2net", "u2net", "Apache-2.0", 7),
    ("isnet", "isnet-general-use", "Apache-2.0", 2),
    ("birefnet", "birefnet-general", "MIT", 1),
    ("rmbg", "bria-rmbg-1.4", "bria-rmbg-1.4", 1),
])
def test_segmenters_import_described_by_their_family(store, graphs, key, family, licence,
                                                     outputs):
    graph = graphs[key]
    assert segmenter.recognises(graph, ONNX_UPSCALER)
    assert not upscaler.recognises(graph, ONNX_UPSCALER)
    installed = store.import_model(graph, kind="segmenter")
    assert installed.kind == "segmenter" and installed.licence == licence
    data = described(installed.path)
    settings = FAMILIES[family]
    assert data["family"] == family and data["input_size"] == [settings.side] * 2
    assert data["sigmoid"] is (family == "birefnet-general")
    assert data["normalisation"]["mean"] == list(settings.mean)
    assert data["output_name"] == "out0" and data["licence"] == licence
    assert (installed.path / "model.onnx").is_file()


def test_the_graph_tells_u2net_and_isnet_apart_without_names(store, graphs, tmp_path):
    for key, family in (("u2net", "u2net"), ("isnet", "isnet-general-use")):
        plain = tmp_path / key / "model.onnx"
        plain.parent.mkdir()
        plain.write_bytes(graphs[key].read_bytes())
        installed = store.import_model(plain, name=f"plain-{key}", kind="segmenter")
        assert described(installed.path)["family"] == family


def test_one_unnamed_map_at_1024_asks_for_a_name(store, graphs, tmp_path):
    plain = tmp_path / "model.onnx"
    plain.write_bytes(graphs["birefnet"].read_bytes())
    with pytest.raises(ModelError, match="rename the file"):
        store.import_model(plain, kind="segmenter")
    installed = store.import_model(plain, kind="segmenter", family="birefnet-general")
    assert described(installed.path)["family"] == "birefnet-general"


def test_upscaler_takes_segmenters_only_as_a_fallback(graphs, monkeypatch):
    """Without the annotator kind (which claims every graph giving one-channel maps: see the
    next test), a segmenter graph goes to the segmenter kind, never to the upscaler."""
    monkeypatch.setattr(kinds, "KINDS", tuple(k for k in kinds.KINDS if k is not annotator))
    for graph in graphs.values():
        assert kinds.kind_for_source(graph, ONNX_UPSCALER) is segmenter


def test_annotators_do_not_claim_segmenters(graphs):
    assert not any(annotator.recognises(graph, ONNX_UPSCALER) for graph in graphs.values())


def test_an_upscaler_is_not_a_segmenter(tmp_path):
    class TinyUpscaler(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.shuffle = nn.Conv2d(3, 12, 3, padding=1), nn.PixelShuffle(2)

        def forward(self, picture):
            return self.shuffle(self.conv(picture))

    graph = tmp_path / "up.onnx"
    torch.onnx.export(TinyUpscaler().eval(), (torch.rand(1, 3, 32, 32),), str(graph),
                      dynamo=False, opset_version=17, input_names=["input"],
                      output_names=["output"])
    assert not segmenter.recognises(graph, ONNX_UPSCALER)


# --- running one ---------------------------------------------------------------------------

@pytest.mark.parametrize(("key", "family", "sigmoid"), [
    ("u2net", "u2net", False), ("isnet", "isnet-general-use", False),
    ("birefnet", "birefnet-general", True),
])
def test_the_mask_is_rembgs(store, graphs, key, family, sigmoid):
    picture, _ = photo_scene(120, 170)
    installed = store.import_model(graphs[key], kind="segmenter")
    settings = FAMILIES[family]
    sample = rembg_input(picture, settings.side, settings.mean, settings.std)
    expected = rembg_mask(graphs[key], picture, sample, sigmoid)
    made = cut_out(picture, installed.path)
    assert made.method == installed.name and made.notes == ()
    assert made.alpha.dtype == np.uint8 and made.alpha.shape == picture.shape[:2]
    assert np.abs(made.alpha.astype(int) - expected).max() <= 1


def test_a_segmenter_that_knows_the_scene_cuts_it_out(store, graphs):
    """The isnet-like graph marks high green (x / max - 0.5 > 0.1), which this scene uses
    only on its subject: at least 99% of the pixels come out right."""
    picture, subject = photo_scene()
    installed = store.import_model(graphs["isnet"], kind="segmenter")
    alpha = cut_out(picture, installed.path).alpha
    assert ((alpha > 127) == subject).mean() >= 0.99
    rgba = apply_alpha(picture, alpha)
    assert rgba.shape == (*picture.shape[:2], 4) and (rgba[..., :3] == picture).all()


def test_a_non_commercial_segmenter_says_so(store, graphs):
    installed = store.import_model(graphs["rmbg"], kind="segmenter")
    picture, _ = photo_scene(64, 64)
    made = cut_out(picture, installed.path)
    assert len(made.notes) == 1 and "non-commercial" in made.notes[0]
    assert "bria-rmbg-1.4" in made.notes[0]


# --- refine ------------------------------------------------------------------------------

def hairy_picture(side: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """A bright disc on a dark ground with 1-pixel hairs sticking out of it; the hairs."""
    y, x = np.mgrid[0:side, 0:side]
    centre, radius = side / 2, side / 4
    picture = np.full((side, side, 3), 30, np.uint8)
    picture[(x - centre) ** 2 + (y - centre) ** 2 < radius**2] = (60, 220, 60)
    hairs = np.zeros((side, side), bool)
    for angle in np.linspace(0, 2 * np.pi, 48, endpoint=False):
        for step in np.arange(radius, radius + 10, 0.25):
            hairs[int(centre + step * np.sin(angle)), int(centre + step * np.cos(angle))] = True
    hairs &= (x - centre) ** 2 + (y - centre) ** 2 >= (radius + 2) ** 2
    picture[hairs] = (60, 220, 60)
    return picture, hairs


def test_refine_keeps_hair_that_a_plain_resize_loses(store, tmp_path):
    """A u2net-like graph with a soft (9-pixel box-blurred) edge at 320: enlarged to 512 the
    hairs are lost in the blur (their alpha no higher than the ground's beside them); the
    guided filter gives them back."""
    graph = export(TinySegmenter(7, offset=0.3, blur=9), tmp_path / "u2net.onnx", 320)
    installed = store.import_model(graph, kind="segmenter")
    picture, hairs = hairy_picture()
    ground = np.zeros_like(hairs)  # the ground beside each hair: 2 pixels off, not hair
    for dy, dx in ((2, 0), (-2, 0), (0, 2), (0, -2)):
        ground |= np.roll(hairs, (dy, dx), axis=(0, 1))
    ground &= ~hairs & (picture[..., 1] < 100)

    def contrast(alpha: np.ndarray) -> float:
        return float(alpha[hairs].astype(float).mean() - alpha[ground].astype(float).mean())

    plain = cut_out(picture, installed.path).alpha
    refined = cut_out(picture, installed.path, refine=True).alpha
    assert contrast(plain) < 20, contrast(plain)
    assert contrast(refined) > 60, contrast(refined)
    disc = (picture[..., 1] > 100) & ~hairs
    assert refined[disc].mean() > 240 and refined[~disc & ~hairs & ~ground].mean() < 20


# --- the flood fill ------------------------------------------------------------------------

def starter_subject(scene: sc.Scene, size: int) -> np.ndarray:
    """Where the starter renderer draws the scene's objects (their glyphs' alpha > 0.5)."""
    subject = np.zeros((size, size), np.float32)
    for placed in scene.objects:
        _, transparency = sc.glyph(placed.word, round(sc.SIZES[placed.size] * size))
        x0, y0, x1, y1 = sc.object_box(placed, size)
        region = subject[y0:y1, x0:x1]
        np.maximum(region, 1.0 - transparency[..., 0], out=region)
    return subject > 0.5


@pytest.mark.parametrize("scene", [
    sc.Scene((sc.Placed("avocado", "left"),), "blue"),
    sc.Scene((sc.Placed("dog", "centre", "big"),), "white"),
    sc.Scene((sc.Placed("horse", "right"), sc.Placed("chair", "left")), "pink"),
])
def test_the_flood_fill_cuts_out_starter_scenes(scene):
    picture = sc.render(scene, 256)
    made = cut_out(picture, None)
    assert made.method == "flood fill" and "colour" in made.notes[0]
    right = ((made.alpha > 127) == starter_subject(scene, 256)).mean()
    assert right >= 0.98, right


def test_the_flood_fill_cuts_a_product_off_white():
    """A shaded bottle with a white label (enclosed: kept) on slightly noisy white."""
    height, width = 400, 300
    y, x = np.mgrid[0:height, 0:width]
    rng = np.random.default_rng(5)
    picture = (248 + rng.integers(-4, 5, (height, width, 3))).astype(np.uint8)
    bottle = ((x - 150) ** 2 / 60**2 + (y - 260) ** 2 / 110**2 < 1) | \
        ((abs(x - 150) < 20) & (y > 60) & (y < 200))
    shade = (90 + 60 * np.abs(x - 150) / 60).astype(np.uint8)
    picture[bottle] = np.stack([shade // 2, shade, shade // 3], axis=2)[bottle]
    label = (abs(x - 150) < 35) & (y > 240) & (y < 290)
    picture[label] = 250
    alpha = cut_out(Image.fromarray(picture), None).alpha
    assert ((alpha > 127) == bottle).mean() >= 0.995


def test_the_flood_fill_follows_winding_background():
    """A spiral of background between the subject's arms is reached whatever its turns."""
    picture = np.full((64, 64, 3), 200, np.uint8)
    picture[8:56, 8:56] = 20
    picture[12:52, 12:52] = 200
    picture[16:48, 16:48] = 20
    picture[8:12, 30:34] = 200  # a gap in the outer ring into the corridor
    alpha = cut_out(picture, None).alpha
    assert alpha[14, 40] < 30 and alpha[30, 30] == 255 and alpha[10, 10] == 255


# --- bad input -----------------------------------------------------------------------------

def test_a_busy_background_asks_for_a_segmenter():
    picture, _ = photo_scene()
    with pytest.raises(BadRequest, match="no flat background; import a background removal"):
        cut_out(picture, None)


def test_bad_pictures_are_refused_in_one_sentence(store, graphs):
    clear = np.zeros((32, 32, 4), np.uint8)
    with pytest.raises(BadRequest, match="already fully transparent"):
        cut_out(clear, None)
    with pytest.raises(BadRequest, match="already fully transparent"):
        cut_out(Image.new("RGBA", (20, 20)), None)
    with pytest.raises(BadRequest, match="8192 pixels a side"):
        cut_out(Image.new("RGB", (9000, 4)), None)
    with pytest.raises(BadRequest, match="8-bit RGB"):
        cut_out(np.zeros((10, 10), np.float32), None)
    with pytest.raises(BadRequest, match="one flat colour"):
        cut_out(np.full((20, 20, 3), 90, np.uint8), None)
    with pytest.raises(BadRequest, match="8-bit grey"):
        apply_alpha(np.zeros((16, 16, 3), np.uint8), np.zeros((17, 16), np.uint8))
    half = np.full((32, 32, 4), 200, np.uint8)
    half[8:24, 8:24, :3] = 10
    assert cut_out(half, None).alpha[16, 16] == 255  # RGBA with some alpha: its RGB is used


def test_a_damaged_segmenter_is_refused(store, graphs):
    installed = store.import_model(graphs["u2net"], kind="segmenter")
    (installed.path / "easel.json").write_text('{"kind": "segmenter"}', encoding="utf-8")
    with pytest.raises(ModelError, match="damaged"):
        cut_out(np.full((16, 16, 3), 9, np.uint8), installed.path)
