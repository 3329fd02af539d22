"""The PNG files the library writes. Every one carries its image id and parameters, so the
image index can always be rebuilt from the files alone; none carries EXIF or GPS."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image, PngImagePlugin

from desktop.image_files import METADATA_FORMAT, a1111_parameters, easel_metadata, pixels_image
from desktop.library.atomic import write_atomically
from desktop.library.errors import BadImage
from desktop.library.images import open_image
from desktop.library.metadata import ImageInfo, read_info
from desktop.provenance import xmp
from desktop.provenance.policy import NEW_PICTURE_OPERATIONS, Provenance
from desktop.provenance.signing import COMPOSITE, TRAINED
from engine.request import GenerationParameters

# Text chunks of other tools that an imported image keeps, so they can read it back too.
FOREIGN_KEYS = ("parameters", "prompt", "workflow", "invokeai_metadata", "invokeai_graph")


def generated_metadata(parameters: GenerationParameters, image_id: str, created_at: float,
                       operation: str, source_id: str | None) -> dict[str, Any]:
    metadata = easel_metadata(parameters, image_id)
    metadata.update(created_at=created_at, operation=operation)
    if source_id is not None:
        metadata["source_image_id"] = source_id  # lineage, by the id in the source's PNG
    return metadata


def imported_metadata(image_id: str, created_at: float, original_name: str) -> dict[str, Any]:
    return {"format": METADATA_FORMAT, "image_id": image_id, "created_at": created_at,
            "imported": {"from": original_name}}


def write_generated(path: Path, pixels: np.ndarray, parameters: GenerationParameters,
                    metadata: dict[str, Any], provenance: Provenance | None = None,
                    parent: Path | None = None) -> Path:
    """RGB pixels, RGBA (a cut-out: its alpha written as it is) or grey (a mask), with the
    watermark and Content Credentials ``provenance`` asks for; ``parent`` is the source
    picture's file for an edit of a library picture."""
    operation = metadata.get("operation") or parameters.operation
    edit = parent is not None or operation not in NEW_PICTURE_OPERATIONS
    info = PngImagePlugin.PngInfo()
    info.add_itxt("parameters", a1111_parameters(parameters))
    info.add_itxt("easel", _dumps(metadata))
    # Said in XMP too, for readers that know XMP but not C2PA.
    info.add_itxt(xmp.KEY, xmp.xmp_packet(COMPOSITE if edit else TRAINED))
    if provenance is None:
        image = pixels_image(pixels)
        return write_atomically(path, lambda stream: _save(image, stream, info))
    claim = provenance.claim(path.name, operation, parameters.model_name,
                             parameters.model_hash, parameters.prompt, edit)
    image = pixels_image(provenance.marked(pixels) if pixels.ndim == 3 else pixels)
    encoded = io.BytesIO()
    _save(image, encoded, info)
    return write_atomically(path, lambda stream: provenance.write(
        encoded.getvalue(), claim, stream, parent))


def write_imported(path: Path, image: Image.Image, text: dict[str, str],
                   metadata: dict[str, Any]) -> Path:
    """Re-encode (losslessly) with the other tool's text chunks and ours; EXIF is dropped."""
    info = PngImagePlugin.PngInfo()
    for key in FOREIGN_KEYS:
        if isinstance(text.get(key), str):
            info.add_itxt(key, text[key])
    info.add_itxt("easel", _dumps(metadata))
    return write_atomically(path, lambda stream: _save(image, stream, info))


def write_without_metadata(path: Path, image: Image.Image) -> Path:
    """Pixels (and colour profile) only: no prompt, no parameters, no EXIF."""
    return write_atomically(path, lambda stream: _save(image, stream, None))


def _save(image: Image.Image, stream: BinaryIO, info: PngImagePlugin.PngInfo | None) -> None:
    options: dict[str, Any] = {"format": "PNG", "pnginfo": info}
    if image.info.get("icc_profile"):
        options["icc_profile"] = image.info["icc_profile"]
    image.save(stream, **options)


def _dumps(metadata: dict[str, Any]) -> str:
    return json.dumps(metadata, ensure_ascii=False, sort_keys=True)


def read_png(path: Path) -> ImageInfo:
    """The parameters of a library PNG, after checking the file is whole (chunk CRCs and
    the end marker); a damaged file is a ``BadImage``."""
    image = open_image(path, ("PNG",))
    with image:
        text = {key: value for key, value in image.info.items() if isinstance(value, str)}
        size = image.size
        try:
            if not any(key in text for key in ("easel", *FOREIGN_KEYS)):
                # Some tools put their text after the pixels; reading it decodes the image.
                text = dict(image.text)
            else:
                image.verify()
        except (OSError, SyntaxError, ValueError, EOFError) as error:
            raise BadImage(f"'{path.name}' is damaged or incomplete.") from error
    return read_info(text, size)
