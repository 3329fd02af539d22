"""Pose pictures from DWPose (engine.control.pose): stand-in graphs with DWPose's names and
shapes whose outputs are fixed here (a detector with one confident person at a known place, an
estimator whose SimCC maxima sit at known positions), imported as a folder, and the decoded
boxes, keypoints and drawn stick figure checked against the reference's rules worked by hand
(comfyui_controlnet_aux dwpose: dw_onnx/cv_ox_det.py, dw_onnx/cv_ox_pose.py, wholebody.py,
util.py)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from desktop.cli import main
from desktop.model_kinds import annotator as annotator_kind
from desktop.model_store import ModelStore
from engine.control import pose
from engine.control.pictures import make_control_picture
from engine.errors import BadRequest, ModelError
from tests import tiny_models

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
nn = torch.nn

ANCHORS = 80 * 80 + 40 * 40 + 20 * 20  # YOLOX at 640×640, strides 8, 16, 32
SIDE = 512  # the picture: 512×512, so the drawing (shorter side 512) is not resized
# The person: centre (256, 256), 200 wide, 400 high, in the picture's pixels.
PERSON = np.array([156.0, 56.0, 356.0, 456.0])
RATIO = 640 / SIDE  # the letterbox's scale


class Constant(nn.Module):
    """A graph whose outputs are fixed tensors (the picture only joins in times zero, so the
    graph still reads its input)."""

    def __init__(self, *outputs: np.ndarray) -> None:
        super().__init__()
        self.outputs = [torch.from_numpy(output) for output in outputs]

    def forward(self, picture):
        zero = picture.mean() * 0
        outs = tuple(output + zero for output in self.outputs)
        return outs if len(outs) > 1 else outs[0]


def export(module: nn.Module, path: Path, output_names: list[str],
           size: tuple[int, int]) -> Path:
    torch.onnx.export(module.eval(), (torch.rand(1, 3, *size),), str(path), dynamo=False,
                      opset_version=17, input_names=["input"], output_names=output_names)
    return path


# --- the stand-ins' outputs --------------------------------------------------------------------

def anchor(stride: int, column: int, row: int) -> int:
    """The row of YOLOX's output for one grid cell: the 80×80 cells, then 40×40, then 20×20."""
    before = {8: 0, 16: 80 * 80, 32: 80 * 80 + 40 * 40}[stride]
    return before + row * (640 // stride) + column


def detections() -> np.ndarray:
    """One confident person (stride 32, cell (10, 10): centre (320, 320) in the letterbox =
    (256, 256) in the picture), the same person a little shifted and less sure (NMS drops
    it), a confident car, and a doubtful person (0.2, under 0.3)."""
    out = np.zeros((1, ANCHORS, 85), np.float32)

    def put(index: int, offset: tuple[float, float], size: tuple[float, float],
            objectness: float, cls: int, score: float, stride: int) -> None:
        out[0, index, :2] = offset
        out[0, index, 2:4] = [math.log(side / stride) for side in size]
        out[0, index, 4], out[0, index, 5 + cls] = objectness, score

    put(anchor(32, 10, 10), (0.0, 0.0), (250.0, 500.0), 1.0, 0, 0.9, 32)
    put(anchor(32, 10, 11), (0.0, -0.8), (250.0, 500.0), 1.0, 0, 0.8, 32)
    put(anchor(16, 5, 5), (0.5, 0.5), (40.0, 40.0), 1.0, 2, 0.95, 16)
    put(anchor(8, 70, 70), (0.0, 0.0), (30.0, 60.0), 1.0, 0, 0.2, 8)
    return out


# The crop: the box grown by 1.25 (250×500) and widened to 288/384 (375×500).
CROP_SCALE = np.array([375.0, 500.0])
CROP_CENTRE = np.array([256.0, 256.0])
# Where chosen keypoints are put, in SimCC bins (x bins of 576, y of 768: twice 288 and 384).
SHOWN = {6: (40, 300), 8: (40, 500),  # right shoulder, right elbow (COCO-WholeBody)
         23 + 30: (220, 200),  # one face point (the 31st of 68)
         91: (400, 600), 92: (440, 560)}  # the left hand's wrist and first thumb joint


def bins_to_picture(bins: tuple[int, int]) -> np.ndarray:
    """cv_ox_pose.py: bin / 2 = crop pixel; / crop size * scale + centre - scale / 2."""
    crop = np.array(bins) / 2.0
    return crop / np.array([288.0, 384.0]) * CROP_SCALE + CROP_CENTRE - CROP_SCALE / 2


def simcc() -> tuple[np.ndarray, np.ndarray]:
    x, y = np.full((1, 133, 576), -1.0, np.float32), np.full((1, 133, 768), -1.0, np.float32)
    for point, (bin_x, bin_y) in SHOWN.items():
        x[0, point, bin_x], y[0, point, bin_y] = 0.9, 0.8
    return x, y


# --- fixtures -------------------------------------------------------------------------------

@pytest.fixture
def store(tmp_path) -> ModelStore:
    return ModelStore(tmp_path / "models")


def dwpose_folder(folder: Path, detector: np.ndarray | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    export(Constant(detections() if detector is None else detector), folder / "yolox_l.onnx",
           ["output"], (640, 640))
    export(Constant(*simcc()), folder / "dw-ll_ucoco_384.onnx", ["simcc_x", "simcc_y"],
           (384, 288))
    return folder


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> Path:
    return dwpose_folder(tmp_path_factory.mktemp("sources") / "DWPose")


@pytest.fixture(scope="module")
def picture() -> np.ndarray:
    y, x = np.mgrid[0:SIDE, 0:SIDE]
    return np.stack([x // 2, y // 2, (x + y) // 4], axis=2).astype(np.uint8)


# --- the pieces, against the reference's rules ---------------------------------------------------

def test_yolox_is_decoded_and_only_the_sure_person_is_kept(picture):
    boxes = pose.detect_people(picture, lambda sample: detections())
    # centre 320 / 1.25 = 256; 250 / 1.25 = 200 wide, 500 / 1.25 = 400 high.
    np.testing.assert_allclose(boxes, [PERSON], atol=1e-3)


def test_the_letterbox_puts_the_picture_top_left_on_grey(picture):
    tall = picture[:, :256]
    sample, ratio = pose.letterbox(tall, (640, 640))
    assert ratio == 640 / 512 and sample.shape == (1, 3, 640, 640)
    assert (sample[0, :, :, 320:] == 114).all()  # 256 * 1.25 = 320 columns of picture
    assert sample[0, 0, 0, 0] == tall[0, 0, 0]


def test_the_crop_is_the_grown_box_at_the_estimator_aspect(picture):
    centre, scale = pose.crop_box(PERSON, (384, 288))
    np.testing.assert_allclose(centre, CROP_CENTRE)
    np.testing.assert_allclose(scale, CROP_SCALE)
    crop = pose.crop_person(picture, centre, scale, (384, 288)).astype(int)
    # cv2.warpAffine: crop pixel (i, j) reads the picture at centre - scale / 2 + (j, i) *
    # step, pixel centres at whole numbers; the ramp is linear there, so bilinear is exact.
    step = 375 / 288
    for i, j in ((100, 100), (200, 50), (383, 287)):
        x, y = 256 - 187.5 + j * step, 256 - 250 + i * step
        if x <= SIDE - 1 and y <= SIDE - 1:
            assert abs(crop[i, j, 0] - x / 2) <= 1 and abs(crop[i, j, 1] - y / 2) <= 1
    # Around the picture's corner: black outside it, as warpAffine's constant border.
    corner = pose.crop_person(picture, np.zeros(2), scale, (384, 288))
    assert (corner[:190, :140] == 0).all() and corner[200:, 150:].all()


def test_the_estimator_reads_the_normalised_crop_and_keypoints_come_back(picture):
    seen = []

    def run(sample):
        seen.append(sample)
        return simcc()

    points, scores = pose.estimate_pose(picture, PERSON, run, (384, 288))
    crop = pose.crop_person(picture, CROP_CENTRE, CROP_SCALE, (384, 288)).astype(np.float32)
    expected = (crop - np.float32([123.675, 116.28, 103.53])) / np.float32([58.395, 57.12,
                                                                            57.375])
    np.testing.assert_allclose(seen[0][0], expected.transpose(2, 0, 1), rtol=1e-6)
    for point, bins in SHOWN.items():
        np.testing.assert_allclose(points[point], bins_to_picture(bins), atol=1e-9)
        assert scores[point] == pytest.approx(0.8)  # the smaller of the two maxima
    assert scores[0] == -1 and (points[0] == bins_to_picture((-1, -1))).all()


def test_openpose_order_puts_the_neck_between_the_shoulders():
    points = np.arange(133 * 2, dtype=np.float64).reshape(133, 2)
    scores = np.full(133, 0.9)
    body, body_scores = pose.openpose_points(points, scores)
    assert len(body) == 134
    np.testing.assert_allclose(body[1], (points[5] + points[6]) / 2)
    assert body_scores[1] == 1.0
    # OpenPose: 2 right shoulder (COCO 6), 4 right wrist (10), 8 right hip (12), 14 right eye
    # (2), 17 left ear (3); then the feet, face and hands shifted by the neck.
    for openpose, coco in ((0, 0), (2, 6), (4, 10), (5, 5), (8, 12), (14, 2), (17, 3)):
        np.testing.assert_allclose(body[openpose], points[coco])
    np.testing.assert_allclose(body[18:], points[17:])
    scores[5] = 0.2
    assert pose.openpose_points(points, scores)[1][1] == 0.0


# --- import and the whole picture --------------------------------------------------------------

def test_the_folder_of_both_graphs_is_imported_and_described(store, sources):
    installed = store.import_model(sources)
    assert installed.kind == "annotator"
    data = json.loads((installed.path / "easel.json").read_text(encoding="utf-8"))
    assert (data["kind"], data["control"], data["network"], data["licence"]) == \
        ("annotator", "openpose", "dwpose", "Apache-2.0")
    assert data["detector"]["file"] == "detector.onnx" and \
        data["detector"]["input_size"] == [640, 640]
    assert data["estimator"]["file"] == "pose.onnx" and \
        data["estimator"]["input_size"] == [384, 288]
    assert data["source"] == ["yolox_l.onnx", "dw-ll_ucoco_384.onnx"]
    assert (installed.path / "detector.onnx").is_file() and \
        (installed.path / "pose.onnx").is_file()
    assert annotator_kind.find_annotator(store, "pose") == installed.path


def test_make_control_picture_draws_the_stick_figure(store, sources, picture):
    installed = store.import_model(sources)
    made = make_control_picture("openpose", picture, annotator=installed.path)
    assert made.shape == (SIDE, SIDE, 3) and made.dtype == np.uint8
    shoulder, elbow = bins_to_picture(SHOWN[6]), bins_to_picture(SHOWN[8])
    face = bins_to_picture(SHOWN[53])
    wrist, thumb = bins_to_picture(SHOWN[91]), bins_to_picture(SHOWN[92])

    def at(point) -> tuple[int, ...]:
        return tuple(int(v) for v in made[int(point[1]), int(point[0])])

    assert at(shoulder) == (255, 170, 0)  # OpenPose joint 2's colour, full
    assert at(elbow) == (255, 255, 0)  # joint 3
    middle = (shoulder + elbow) / 2
    # util.py's limbSeq counts from 1: shoulder to elbow is [3, 4], the third limb, drawn in
    # the third colour (255, 170, 0) × 0.6.
    assert at(middle) == (153, 102, 0)
    assert at(middle + [3, 0]) == (153, 102, 0)  # within its 4-pixel half-width
    assert at(middle + [7, 0]) == (0, 0, 0)
    assert at(face) == (255, 255, 255)
    assert at(wrist) == (0, 0, 255) and at(thumb) == (0, 0, 255)
    bone_middle = (np.floor(wrist) + np.floor(thumb)) / 2
    assert at(bone_middle) == (255, 0, 0)  # the first bone: hue 0
    # Nothing else: everything outside those marks is black.
    marks = np.zeros((SIDE, SIDE), bool)
    for point in (shoulder, elbow, face, wrist, thumb):
        marks[int(point[1]) - 6:int(point[1]) + 7, int(point[0]) - 6:int(point[0]) + 7] = True
    low, high = np.minimum(shoulder, elbow).astype(int), np.maximum(shoulder, elbow).astype(int)
    marks[low[1]:high[1] + 1, low[0] - 6:high[0] + 7] = True
    low, high = np.minimum(wrist, thumb).astype(int), np.maximum(wrist, thumb).astype(int)
    marks[low[1] - 2:high[1] + 3, low[0] - 2:high[0] + 3] = True
    assert (made[~marks] == 0).all()
    assert made[marks].any(axis=-1).sum() > 100


def test_a_bigger_picture_is_drawn_at_512_then_resized(store, sources, picture):
    installed = store.import_model(sources)
    big = np.asarray(Image.fromarray(picture).resize((1024, 1024)))
    made = make_control_picture("openpose", big, annotator=installed.path)
    assert made.shape == (1024, 1024, 3)
    shoulder = bins_to_picture(SHOWN[6])  # the same person, at twice the size
    assert tuple(made[int(shoulder[1] * 2), int(shoulder[0] * 2)]) == (255, 170, 0)


def test_no_person_is_one_sentence(store, tmp_path, picture):
    folder = dwpose_folder(tmp_path / "empty", np.zeros((1, ANCHORS, 85), np.float32))
    installed = store.import_model(folder)
    with pytest.raises(BadRequest, match=r"^No person was found in the picture, so there "
                                         r"is no pose to follow\.$"):
        make_control_picture("pose", picture, annotator=installed.path)


def nothing_installed(store: ModelStore) -> bool:
    return not any(path.name != ".lock" for path in store.root.iterdir()) \
        if store.root.exists() else True


def test_a_lone_dwpose_graph_is_refused(store, sources, tmp_path):
    for name in ("yolox_l.onnx", "dw-ll_ucoco_384.onnx"):
        with pytest.raises(ModelError, match=r"is one of DWPose's two graphs, and a pose "
                                             r"picture needs both"):
            store.import_model(sources / name, kind="annotator")
    half = tmp_path / "half"
    half.mkdir()
    shutil.copyfile(sources / "yolox_l.onnx", half / "yolox_l.onnx")
    with pytest.raises(ModelError, match=r"lacks DWPose's pose estimator"):
        store.import_model(half)
    assert nothing_installed(store)
    with pytest.raises(BadRequest, match=r"needs a pose annotator model: import the folder"):
        annotator_kind.find_annotator(store, "openpose")


# --- easel generate --control openpose:PICTURE ------------------------------------------------

SIZE = ["--width", "64", "--height", "48", "--steps", "2", "--seed", "3"]


@pytest.fixture(scope="module")
def home(tmp_path_factory, sources):
    pytest.importorskip("diffusers")
    from tests.tiny_controlnets import tiny_sd1_controlnet

    home = tmp_path_factory.mktemp("pose-home") / "home"
    tiny_sd1_controlnet(seed=0).save_pretrained(home.parent / "control_v11p_sd15_openpose")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EASEL_HOME", str(home))
        assert main(["models", "import", str(tiny_models.tiny_diffusers("sd1")), "--name",
                     "tiny"]) == 0
        assert main(["models", "import", str(home.parent / "control_v11p_sd15_openpose")]) == 0
        assert main(["models", "import", str(sources), "--name", "dwpose"]) == 0
    return home


def generate(tmp_path: Path, name: str, *extra: str) -> np.ndarray:
    target = tmp_path / name
    assert main(["generate", "a dancer", "--model", "tiny", *SIZE, "-o", str(target),
                 *extra]) == 0
    with Image.open(target) as image:
        return np.asarray(image)


def test_generate_follows_the_pose(home, tmp_path, picture, monkeypatch):
    monkeypatch.setenv("EASEL_HOME", str(home))
    source = tmp_path / "dancer.png"
    Image.fromarray(picture).save(source)
    steered = generate(tmp_path, "steered.png", "--control", f"openpose:{source}")
    skeleton = make_control_picture("openpose", picture,
                                    annotator=ModelStore(home / "models").path_of("dwpose",
                                                                                   "annotator"))
    ready = tmp_path / "skeleton.png"
    Image.fromarray(skeleton).save(ready)
    same = generate(tmp_path, "ready.png", "--control",
                    f"picture=control_v11p_sd15_openpose:{ready}")
    assert np.array_equal(same, steered)
