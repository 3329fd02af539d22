"""Face restoration: GFPGAN, RestoreFormer and CodeFormer checkpoints imported through the
store and exported to ONNX (matching torch; CodeFormer's fidelity an input), YuNet's outputs decoded
to the boxes and points expected, the crop / restore / paste-back path on a synthetic picture
(a restorer that inverts colours shows it), and ``easel restore-faces`` end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from desktop.cli import main
from desktop.library import Library
from desktop.model_store import ModelStore
from engine.errors import BadRequest, ModelError
from engine.faces import FaceRestorerDescription, restore_faces
from engine.faces.align import alignment, box_crop, crop_face, paste_face
from engine.faces.detect import YUNET_OUTPUTS, detect_faces
from engine.manifest import write_manifest

torch = pytest.importorskip("torch")
from tests.test_upscale import _spandrel_or_skip  # noqa: E402

_spandrel_or_skip()


@pytest.fixture
def store(tmp_path) -> ModelStore:
    return ModelStore(tmp_path / "models")


def _seeded(seed: int) -> None:
    torch.manual_seed(seed)


def tiny_gfpgan():
    from spandrel.architectures.GFPGAN import GFPGAN

    _seeded(0)
    return GFPGAN(out_size=64, num_style_feat=16, channel_multiplier=1, num_mlp=2,
                  narrow=1 / 16, sft_half=True, fix_decoder=False, input_is_latent=True,
                  different_w=True).eval()


def tiny_restoreformer():
    from engine.export.upscaler_checkpoint import _torchvision_stand_in

    with _torchvision_stand_in():
        from spandrel.architectures.RestoreFormer import RestoreFormer
    _seeded(1)
    return RestoreFormer(n_embed=16, embed_dim=32, ch=32, out_ch=3, ch_mult=(1, 1, 1, 1, 1, 1),
                         num_res_blocks=1, attn_resolutions=(16,), dropout=0.0, in_channels=3,
                         resolution=512, z_channels=32, double_z=False, enable_mid=True,
                         head_size=8).eval()


def tiny_codeformer():
    """spandrel_extra_arches' CodeFormer at its smallest: its VQGAN (72 M parameters, 512 px)
    is fixed by its constructor; the transformer, codebook and fusions are not."""
    pytest.importorskip("spandrel_extra_arches")
    from spandrel_extra_arches.architectures.CodeFormer import CodeFormer

    _seeded(2)  # n_head 8: spandrel assumes it when loading
    return CodeFormer(dim_embd=32, n_head=8, n_layers=1, codebook_size=16,
                      connect_list=["32", "64"]).eval()


def _onnx_output(folder, sample: np.ndarray, **more: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    return session.run(["restored"], {"image": sample, **more})[0]


def test_a_gfpgan_checkpoint_imports_and_its_graph_matches_torch(tmp_path, store):
    from safetensors.torch import save_file

    network = tiny_gfpgan()
    checkpoint = tmp_path / "GFPGANv1.4.safetensors"
    save_file({key: value.contiguous() for key, value in network.state_dict().items()},
              checkpoint)
    installed = store.import_model(checkpoint)
    assert (installed.kind, installed.family) == ("face_restorer", "face restorer (GFPGAN, 64 px)")
    assert "Apache-2.0" in installed.licence
    description = FaceRestorerDescription.load(installed.path)
    assert (description.input_size, description.value_range, description.non_commercial) == (
        64, "0..1", False)
    sample = np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32)
    with torch.no_grad():
        expected = network(torch.from_numpy(sample) * 2 - 1, return_rgb=False,
                           randomize_noise=False)[0]
    expected = ((expected + 1) / 2).clamp(0, 1).numpy()
    np.testing.assert_allclose(_onnx_output(installed.path, sample), expected, atol=1e-4)


def test_a_restoreformer_pth_imports_through_the_safe_conversion(tmp_path, store):
    network = tiny_restoreformer()
    checkpoint = tmp_path / "RestoreFormer.pth"
    torch.save({"params_ema": network.state_dict()}, checkpoint)
    installed = store.import_model(checkpoint)  # "params_ema" as Real-ESRGAN: told apart
    assert installed.family == "face restorer (RestoreFormer, 512 px)"
    assert installed.licence == "Apache-2.0"
    sample = np.random.default_rng(1).random((1, 3, 512, 512), dtype=np.float32)
    with torch.no_grad():
        expected = ((network(torch.from_numpy(sample) * 2 - 1)[0] + 1) / 2).clamp(0, 1)
    np.testing.assert_allclose(_onnx_output(installed.path, sample), expected.numpy(),
                               atol=1e-4)


@pytest.mark.slow  # CodeFormer's fixed 512 px VQGAN: about a minute on two cores
def test_a_codeformer_pth_imports_with_its_fidelity_as_an_input(home, tmp_path, capsys):
    from desktop import paths

    network = tiny_codeformer()
    checkpoint = tmp_path / "codeformer.pth"
    torch.save({"params_ema": network.state_dict()}, checkpoint)  # as the release is saved
    installed = ModelStore(paths.models_dir()).import_model(checkpoint)  # told by its names
    assert (installed.kind, installed.family) == ("face_restorer",
                                                  "face restorer (CodeFormer, 512 px)")
    assert installed.licence == "S-Lab License 1.0 (non-commercial)"
    description = FaceRestorerDescription.load(installed.path)
    assert (description.non_commercial, description.fidelity_input) == (True, "fidelity")
    sample = np.random.default_rng(2).random((1, 3, 512, 512), dtype=np.float32)
    outputs = []
    for fidelity in (0.0, 1.0):  # at 0 the reference skips its fusions in Python
        with torch.no_grad():
            expected = network(torch.from_numpy(sample) * 2 - 1, fidelity)[0]
        expected = ((expected + 1) / 2).clamp(0, 1).numpy()
        outputs.append(_onnx_output(installed.path, sample,
                                    fidelity=np.array(fidelity, np.float32)))
        np.testing.assert_allclose(outputs[-1], expected, atol=1e-4)
    assert np.abs(outputs[0] - outputs[1]).max() > 1e-3  # the weight is an input, not baked
    picture = tmp_path / "face.png"
    Image.fromarray(synthetic_picture(64, 64)).save(picture)
    assert main(["restore-faces", str(picture), "--box", "16,16,32,32", "--fidelity", "1.5"]) == 1
    assert "fidelity weight 1.5 is outside 0 to 1" in capsys.readouterr().err
    assert main(["restore-faces", str(picture), "--box", "16,16,32,32", "--fidelity", "0.7"]) == 0
    err = capsys.readouterr().err
    assert "with face restorer (CodeFormer, 512 px) at fidelity 0.7" in err
    assert "CodeFormer is licensed for non-commercial use only (S-Lab License 1.0" in err


def test_strangers_are_refused_in_one_sentence(tmp_path, store):
    from safetensors.torch import save_file

    damaged = tmp_path / "broken.safetensors"
    save_file({"toRGB.0.weight": torch.zeros(3, 3),
               "stylegan_decoder.style_mlp.1.weight": torch.zeros(4, 4)}, damaged)
    with pytest.raises(ModelError, match="weights do not fit together"):
        store.import_model(damaged)
    assert store.installed("face_restorer") == []


# --- YuNet ------------------------------------------------------------------------------------

SIDE = 64  # the tiny YuNet graph's fixed input


def yunet_outputs(faces: list[tuple[int, int, int, float, tuple]]) -> list[np.ndarray]:
    """YuNet's twelve outputs for a SIDE×SIDE sample, zero but for ``faces``: (stride, row,
    column, score, (dx, dy, width, height in pixels)); points at fixed places in the box."""
    parts = {}
    for stride in (8, 16, 32):
        cells = (SIDE // stride) ** 2
        parts[stride] = {"cls": np.zeros((1, cells, 1)), "obj": np.zeros((1, cells, 1)),
                         "bbox": np.zeros((1, cells, 4)), "kps": np.zeros((1, cells, 10))}
    for stride, row, column, score, (dx, dy, width, height) in faces:
        cell = row * (SIDE // stride) + column
        part = parts[stride]
        part["cls"][0, cell, 0] = part["obj"][0, cell, 0] = score
        part["bbox"][0, cell] = [dx, dy, math.log(width / stride), math.log(height / stride)]
        points = np.array([[-0.25, -0.2], [0.25, -0.2], [0, 0], [-0.2, 0.25], [0.2, 0.25]])
        part["kps"][0, cell] = ((points * [width, height]) / stride + [dx, dy]).ravel()
    return [parts[int(name.split("_")[1])][name.split("_")[0]].astype(np.float32)
            for name in YUNET_OUTPUTS]


def export_yunet(folder, outputs: list[np.ndarray]):
    """A graph with YuNet's signature (fixed SIDE×SIDE input) that gives ``outputs``."""

    class Stand(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            for name, value in zip(YUNET_OUTPUTS, outputs, strict=True):
                self.register_buffer(name, torch.from_numpy(value))

        def forward(self, image):
            nothing = image.mean() * 0
            return tuple(getattr(self, name) + nothing for name in YUNET_OUTPUTS)

    folder.mkdir(parents=True, exist_ok=True)
    graph = folder / "face_detection_yunet_2023mar.onnx"
    torch.onnx.export(Stand(), (torch.zeros(1, 3, SIDE, SIDE),), str(graph), dynamo=False,
                      input_names=["input"], output_names=list(YUNET_OUTPUTS), opset_version=17)
    return graph


FACES = [(8, 3, 4, 0.95, (0.5, 0.5, 24, 32)),  # centre (36, 28) in the sample
         (16, 1, 2, 0.93, (0.3, 0.3, 24, 30)),  # nearly the same face: suppressed
         (32, 1, 1, 0.5, (0.5, 0.5, 16, 16))]  # below the score


def test_yunet_outputs_decode_to_the_expected_boxes(tmp_path, store):
    graph = export_yunet(tmp_path / "yunet", yunet_outputs(FACES))
    installed = store.import_model(graph)  # never taken for an annotator or an upscaler
    assert (installed.kind, installed.family) == ("face_detector", "face detector (YuNet)")
    import onnxruntime as ort

    session = ort.InferenceSession(str(installed.path / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    picture = np.zeros((128, 96, 3), np.uint8)  # ratio 0.5: the sample's pixels doubled
    faces = detect_faces(picture, lambda sample: session.run(None, {"input": sample}),
                         (SIDE, SIDE))
    (face,) = faces
    np.testing.assert_allclose(face.box, [2 * (36 - 12), 2 * (28 - 16), 2 * (36 + 12),
                                          2 * (28 + 16)], atol=1e-4)
    assert face.score == pytest.approx(0.95)
    np.testing.assert_allclose(face.landmarks[2], [72, 56], atol=1e-4)  # the nose, centred
    assert face.landmarks[0][0] < face.landmarks[1][0]  # the picture's left eye first


# --- crop, restore, paste back -----------------------------------------------------------------

def inverting_restorer(folder, side: int = 64, non_commercial: bool = False):
    """An installed face restorer whose graph inverts colours."""

    class Invert(torch.nn.Module):
        def forward(self, image):
            return 1 - image

    folder.mkdir(parents=True)
    torch.onnx.export(Invert(), (torch.zeros(1, 3, side, side),), str(folder / "model.onnx"),
                      dynamo=False, input_names=["image"], output_names=["restored"],
                      opset_version=17)
    FaceRestorerDescription(architecture="Invert", input_size=side,
                            licence="S-Lab License 1.0" if non_commercial else "MIT",
                            non_commercial=non_commercial).save(folder)
    write_manifest(folder)
    return folder


def synthetic_picture(width: int = 160, height: int = 120) -> np.ndarray:
    ys, xs = np.mgrid[0:height, 0:width]
    return np.stack([xs * 255 // width, ys * 255 // height, (xs + ys) % 256],
                    axis=-1).astype(np.uint8)


def test_a_boxed_face_changes_and_the_rest_stays_exact(tmp_path):
    restorer = inverting_restorer(tmp_path / "invert")
    picture = synthetic_picture()
    pixels, notes = restore_faces(picture, restorer, [(60, 40, 30, 30)])
    changed = np.any(pixels != picture, axis=-1)
    centre = pixels[55, 75].astype(int)
    np.testing.assert_allclose(centre, 255 - picture[55, 75].astype(int), atol=3)
    assert changed[40:70, 60:90].mean() > 0.9  # the box is inverted
    assert not changed[:10].any() and not changed[:, :20].any() and not changed[-10:].any()
    ys, xs = np.nonzero(changed)  # nothing outside the grown square
    assert xs.min() >= 75 - 27 and xs.max() <= 75 + 27 and ys.min() >= 55 - 27
    assert notes == ["restored 1 face with face restorer (Invert, 64 px)"]


def test_a_detected_face_is_aligned_to_the_template_and_pasted_back(tmp_path, store):
    restorer = inverting_restorer(tmp_path / "invert", non_commercial=True)
    graph = export_yunet(tmp_path / "yunet", yunet_outputs(FACES))
    detector = store.import_model(graph, kind="face_detector").path
    picture = synthetic_picture(128, 128)  # ratio 0.5
    pixels, notes = restore_faces(picture, restorer, None, detector)
    changed = np.any(pixels != picture, axis=-1)
    np.testing.assert_allclose(pixels[56, 72].astype(int), 255 - picture[56, 72].astype(int),
                               atol=3)  # the nose
    # The template's square is about four eye distances (24 px here) wide, around the nose.
    assert not changed[:, :16].any() and not changed[-16:].any() and not changed[:, -8:].any()
    assert "non-commercial use only (S-Lab License 1.0)" in notes[-1]


def test_alignment_maps_the_landmarks_onto_the_template():
    from engine.faces.align import FFHQ_TEMPLATE_512

    angle, scale, shift = 0.3, 0.7, np.array([40.0, 25.0])
    rotation = scale * np.array([[math.cos(angle), -math.sin(angle)],
                                 [math.sin(angle), math.cos(angle)]])
    landmarks = (np.linalg.inv(rotation) @ (FFHQ_TEMPLATE_512 / 4 - shift).T).T
    matrix = alignment(landmarks, 128)
    mapped = landmarks @ matrix[:, :2].T + matrix[:, 2]
    np.testing.assert_allclose(mapped, FFHQ_TEMPLATE_512 / 4, atol=1e-6)
    picture = synthetic_picture()
    square = box_crop((60, 40, 90, 70), 54)
    np.testing.assert_array_equal(crop_face(picture, square, 54)[27, 27], picture[55, 75])
    same = paste_face(picture, crop_face(picture, square, 54), square)
    assert np.abs(same.astype(int) - picture).max() <= 2


def test_bad_input_is_refused_in_one_sentence(tmp_path, store):
    restorer = inverting_restorer(tmp_path / "invert")
    picture = synthetic_picture()
    with pytest.raises(BadRequest, match=r"box 150,40,30,30 reaches outside the 160×120"):
        restore_faces(picture, restorer, [(150, 40, 30, 30)])
    with pytest.raises(BadRequest, match="box 10,10,0,5 is empty"):
        restore_faces(picture, restorer, [(10, 10, 0, 5)])
    with pytest.raises(BadRequest, match="needs a face detector: import .*YuNet"):
        restore_faces(picture, restorer, None, None)
    empty = export_yunet(tmp_path / "none", yunet_outputs([]))
    detector = store.import_model(empty, "empty", kind="face_detector").path
    with pytest.raises(BadRequest, match="No face was found"):
        restore_faces(picture, restorer, None, detector)


# --- the command ------------------------------------------------------------------------------

@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("EASEL_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_restore_faces_makes_a_library_picture_with_lineage(home, tmp_path, capsys):
    from desktop import paths

    assert main(["generate", "a red cat", "--seed", "3", "--width", "64", "--height", "64",
                 "-o", str(tmp_path / "source.png")]) == 0
    capsys.readouterr()
    with Image.open(tmp_path / "source.png") as image:
        source = json.loads(image.text["easel"])["image_id"]
    assert main(["restore-faces", source[:8], "--box", "16,16,32,32"]) == 1
    assert "needs a face restorer: import GFPGAN" in capsys.readouterr().err
    inverting_restorer(paths.models_dir() / "codeformer_like", non_commercial=True)
    out = tmp_path / "restored.png"
    assert main(["restore-faces", source[:8], "--box", "16,16,32,32", "-o", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.out.split() == [str(out)]
    assert "non-commercial use only" in captured.err
    with Image.open(out) as image:
        metadata = json.loads(image.text["easel"])
        made = np.asarray(image.convert("RGB"))
    with Image.open(tmp_path / "source.png") as image:
        before = np.asarray(image.convert("RGB"))
    assert metadata["operation"] == "restore_faces"
    assert metadata["model"]["name"] == "codeformer_like" and metadata["seed"] == 3
    assert (made[32, 32] != before[32, 32]).any() and (made[0, 0] == before[0, 0]).all()
    with Library.open(home) as library:
        assert library.get(metadata["image_id"]).source_id == source
    for argv, words in ((["--box", "60,60,10,10"], "reaches outside the 64×64 picture"),
                        ([], "needs a face detector"),
                        (["--box", "16,16,32,32", "--fidelity", "0.3"],
                         "A fidelity weight is for CodeFormer only; Invert has none")):
        assert main(["restore-faces", source[:8], *argv]) == 1
        assert words in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse's usage line and the sentence
        main(["restore-faces", source[:8], "--box", "1,2,3"])
    assert "not x,y,width,height" in capsys.readouterr().err
