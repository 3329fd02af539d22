"""What a drag onto the canvas carries, read into plain data: a local file, picture data, or
only a web address.

A file manager (or the gallery) drags local files. A browser drags the picture's web address
and, depending on the browser and the system, the picture's bytes (image/png and friends), a
picture Qt has already decoded (application/x-qt-image), or a ``data:`` address holding the
bytes. Easel works offline: it takes the bytes when they are there and never downloads.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from PySide6.QtCore import QBuffer, QByteArray, QIODevice, QMimeData, QUrl
from PySide6.QtGui import QImage

# Encoded picture formats a browser may put in a drag, the ones Easel reads first; any other
# image/* data is handed on too, so the studio can say which format it is.
PICTURE_TYPES = ("image/png", "image/jpeg", "image/webp")
WEB_SCHEMES = ("http", "https")


@dataclass(frozen=True)
class Drop:
    """The most useful thing in a drag; at most one of the three is set."""

    path: Path | None = None  # a local file
    data: bytes | None = None  # an encoded picture (PNG, JPEG, ...)
    name: str = ""  # the picture's file name on the web, when known (for messages)
    web_address: str | None = None  # only a link: the picture itself is not in the drag


def can_take(mime: QMimeData | None) -> bool:
    """Whether a drag entering the canvas carries anything the canvas answers (quick: it
    decodes nothing). A bare web link counts: dropping it gets the offline explanation."""
    if mime is None:
        return False
    if mime.hasImage() or any(kind.startswith("image/") for kind in mime.formats()):
        return True
    return any(url.isLocalFile() or url.scheme() in WEB_SCHEMES + ("data",)
               for url in (mime.urls() if mime.hasUrls() else []))


def read_drop(mime: QMimeData | None) -> Drop:
    """The drag's local file, else its picture data, else its web address."""
    if mime is None:
        return Drop()
    urls = mime.urls() if mime.hasUrls() else []
    for url in urls:
        if url.isLocalFile():
            return Drop(path=Path(url.toLocalFile()))
    web = next((url for url in urls if url.scheme() in WEB_SCHEMES), None)
    name = PurePosixPath(web.path()).name if web is not None else ""
    data = _encoded_picture(mime) or _data_address(urls)
    if data is None and mime.hasImage():
        data = _png_of(mime.imageData())
    if data:
        return Drop(data=data, name=name)
    if web is not None:
        return Drop(web_address=web.toString())
    return Drop()


def _encoded_picture(mime: QMimeData) -> bytes | None:
    formats = [kind for kind in mime.formats() if kind.startswith("image/")]
    for kind in [*[k for k in PICTURE_TYPES if k in formats], *formats]:
        data = mime.data(kind).data()
        if data:
            return bytes(data)
    return None


def _data_address(urls: list[QUrl]) -> bytes | None:
    """The bytes of a ``data:image/...;base64,`` address (an inline picture on a page)."""
    for url in urls:
        if url.scheme() != "data":
            continue
        header, _, payload = url.toString(QUrl.ComponentFormattingOption.FullyEncoded) \
            .partition(",")
        if header.startswith("data:image/") and header.endswith(";base64"):
            text = QUrl.fromPercentEncoding(payload.encode())
            try:
                return base64.b64decode(text)
            except (binascii.Error, ValueError):
                return text.encode()  # handed on as it is: the studio refuses it as no picture
    return None


def _png_of(image: object) -> bytes | None:
    """A picture Qt decoded (another program's drag), as PNG bytes, so it goes through the
    same checks as any dropped file."""
    if not isinstance(image, QImage) or image.isNull():
        return None
    encoded = QByteArray()
    buffer = QBuffer(encoded)
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    image.save(buffer, "PNG")
    buffer.close()
    return bytes(encoded.data())
