"""An ONNX folder as `optimum-cli export onnx --task text-to-image` writes it (optimum-onnx 0.1,
diffusers 0.35) is told by its graphs and imported as it is (issue 14, item 8).

optimum keeps the PyTorch pipeline's own model_index.json ("StableDiffusionPipeline", with a
"vae" entry but no vae/ folder), writes each component's config.json beside its graph (both VAE
halves get the AutoencoderKL config) and the hub tokenizer's four files. The fixture builds that
layout from the tiny model: its diffusers folder gives the configs, tokenizer, scheduler and
model_index.json, our export of the same weights gives the graphs (optimum's tensor names).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from desktop.app.generation import import_model as window_import
from desktop.cli import main
from desktop.model_store import ModelStore
from engine.errors import ModelError
from engine.export.formats import detect_format
from engine.model import load_model
from engine.onnx_folder import is_onnx_model_folder
from engine.pipelines.text_to_image import TextToImagePipeline
from engine.request import TextToImageRequest
from engine.runtime import CancelToken
from tests.test_onnx_import_variants import _inpaint, _install_copy
from tests.tiny_models_inpaint import tiny_inpaint_diffusers, tiny_inpaint_onnx

# Where each graph's config.json comes from in the diffusers folder, as optimum saves them.
CONFIG_OF = {"text_encoder": "text_encoder", "unet": "unet", "vae_decoder": "vae",
             "vae_encoder": "vae"}
# The listing of what optimum writes, file by file.
OPTIMUM_LAYOUT = {
    "model_index.json",
    *(f"{component}/{file}" for component in CONFIG_OF for file in ("model.onnx", "config.json")),
    *(f"tokenizer/{file}" for file in ("vocab.json", "merges.txt", "tokenizer_config.json",
                                       "special_tokens_map.json")),
    "scheduler/scheduler_config.json",
}
REQUEST = {"width": 64, "height": 48, "steps": 3, "scheduler": "euler_ancestral", "seed": 7}


def optimum_export(diffusers: Path, onnx: Path, folder: Path) -> Path:
    folder.mkdir(parents=True)
    shutil.copyfile(diffusers / "model_index.json", folder / "model_index.json")
    for component, origin in CONFIG_OF.items():
        (folder / component).mkdir()
        shutil.copyfile(onnx / component / "model.onnx", folder / component / "model.onnx")
        shutil.copyfile(diffusers / origin / "config.json", folder / component / "config.json")
    shutil.copytree(diffusers / "tokenizer", folder / "tokenizer")
    (folder / "scheduler").mkdir()
    shutil.copyfile(diffusers / "scheduler" / "scheduler_config.json",
                    folder / "scheduler" / "scheduler_config.json")
    return folder


@pytest.fixture(scope="module")
def optimum_out(tiny_sd1_diffusers, tiny_sd1_onnx, tmp_path_factory) -> Path:
    folder = optimum_export(tiny_sd1_diffusers, tiny_sd1_onnx,
                            tmp_path_factory.mktemp("optimum") / "OUT")
    assert {path.relative_to(folder).as_posix() for path in folder.rglob("*")
            if path.is_file()} == OPTIMUM_LAYOUT
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline" and "vae" in index
    assert not (folder / "vae").exists()
    return folder


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("EASEL_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _pixels(folder: Path) -> np.ndarray:
    pipeline = TextToImagePipeline(load_model(folder))
    return pipeline(TextToImageRequest("a red fox in snow", **REQUEST)).images[0].pixels


def test_an_optimum_export_is_told_by_its_graphs(optimum_out):
    assert is_onnx_model_folder(optimum_out)
    assert detect_format(optimum_out) == "onnx-folder"


def test_easel_models_import_installs_it_and_it_draws_as_our_own_export(
        optimum_out, installed_tiny_sd1, home, capsys):
    assert main(["models", "import", str(optimum_out)]) == 0, capsys.readouterr().err
    installed = home / "models" / "OUT"
    assert (installed / "manifest.json").is_file()
    assert not (installed / "vae").exists()
    # The same weights imported another way (our exporter) give the same pixels.
    assert np.array_equal(_pixels(installed), _pixels(installed_tiny_sd1))
    assert load_model(installed).description == load_model(installed_tiny_sd1).description


class _Job:
    """What the window's worker gives an import job."""

    def __init__(self) -> None:
        self.cancel = CancelToken()
        self.stages: list[str] = []

    def report(self, step: int, steps: int, image: int = 0, images: int = 1,
               preview: object = None, stage: str = "") -> None:
        self.stages.append(stage)


def test_an_optimum_inpainting_export_imports_as_a_nine_channel_model(tmp_path):
    # optimum names it StableDiffusionInpaintPipeline; the UNet's 9 input channels say what it is.
    folder = optimum_export(tiny_inpaint_diffusers(), tiny_inpaint_onnx(), tmp_path / "inpaint")
    assert is_onnx_model_folder(folder)
    installed = ModelStore(tmp_path / "models").import_model(folder)
    assert load_model(installed.path).description.variant == "inpainting"
    own = _install_copy(tiny_inpaint_onnx(), tmp_path / "own")
    assert np.array_equal(_inpaint(installed.path), _inpaint(own))


def test_the_window_imports_it_through_the_same_store(optimum_out, tmp_path):
    store = ModelStore(tmp_path / "models")
    job = _Job()
    installed = window_import(store, optimum_out, job)
    assert installed.name == "OUT" and installed.family == "sd1"
    assert [model.name for model in store.list()] == ["OUT"]
    # The import's stages, then preparing its graphs for this processor (desktop.model_prepare).
    assert job.stages[:4] == ["text encoder", "UNet", "VAE decoder", "VAE encoder"]
    assert job.stages[4] == "Preparing the UNet for this processor (once)"


def test_a_folder_with_the_graphs_and_pytorch_weights_is_imported_by_its_graphs(
        optimum_out, tiny_sd1_diffusers, tmp_path):
    # optimum writes into the diffusers folder itself when given it as OUT: the graphs are
    # complete, so they are used as they are (no export, no torch), the weights left behind.
    both = tmp_path / "both"
    shutil.copytree(optimum_out, both)
    for component in ("unet", "vae", "text_encoder"):
        (both / component).mkdir(exist_ok=True)
        for weights in (tiny_sd1_diffusers / component).glob("*.safetensors"):
            shutil.copyfile(weights, both / component / weights.name)
    assert is_onnx_model_folder(both)
    installed = ModelStore(tmp_path / "models").import_model(both)
    graph = installed.path / "unet" / "model.onnx"
    assert graph.read_bytes() == (optimum_out / "unet" / "model.onnx").read_bytes()
    assert not any(installed.path.rglob("*.safetensors"))


def test_a_diffusers_folder_with_a_stray_graph_stays_a_diffusers_folder(tiny_sd1_diffusers,
                                                                       optimum_out, tmp_path):
    folder = tmp_path / "diffusers"
    shutil.copytree(tiny_sd1_diffusers, folder)
    shutil.copyfile(optimum_out / "unet" / "model.onnx", folder / "unet" / "model.onnx")
    assert not is_onnx_model_folder(folder)
    # Graphs alone, even incomplete, go to the ONNX importer, which names what is missing.
    shutil.rmtree(folder / "vae")
    (folder / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    assert is_onnx_model_folder(folder)
    with pytest.raises(ModelError, match="text_encoder/model.onnx is missing"):
        ModelStore(tmp_path / "models").import_model(folder)


@pytest.mark.parametrize("pipeline", ["StableDiffusionXLPipeline",
                                      "ORTStableDiffusionXLPipeline"])
def test_an_sdxl_onnx_export_is_refused_in_one_sentence(pipeline, optimum_out, tmp_path):
    folder = tmp_path / "xl"
    shutil.copytree(optimum_out, folder)
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "_class_name": pipeline}))
    store = ModelStore(tmp_path / "models")
    with pytest.raises(ModelError, match="import SDXL from its diffusers folder") as refusal:
        store.import_model(folder)
    message = str(refusal.value)
    assert message.count(". ") == 0 and message.endswith(".")
    assert [path.name for path in store.root.iterdir()] == []


def test_sdxl_graphs_beside_pytorch_weights_go_to_the_diffusers_importer(optimum_out,
                                                                         tmp_path):
    # The refusal above tells the user to import SDXL from its diffusers folder; a folder that
    # is one (PyTorch weights beside optimum's graphs) must then not get that same refusal.
    folder = tmp_path / "xl-both"
    shutil.copytree(optimum_out, folder)
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(
        json.dumps({**index, "_class_name": "StableDiffusionXLPipeline"}))
    assert is_onnx_model_folder(folder)  # graphs alone: the ONNX importer refuses them
    (folder / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    assert not is_onnx_model_folder(folder)
