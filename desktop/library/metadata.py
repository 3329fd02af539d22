"""Reading generation parameters from PNG text chunks: Easel's own and other tools'.

Each reader turns one tool's metadata into an ``ImageInfo``; unknown or malformed metadata
gives an ``ImageInfo`` with what could be read (at least the size), never an exception,
because a file from elsewhere must still be indexable.
- Easel: the ``easel`` JSON chunk (``desktop.image_files.easel_metadata``), with the image id.
- AUTOMATIC1111 (and Forge, SD.Next, Civitai): the ``parameters`` text.
- ComfyUI: the ``prompt`` JSON, the node graph that was run.
- InvokeAI: the ``invokeai_metadata`` JSON.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from typing import Any

from engine.noise import TORCH_CPU, TORCH_CUDA

_INT64 = 2**63


@dataclass(frozen=True)
class ImageInfo:
    origin: str  # easel, a1111, comfyui, invokeai, unknown
    prompt: str = ""
    negative_prompt: str = ""
    model: str = ""
    model_hash: str = ""
    seed: int | None = None
    width: int | None = None
    height: int | None = None
    operation: str = ""
    source_id: str | None = None
    image_id: str | None = None
    created_at: float | None = None
    parameters: dict[str, Any] = field(default_factory=dict)


def read_info(text: dict[str, str], size: tuple[int, int]) -> ImageInfo:
    """The parameters in a PNG's text chunks, Easel's first, then other tools' in turn.

    An image imported from another tool carries Easel's chunk (its id and import time) beside
    the tool's own chunks, which still hold its prompt and settings.
    """
    ours = from_easel(text["easel"]) if isinstance(text.get("easel"), str) else None
    if ours is not None and ours.parameters.get("imported"):
        theirs = _foreign_info(text, size)
        return replace(theirs, image_id=ours.image_id, created_at=ours.created_at)
    if ours is not None:
        return replace(ours, width=ours.width or size[0], height=ours.height or size[1])
    return _foreign_info(text, size)


def _foreign_info(text: dict[str, str], size: tuple[int, int]) -> ImageInfo:
    for key, reader in (("parameters", from_a1111), ("invokeai_metadata", from_invokeai),
                        ("prompt", from_comfyui)):
        value = text.get(key)
        if isinstance(value, str) and value.strip():
            info = reader(value)
            if info is not None:
                return replace(info, width=info.width or size[0], height=info.height or size[1])
    return ImageInfo(origin="unknown", width=size[0], height=size[1])


def from_easel(text: str) -> ImageInfo | None:
    data = _json_object(text)
    if data is None or not isinstance(data.get("image_id"), str):
        return None
    model = data.get("model") if isinstance(data.get("model"), dict) else {}
    created = data.get("created_at")
    return ImageInfo(
        origin="easel", prompt=_text(data.get("prompt")),
        negative_prompt=_text(data.get("negative_prompt")), model=_text(model.get("name")),
        model_hash=_text(model.get("hash")), seed=_int(data.get("seed")),
        width=_int(data.get("width")), height=_int(data.get("height")),
        operation=_text(data.get("operation")), source_id=_id(data.get("source_image_id")),
        image_id=_id(data.get("image_id")),
        created_at=float(created) if isinstance(created, int | float) else None,
        parameters=data)


# AUTOMATIC1111's own pattern for "Key: value, Key: "quoted, value"" settings lines.
_A1111_SETTING = re.compile(r'\s*([\w ]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_SIZE = re.compile(r"^(\d+)x(\d+)$")


def from_a1111(text: str) -> ImageInfo | None:
    lines = text.strip().split("\n")
    settings: dict[str, str] = {}
    if len(lines) > 1 or lines[-1].startswith("Steps:"):
        found = dict(_A1111_SETTING.findall(lines[-1]))
        if "Steps" in found:
            settings = {key.strip(): _unquote(value) for key, value in found.items()}
            lines = lines[:-1]
    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    for line in lines:
        if line.startswith("Negative prompt:") or negative_lines:
            negative_lines.append(line.removeprefix("Negative prompt:").strip()
                                  if not negative_lines else line)
        else:
            prompt_lines.append(line)
    operation = _a1111_operation(settings)
    # The Size of an enlarged picture is its first pass's (hires fix) or its source's (A1111's
    # extras keep the source's settings); the file's own size is the picture's.
    enlarged = operation in ("hires_fix", "upscale")
    size = None if enlarged else _SIZE.match(settings.get("Size", ""))
    return ImageInfo(
        origin="a1111", prompt="\n".join(prompt_lines).strip(),
        negative_prompt="\n".join(negative_lines).strip(), model=settings.get("Model", ""),
        model_hash=settings.get("Model hash", ""), seed=_int(settings.get("Seed")),
        width=int(size.group(1)) if size else None, height=int(size.group(2)) if size else None,
        operation=operation,
        parameters={"tool": "a1111", "parameters": text, "settings": settings})


# AUTOMATIC1111's "RNG" setting (its random number source) and the generator that remakes its
# noise: "GPU" is torch.randn on the GPU, which "NV" reproduces anywhere, "CPU" on the CPU.
_A1111_GENERATORS = {"GPU": TORCH_CUDA, "NV": TORCH_CUDA, "CPU": TORCH_CPU}


def a1111_generator(settings: dict[str, str]) -> str | None:
    """The generator (``engine.noise``) that remakes an A1111 picture's seed, from its settings
    line; A1111 writes no "RNG" for its default, GPU. None for a source Easel does not have."""
    return _A1111_GENERATORS.get(settings.get("RNG", "GPU").strip())


def _a1111_operation(settings: dict[str, str]) -> str:
    """Easel's name for what A1111 did, from the settings only that operation writes."""
    if "Hires upscale" in settings or "Hires resize" in settings:
        return "hires_fix"
    if "Postprocess upscale by" in settings or "Postprocess upscale to" in settings:
        return "upscale"
    return "image_to_image" if "Denoising strength" in settings else "text_to_image"


def from_invokeai(text: str) -> ImageInfo | None:
    data = _json_object(text)
    if data is None:
        return None
    model = data.get("model")
    if isinstance(model, dict):
        model_name = _text(model.get("name") or model.get("model_name"))
        model_hash = _text(model.get("hash"))
    else:
        model_name, model_hash = _text(model), ""
    kind = _text(data.get("generation_mode"))
    return ImageInfo(
        origin="invokeai", prompt=_text(data.get("positive_prompt")),
        negative_prompt=_text(data.get("negative_prompt")), model=model_name,
        model_hash=model_hash, seed=_int(data.get("seed")), width=_int(data.get("width")),
        height=_int(data.get("height")),
        operation="image_to_image" if "img2img" in kind else "text_to_image",
        parameters={"tool": "invokeai", "invokeai_metadata": data})


_SAMPLER_TYPES = ("KSampler", "KSamplerAdvanced", "SamplerCustom", "SamplerCustomAdvanced")


def from_comfyui(text: str) -> ImageInfo | None:
    graph = _json_object(text)
    if graph is None:
        return None
    nodes = {key: node for key, node in graph.items()
             if isinstance(node, dict) and isinstance(node.get("inputs"), dict)}
    if not nodes or not any("class_type" in node for node in nodes.values()):
        return None
    samplers = [node for node in nodes.values() if node.get("class_type") in _SAMPLER_TYPES]
    if not samplers:  # not a graph we understand: every prompt text is still searchable
        texts = [_text(node["inputs"].get("text")) for node in nodes.values()
                 if "CLIPTextEncode" in str(node.get("class_type"))]
        return ImageInfo(origin="comfyui", prompt="\n".join(t for t in texts if t),
                         parameters={"tool": "comfyui", "prompt": graph})
    sampler = samplers[-1]["inputs"]
    latent = _follow(nodes, sampler.get("latent_image"), ("width",))
    return ImageInfo(
        origin="comfyui",
        prompt="\n".join(_texts(nodes, sampler.get("positive"))),
        negative_prompt="\n".join(_texts(nodes, sampler.get("negative"))),
        model=_text(_value(nodes, sampler.get("model"), ("ckpt_name", "unet_name"))),
        seed=_int(_value(nodes, sampler.get("seed", sampler.get("noise_seed")),
                         ("seed", "noise_seed", "value"))),
        width=_int(latent.get("width")) if latent else None,
        height=_int(latent.get("height")) if latent else None,
        operation="text_to_image", parameters={"tool": "comfyui", "prompt": graph})


def _texts(nodes: dict, link: Any, depth: int = 0) -> list[str]:
    """Prompt texts feeding ``link``, through combine/concat/LoRA nodes, in order."""
    node = _linked(nodes, link)
    if node is None or depth > 32:
        return []
    inputs = node["inputs"]
    own = [inputs[key] for key in ("text", "text_g", "text_l") if isinstance(inputs.get(key), str)]
    if own:
        return list(dict.fromkeys(own))  # SDXL nodes often repeat one text in g and l
    found: list[str] = []
    for value in inputs.values():
        for text in _texts(nodes, value, depth + 1):
            if text not in found:
                found.append(text)
    return found


def _value(nodes: dict, value: Any, keys: tuple[str, ...], depth: int = 0) -> Any:
    """A literal input, or the first of ``keys`` found upstream of a link (e.g. a seed node)."""
    node = _linked(nodes, value)
    if node is None:
        return value
    if depth > 32:
        return None
    for key in keys:
        if key in node["inputs"] and _linked(nodes, node["inputs"][key]) is None:
            return node["inputs"][key]
    for upstream in node["inputs"].values():
        if _linked(nodes, upstream) is not None:
            found = _value(nodes, upstream, keys, depth + 1)
            if found is not None:
                return found
    return None


def _follow(nodes: dict, link: Any, keys: tuple[str, ...], depth: int = 0) -> dict | None:
    node = _linked(nodes, link)
    if node is None or depth > 32:
        return None
    if all(key in node["inputs"] for key in keys):
        return node["inputs"]
    for upstream in node["inputs"].values():
        found = _follow(nodes, upstream, keys, depth + 1)
        if found is not None:
            return found
    return None


def _linked(nodes: dict, value: Any) -> dict | None:
    # A ComfyUI link is [node_id, output_index].
    if isinstance(value, list) and len(value) == 2 and isinstance(value[1], int):
        return nodes.get(str(value[0]))
    return None


def _json_object(text: str) -> dict | None:
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _int(value: Any) -> int | None:
    """An integer that fits SQLite's 64 bits (ComfyUI seeds can be up to 2**64 - 1: those
    stay in the parameters JSON only)."""
    if isinstance(value, bool):
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if -_INT64 <= number < _INT64 else None


_ID = re.compile(r"^[0-9a-f]{32}$")


def _id(value: Any) -> str | None:
    return value if isinstance(value, str) and _ID.match(value) else None


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        try:
            return json.loads(value)
        except ValueError:
            return value[1:-1]
    return value
