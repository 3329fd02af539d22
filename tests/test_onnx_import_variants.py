"""ONNX folders of inpainting (9-channel UNet) and InstructPix2Pix (8-channel) models made by
other tools: recognised from the UNet's channels and run exactly like Easel's own export.

The tiny exports stand in for the foreign folders, reshaped as test_onnx_import does: the
inpainting one in optimum's layout (ORT inpainting pipeline class, UNet weights outside the
graph), the InstructPix2Pix one in Amuse's (no model_index.json, no configs, a mean-only VAE
encoder, an ONNX tokenizer).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from engine.description import ModelDescription
from engine.model import load_model
from engine.pipelines.inpaint import InpaintPipeline
from engine.pipelines.instruct_pix2pix import InstructPix2PixPipeline
from engine.request import InpaintRequest, InstructPix2PixRequest
from tests.test_onnx_import import _graph, _install, _make_amuse_like, _move_weights_out
from tests.tiny_models_inpaint import tiny_inpaint_onnx
from tests.tiny_models_pix2pix import tiny_pix2pix_onnx

rng = np.random.default_rng(5)
PICTURE = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
MASK = np.zeros((48, 64), dtype=np.uint8)
MASK[8:40, 16:48] = 255


@pytest.fixture(scope="module")
def own_inpaint(tmp_path_factory) -> Path:
    return _install_copy(tiny_inpaint_onnx(), tmp_path_factory.mktemp("own") / "inpaint")


@pytest.fixture(scope="module")
def own_pix2pix(tmp_path_factory) -> Path:
    return _install_copy(tiny_pix2pix_onnx(), tmp_path_factory.mktemp("own") / "pix2pix")


def _install_copy(source: Path, destination: Path) -> Path:
    from engine.manifest import write_manifest

    shutil.copytree(source, destination)
    write_manifest(destination)
    return destination


@pytest.fixture(scope="module")
def optimum_inpaint(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("optimum") / "tiny-inpaint-optimum"
    shutil.copytree(tiny_inpaint_onnx(), folder)
    (folder / "easel.json").unlink()
    index = json.loads((folder / "model_index.json").read_text())
    index["_class_name"] = "ORTStableDiffusionInpaintPipeline"
    (folder / "model_index.json").write_text(json.dumps(index))
    _move_weights_out(_graph(folder, "unet"), "model.onnx_data")
    return _install(folder, tmp_path_factory.mktemp("installed") / "inpaint")


@pytest.fixture(scope="module")
def amuse_pix2pix(tmp_path_factory) -> Path:
    folder = _make_amuse_like(tiny_pix2pix_onnx(),
                              tmp_path_factory.mktemp("amuse") / "tiny-pix2pix-amuse",
                              keep_scheduler=True)
    return _install(folder, tmp_path_factory.mktemp("installed") / "pix2pix")


def _inpaint(folder: Path) -> np.ndarray:
    request = InpaintRequest(PICTURE, MASK, "a red door", steps=3, seed=4)
    return InpaintPipeline(load_model(folder))(request).images[0].pixels


def _instruct(folder: Path) -> np.ndarray:
    request = InstructPix2PixRequest(PICTURE, "make it winter", steps=3, seed=4)
    return InstructPix2PixPipeline(load_model(folder))(request).images[0].pixels


def test_an_optimum_inpainting_folder_is_a_nine_channel_model(optimum_inpaint, own_inpaint):
    description = ModelDescription.load(optimum_inpaint)
    assert description.variant == "inpainting" and description.latent_channels == 4
    assert np.array_equal(_inpaint(optimum_inpaint), _inpaint(own_inpaint))


def test_an_amuse_instruct_pix2pix_folder_is_an_eight_channel_model(amuse_pix2pix,
                                                                       own_pix2pix):
    description = ModelDescription.load(amuse_pix2pix)
    assert description.variant == "instruct-pix2pix" and description.latent_channels == 4
    # Amuse's encoder gives the mean only, which is what InstructPix2Pix reads (the VAE's mode).
    assert np.array_equal(_instruct(amuse_pix2pix), _instruct(own_pix2pix))
