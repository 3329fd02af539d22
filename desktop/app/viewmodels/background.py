"""The window's background tools: Remove background, Replace background…, and the subject
(or the background) as the mask tool's mask.

Each acts on the canvas picture (made the source first when it is not) or on a gallery
picture, checks on the GUI thread what it can (a source, a model, a segmenter or a flat
background) so a refusal is one sentence with nothing queued, and queues the heavy work
(desktop.app.background) on the studio's worker like Upscale; Cancel in the queue stops it.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PySide6.QtCore import QObject, QRect, Signal
from PySide6.QtGui import QImage, QPainter

from desktop.app import background, editing
from desktop.app.background import SubjectMask
from desktop.app.viewmodels.jobs import JobRow
from desktop.app.worker import qimage_from_pixels
from desktop.background import SEGMENTER, chosen_segmenter
from desktop.library import ImageEntry
from desktop.model_prepare import settings_runtime
from desktop.model_store import ModelStore
from engine.errors import EaselError

if TYPE_CHECKING:
    from desktop.app.viewmodels.studio import Studio

NO_PROMPT = "Say what the new background should show, e.g. \"a beach at sunset\"."
MASK_READY = {False: "The subject is the mask now: Inpaint repaints it, the rest stays.",
              True: "The background is the mask now: Inpaint repaints it, the subject stays."}


class BackgroundModel(QObject):
    problem = Signal(str)
    message = Signal(str)

    def __init__(self, studio: Studio, store: ModelStore, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.studio = studio
        self.store = store
        self.segmenter: str | None = None  # the user's choice when several are installed
        self.last_prompt = ""  # what Replace background… offers next time
        self._mask_jobs: dict[int, bool] = {}  # job id -> the background (True) or subject
        self.problem.connect(studio.problem)
        self.message.connect(studio.message)
        studio.runner.finished.connect(self._finished)
        studio.runner.failed.connect(self._forget)
        studio.runner.cancelled.connect(self._forget)

    # The segmenter -------------------------------------------------------------------------

    def segmenter_names(self) -> list[str]:
        return [model.name for model in self.store.installed(SEGMENTER)]

    def needs_segmenter_choice(self) -> bool:
        """Several segmenters are installed and none is chosen yet (the window asks)."""
        names = self.segmenter_names()
        return len(names) > 1 and self.segmenter not in names

    def choose_segmenter(self, name: str) -> None:
        self.segmenter = name

    def _segmenter(self, source: editing.SourcePicture) -> tuple[bool, Path | None]:
        """(ready, the segmenter's folder or None for the flood fill); not ready once one
        sentence said why."""
        names = self.segmenter_names()
        chosen = self.segmenter if self.segmenter in names else None
        try:
            folder = chosen_segmenter(self.store, chosen, "the choice the window offers")
        except EaselError as error:
            self.problem.emit(str(error))
            return False, None
        if folder is None and (problem := background.check_flat_background(source)):
            self.problem.emit(problem)
            return False, None
        return True, folder

    # The actions ---------------------------------------------------------------------------

    def remove(self) -> int | None:
        """Queue the canvas picture's subject cut out, saved as a transparent picture."""
        return self._on_canvas_picture(self._remove)

    def replace(self, prompt: str) -> int | None:
        """Queue a new background painted as ``prompt`` says by the selected model, the
        subject's pixels kept exactly."""
        if not prompt.strip():
            self.problem.emit(NO_PROMPT)
            return None
        self.last_prompt = prompt
        return self._on_canvas_picture(lambda: self._replace(prompt))

    def use_as_mask(self, background_too: bool) -> int | None:
        """Start the mask tool with the subject (or, ``background_too``, everything but the
        subject) as the mask over the source. A cut-out on the canvas lends its own alpha,
        over the picture it was cut from; any other picture is cut first."""
        studio = self.studio
        entry = self._canvas_entry()
        if entry is not None and background.is_cutout(entry.operation) and entry.source_id \
                and studio.library.has_image(entry.source_id):
            original = studio.library.get(entry.source_id)
            studio.use_as_source(original, lambda: self._mask_job(background_too, entry.path))
            return None
        return self._on_canvas_picture(lambda: self._mask_job(background_too, None))

    def remove_of(self, entry: ImageEntry) -> None:
        """The gallery's Remove background: that picture becomes the source, then cut."""
        self.studio.use_as_source(entry, self._remove)

    def replace_of(self, entry: ImageEntry, prompt: str) -> None:
        if not prompt.strip():
            self.problem.emit(NO_PROMPT)
            return
        self.last_prompt = prompt
        self.studio.use_as_source(entry, lambda: self._replace(prompt))

    # Queuing -------------------------------------------------------------------------------

    def _canvas_entry(self) -> ImageEntry | None:
        studio = self.studio
        return None if studio.canvas_is_preview else studio.canvas_entry

    def _on_canvas_picture(self, act: Callable[[], int | None]) -> int | None:
        """Act on the source when the canvas shows it; a library picture on the canvas that
        is not the source becomes the source first (then ``act`` runs, with no job id)."""
        studio, entry = self.studio, self._canvas_entry()
        source_id = studio.source.image_id if studio.source is not None else None
        if entry is not None and not studio.canvas_is_source and entry.id != source_id:
            studio.use_as_source(entry, act)
            return None
        return act()

    def _remove(self) -> int | None:
        studio, source = self.studio, self.studio.source
        if source is None:
            self.problem.emit(editing.NO_SOURCE)
            return None
        ready, segmenter = self._segmenter(source)
        if not ready:
            return None
        work = functools.partial(background.remove_background, studio.library, segmenter,
                                 self._runtime(), source, studio.source_path, studio.device)
        return self._queue(work, f"Remove background of {source.name}", source.size)

    def _replace(self, prompt: str) -> int | None:
        studio, source = self.studio, self.studio.source
        if studio.prompt.model() is None:
            self.problem.emit("There is no model to paint the new background with; import "
                              "one first (Models › Import model…).")
            return None
        if source is None:
            self.problem.emit(editing.NO_SOURCE)
            return None
        ready, segmenter = self._segmenter(source)
        if not ready:
            return None
        form = dataclasses.replace(studio.prompt.form, prompt=prompt,
                                   seed=studio.prompt.seed_for_next_run())
        if (screening := studio.checks.screened(form)) is None:
            return None
        work = functools.partial(background.replace_background, studio.services.pipelines,
                                 studio.library, segmenter, self._runtime(), form, source,
                                 screening.checks)
        return self._queue(work, f"Replace background of {source.name}: {prompt}", source.size)

    def _mask_job(self, background_too: bool, cutout_path: Path | None) -> int | None:
        source = self.studio.source
        if source is None:
            self.problem.emit(editing.NO_SOURCE)
            return None
        segmenter = None
        if cutout_path is None:
            ready, segmenter = self._segmenter(source)
            if not ready:
                return None
        work = functools.partial(background.subject_mask, segmenter, self._runtime(), source,
                                 cutout_path)
        what = "background" if background_too else "subject"
        job_id = self._queue(work, f"The {what} of {source.name} as the mask", None)
        self._mask_jobs[job_id] = background_too
        return job_id

    def _queue(self, work: Callable, title: str, size: tuple[int, int] | None) -> int:
        studio = self.studio
        job_id = studio.runner.submit(work)
        # "generate" rows show their progress and previews on the canvas at the source's size.
        studio.jobs.add(JobRow(job_id, title, "generate" if size else "mask",
                               extra={"size": size}))
        return job_id

    def _runtime(self):  # noqa: ANN202 (engine.runtime.RuntimeOptions)
        return settings_runtime(self.studio.settings)

    # A cut for the mask tool ---------------------------------------------------------------

    def _finished(self, job_id: int, result: object) -> None:
        background_too = self._mask_jobs.pop(job_id, None)
        if background_too is None or not isinstance(result, SubjectMask):
            return
        studio = self.studio
        if result.source is not studio.source:
            self.problem.emit("The source picture changed before its subject was found; "
                              "the mask was left as it was.")
            return
        alpha = 255 - result.alpha if background_too else result.alpha
        studio.set_mask_editing(True)
        set_mask(studio.mask, alpha)
        notes = " ".join(result.notes)
        self.message.emit(MASK_READY[background_too] + (f" Note: {notes}" if notes else ""))

    def _forget(self, job_id: int, *_: object) -> None:
        self._mask_jobs.pop(job_id, None)


def set_mask(mask, pixels: np.ndarray) -> None:  # noqa: ANN001 (MaskModel)
    """Make ``pixels`` (uint8 H×W at the mask's size) the mask, as one undo step: clearing
    first keeps the old mask for Ctrl+Z. Greys become plainly in or out at half, as the
    mask tool keeps every pixel either repainted or kept."""
    mask.clear()
    painted = np.where(pixels >= 128, 255, 0).astype(np.uint8)
    picture = qimage_from_pixels(np.repeat(painted[..., np.newaxis], 3, axis=2))
    grey = picture.convertToFormat(QImage.Format.Format_Grayscale8)
    painter = QPainter(mask.image)
    painter.setCompositionMode(QPainter.CompositionMode.CompositionMode_Source)
    painter.drawImage(0, 0, grey)
    painter.end()
    mask.changed.emit(QRect())


def qimage_of(pixels: np.ndarray) -> QImage:
    """A picture for the canvas, RGBA kept (a cut-out shows its transparency)."""
    if pixels.ndim == 3 and pixels.shape[2] == 4:
        pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
        height, width, _ = pixels.shape
        return QImage(pixels.data, width, height, 4 * width,
                      QImage.Format.Format_RGBA8888).copy()
    return qimage_from_pixels(pixels)
