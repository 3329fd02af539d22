"""``easel open PICTURE`` ("Open with Easel"): the window starts with that picture as the
source picture, the one variations, edits, inpainting and outpainting start from.

Qt-free, so a bad path is said before Qt loads: the picture gets the checks a file dropped on
the canvas gets (``open_image``: PNG, JPEG or WEBP told by its content, within the size
limits), and the window then loads it as it loads a drop (``DroppedPictures.drop_file``,
which decodes it off the GUI thread). When a window is already open on the library, the
launcher hands the picture to it (``single_window.ask_to_open``) instead.
"""

from __future__ import annotations

from pathlib import Path

from desktop.library import BadImage
from desktop.library.images import open_image


def checked_picture(picture: Path) -> Path:
    """The absolute path of ``picture`` once it passed a drop's checks; ``BadImage`` (one
    sentence) when it is missing, unreadable or not a picture Easel takes.

    Absolute, because an open window that is handed the path has a working folder of its own.
    """
    picture = Path(picture).expanduser()
    if picture.is_file():
        try:
            with open(picture, "rb"):  # said as "cannot be read", not as "not an image"
                pass
        except OSError as error:
            raise BadImage(f"'{picture}' cannot be read ({error.strerror}).") from error
    open_image(picture).close()
    return picture.resolve()
