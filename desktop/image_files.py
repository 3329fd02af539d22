"""Writing generated images: PNG with metadata other tools read, written atomically.

Each PNG carries its parameters twice: an AUTOMATIC1111-style ``parameters`` text chunk (read
by A1111, InvokeAI's importer, Civitai and most galleries) and our own ``easel`` JSON with
everything needed to make the image again. No absolute paths, no EXIF.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import asdict
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

from desktop.files import create_temporary, fsync_folder
from engine import __version__ as engine_version
from engine.control.control import RecordedControl
from engine.errors import BadRequest
from engine.image_prompt.prompt import RecordedImagePrompt
from engine.noise import a1111_rng_name
from engine.request import GenerationParameters
from engine.schedulers import a1111_sampler_name

METADATA_FORMAT = 1
# The pictures Easel writes, by their channels: RGB; RGBA for a cut-out (background removed);
# grey for a mask.
PIXEL_MODES = {3: "RGB", 4: "RGBA", 1: "L"}


def a1111_parameters(parameters: GenerationParameters) -> str:
    lines = [parameters.prompt]
    if parameters.negative_prompt:
        lines.append(f"Negative prompt: {parameters.negative_prompt}")
    # A1111's Size of a hires fix is its first pass's, which "Hires upscale" then enlarges;
    # given the final size, A1111 would enlarge that again when it reads the settings back.
    width, height = parameters.base_size or (parameters.width, parameters.height)
    settings = [
        ("Steps", parameters.steps),
        ("Sampler", a1111_sampler_name(parameters.scheduler)),
        ("CFG scale", f"{parameters.guidance:g}"),
        ("Seed", parameters.seed),
        ("Size", f"{width}x{height}"),
        ("Model hash", parameters.model_hash),
        ("Model", parameters.model_name),
    ]
    # A1111's names for the editing settings, so its readers show them too.
    if parameters.strength is not None:
        settings.append(("Denoising strength", f"{parameters.strength:g}"))
    if parameters.feather is not None:
        settings.append(("Mask blur", parameters.feather))
    if parameters.image_guidance is not None:
        settings.append(("Image CFG scale", f"{parameters.image_guidance:g}"))
    # A1111 names an enlargement by where it happened: a hires fix, or its extras tab
    # ("postprocessing") for a picture enlarged on its own.
    if parameters.scale is not None and parameters.base_size is not None:
        settings += [("Hires upscale", f"{parameters.scale:g}"),
                     ("Hires upscaler", parameters.upscaler)]
    elif parameters.scale is not None:
        settings += [("Postprocess upscale by", f"{parameters.scale:g}"),
                     ("Postprocess upscaler", parameters.upscaler)]
    if parameters.loras:  # as A1111 writes them, so model sites know the LoRAs used
        settings.append(("Lora hashes", ", ".join(f"{name}: {short_hash}"
                                                  for name, _weight, short_hash in
                                                  parameters.loras)))
    if parameters.embeddings:  # as A1111 writes them, so model sites know the embeddings
        settings.append(("TI hashes", a1111_embeddings_value(parameters.embeddings)))
    # As sd-webui-controlnet writes its units, so A1111's readers show the controls.
    settings += [(f"ControlNet {index}", a1111_control_value(control))
                 for index, control in enumerate(parameters.controls)]
    # sd-webui-controlnet runs IP-Adapters as units too: one unit per reference picture.
    settings += [(f"ControlNet {index}", a1111_image_prompt_value(prompt))
                 for index, prompt in enumerate(parameters.image_prompts,
                                                start=len(parameters.controls))]
    if parameters.decoder:  # fast decode: A1111 names the VAE that decoded the picture so
        settings.append(("VAE", parameters.decoder))
    if parameters.emphasis == "none":  # A1111 writes its emphasis only when not the default
        settings.append(("Emphasis", "No norm"))
    # A1111 reads no "RNG" as its GPU noise; numpy's has no A1111 name, so it writes none.
    rng = a1111_rng_name(parameters.generator)
    if rng:
        settings.append(("RNG", rng))
    settings.append(("Version", f"Easel {engine_version}"))
    lines.append(", ".join(f"{key}: {_a1111_value(value)}" for key, value in settings))
    return "\n".join(lines)


def easel_metadata(parameters: GenerationParameters, image_id: str) -> dict:
    return {
        "format": METADATA_FORMAT,
        "image_id": image_id,
        "engine_version": engine_version,
        "operation": parameters.operation,
        "prompt": parameters.prompt,
        "negative_prompt": parameters.negative_prompt,
        "width": parameters.width,
        "height": parameters.height,
        "steps": parameters.steps,
        "guidance": parameters.guidance,
        "scheduler": parameters.scheduler,
        "seed": parameters.seed,
        "generator": parameters.generator,
        "emphasis": parameters.emphasis,
        **({"loras": [{"name": name, "weight": weight, "hash": short_hash}
                      for name, weight, short_hash in parameters.loras]}
           if parameters.loras else {}),
        **({"embeddings": [{"name": name, "hash": short_hash}
                           for name, short_hash in parameters.embeddings]}
           if parameters.embeddings else {}),
        **({"controls": [asdict(control) for control in parameters.controls]}
           if parameters.controls else {}),
        **({"image_prompts": [asdict(prompt) for prompt in parameters.image_prompts]}
           if parameters.image_prompts else {}),
        "model": {"name": parameters.model_name, "hash": parameters.model_hash,
                  "family": parameters.model_family},
        # Editing settings, only where the operation has them.
        **{name: value for name, value in (("strength", parameters.strength),
                                           ("feather", parameters.feather),
                                           ("extend", parameters.extend),
                                           ("image_guidance", parameters.image_guidance),
                                           ("regions", _regions(parameters.regions)),
                                           ("region_weight", parameters.region_weight),
                                           ("scale", parameters.scale),
                                           ("upscaler", parameters.upscaler),
                                           ("base_size", _pair(parameters.base_size)),
                                           # fast decode: the tiny VAE that decoded it
                                           ("decoder", parameters.decoder))
           if value is not None},
    }


def _regions(regions: tuple | None) -> list[dict] | None:
    """Layout regions as JSON: each box (x, y, width, height in pixels) with its prompt."""
    if regions is None:
        return None
    return [{"box": list(box), "prompt": prompt} for box, prompt in regions]


def _pair(pair: tuple[int, int] | None) -> list[int] | None:
    return None if pair is None else list(pair)


def new_image_id() -> str:
    return uuid.uuid4().hex


def pixels_image(pixels: np.ndarray) -> Image.Image:
    """uint8 pixels (H, W, 3), (H, W, 4) with alpha, or (H, W) grey, as a PIL image."""
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    channels = 1 if pixels.ndim == 2 else pixels.shape[2] if pixels.ndim == 3 else 0
    if channels not in PIXEL_MODES:
        raise ValueError(f"pixels of shape {pixels.shape} are not RGB, RGBA or grey")
    return Image.fromarray(pixels, PIXEL_MODES[channels])


def save_png(pixels: np.ndarray, path: Path, parameters: GenerationParameters | None,
             image_id: str | None = None) -> Path:
    """Write ``pixels`` (RGB, RGBA or grey: ``pixels_image``) to ``path`` atomically: temp
    file, fsync, rename, fsync the folder. The file gets the user's usual mode (0644 under
    umask 022), like any file they make."""
    path = Path(path)
    info = PngImagePlugin.PngInfo()
    if parameters is not None:
        info.add_itxt("parameters", a1111_parameters(parameters))
        metadata = easel_metadata(parameters, image_id or new_image_id())
        info.add_itxt("easel", json.dumps(metadata, ensure_ascii=False, sort_keys=True))
    image = pixels_image(pixels)
    return _replace_atomically(path, lambda stream: image.save(stream, format="PNG",
                                                               pnginfo=info))


def copy_png(source: Path, path: Path) -> Path:
    """A byte-for-byte copy of a library picture at ``path`` (atomically, as ``save_png``):
    the copy a command's --output asks for carries the library file's Content Credentials,
    which stay valid only on the very same bytes."""
    data = Path(source).read_bytes()
    return _replace_atomically(Path(path), lambda stream: stream.write(data))


def _replace_atomically(path: Path, write) -> Path:
    descriptor, temporary = create_temporary(path.parent, f".{path.stem}-", ".png.tmp")
    try:
        with os.fdopen(descriptor, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)
    return path


def a1111_control_value(control: RecordedControl) -> str:
    """One ControlNet unit in sd-webui-controlnet's words ("Module: canny, Model: name
    [hash], Weight: 1, ...")."""
    mode = "ControlNet is more important" if control.guess_mode else "Balanced"
    fields = [("Module", control.control or "none"),
              ("Model", f"{control.controlnet} [{control.hash}]"),
              ("Weight", f"{control.weight:g}"), ("Guidance Start", f"{control.start:g}"),
              ("Guidance End", f"{control.end:g}"), ("Control Mode", mode)]
    return ", ".join(f"{key}: {value}" for key, value in fields)


def a1111_image_prompt_value(prompt: RecordedImagePrompt) -> str:
    """An image prompt as an sd-webui-controlnet IP-Adapter unit."""
    fields = [("Module", f"ip-adapter ({prompt.encoder})"),
              ("Model", f"{prompt.adapter} [{prompt.hash}]"), ("Weight", f"{prompt.weight:g}")]
    return ", ".join(f"{key}: {value}" for key, value in fields)


def a1111_embeddings_value(embeddings: tuple[tuple[str, str], ...]) -> str:
    """A1111's "TI hashes" value: "name: hash, ...", each name without the ':' and ',' that
    would make the list ambiguous (A1111 drops them too)."""
    return ", ".join(f"{name.replace(':', '').replace(',', '')}: {short_hash}"
                     for name, short_hash in embeddings)


def picture_embeddings(parameters: dict) -> tuple[tuple[str, str], ...]:
    """(name, hash) of the embeddings a picture records: Easel's own list, else the "TI
    hashes" of a picture from A1111 (``parameters`` as the library keeps them)."""
    embeddings = parameters.get("embeddings")
    if isinstance(embeddings, list):
        return tuple((str(item.get("name")), str(item.get("hash")))
                     for item in embeddings if isinstance(item, dict))
    settings = parameters.get("settings")
    value = settings.get("TI hashes") if isinstance(settings, dict) else None
    if not isinstance(value, str):
        return ()
    pairs = (part.rpartition(":") for part in value.split(","))
    return tuple((name.strip(), short_hash.strip()) for name, colon, short_hash in pairs
                 if colon and name.strip())


def _a1111_value(value: object) -> str:
    text = str(value)
    # A1111 quotes values that would break its comma-separated parser.
    if any(character in text for character in ',:\n"'):
        return json.dumps(text)
    return text


def read_parameters(path: Path) -> GenerationParameters | None:
    """The settings an Easel picture was made with, from its PNG, so a picture made from it
    (an enlargement) keeps its prompt and seed; None for pictures from elsewhere."""
    try:
        with Image.open(path) as image:
            data = json.loads((getattr(image, "text", {}) or {}).get("easel", "{}"))
        model = data["model"]
        parameters = GenerationParameters(
            prompt=str(data["prompt"]), negative_prompt=str(data["negative_prompt"]),
            width=int(data["width"]), height=int(data["height"]), steps=int(data["steps"]),
            guidance=float(data["guidance"]), scheduler=str(data["scheduler"]),
            seed=int(data["seed"]), model_name=str(model["name"]),
            model_hash=str(model["hash"]), model_family=str(model["family"]),
            generator=str(data["generator"]),
            emphasis=str(data.get("emphasis", "original")),  # older pictures: the default
            loras=tuple((str(lora["name"]), float(lora["weight"]), str(lora["hash"]))
                        for lora in data.get("loras", [])),
            embeddings=tuple((str(embedding["name"]), str(embedding["hash"]))
                             for embedding in data.get("embeddings", [])),
            controls=tuple(RecordedControl(**control) for control in data.get("controls", [])),
            image_prompts=tuple(RecordedImagePrompt(**prompt)
                                for prompt in data.get("image_prompts", [])),
            decoder=None if data.get("decoder") is None else str(data["decoder"]))
        a1111_sampler_name(parameters.scheduler)  # a name Easel can write again
    except (OSError, ValueError, KeyError, TypeError, AttributeError, BadRequest):
        return None
    return parameters
