"""Hires fix: text to image, enlarge, image to image, as one job. It must be exactly those three
pipelines run by hand, report one progress count, stop when cancelled in any stage, refuse bad
input before any work and record how the picture was made where other tools read it."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from desktop.image_files import save_png
from desktop.library import Library
from desktop.library.metadata import from_a1111
from desktop.library.pngs import read_png
from engine.errors import BadRequest, Cancelled
from engine.manifest import write_manifest
from engine.model import load_model
from engine.pipelines.hires_fix import (
    REFINE_STAGE,
    UPSCALE_STAGE,
    HiresFixPipeline,
)
from engine.pipelines.image_to_image import ImageToImagePipeline
from engine.pipelines.text_to_image import TextToImagePipeline
from engine.request import HiresFixRequest, ImageToImageRequest, TextToImageRequest
from engine.runtime import CancelToken
from engine.upscale import LANCZOS_NAME, UpscalePipeline, UpscaleRequest, load_upscaler
from engine.upscale.description import UpscalerDescription

BASE = {"width": 64, "height": 48, "steps": 4, "scheduler": "euler_ancestral", "seed": 5}


def tiny_upscaler(folder: Path, scale: int = 4) -> Path:
    """An installed "upscaler" that repeats each pixel and darkens it a little: a real ONNX
    network (no torch needed to build it) whose output Lanczos could never give."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Resize", ["image", "", "scales"], ["large"], mode="nearest"),
         helper.make_node("Mul", ["large", "gain"], ["upscaled"])],
        "tiny_upscaler",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, None, None])],
        [helper.make_tensor_value_info("upscaled", TensorProto.FLOAT, [1, 3, None, None])],
        [helper.make_tensor("scales", TensorProto.FLOAT, [4], [1, 1, scale, scale]),
         helper.make_tensor("gain", TensorProto.FLOAT, [], [0.8])])
    folder.mkdir(parents=True)
    # IR version 8: one every onnxruntime Easel supports reads.
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                                ir_version=8), str(folder / "model.onnx"))
    UpscalerDescription(scale=scale, architecture="ONNX").save(folder)
    write_manifest(folder)
    return folder


@pytest.fixture(scope="module")
def model(installed_tiny_sd1):
    return load_model(installed_tiny_sd1)


@pytest.fixture(scope="module")
def upscaler(tmp_path_factory):
    return load_upscaler(tiny_upscaler(tmp_path_factory.mktemp("upscalers") / "tiny_x4"))


def test_the_picture_comes_back_enlarged_and_says_how(model):
    result = HiresFixPipeline(model)(HiresFixRequest(TextToImageRequest("a dog", **BASE)))
    (image,) = result.images
    assert image.pixels.shape == (96, 128, 3)
    parameters = image.parameters
    assert (parameters.operation, parameters.width, parameters.height) == ("hires_fix", 128, 96)
    assert (parameters.base_size, parameters.scale, parameters.upscaler, parameters.strength) == (
        (64, 48), 2.0, LANCZOS_NAME, 0.4)
    assert (parameters.steps, parameters.seed) == (4, 5)  # the first pass's settings
    assert any("Lanczos" in warning for warning in result.warnings)


def test_it_is_text_to_image_then_the_upscaler_then_image_to_image(model, upscaler):
    request = HiresFixRequest(TextToImageRequest("a dog", count=2, **BASE), scale=2,
                              strength=0.5)
    result = HiresFixPipeline(model, upscaler)(request)
    assert result.warnings == ()
    # By hand, for the second image (seed + 1), with the same settings.
    seed = BASE["seed"] + 1
    first = TextToImagePipeline(model)(TextToImageRequest("a dog", **{**BASE, "seed": seed}))
    enlarged = UpscalePipeline(upscaler)(UpscaleRequest(first.images[0].pixels, 2))
    refined = ImageToImagePipeline(model)(ImageToImageRequest(
        enlarged.images[0].pixels, "a dog", strength=0.5, steps=4, scheduler="euler_ancestral",
        seed=seed))
    assert np.array_equal(result.images[1].pixels, refined.images[0].pixels)
    assert not np.array_equal(result.images[0].pixels, result.images[1].pixels)
    assert result.images[1].parameters.upscaler == "tiny_x4"
    # The network's own output made it through: Lanczos would give another picture.
    with_lanczos = HiresFixPipeline(model)(request).images[1].pixels
    assert not np.array_equal(with_lanczos, result.images[1].pixels)


def test_a_fractional_scale_is_rounded_to_sizes_the_model_makes(model, upscaler):
    request = HiresFixRequest(TextToImageRequest("a dog", **BASE), scale=1.5)
    (image,) = HiresFixPipeline(model, upscaler)(request).images
    # 64 x 1.5 = 96; 48 x 1.5 = 72, a multiple of 8 too. The 4x network ran at 2x, then shrank.
    assert image.pixels.shape == (72, 96, 3)
    assert (image.parameters.scale, image.parameters.base_size) == (1.5, (64, 48))


def test_progress_is_one_count_over_all_three_stages(model):
    seen = []
    request = HiresFixRequest(TextToImageRequest("a dog", count=2, **BASE), strength=0.5)
    HiresFixPipeline(model)(request, on_progress=seen.append)
    # 4 steps, 1 for enlarging, then 4 × 0.5 = 2 refining steps.
    assert {progress.steps for progress in seen} == {7}
    for index in range(2):
        steps = [progress.step for progress in seen if progress.image == index]
        assert steps == sorted(steps) and steps[0] == 1 and steps[-1] == 7
        stages = [progress.stage for progress in seen if progress.image == index]
        assert stages == ["drawing"] * 4 + ["upscaling"] * 2 + ["refining"] * 2
    assert [progress.image for progress in seen] == sorted(progress.image for progress in seen)
    # Previews show the picture being worked on: the refining pass's latents are twice as large.
    assert seen[-1].latents.shape[-1] == 2 * seen[0].latents.shape[-1]
    assert seen[-1].preview().std() > 0


@pytest.mark.parametrize("stage", [UPSCALE_STAGE, REFINE_STAGE])
def test_cancel_stops_in_the_later_stages(model, stage):
    cancel = CancelToken()
    seen = []

    def on_progress(progress):
        seen.append((progress.image, progress.stage))
        if progress.stage == stage:
            cancel.cancel()

    request = HiresFixRequest(TextToImageRequest("a dog", count=2, **{**BASE, "steps": 10}))
    with pytest.raises(Cancelled):
        HiresFixPipeline(model)(request, on_progress, cancel)
    # Nothing ran after the first report of the cancelled stage; the second image never began.
    assert seen[-1] == (0, stage) and seen.count((0, stage)) == 1
    assert seen[:10] == [(0, "drawing")] * 10


@pytest.mark.parametrize(("change", "words"), [
    ({"scale": 0.5}, "more than 1 and at most 4 (got 0.5)"),
    ({"scale": 1}, "more than 1 and at most 4 (got 1)"),
    ({"scale": 4.5}, "more than 1 and at most 4 (got 4.5)"),
    ({"scale": math.nan}, "more than 1 and at most 4"),
    ({"scale": "2"}, "more than 1 and at most 4"),
    ({"scale": 1.05}, "does not enlarge the picture"),
    ({"strength": 0}, "strength must be more than 0"),
    ({"base": TextToImageRequest("a dog", width=4096, height=64), "scale": 2.5},
     "would make 10240×160 pixels; Easel makes pictures up to 8192 pixels a side"),
    ({"base": TextToImageRequest("a dog", width=60, height=64)}, "multiple of 8"),
])
def test_bad_input_is_one_sentence_before_any_work(model, change, words):
    def work_began(progress):
        raise AssertionError("a step ran")  # stops a request that was let through, at once

    request = replace(HiresFixRequest(TextToImageRequest("a dog", **BASE)), **change)
    with pytest.raises(BadRequest, match=words.replace("(", r"\(").replace(")", r"\)")):
        HiresFixPipeline(model)(request, on_progress=work_began)


def test_an_upscaler_that_cannot_make_the_scale_is_refused(model, tmp_path):
    x3 = load_upscaler(tiny_upscaler(tmp_path / "x3", scale=3))
    with pytest.raises(BadRequest, match="enlarges 3x"):
        HiresFixPipeline(model, x3).check_inputs(
            HiresFixRequest(TextToImageRequest("a dog", **BASE)))


def test_a_model_without_a_vae_encoder_is_refused_before_the_first_pass(model, tmp_path):
    import shutil

    folder = tmp_path / "no-encoder"
    shutil.copytree(model.folder, folder)
    shutil.rmtree(folder / "vae_encoder")
    write_manifest(folder)
    with pytest.raises(BadRequest, match="no VAE encoder"):
        HiresFixPipeline(load_model(folder)).check_inputs(
            HiresFixRequest(TextToImageRequest("a dog", **BASE)))


def test_the_metadata_round_trips_through_the_library(model, upscaler, tmp_path):
    (image,) = HiresFixPipeline(model, upscaler)(HiresFixRequest(
        TextToImageRequest("a dog", **BASE), strength=0.45)).images
    with Library.open(tmp_path / "library") as library:
        entry = library.add_generated(image.pixels, image.parameters)
        assert (entry.operation, entry.width, entry.height) == ("hires_fix", 128, 96)
    info = read_png(entry.path)
    assert info.operation == "hires_fix" and (info.width, info.height) == (128, 96)
    assert {key: info.parameters[key] for key in ("scale", "upscaler", "base_size", "strength")
            } == {"scale": 2.0, "upscaler": "tiny_x4", "base_size": [64, 48], "strength": 0.45}
    # Other tools read A1111's names: Size is the first pass's, as A1111 writes it.
    with Image.open(entry.path) as png:
        a1111 = from_a1111(png.text["parameters"])
    settings = a1111.parameters["settings"]
    assert (settings["Size"], settings["Hires upscale"], settings["Hires upscaler"],
            settings["Denoising strength"]) == ("64x48", "2", "tiny_x4", "0.45")
    assert a1111.operation == "hires_fix" and a1111.width is None  # the file's size is used


@pytest.mark.parametrize("with_network", [False, True])
def test_upscaled_pictures_record_their_scale_and_upscaler(with_network, upscaler, tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    (image,) = UpscalePipeline(upscaler if with_network else None)(
        UpscaleRequest(pixels, 2)).images
    path = save_png(image.pixels, tmp_path / "big.png", image.parameters, "0" * 32)
    name = "tiny_x4" if with_network else LANCZOS_NAME
    with Image.open(path) as png:
        easel, a1111 = json.loads(png.text["easel"]), from_a1111(png.text["parameters"])
    assert (easel["operation"], easel["scale"], easel["upscaler"]) == ("upscale", 2, name)
    assert "base_size" not in easel and "strength" not in easel
    settings = a1111.parameters["settings"]
    assert (settings["Postprocess upscale by"], settings["Postprocess upscaler"]) == ("2", name)
    assert "Hires upscale" not in settings and a1111.operation == "upscale"
    info = read_png(path)  # the library's reader: Easel's own chunk first
    assert (info.operation, info.width, info.height) == ("upscale", 48, 40)
