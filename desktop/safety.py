"""The safety check on every picture made (issue 21), shared by the window and the command line.

Optional: with no safety checker installed nothing is checked and nothing changes. With one,
each picture's verdict is kept in its Easel metadata under ``safety_check`` (the checker's
name, flagged or not, the score), through Library.add_generated's ``checks``. A flagged
picture is kept as it is, never changed or deleted; the window's gallery blurs it until it is
clicked, and the command line says so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageFilter

from desktop.model_kinds.safety_checker import find_safety_checker
from engine.errors import Cancelled, EaselError
from engine.images import PictureInput
from engine.runtime import CancelToken, RuntimeOptions
from engine.safety import check_pictures

if TYPE_CHECKING:
    from desktop.model_store import ModelStore

SAFETY_CHECK = "safety_check"  # the record's name in the picture's metadata
# A flagged picture is shown as its average over a grid this many cells on its long side:
# colours and a rough layout, nothing that can be made out.
BLUR_CELLS = 8


def safety_checks(store: ModelStore, pictures: Sequence[PictureInput],
                  runtime: RuntimeOptions | None = None,
                  cancel: CancelToken | None = None) -> list[dict]:
    """One ``checks`` dict per picture, in order, for Library.add_generated: the installed
    safety checker's verdict under ``safety_check``, or empty dicts when none is installed.
    A cancelled run raises (nothing is saved, as for any cancel). A checker that cannot run
    (damaged, refused by the runtime) does not cost the user the pictures: they are saved
    with the failure recorded (``"error"``), which ``check_failure`` turns into a warning."""
    folder = find_safety_checker(store)
    if folder is None:
        return [{} for _ in pictures]
    try:
        verdicts = check_pictures(folder, pictures, runtime, cancel)
    except Cancelled:
        raise
    except EaselError as error:
        return [{SAFETY_CHECK: {"checker": folder.name, "error": str(error)}}
                for _ in pictures]
    return [{SAFETY_CHECK: {"checker": folder.name, "flagged": verdict.flagged,
                            "score": round(verdict.score, 6)}} for verdict in verdicts]


def flagged_record(parameters: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The safety check's record in a picture's metadata when it flagged the picture, else
    None (also for metadata written by hand or by another program: only a real record
    counts)."""
    record = parameters.get(SAFETY_CHECK)
    if isinstance(record, Mapping) and record.get("flagged") is True:
        return record
    return None


def check_failure(checks: Sequence[Mapping[str, Any]]) -> str | None:
    """The warning for pictures saved unchecked because the checker failed; None if it ran."""
    for record in (checks_of.get(SAFETY_CHECK) for checks_of in checks):
        if isinstance(record, Mapping) and isinstance(record.get("error"), str):
            return (f"The safety checker {record.get('checker', '')} could not check the "
                    f"pictures, so they were saved unchecked: {record['error']}")
    return None


def flagged_notice(checks: Mapping[str, Any], picture: str) -> str | None:
    """The command line's sentence for a picture the checker flagged; None when it did not."""
    record = flagged_record(checks)
    if record is None:
        return None
    score = record.get("score")
    shown = f" (score {score:.3g})" if isinstance(score, int | float) else ""
    return (f"the safety checker {record.get('checker', '')} flagged {picture}{shown}; it is "
            f"kept, blurred in the window's gallery.")


def hidden_picture(thumbnail: Path, width: int, height: int) -> Image.Image:
    """The gallery's stand-in for a flagged picture: the thumbnail file, fitted in
    ``width``×``height`` as the plain one would be, shrunk to a few cells and enlarged smoothly
    again, then softened so the cells' edges do not show. RGB; the file is only read."""
    with Image.open(thumbnail) as opened:
        picture = opened.convert("RGB")
    scale = min(width / picture.width, height / picture.height)
    return _hidden(picture, (max(1, round(picture.width * scale)),
                             max(1, round(picture.height * scale))))


def hidden_pixels(pixels: np.ndarray) -> np.ndarray:
    """The same stand-in at the picture's own size (the canvas shows it for a new flagged
    picture until the user chooses to see it), RGB uint8."""
    picture = Image.fromarray(pixels).convert("RGB")
    return np.asarray(_hidden(picture, picture.size))


def _hidden(picture: Image.Image, size: tuple[int, int]) -> Image.Image:
    long = max(picture.size)
    cells = (max(1, round(picture.width * BLUR_CELLS / long)),
             max(1, round(picture.height * BLUR_CELLS / long)))
    coarse = picture.resize(cells, Image.Resampling.BOX)  # each cell its area's mean
    smooth = coarse.resize(size, Image.Resampling.BICUBIC)
    return smooth.filter(ImageFilter.GaussianBlur(max(size) / BLUR_CELLS / 2))
