"""Reading other tools' PNG metadata: AUTOMATIC1111, ComfyUI and InvokeAI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from PIL import Image, PngImagePlugin

from desktop.library import Library
from desktop.library.metadata import (
    a1111_generator,
    from_a1111,
    from_comfyui,
    from_invokeai,
    read_info,
)

ROOT = Path(__file__).resolve().parent.parent

# A ComfyUI SDXL-style graph: the positive prompt goes through a combine node, the seed comes
# from a separate primitive node, and the model through a LoRA loader.
COMFY_GRAPH = {
    "4": {"class_type": "CheckpointLoaderSimple",
          "inputs": {"ckpt_name": "juggernaut.safetensors"}},
    "10": {"class_type": "LoraLoader", "inputs": {"model": ["4", 0], "clip": ["4", 1],
                                                  "lora_name": "style.safetensors"}},
    "6": {"class_type": "CLIPTextEncodeSDXL", "inputs": {"text_g": "a harbour at dawn",
                                                         "text_l": "a harbour at dawn",
                                                         "clip": ["10", 1]}},
    "11": {"class_type": "CLIPTextEncode", "inputs": {"text": "oil painting", "clip": ["10", 1]}},
    "12": {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["6", 0],
                                                           "conditioning_2": ["11", 0]}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry, text", "clip": ["10", 1]}},
    "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 1024, "height": 768,
                                                       "batch_size": 1}},
    "20": {"class_type": "PrimitiveNode", "inputs": {"seed": 18446744073709551615}},
    "3": {"class_type": "KSampler", "inputs": {
        "seed": ["20", 0], "steps": 30, "cfg": 6.5, "sampler_name": "dpmpp_2m",
        "scheduler": "karras", "denoise": 1.0, "model": ["10", 0], "positive": ["12", 0],
        "negative": ["7", 0], "latent_image": ["5", 0]}},
}

INVOKE = {
    "generation_mode": "txt2img", "positive_prompt": "a lighthouse, storm",
    "negative_prompt": "people", "width": 512, "height": 640, "seed": 123456, "steps": 25,
    "cfg_scale": 7.5, "scheduler": "euler",
    "model": {"name": "Deliberate v2", "hash": "abc123", "base": "sd-1"},
}


def test_a1111_parameters():
    text = ("portrait of a cat,\nwearing a hat\nNegative prompt: blurry,\nlow quality\n"
            'Steps: 28, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 42, Size: 512x768, '
            'Model hash: 9aba26abdf, Model: "my, model", Denoising strength: 0.4')
    info = from_a1111(text)
    assert info.prompt == "portrait of a cat,\nwearing a hat"
    assert info.negative_prompt == "blurry,\nlow quality"
    assert (info.seed, info.width, info.height) == (42, 512, 768)
    assert (info.model, info.model_hash) == ("my, model", "9aba26abdf")
    assert info.operation == "image_to_image"
    assert info.parameters["settings"]["Sampler"] == "DPM++ 2M Karras"
    bare = from_a1111("just a prompt, no settings")
    assert (bare.prompt, bare.negative_prompt, bare.seed) == ("just a prompt, no settings", "",
                                                              None)



def test_a1111_rng_names_the_generator_that_remakes_its_seed():
    line = "a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 5, Size: 512x512"
    # No RNG written is A1111's default, GPU: torch.randn on an NVIDIA GPU, as NV reproduces.
    assert a1111_generator(from_a1111(line).parameters["settings"]) == "torch-cuda"
    for rng, generator in (("CPU", "torch-cpu"), ("NV", "torch-cuda"), ("GPU", "torch-cuda")):
        settings = from_a1111(f"{line}, RNG: {rng}, Version: v1.10.1").parameters["settings"]
        assert settings["RNG"] == rng
        assert a1111_generator(settings) == generator
    assert a1111_generator({"RNG": "Quantum"}) is None

def test_comfyui_prompt_graph():
    info = from_comfyui(json.dumps(COMFY_GRAPH))
    assert info.prompt == "a harbour at dawn\noil painting"
    assert info.negative_prompt == "blurry, text"
    assert info.model == "juggernaut.safetensors"
    assert (info.width, info.height) == (1024, 768)
    assert info.seed is None  # 2**64 - 1 does not fit SQLite's integers...
    assert info.parameters["prompt"]["20"]["inputs"]["seed"] == 2**64 - 1  # ...but is kept
    unknown = {"1": {"class_type": "CLIPTextEncode", "inputs": {"text": "a fox"}},
               "2": {"class_type": "SomeCustomSampler", "inputs": {}}}
    assert from_comfyui(json.dumps(unknown)).prompt == "a fox"
    assert from_comfyui("[1, 2]") is None and from_comfyui("{not json") is None
    cyclic = {"1": {"class_type": "KSampler", "inputs": {"positive": ["2", 0]}},
              "2": {"class_type": "Reroute", "inputs": {"x": ["1", 0]}}}
    assert from_comfyui(json.dumps(cyclic)).prompt == ""  # loops end, never recurse forever


def test_invokeai_metadata():
    info = from_invokeai(json.dumps(INVOKE))
    assert (info.prompt, info.negative_prompt, info.model, info.model_hash) == (
        "a lighthouse, storm", "people", "Deliberate v2", "abc123")
    assert (info.seed, info.width, info.height, info.operation) == (
        123456, 512, 640, "text_to_image")


def test_unknown_or_broken_metadata_still_gives_the_size():
    assert read_info({}, (10, 20)).origin == "unknown"
    info = read_info({"parameters": "", "prompt": "null", "easel": "{}"}, (10, 20))
    assert (info.origin, info.width, info.height) == ("unknown", 10, 20)


def save_with(path: Path, chunks: dict[str, str]) -> Path:
    info = PngImagePlugin.PngInfo()
    for key, value in chunks.items():
        info.add_text(key, value)
    Image.new("RGB", (8, 8), "green").save(path, pnginfo=info)
    return path


def test_comfyui_and_invokeai_images_become_searchable(tmp_path):
    comfy = save_with(tmp_path / "ComfyUI_00001_.png",
                      {"prompt": json.dumps(COMFY_GRAPH), "workflow": "{}"})
    invoke = save_with(tmp_path / "invoke.png", {"invokeai_metadata": json.dumps(INVOKE)})
    with Library.open(tmp_path / "home") as library:
        comfy_entry = library.import_file(comfy)
        invoke_entry = library.import_file(invoke)
        assert [e.id for e in library.search("harbour").entries] == [comfy_entry.id]
        assert [e.id for e in library.search("lighthouse storm").entries] == [invoke_entry.id]
        assert library.get(comfy_entry.id).origin == "comfyui"
        with Image.open(comfy_entry.path) as image:
            assert json.loads(image.text["prompt"]) == COMFY_GRAPH  # ComfyUI can reload it
            assert image.text["workflow"] == "{}"
        # The index rebuilt from the files alone says the same.
        library.connection.execute("DELETE FROM images")
        library.rebuild()
        assert library.get(invoke_entry.id).prompt == "a lighthouse, storm"
        assert library.get(comfy_entry.id).negative_prompt == "blurry, text"


def test_the_library_loads_no_qt_or_torch():
    code = ("import sys, desktop.library, desktop.library.thumbnails, desktop.library.instance\n"
            "print(sorted(m for m in ('PySide6', 'torch', 'diffusers') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, check=True)
    assert result.stdout.strip() == "[]"
