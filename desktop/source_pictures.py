"""Pictures a command starts from: a file (PNG, JPEG or WEBP) or a library picture's id, read
once with the Easel id it may carry, for lineage. Qt-free: the command line and batches use it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from desktop.library import BadImage, Library, UnknownImage
from desktop.library.images import flattened, load_pixels, open_image
from desktop.library.metadata import from_easel
from engine.errors import BadRequest


@dataclass(frozen=True)
class SourcePicture:
    picture: Image.Image | None  # RGB; None for commands that start from no picture
    image_id: str | None  # the library picture it is, for lineage; None for outside files


def source_picture(library: Library, source: str) -> SourcePicture:
    path = Path(source)
    if path.is_file():
        # One read gives the pixels and the Easel id the PNG may carry (for lineage).
        picture, text = _read_picture(path, "RGB")
        info = from_easel(text["easel"]) if isinstance(text.get("easel"), str) else None
        image_id = info.image_id if info is not None else None
        known = image_id is not None and library.has_image(image_id)
        return SourcePicture(picture, image_id if known else None)
    try:
        entry = library.get(source)
    except UnknownImage:
        raise BadRequest(f"'{source}' is neither a picture file nor a picture in the "
                         f"library.") from None
    if entry.missing:
        raise BadRequest(f"The file of library picture {entry.id[:12]} is missing.")
    return SourcePicture(open_picture(entry.path, "RGB"), entry.id)


def open_picture(path: Path, mode: str) -> Image.Image:
    """A PNG, JPEG or WEBP file, fully decoded; anything else is one sentence."""
    return _read_picture(path, mode)[0]


def _read_picture(path: Path, mode: str) -> tuple[Image.Image, dict]:
    """The decoded picture in ``mode``, and its text chunks (empty for JPEG and WEBP)."""
    try:
        with open_image(path) as image:
            pixels = load_pixels(image, path.name)
            text = dict(getattr(image, "text", {}))
            # A cut-out's hidden pixels never show: transparency is laid on white for RGB.
            return (flattened(pixels) if mode == "RGB" else pixels.convert(mode)), text
    except BadImage as error:
        raise BadRequest(str(error)) from None
