"""``easel remove-background`` and ``easel replace-background`` end to end, in a throwaway data
folder, on the built-in starter model's pictures (flat backgrounds, 0.4 s each) cut out by
the flood fill; the background repainted by the starter and by the tiny SD 1.x."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from desktop.cli import main
from desktop.library import Library
from tests import tiny_models

PROMPT = "a red ball on the left, on a blue background"


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("EASEL_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def source(home, tmp_path, capsys):
    """A starter-model picture in the library (a ball on a flat blue ground), and a copy."""
    copy = tmp_path / "source.png"
    assert main(["generate", PROMPT, "--seed", "3", "-o", str(copy)]) == 0
    capsys.readouterr()
    return copy


def made(capsys) -> tuple[str, str]:
    captured = capsys.readouterr()
    (path,) = captured.out.split()
    return path, captured.err


def easel_metadata(path) -> dict:
    with Image.open(path) as image:
        return json.loads(image.text["easel"])


def pixels(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)


def ground(picture: np.ndarray) -> np.ndarray:
    """Where the source shows its background: near the colour of its corner."""
    corner = picture[0, 0].astype(int)
    return (np.abs(picture.astype(int) - corner) <= 24).all(axis=2)


def test_remove_background_cuts_the_subject_out_as_rgba_with_lineage(home, source, capsys):
    source_id = easel_metadata(source)["image_id"]
    assert main(["remove-background", source_id[:8]]) == 0
    path, err = made(capsys)
    assert "flat background colour" in err  # the flood fill is said
    with Image.open(path) as image:
        assert image.mode == "RGBA"
    cut, before = pixels(path), pixels(source)
    alpha = cut[..., 3]
    background = ground(before)
    assert 0.5 < background.mean() < 0.98  # the scene: mostly ground, a subject on it
    assert (alpha[background] == 0).mean() > 0.97  # the ground became transparent
    assert (alpha[~background] == 255).mean() > 0.8  # the subject stayed (edges soft)
    assert alpha[:, :96].any() and not alpha[:, 160:].any()  # a ball on the left
    opaque = alpha == 255
    assert np.array_equal(cut[..., :3][opaque], before[opaque])  # its colours exact
    assert (cut[..., :3][alpha == 0] == 255).all()  # the removed ground is not kept
    metadata = easel_metadata(path)
    assert metadata["operation"] == "remove_background"
    assert metadata["source_image_id"] == source_id
    assert metadata["remove_background"] == {"segmenter": "flood fill", "refine": False,
                                             "result": "transparent"}
    assert (metadata["prompt"], metadata["seed"]) == (PROMPT, 3)  # the source's
    with Library.open(home) as library:
        assert [entry.id for entry in library.lineage(metadata["image_id"])][1] == source_id
        entry = library.get(metadata["image_id"])
        assert library.thumbnails.get(entry.id, entry.path).is_file()


def test_mask_only_is_a_grey_picture_white_on_the_subject(home, source, capsys, tmp_path):
    assert main(["remove-background", str(source), "--mask-only", "-o",
                 str(tmp_path / "mask.png")]) == 0
    path, _ = made(capsys)
    assert path == str(tmp_path / "mask.png")
    with Image.open(path) as image:
        assert image.mode == "L"
    mask, background = pixels(path), ground(pixels(source))
    assert (mask[background] == 0).mean() > 0.97 and (mask[~background] == 255).mean() > 0.8
    metadata = easel_metadata(path)
    assert metadata["remove_background"]["result"] == "mask"
    assert metadata["source_image_id"] == easel_metadata(source)["image_id"]  # a file's too


@pytest.mark.parametrize("colour, rgb, recorded", [("white", (255, 255, 255), "#ffffff"),
                                                   ("#00ff00", (0, 255, 0), "#00ff00")])
def test_the_subject_laid_on_a_colour(home, source, capsys, colour, rgb, recorded):
    assert main(["remove-background", str(source), "--background", colour]) == 0
    path, _ = made(capsys)
    result, before = pixels(path), pixels(source)
    assert result.shape == before.shape  # RGB
    background = ground(before)
    assert (result[background] == rgb).all(axis=1).mean() > 0.97
    assert easel_metadata(path)["remove_background"]["result"] == recorded
    inside = ~background  # the subject: the source's own pixels (its edge softened)
    assert np.abs(result[inside].astype(int) - before[inside]).mean() < 20


def test_the_subject_laid_on_a_picture_resized_to_cover(home, source, capsys, tmp_path):
    stripes = np.zeros((40, 100, 3), np.uint8)
    stripes[:, :50] = (250, 10, 10)
    stripes[:, 50:] = (10, 250, 10)
    Image.fromarray(stripes).save(tmp_path / "stripes.png")
    assert main(["remove-background", str(source), "--background",
                 str(tmp_path / "stripes.png")]) == 0
    path, _ = made(capsys)
    result = pixels(path)
    assert result.shape == (256, 256, 3)
    # Covered: the height fits, the sides are cropped; red left, green right.
    assert tuple(result[250, 5]) == (250, 10, 10) and tuple(result[250, 250]) == (10, 250, 10)


def test_replace_background_keeps_every_subject_pixel_with_the_starter(home, source, capsys):
    source_id = easel_metadata(source)["image_id"]
    assert main(["remove-background", source_id, "--mask-only"]) == 0
    alpha = pixels(made(capsys)[0])
    new = "a red ball on the left, on a yellow background"  # words the starter knows
    assert main(["replace-background", source_id, new, "--seed", "1"]) == 0
    path, _ = made(capsys)
    result, before = pixels(path), pixels(source)
    opaque = alpha == 255
    assert np.array_equal(result[opaque], before[opaque])
    assert np.abs(result[alpha == 0].astype(int) - before[alpha == 0]).mean() > 10  # new
    metadata = easel_metadata(path)
    assert metadata["operation"] == "replace_background"
    assert metadata["prompt"] == new and metadata["seed"] == 1
    assert metadata["source_image_id"] == source_id
    assert metadata["replace_background"] == {"segmenter": "flood fill", "refine": False}


@pytest.fixture(scope="module")
def home_with_tiny(tmp_path_factory):
    template = tmp_path_factory.mktemp("template") / "home"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EASEL_HOME", str(template))
        assert main(["models", "import", str(tiny_models.tiny_diffusers("sd1")), "--name",
                     "tiny"]) == 0
    return template


def test_replace_background_with_the_tiny_sd1(home_with_tiny, tmp_path, monkeypatch, capsys):
    home = tmp_path / "home"
    shutil.copytree(home_with_tiny, home)
    monkeypatch.setenv("EASEL_HOME", str(home))
    scene = np.full((64, 64, 3), (40, 60, 200), np.uint8)  # a flat blue ground
    scene[16:48, 8:32] = (230, 40, 30)  # a red box on the left, opaque
    Image.fromarray(scene).save(tmp_path / "scene.png")
    assert main(["replace-background", str(tmp_path / "scene.png"), "a beach at sunset",
                 "--model", "tiny", "--steps", "2", "--seed", "4"]) == 0
    path, _ = made(capsys)
    result = pixels(path)
    assert np.array_equal(result[17:47, 9:31], scene[17:47, 9:31])  # inside the soft edge
    assert np.abs(result[:, 40:].astype(int) - scene[:, 40:]).mean() > 10
    metadata = easel_metadata(path)
    assert metadata["operation"] == "replace_background"
    assert metadata["model"]["name"] == "tiny" and "source_image_id" not in metadata


def test_a_cut_out_cut_again_stays_transparent_and_exports(home, source, capsys, tmp_path):
    source_id = easel_metadata(source)["image_id"]
    assert main(["remove-background", source_id]) == 0
    first = easel_metadata(made(capsys)[0])["image_id"]
    assert main(["remove-background", first[:8]]) == 0
    second = pixels(made(capsys)[0])
    assert not second[..., 3][:, 160:].any()
    assert main(["gallery", "export", first, "--to", str(tmp_path / "out"),
                 "--strip-metadata"]) == 0
    capsys.readouterr()
    (exported,) = (tmp_path / "out").iterdir()
    with Image.open(exported) as image:
        assert image.mode == "RGBA" and not image.text


def test_a_fully_transparent_picture_is_refused(home, tmp_path, capsys):
    Image.new("RGBA", (32, 32), (10, 20, 30, 0)).save(tmp_path / "clear.png")
    assert main(["remove-background", str(tmp_path / "clear.png")]) == 1
    assert "already fully transparent" in capsys.readouterr().err
    assert nothing_saved(home)


@pytest.mark.parametrize("content, sentence", [
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "not an image Easel can read"),
    (None, "damaged or incomplete"),
])
def test_a_damaged_picture_is_one_sentence(home, tmp_path, capsys, content, sentence):
    path = tmp_path / "bad.png"
    if content is None:  # a real PNG cut short
        Image.fromarray(np.full((64, 64, 3), 9, np.uint8)).save(path)
        path.write_bytes(path.read_bytes()[:60])
    else:
        path.write_bytes(content)
    assert main(["remove-background", str(path)]) == 1
    err = capsys.readouterr().err
    assert sentence in err and err.count("\n") == 1
    assert nothing_saved(home)


def test_a_too_large_picture_is_refused(home, tmp_path, capsys, monkeypatch):
    Image.new("RGB", (9000, 8), "white").save(tmp_path / "wide.png")
    assert main(["remove-background", str(tmp_path / "wide.png")]) == 1
    assert "9000" in capsys.readouterr().err
    assert nothing_saved(home)


def test_no_segmenter_and_no_flat_background_says_what_to_import(home, tmp_path, capsys):
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "photo.png")
    assert main(["remove-background", str(tmp_path / "photo.png")]) == 1
    err = capsys.readouterr().err
    assert "no flat background" in err and "easel" in err and "segmenter" in err
    assert nothing_saved(home)


@pytest.mark.parametrize("argv, sentence", [
    (["remove-background", "{source}", "--model", "nothing"], "No segmenter named 'nothing'"),
    (["replace-background", "{source}", "a beach", "--segmenter", "nothing"],
     "No segmenter named 'nothing'"),
    (["replace-background", "{source}", "a beach", "--model", "nothing"],
     "No model named 'nothing'"),
    (["remove-background", "{source}", "--background", "not-a-colour"],
     "neither a colour"),
    (["remove-background", "abcdef0123"], "neither a picture file nor a picture"),
])
def test_unknown_names_are_one_sentence(home, source, capsys, argv, sentence):
    with Library.open(home) as library:
        before = library.count()
    assert main([part.format(source=source) for part in argv]) == 1
    err = capsys.readouterr().err
    assert sentence in err and err.count("\n") == 1
    with Library.open(home) as library:
        assert library.count() == before


def nothing_saved(home) -> bool:
    with Library.open(home) as library:
        return library.count() == 0


def test_installed_segmenters_are_chosen_named_and_their_licence_said(home, tmp_path, capsys):
    from desktop.cli.common import model_store
    from tests.test_background import TinySegmenter, export, photo_scene

    store = model_store()
    isnet = store.import_model(export(TinySegmenter(2, offset=0.1),
                                      tmp_path / "isnet-general-use.onnx", 1024, "input_image"),
                               kind="segmenter")
    rmbg = store.import_model(export(TinySegmenter(1, offset=0.1), tmp_path / "RMBG-1.4.onnx",
                                     1024, "input"), kind="segmenter")
    picture, subject = photo_scene(96, 128)
    Image.fromarray(picture).save(tmp_path / "photo.png")
    assert main(["remove-background", str(tmp_path / "photo.png")]) == 1
    assert "Several segmenters are installed" in capsys.readouterr().err
    assert main(["remove-background", str(tmp_path / "photo.png"), "--model", rmbg.name]) == 0
    _, err = made(capsys)
    assert "non-commercial" in err and "bria-rmbg-1.4" in err
    assert main(["remove-background", str(tmp_path / "photo.png"), "--model", isnet.name,
                 "--refine"]) == 0
    path, err = made(capsys)
    assert "non-commercial" not in err and "flat background" not in err
    assert easel_metadata(path)["remove_background"] == {
        "segmenter": isnet.name, "refine": True, "result": "transparent"}
    assert ((pixels(path)[..., 3] > 127) == subject).mean() >= 0.95
