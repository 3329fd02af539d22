"""Annotators: tiny ONNX graphs with the real networks' input and output shapes (Depth
Anything, MiDaS, informative drawings' line art, ControlNetHED, DWPose, an upscaler), imported
through the model store, run by engine.control.annotators and checked against a plain
reimplementation of each reference pre- and post-processing here; ``easel generate --control
depth:PICTURE`` end to end; and one sentence for what cannot work."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from desktop.cli import main
from desktop.model_kinds import annotator as annotator_kind
from desktop.model_store import ModelStore
from engine.control.pictures import make_control_picture
from engine.errors import BadRequest, ModelError
from tests import tiny_models

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
nn = torch.nn

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


# --- tiny networks with the real ones' shapes -------------------------------------------------

class TinyMap(nn.Module):
    """One picture in, one map out: (1, H, W) as Depth Anything's "depth", or (1, 1, H, W)
    through a sigmoid as the line art generator's."""

    def __init__(self, squeeze: bool = True, sigmoid: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 1, 3, padding=1)
        self.squeeze, self.sigmoid = squeeze, sigmoid

    def forward(self, picture):
        out = self.conv(picture)
        out = torch.sigmoid(out) if self.sigmoid else out
        return out[:, 0] if self.squeeze else out


class TinyHed(nn.Module):
    """ControlNetHED's five one-channel projections, each half the size of the one before."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.convs = nn.ModuleList(nn.Conv2d(3, 1, 3, padding=1) for _ in range(5))

    def forward(self, picture):
        outs = []
        for index, conv in enumerate(self.convs):
            outs.append(conv(nn.functional.avg_pool2d(picture, 2**index) if index else picture))
        return tuple(outs)


class TinyUpscaler(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.shuffle = nn.Conv2d(3, 12, 3, padding=1), nn.PixelShuffle(2)

    def forward(self, picture):
        return self.shuffle(self.conv(picture))


class TinyPoseEstimator(nn.Module):
    """DWPose's RTMPose: a fixed 32×24 crop in, SimCC x and y scores out."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, picture):
        features = self.conv(picture).flatten(2)
        return features[:, :, :48], features[:, :, :64]


class TinyDetector(nn.Module):
    """YOLOX: a fixed picture in, (1, anchors, 85) out."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 85, 4, stride=4)

    def forward(self, picture):
        return self.conv(picture).flatten(2).transpose(1, 2)


def export(module: nn.Module, path: Path, input_name: str, output_names: list[str],
           size: tuple[int, int] = (64, 64), dynamic: bool = True) -> Path:
    axes = None
    if dynamic:
        axes = {input_name: {2: "height", 3: "width"}}
    torch.onnx.export(module.eval(), (torch.rand(1, 3, *size),), str(path), dynamo=False,
                      opset_version=17, input_names=[input_name], output_names=output_names,
                      dynamic_axes=axes)
    return path


def run_module(module: nn.Module, sample: np.ndarray) -> list[np.ndarray]:
    with torch.no_grad():
        out = module(torch.from_numpy(sample))
    outs = out if isinstance(out, tuple) else (out,)
    return [o.numpy().reshape(o.shape[-2:]) for o in outs]


# --- the reference processing, written out plainly ---------------------------------------------

def resized_input(picture: np.ndarray, size: tuple[int, int], resample) -> np.ndarray:
    image = Image.fromarray(picture).resize((size[1], size[0]), resample)
    return np.asarray(image, dtype=np.float32) / 255


def to_sample(pixels: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(pixels.transpose(2, 0, 1)[None], dtype=np.float32)


def resized_map(plane: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if plane.shape == size:
        return plane
    image = Image.fromarray(plane.astype(np.float32))
    return np.asarray(image.resize((size[1], size[0]), Image.Resampling.BILINEAR))


def min_max_grey(plane: np.ndarray) -> np.ndarray:
    return np.rint((plane - plane.min()) / (plane.max() - plane.min()) * 255).astype(np.uint8)


def assert_grey_close(made: np.ndarray, expected: np.ndarray) -> None:
    assert made.dtype == np.uint8 and made.shape == (*expected.shape, 3)
    assert (made == made[..., :1]).all(), "grey: three equal channels"
    assert np.abs(made[..., 0].astype(int) - expected.astype(int)).max() <= 1


# --- fixtures -------------------------------------------------------------------------------

@pytest.fixture
def store(tmp_path) -> ModelStore:
    return ModelStore(tmp_path / "models")


@pytest.fixture(scope="module")
def picture() -> np.ndarray:
    """80 high, 96 wide: a bright disc and a bar on a ramp, so every network sees something."""
    y, x = np.mgrid[0:80, 0:96]
    pixels = np.stack([x * 2, y * 3, (x + y)], axis=2).astype(np.uint8)
    pixels[(x - 30) ** 2 + (y - 30) ** 2 < 15**2] = (240, 220, 40)
    pixels[50:65, 40:90] = (30, 110, 220)
    return pixels


def described(folder: Path) -> dict:
    return json.loads((folder / "easel.json").read_text(encoding="utf-8"))


def nothing_installed(store: ModelStore) -> bool:
    return not any(path.name != ".lock" for path in store.root.iterdir()) \
        if store.root.exists() else True


# --- depth ----------------------------------------------------------------------------------

def test_a_depth_anything_graph_is_told_by_its_names_and_makes_a_depth_map(store, tmp_path,
                                                                           picture):
    module = TinyMap()
    graph = export(module, tmp_path / "depth_anything_vits14.onnx", "image", ["depth"])
    # A lone graph goes to the upscaler kind only when no kind knows it: this one is known.
    installed = store.import_model(graph)
    assert (installed.kind, installed.family) == ("annotator", "depth annotator")
    assert installed.licence == "Apache-2.0"
    description = described(installed.path)
    assert {key: description[key] for key in ("kind", "control", "network", "input_size",
                                              "input_name", "output_names")} == {
        "kind": "annotator", "control": "depth", "network": "depth_anything",
        "input_size": None, "input_name": "image", "output_names": ["depth"]}
    assert description["normalisation"]["mean"] == pytest.approx(IMAGENET_MEAN.tolist())

    made = make_control_picture("depth", picture, annotator=installed.path)
    # Depth Anything's Resize: shorter side 518, multiples of 14, never below 518
    # (96 * 518 / 80 = 621.6 -> 630), bicubic; ImageNet mean and std.
    pixels = resized_input(picture, (518, 630), Image.Resampling.BICUBIC)
    (depth,) = run_module(module, to_sample((pixels - IMAGENET_MEAN) / IMAGENET_STD))
    assert depth.shape == (518, 630)
    expected = min_max_grey(resized_map(depth, (80, 96)))
    assert_grey_close(made, expected)
    assert made.min() == 0 and made.max() == 255


def test_a_fixed_size_midas_graph_is_fed_its_size(store, tmp_path, picture):
    module = TinyMap(squeeze=False)
    graph = export(module, tmp_path / "dpt_hybrid-midas-501f0c75.onnx", "input", ["output"],
                   size=(48, 48), dynamic=False)
    installed = store.import_model(graph, kind="annotator")
    description = described(installed.path)
    assert (description["network"], description["input_size"], installed.licence) == (
        "midas", [48, 48], "MIT")
    made = make_control_picture("depth", picture, annotator=installed.path)
    # rgb / 127.5 - 1, at exactly the graph's size; the map resized back to 80×96.
    pixels = resized_input(picture, (48, 48), Image.Resampling.LANCZOS)
    (depth,) = run_module(module, to_sample((pixels - 0.5) / 0.5))
    assert_grey_close(made, min_max_grey(resized_map(depth, (80, 96))))


# --- line art and soft edges -------------------------------------------------------------------

def test_line_art_comes_out_white_on_black(store, tmp_path, picture):
    module = TinyMap(squeeze=False, sigmoid=True)
    graph = export(module, tmp_path / "sk_model.onnx", "input", ["output"])
    installed = store.import_model(graph, kind="annotator")
    assert described(installed.path)["control"] == "lineart"
    made = make_control_picture("lineart", picture, annotator=installed.path)
    # controlnet_aux lineart: shorter side 512 (96 * 512 / 80 = 614.4 -> 616, multiples of
    # 8), rgb / 255; the generator's 1 is white paper, so 255 - 255 * x.
    pixels = resized_input(picture, (512, 616), Image.Resampling.LANCZOS)
    (lines,) = run_module(module, to_sample(pixels))
    paper = np.clip(resized_map(lines, (80, 96)) * 255, 0, 255)
    assert_grey_close(made, np.rint(255 - paper).astype(np.uint8))
    # Not inverted, it would be far off: the inversion is what makes lines white on black.
    assert np.abs(made[..., 0].astype(int) - np.rint(paper).astype(int)).mean() > 20


def test_hed_averages_its_five_maps_through_a_sigmoid(store, tmp_path, picture):
    module = TinyHed()
    names = [f"projection{index}" for index in range(1, 6)]
    graph = export(module, tmp_path / "ControlNetHED.onnx", "input", names)
    installed = store.import_model(graph, kind="annotator")
    assert (described(installed.path)["control"], installed.licence) == ("softedge",
                                                                         "Apache-2.0")
    made = make_control_picture("softedge", picture, annotator=installed.path)
    # controlnet_aux hed: raw 0..255 RGB; each projection resized to the input, averaged,
    # sigmoid, * 255 (96 * 512 / 80 = 614.4 -> 608, multiples of 16).
    pixels = resized_input(picture, (512, 608), Image.Resampling.LANCZOS)
    maps = run_module(module, to_sample(pixels * 255))
    assert [m.shape for m in maps][-1] == (32, 38)
    mean = np.mean([resized_map(m, (512, 608)) for m in maps], axis=0)
    edges = 255 / (1 + np.exp(-mean.astype(np.float64)))
    expected = np.rint(np.clip(resized_map(edges.astype(np.float32), (80, 96)), 0, 255))
    assert_grey_close(made, expected.astype(np.uint8))


def test_a_hed_port_with_the_sigmoid_inside_gives_its_probability(store, tmp_path, picture):
    module = TinyMap(squeeze=False, sigmoid=True)
    graph = export(module, tmp_path / "hed.onnx", "input", ["output"])
    installed = store.import_model(graph, kind="annotator")
    made = make_control_picture("hed", picture, annotator=installed.path)
    pixels = resized_input(picture, (512, 608), Image.Resampling.LANCZOS)
    (edges,) = run_module(module, to_sample(pixels * 255))
    expected = np.rint(np.clip(resized_map(edges, (80, 96)) * 255, 0, 255))
    assert_grey_close(made, expected.astype(np.uint8))


# --- what is not an annotator, or not one Easel runs --------------------------------------------

def test_an_upscaler_is_never_claimed(store, tmp_path):
    graph = export(TinyUpscaler(), tmp_path / "RealESRGAN_x2.onnx", "image", ["upscaled"])
    assert not annotator_kind.recognises(graph, "onnx-upscaler")
    with pytest.raises(ModelError, match=r"'RealESRGAN_x2.onnx' is not an annotator\."):
        store.import_model(graph, kind="annotator")
    assert store.import_model(graph).kind == "upscaler"


def test_a_graph_that_is_neither_is_refused(store, tmp_path):
    graph = export(TinyMap(squeeze=False), tmp_path / "mystery.onnx", "input", ["output"])
    with pytest.raises(ModelError, match=r"Neither the tensor names nor the file name of "
                                         r"'mystery.onnx' say which annotator it is"):
        store.import_model(graph, kind="annotator")

    class TwoPictures(nn.Module):
        def forward(self, first, second):
            return first + second

    two = tmp_path / "blend.onnx"
    torch.onnx.export(TwoPictures(), (torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8)),
                      str(two), dynamo=False, input_names=["a", "b"], output_names=["out"])
    with pytest.raises(ModelError, match=r"'blend.onnx' is not an annotator\."):
        store.import_model(two, kind="annotator")
    assert nothing_installed(store)


@pytest.mark.parametrize(("module", "file", "outputs", "size"), [
    (TinyPoseEstimator, "dw-ll_ucoco_384.onnx", ["simcc_x", "simcc_y"], (32, 24)),
    (TinyDetector, "yolox_l.onnx", ["output"], (64, 64)),
])
def test_a_lone_dwpose_graph_is_told_and_refused(store, tmp_path, module, file, outputs,
                                                size):
    graph = export(module(), tmp_path / file, "input", outputs, size=size, dynamic=False)
    with pytest.raises(ModelError, match=r"is one of DWPose's two graphs, and a pose picture "
                                         r"needs both"):
        store.import_model(graph, kind="annotator")
    assert nothing_installed(store)


def test_an_annotator_of_another_control_is_refused(store, tmp_path, picture):
    graph = export(TinyMap(squeeze=False, sigmoid=True), tmp_path / "sk_model.onnx", "input",
                   ["output"])
    lineart = store.import_model(graph, kind="annotator")
    with pytest.raises(BadRequest, match=r"makes lineart pictures, not depth ones"):
        make_control_picture("depth", picture, annotator=lineart.path)
    with pytest.raises(BadRequest, match=r"made by Easel itself"):
        make_control_picture("canny", picture, annotator=lineart.path)
    with pytest.raises(BadRequest, match=r"needs a depth annotator model: import one"):
        annotator_kind.find_annotator(store, "depth")
    assert annotator_kind.find_annotator(store, "lineart") == lineart.path
    assert annotator_kind.find_annotator(store, "canny") is None
    with pytest.raises(BadRequest, match=r"needs a pose annotator model: import the folder"):
        annotator_kind.find_annotator(store, "pose")


# --- easel generate --control depth:PICTURE, end to end ------------------------------------------

SIZE = ["--width", "64", "--height", "48", "--steps", "2", "--seed", "3"]


@pytest.fixture(scope="module")
def home_with_depth(tmp_path_factory):
    """The tiny SD 1.x, a depth ControlNet for it and a Depth Anything annotator."""
    pytest.importorskip("diffusers")
    from tests.tiny_controlnets import tiny_sd1_controlnet

    template = tmp_path_factory.mktemp("template") / "home"
    sources = template.parent
    tiny_sd1_controlnet(seed=0).save_pretrained(sources / "control_v11f1p_sd15_depth")
    graph = export(TinyMap(), sources / "depth_anything_vits14.onnx", "image", ["depth"])
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EASEL_HOME", str(template))
        assert main(["models", "import", str(tiny_models.tiny_diffusers("sd1")), "--name",
                     "tiny"]) == 0
        assert main(["models", "import", str(sources / "control_v11f1p_sd15_depth")]) == 0
        assert main(["models", "import", str(graph), "--kind", "annotator"]) == 0
    return template


@pytest.fixture
def home(home_with_depth, tmp_path, monkeypatch):
    home = tmp_path / "home"
    shutil.copytree(home_with_depth, home)
    monkeypatch.setenv("EASEL_HOME", str(home))
    return home


def generate(tmp_path: Path, name: str, *extra: str) -> tuple[np.ndarray, dict]:
    target = tmp_path / name
    assert main(["generate", "a red chair", "--model", "tiny", *SIZE, "-o", str(target),
                 *extra]) == 0
    with Image.open(target) as image:
        return np.asarray(image), json.loads(image.text["easel"])


def test_generate_makes_the_depth_picture_with_the_annotator(home, tmp_path, picture):
    source = tmp_path / "room.png"
    Image.fromarray(picture).save(source)
    steered, metadata = generate(tmp_path, "steered.png", "--control", f"depth:{source}")
    (control,) = metadata["controls"]
    assert (control["controlnet"], control["control"]) == ("control_v11f1p_sd15_depth",
                                                           "depth")
    # The same picture as giving the annotator's depth map ready-made.
    store = ModelStore(home / "models")
    depth = make_control_picture("depth", picture,
                                 annotator=store.path_of("depth_anything_vits14", "annotator"))
    ready = tmp_path / "depth.png"
    Image.fromarray(depth).save(ready)
    same, _ = generate(tmp_path, "ready.png", "--control",
                       f"picture=control_v11f1p_sd15_depth:{ready}")
    assert np.array_equal(same, steered)
    plain, _ = generate(tmp_path, "plain.png")
    assert np.abs(steered.astype(int) - plain.astype(int)).mean() > 0.5


@pytest.mark.parametrize(("option", "sentence"), [
    ("lineart:{source}", "needs a line art annotator model: import one"),
    ("pose:{source}", "needs a pose annotator model: import the folder"),
])
def test_what_cannot_be_annotated_is_one_sentence(home, tmp_path, picture, capsys, option,
                                                  sentence):
    source = tmp_path / "room.png"
    Image.fromarray(picture).save(source)
    before = sorted(home.rglob("*.png"))
    assert main(["generate", "a red chair", "--model", "tiny", *SIZE, "--control",
                 option.format(source=source)]) != 0
    assert sentence in capsys.readouterr().err
    assert sorted(home.rglob("*.png")) == before

