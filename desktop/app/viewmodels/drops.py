"""Pictures dropped on the window (or opened with Easel): a file, picture data from another
program, or a browser's link. A picture becomes the studio's source picture; anything else is
refused in one sentence and changes nothing."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QUrl

from desktop.app import editing
from desktop.library.images import open_image, open_image_data
from engine.errors import EaselError

if TYPE_CHECKING:
    from desktop.app.viewmodels.studio import Studio

DROPPED_PICTURE = "dropped picture"  # picture data with no file name


class DroppedPictures:
    def __init__(self, studio: Studio) -> None:
        self._studio = studio

    def drop_file(self, path: Path) -> bool:
        """Make a dropped picture the source image. The header check is quick; the full
        decode runs off-thread. A PNG carrying the id of a library picture keeps that id,
        for lineage."""
        try:
            open_image(Path(path)).close()
        except EaselError as error:
            self._studio.problem.emit(str(error))
            return False
        self._studio.load_source(Path(path), None, None)
        return True

    def drop_image_data(self, data: bytes, name: str = "") -> bool:
        """Make picture data dropped from another program (a browser's image, not a file)
        the source image, with the same formats, limits and decoding as a dropped file; it
        has no file, and no library id unless it is a library PNG. ``name`` (the picture's
        file name on the web, if known) is how messages call it."""
        name = name or DROPPED_PICTURE
        try:
            open_image_data(data, name).close()
        except EaselError as error:
            self._studio.problem.emit(str(error))
            return False
        library = self._studio.library
        self._studio.load_source(None, None, None,
                                 read=lambda: editing.source_from_data(data, name, library))
        return True

    def drop_web_address(self, address: str) -> None:
        """A browser's link without the picture in it: Easel never downloads (it works
        offline), so it says how to bring the picture in, and changes nothing."""
        host = QUrl(address).host()
        where = f" from {host}" if host else ""
        self._studio.problem.emit(f"Easel works offline, so it does not download the "
                                  f"picture{where}: save it from the browser, then drop the "
                                  "saved file here.")
