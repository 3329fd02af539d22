"""Importing ONNX folders made by other tools: used as they are, checked first, never run.

The tiny SD 1.x export stands in for an optimum folder (it has that layout); an "Amuse-like"
variant is made from it: no model_index.json, no configs, no scheduler folder, an ONNX
tokenizer with a custom operator instead of vocab.json, and a 4-channel ``latent_sample`` VAE
encoder. Both must give exactly the pixels of the original.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from engine.errors import Cancelled, ModelError
from engine.export.onnx_checks import check_graph
from engine.export.onnx_folder import import_onnx_folder
from engine.manifest import write_manifest
from engine.model import load_model
from engine.onnx_folder import is_onnx_model_folder
from engine.pipelines.text_to_image import TextToImagePipeline
from engine.request import TextToImageRequest
from engine.vae_encoding import encode_image, vae_encoder_output

SMALL = {"width": 64, "height": 48, "steps": 3, "scheduler": "euler_ancestral"}


# --- building foreign folders from the tiny export ------------------------------------------

def _graph(folder: Path, component: str) -> Path:
    return folder / component / "model.onnx"


def _edit_graph(path: Path, change: Callable[[onnx.ModelProto], None]) -> None:
    model = onnx.load(str(path), load_external_data=False)
    change(model)
    path.write_bytes(model.SerializeToString())


def _move_weights_out(path: Path, location: str | None) -> None:
    """Store the graph's weights in ``location`` beside it, as optimum does for big models, or
    with None one file per tensor, as torch's exporter does above 2 GB."""
    model = onnx.load(str(path))
    onnx.save_model(model, str(path), save_as_external_data=True,
                    all_tensors_to_one_file=location is not None, location=location,
                    size_threshold=1024)


def _point_weights_at(path: Path, location: str, offset: int | None = None) -> None:
    def change(model: onnx.ModelProto) -> None:
        for tensor in model.graph.initializer:
            for entry in tensor.external_data:
                if entry.key == "location":
                    entry.value = location
                if entry.key == "offset" and offset is not None:
                    entry.value = str(offset)

    _edit_graph(path, change)


def _mean_only_encoder(model: onnx.ModelProto) -> None:
    """latent_parameters (mean, log-variance) -> latent_sample (the mean), as Amuse exports."""
    graph = model.graph
    (output,) = graph.output
    output.name = "parameters"
    for node in graph.node:
        node.output[:] = ["parameters" if name == "latent_parameters" else name
                          for name in node.output]
    constants = [helper.make_tensor(name, onnx.TensorProto.INT64, [1], [value])
                 for name, value in (("mean_start", 0), ("mean_end", 4), ("mean_axis", 1))]
    graph.initializer.extend(constants)
    graph.node.append(helper.make_node(
        "Slice", ["parameters", "mean_start", "mean_end", "mean_axis"], ["latent_sample"]))
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(
        "latent_sample", onnx.TensorProto.FLOAT, ["batch", 4, "height", "width"]))


def _custom_op_tokenizer(path: Path) -> None:
    """An ONNX tokenizer like Amuse's: one onnxruntime-extensions operator."""
    node = helper.make_node("CLIPTokenizer", ["text"], ["input_ids"], domain="ai.onnx.contrib")
    graph = helper.make_graph(
        [node], "tokenizer",
        [helper.make_tensor_value_info("text", onnx.TensorProto.STRING, [1])],
        [helper.make_tensor_value_info("input_ids", onnx.TensorProto.INT64, [1, 77])])
    onnx.save_model(helper.make_model(graph), str(path))


@pytest.fixture(scope="module")
def optimum_folder(tiny_sd1_onnx, tmp_path_factory) -> Path:
    """The tiny export as optimum writes it: ORT pipeline class, UNet weights in model.onnx_data."""
    folder = tmp_path_factory.mktemp("optimum") / "tiny-optimum"
    shutil.copytree(tiny_sd1_onnx, folder)
    (folder / "easel.json").unlink()
    index = json.loads((folder / "model_index.json").read_text())
    index["_class_name"] = "ORTStableDiffusionPipeline"
    (folder / "model_index.json").write_text(json.dumps(index))
    _move_weights_out(_graph(folder, "unet"), "model.onnx_data")
    _move_weights_out(_graph(folder, "vae_decoder"), None)
    return folder


def _make_amuse_like(original: Path, folder: Path, keep_scheduler: bool = False) -> Path:
    shutil.copytree(original, folder)
    for relative in ("easel.json", "model_index.json", "scheduler"):
        path = folder / relative
        if relative != "scheduler" or not keep_scheduler:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    for config in folder.glob("*/config.json"):
        config.unlink()
    shutil.rmtree(folder / "tokenizer")
    (folder / "tokenizer").mkdir()
    _custom_op_tokenizer(folder / "tokenizer" / "model.onnx")
    _edit_graph(_graph(folder, "vae_encoder"), _mean_only_encoder)
    _move_weights_out(_graph(folder, "text_encoder"), "model.onnx.data")
    (folder / "amuse_template.json").write_text("{}")
    return folder


@pytest.fixture(scope="module")
def amuse_folder(tiny_sd1_onnx, tmp_path_factory) -> Path:
    return _make_amuse_like(tiny_sd1_onnx, tmp_path_factory.mktemp("amuse") / "tiny-amuse")


def _install(source: Path, destination: Path) -> Path:
    import_onnx_folder(source, destination)
    write_manifest(destination)  # the model store's step after every import
    return destination


@pytest.fixture(scope="module")
def installed_optimum(optimum_folder, tmp_path_factory) -> Path:
    return _install(optimum_folder, tmp_path_factory.mktemp("installed") / "optimum")


@pytest.fixture(scope="module")
def installed_amuse(amuse_folder, tmp_path_factory) -> Path:
    return _install(amuse_folder, tmp_path_factory.mktemp("installed") / "amuse")


@pytest.fixture(scope="module")
def reference_pixels(installed_tiny_sd1) -> np.ndarray:
    pipeline = TextToImagePipeline(load_model(installed_tiny_sd1))
    return pipeline(TextToImageRequest("a red fox in snow", seed=7, **SMALL)).images[0].pixels


def _pixels(folder: Path) -> np.ndarray:
    pipeline = TextToImagePipeline(load_model(folder))
    return pipeline(TextToImageRequest("a red fox in snow", seed=7, **SMALL)).images[0].pixels


def _copy(folder: Path, destination: Path) -> Path:
    shutil.copytree(folder, destination)
    return destination


# --- imports that work ----------------------------------------------------------------------

def test_optimum_folder_generates_the_same_pixels(installed_optimum, reference_pixels):
    assert np.array_equal(_pixels(installed_optimum), reference_pixels)


def test_amuse_folder_generates_the_same_pixels(installed_amuse, reference_pixels):
    assert np.array_equal(_pixels(installed_amuse), reference_pixels)


def test_description_is_read_from_configs_or_graphs(installed_optimum, installed_amuse,
                                                    installed_tiny_sd1):
    original = load_model(installed_tiny_sd1).description
    for folder in (installed_optimum, installed_amuse):
        description = load_model(folder).description
        assert (description.family, description.latent_channels, description.vae_scale_factor,
                description.prediction_type, description.latent_scaling_factor,
                description.text_max_length) == ("sd1", 4, 2, "epsilon", 0.18215, 77)
    assert load_model(installed_optimum).description == original
    # Without configs the default size is Stable Diffusion 1's.
    assert load_model(installed_amuse).description.default_width == 512


def test_single_external_weights_file_is_renamed_to_our_layout(installed_optimum,
                                                              optimum_folder):
    unet = installed_optimum / "unet"
    assert sorted(path.name for path in unet.iterdir()) == [
        "config.json", "model.onnx", "model.onnx.data", "weights_map.json"]
    assert check_graph(installed_optimum, "unet").external_files == ("model.onnx.data",)
    # One file per tensor keeps its names.
    per_tensor = check_graph(optimum_folder, "vae_decoder").external_files
    assert len(per_tensor) > 1
    assert check_graph(installed_optimum, "vae_decoder").external_files == per_tensor


def test_only_what_the_engine_reads_is_installed(installed_amuse):
    installed = {path.relative_to(installed_amuse).as_posix()
                 for path in installed_amuse.rglob("*") if path.is_file()}
    assert "amuse_template.json" not in installed
    assert "tokenizer/model.onnx" not in installed  # needs custom operators: left behind
    assert {"model_index.json", "scheduler/scheduler_config.json", "tokenizer/tokenizer.json",
            "text_encoder/model.onnx.data"} <= installed


def test_vae_encoder_conventions_give_the_same_mean(installed_tiny_sd1, installed_amuse):
    image = np.random.default_rng(0).uniform(-1, 1, (1, 3, 16, 24)).astype(np.float32)
    ours, amuse = load_model(installed_tiny_sd1), load_model(installed_amuse)
    assert vae_encoder_output(ours) == "latent_parameters"
    assert vae_encoder_output(amuse) == "latent_sample"
    (parameters,) = ours.vae_encoder.run({"sample": image}, ["latent_parameters"])
    mean, log_variance = np.split(parameters, 2, axis=1)
    scale = np.float32(0.18215)
    assert np.array_equal(encode_image(amuse, image, np.random.default_rng(1)), mean * scale)
    noise = np.random.default_rng(1).standard_normal(mean.shape, dtype=np.float32)
    sampled = (mean + np.exp(0.5 * np.clip(log_variance, -30, 20)) * noise) * scale
    assert np.allclose(encode_image(ours, image, np.random.default_rng(1)), sampled)


def test_sd2_without_configs_or_vocabulary_is_recognised(tiny_sd2_onnx, installed_tiny_sd2,
                                                         tmp_path):
    # Exact GELU in the graph says OpenCLIP (SD 2); CLIP's own files then pad with "!".
    amuse = _make_amuse_like(tiny_sd2_onnx, tmp_path / "tiny-sd2-amuse", keep_scheduler=True)
    installed = _install(amuse, tmp_path / "installed")
    description = load_model(installed).description
    assert (description.family, description.prediction_type) == ("sd2", "v_prediction")
    assert np.array_equal(_pixels(installed), _pixels(installed_tiny_sd2))


def test_sd2_without_scheduler_settings_is_refused(tiny_sd2_onnx, tmp_path):
    amuse = _make_amuse_like(tiny_sd2_onnx, tmp_path / "tiny-sd2-amuse")
    with pytest.raises(ModelError, match="predicts noise or velocity"):
        import_onnx_folder(amuse, tmp_path / "installed")
    assert not (tmp_path / "installed").exists()


def test_a_tokenizer_json_alone_is_used_as_it_is(optimum_folder, installed_tiny_sd1, tmp_path):
    folder = _copy(optimum_folder, tmp_path / "tokenizer-json-only")
    for name in ("vocab.json", "merges.txt"):
        (folder / "tokenizer" / name).unlink()
    installed = _install(folder, tmp_path / "installed")
    prompt = "a red fox in snow, " * 10  # long enough to be truncated
    assert np.array_equal(load_model(installed).tokenizer(prompt).ids,
                          load_model(installed_tiny_sd1).tokenizer(prompt).ids)


def test_a_cancelled_import_leaves_nothing(optimum_folder, tmp_path):
    answers = iter([False, True])
    with pytest.raises(Cancelled):
        import_onnx_folder(optimum_folder, tmp_path / "installed",
                           should_stop=lambda: next(answers))
    assert not (tmp_path / "installed").exists()


def test_onnx_folders_are_told_from_diffusers_folders(tiny_sd1_onnx, tiny_sd1_diffusers,
                                                      tmp_path):
    assert is_onnx_model_folder(tiny_sd1_onnx)
    assert not is_onnx_model_folder(tiny_sd1_diffusers)
    # Told by the graphs, not by the class model_index.json names (see test_optimum_import).
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "model.onnx").write_bytes(b"")
    assert is_onnx_model_folder(tmp_path)  # no model_index.json: Amuse
    index = {"_class_name": "StableDiffusionPipeline"}
    (tmp_path / "model_index.json").write_text(json.dumps(index))
    assert is_onnx_model_folder(tmp_path)  # optimum keeps the PyTorch class name
    # A PyTorch folder that also carries an ONNX UNet is still a diffusers folder.
    (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    assert not is_onnx_model_folder(tmp_path)


def test_contrib_operators_of_onnx_runtime_are_allowed(optimum_folder, tmp_path):
    folder = tmp_path / "contrib"
    shutil.copytree(optimum_folder, folder)
    _edit_graph(_graph(folder, "vae_decoder"), lambda model: model.graph.node.append(
        helper.make_node("FastGelu", ["latent_sample"], ["unused"], domain="com.microsoft")))
    assert "FastGelu" in check_graph(folder, "vae_decoder").op_types


# --- refusals -------------------------------------------------------------------------------

def _escape_with_dots(folder: Path) -> None:
    unet = _graph(folder, "unet")
    shutil.move(unet.with_name("model.onnx_data"), folder / "weights")
    _point_weights_at(unet, "../weights")


def _absolute_location(folder: Path) -> None:
    data = _graph(folder, "unet").with_name("model.onnx_data")
    _point_weights_at(_graph(folder, "unet"), str(data.resolve()))


def _symlink_outside(folder: Path) -> None:
    outside = folder.parent / "elsewhere.data"
    data = _graph(folder, "unet").with_name("model.onnx_data")
    shutil.move(data, outside)
    data.symlink_to(outside)


def _offset_past_the_end(folder: Path) -> None:
    _point_weights_at(_graph(folder, "unet"), "model.onnx_data", offset=10**9)


def _missing_weights(folder: Path) -> None:
    _graph(folder, "unet").with_name("model.onnx_data").unlink()


def _custom_operator(folder: Path) -> None:
    _edit_graph(_graph(folder, "vae_decoder"), lambda model: model.graph.node.append(
        helper.make_node("Inverse", ["latent_sample"], ["unused"], domain="ai.onnx.contrib")))


def _custom_function(folder: Path) -> None:
    function = helper.make_function("my.ops", "Twice", ["x"], ["y"],
                                    [helper.make_node("Add", ["x", "x"], ["y"])],
                                    [helper.make_opsetid("", 17)])
    _edit_graph(_graph(folder, "text_encoder"), lambda model: model.functions.append(function))


def _renamed_input(folder: Path) -> None:
    def change(model: onnx.ModelProto) -> None:
        model.graph.input[0].name = "latents"
        for node in model.graph.node:
            node.input[:] = ["latents" if name == "sample" else name for name in node.input]

    _edit_graph(_graph(folder, "unet"), change)


def _pipeline_class(name: str | list[str]) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        index = json.loads((folder / "model_index.json").read_text())
        index["_class_name"] = name
        (folder / "model_index.json").write_text(json.dumps(index))

    return damage


def _half_precision_input(folder: Path) -> None:
    def change(model: onnx.ModelProto) -> None:
        model.graph.input[0].type.tensor_type.elem_type = onnx.TensorProto.FLOAT16

    _edit_graph(_graph(folder, "vae_decoder"), change)


def _unet_input_channels(channels: int) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        def change(model: onnx.ModelProto) -> None:
            model.graph.input[0].type.tensor_type.shape.dim[1].dim_value = channels

        _edit_graph(_graph(folder, "unet"), change)

    return damage


def _inpainting_unet_without_encoder(folder: Path) -> None:
    _unet_input_channels(9)(folder)
    shutil.rmtree(folder / "vae_encoder")


REFUSALS = {
    "weights outside with ..": (_escape_with_dots, "outside its own folder"),
    "weights at an absolute path": (_absolute_location, "outside its own folder"),
    "link leading outside": (_symlink_outside, "link that leads outside the model folder"),
    "offset past the end": (_offset_past_the_end, "lie outside their file"),
    "missing weights file": (_missing_weights, "which is missing"),
    "custom operator": (_custom_operator, "custom operator ai.onnx.contrib.Inverse"),
    "custom function domain": (_custom_function, "functions of its own operator domain"),
    "python file": (lambda folder: (folder / "unet" / "hook.py").write_text("import os\n"),
                    r"ships Python code \(unet/hook.py\)"),
    "native library": (lambda folder: (folder / "libcustom_ops.so").write_bytes(b"\x7fELF"),
                       r"ships a native library \(libcustom_ops.so\)"),
    "missing graph": (lambda folder: _graph(folder, "unet").unlink(),
                      "unet/model.onnx is missing"),
    "wrong input name": (_renamed_input, r"needs an input the engine does not give \(latents\)"),
    "custom pipeline": (_pipeline_class(["my_pipeline", "MyPipeline"]),
                        "uses a custom pipeline"),
    "SDXL pipeline": (_pipeline_class("ORTStableDiffusionXLPipeline"),
                      "ONNX folders of Stable Diffusion 1.x/2.x only"),
    "other pipeline": (_pipeline_class("StableVideoDiffusionPipeline"),
                       "not an ONNX Stable Diffusion 1.x/2.x model"),
    "float16 inputs": (_half_precision_input, "of type float16"),
    "inpainting UNet without a VAE encoder": (_inpainting_unet_without_encoder,
                                              "inpainting model without a VAE encoder"),
    "UNet of no known kind": (_unet_input_channels(5),
                              "5 input channels for 4 latent channels"),
    "auto_map in a config": (
        lambda folder: (folder / "text_encoder" / "config.json").write_text(
            json.dumps({"auto_map": {"AutoModel": "modeling.MyModel"}})),
        "asks to run its own code"),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_refusals_say_why_in_one_sentence_and_install_nothing(case, optimum_folder, tmp_path):
    damage, sentence = REFUSALS[case]
    folder = tmp_path / "foreign"
    shutil.copytree(optimum_folder, folder)
    damage(folder)
    destination = tmp_path / "installed"
    with pytest.raises(ModelError, match=sentence) as refusal:
        import_onnx_folder(folder, destination)
    message = str(refusal.value)
    assert message.count(". ") == 0 and message.endswith(".") and "\n" not in message
    assert not destination.exists()


def test_the_run_time_side_loads_no_onnx_or_torch():
    # engine.onnx_folder and engine.vae_encoding serve the app without the export extra.
    code = ("import sys, engine.onnx_folder, engine.vae_encoding\n"
            "print(','.join(m for m in ('onnx', 'torch', 'transformers') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[1],
                            capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""
