"""The one module that crosses threads: the job queue's worker and the thumbnail pool.

Everything else in the app lives on the GUI thread. A job is a plain function that takes a
``JobContext`` (a cancel token in, throttled progress out); it runs on one worker thread,
one job at a time, in the order submitted. Results and progress come back as queued Qt
signals on ``JobRunner``, which lives on the GUI thread. Progress is sent at most about ten
times a second (plus every image's last step), so a fast model cannot flood the event loop;
previews are made only for the reports that are sent.

Thumbnails and full-size decodes run on a small ``QThreadPool``, newest request first, so
the gallery and canvas never decode an image on the GUI thread.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QObject, QRunnable, QSize, Qt, QThread, QThreadPool, Signal
from PySide6.QtGui import QImage

from engine.errors import Cancelled, EaselError
from engine.runtime import CancelToken

log = logging.getLogger(__name__)

REPORT_INTERVAL_S = 0.1
# A tiny VAE's preview takes a fraction of a second on a CPU: a preview is skipped while less
# than this many times its cost has passed since the last one, so previews never take more
# than about a fifth of a job's time.
PREVIEW_SPACING = 4.0
THUMBNAIL_THREADS = 2


@dataclass(frozen=True, eq=False)
class JobProgress:
    step: int
    steps: int
    image: int  # from 0
    images: int
    elapsed_s: float
    preview: QImage | None = None
    stage: str = ""  # what a model import is doing ("UNet")
    detail: str = ""  # free text after the stage ("1.2/4.3 GB · 45 MB/s · 1 min left")
    # Pictures made together in one UNet call (on a GPU): ``image`` is then the first of them.
    together: int = 1

    @property
    def fraction(self) -> float:
        return (self.image + self.together * self.step / max(self.steps, 1)) / max(
            self.images, 1)

    @property
    def seconds_left(self) -> float | None:
        done = self.fraction
        if done <= 0 or self.elapsed_s < 0.5:
            return None  # too early to guess
        return self.elapsed_s * (1 - done) / done


class JobContext:
    """Given to a job's function on the worker thread."""

    def __init__(self, emit: Callable[[JobProgress], None], cancel: CancelToken) -> None:
        self.cancel = cancel
        self._emit = emit
        self._started = time.monotonic()
        self._last_sent = 0.0
        self._preview_done = 0.0  # when the last preview was made, and what it cost
        self._preview_cost = 0.0

    def report(self, step: int, steps: int, image: int = 0, images: int = 1,
               preview: Callable[[], np.ndarray] | None = None, stage: str = "",
               detail: str = "", together: int = 1) -> None:
        """A step done: ``image`` of ``images`` is at ``step`` of ``steps`` (with
        ``together`` > 1, ``image`` is the first of that many pictures made together)."""
        now = time.monotonic()
        last_of_image = step >= steps
        if not last_of_image and now - self._last_sent < REPORT_INTERVAL_S:
            return
        self._last_sent = now
        picture = None
        # Step 0 is a stage said before any work ("preparing the model"): nothing to show.
        if preview is not None and step > 0 and now - self._preview_done >= \
                PREVIEW_SPACING * self._preview_cost:
            picture = qimage_from_pixels(preview())
            self._preview_done = time.monotonic()
            self._preview_cost = self._preview_done - now
        self._emit(JobProgress(step, steps, image, images, now - self._started, picture, stage,
                               detail, together))


@dataclass(eq=False)
class _Job:
    id: int
    work: Callable[[JobContext], Any]
    cancel: CancelToken


class _WorkerThread(QThread):
    """Takes jobs from the runner's queue one at a time until told to stop."""

    def __init__(self, runner: JobRunner) -> None:
        super().__init__()
        self.setObjectName("easel-worker")
        self._runner = runner

    def run(self) -> None:
        while (job := self._runner._next_job()) is not None:
            self._runner._run(job)


class _Task(QRunnable):
    def __init__(self, function: Callable[[], None]) -> None:
        super().__init__()
        self._function = function

    def run(self) -> None:
        try:
            self._function()
        except Exception:  # a pool thread must never die silently on the user
            log.exception("image task failed")


class JobRunner(QObject):
    """The visible job queue's engine room. Create on the GUI thread; ``shutdown`` at close."""

    started = Signal(int)
    progressed = Signal(int, object)  # job id, JobProgress
    finished = Signal(int, object)  # job id, what the job's function returned
    failed = Signal(int, str)  # job id, one sentence
    cancelled = Signal(int)
    image_ready = Signal(str, QImage)  # key, picture (a thumbnail or a full decode)
    image_failed = Signal(str, str)  # key, one sentence
    fetched = Signal(str, object)  # key, what a ``fetch`` function returned

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._ids = itertools.count(1)
        self._queue: deque[_Job] = deque()
        self._running: _Job | None = None
        self._stopping = False
        self._condition = threading.Condition()
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(THUMBNAIL_THREADS)
        self._priority = itertools.count()
        self._thread = _WorkerThread(self)
        self._thread.start()

    # Jobs ----------------------------------------------------------------------------------

    def submit(self, work: Callable[[JobContext], Any]) -> int:
        """Queue a job; returns its id. ``work`` runs on the worker thread."""
        job = _Job(next(self._ids), work, CancelToken())
        with self._condition:
            self._queue.append(job)
            self._condition.notify()
        return job.id

    def cancel(self, job_id: int) -> None:
        """Take a queued job off the queue, or ask the running one to stop (within a step)."""
        with self._condition:
            for job in self._queue:
                if job.id == job_id:
                    self._queue.remove(job)
                    self.cancelled.emit(job_id)
                    return
            running = self._running
        if running is not None and running.id == job_id:
            running.cancel.cancel()

    def queued_ids(self) -> list[int]:
        with self._condition:
            return [job.id for job in self._queue]

    def running_id(self) -> int | None:
        with self._condition:
            return None if self._running is None else self._running.id

    def _next_job(self) -> _Job | None:
        with self._condition:
            self._running = None
            while not self._queue and not self._stopping:
                self._condition.wait()
            if self._stopping:
                return None
            self._running = self._queue.popleft()
            return self._running

    def _run(self, job: _Job) -> None:
        self.started.emit(job.id)
        context = JobContext(lambda progress: self.progressed.emit(job.id, progress), job.cancel)
        try:
            result = job.work(context)
            job.cancel.raise_if_cancelled()
        except Cancelled:
            self.cancelled.emit(job.id)
        except EaselError as error:
            self.failed.emit(job.id, str(error))
        except MemoryError:
            self.failed.emit(job.id, "The computer ran out of memory; try a smaller size or "
                                     "fewer images.")
        except Exception as error:
            log.exception("job %s failed", job.id)
            self.failed.emit(job.id, f"Something went wrong ({type(error).__name__}: {error}).")
        else:
            self.finished.emit(job.id, result)

    # Images --------------------------------------------------------------------------------

    def load_image(self, key: str, find: Callable[[], Path], size: QSize | None = None) -> None:
        """Decode the picture at ``find()`` (run on a pool thread: it may make a thumbnail),
        scaled to fit ``size`` if given; answered by ``image_ready`` or ``image_failed``."""

        def task() -> None:
            try:
                image = QImage(str(find()))
            except EaselError as error:
                self.image_failed.emit(key, str(error))
                return
            if image.isNull():
                self.image_failed.emit(key, "The picture could not be read.")
                return
            if size is not None:
                image = image.scaled(size, Qt.AspectRatioMode.KeepAspectRatio,
                                     Qt.TransformationMode.SmoothTransformation)
            self.image_ready.emit(key, image)

        # Newest first: after a fast scroll, what is on screen now is made before what was.
        self._pool.start(_Task(task), next(self._priority) % 2**30)

    def fetch(self, key: str, function: Callable[[], Any]) -> None:
        """Run a quick read (a page of the gallery) on a pool thread; answered by ``fetched``
        (or by ``image_failed`` with one sentence)."""

        def task() -> None:
            try:
                result = function()
            except EaselError as error:
                self.image_failed.emit(key, str(error))
                return
            self.fetched.emit(key, result)

        # Before any thumbnail (they need the rows), newest first.
        self._pool.start(_Task(task), 2**30 + next(self._priority) % 2**30)

    def drop_image_requests(self) -> None:
        """Forget decodes not started yet (the gallery's contents changed)."""
        self._pool.clear()

    # Closing -------------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Cancel the running job, drop the queue, and wait for every thread to finish."""
        with self._condition:
            self._stopping = True
            self._queue.clear()
            running = self._running
            self._condition.notify_all()
        if running is not None:
            running.cancel.cancel()
        self._thread.wait()
        self._pool.clear()
        self._pool.waitForDone()

    def is_idle(self) -> bool:
        with self._condition:
            return self._running is None and not self._queue


def qimage_from_pixels(pixels: np.ndarray) -> QImage:
    """A QImage that owns a copy of ``pixels`` (uint8 HxWx3), safe to hand to another thread."""
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    height, width, _ = pixels.shape
    image = QImage(pixels.data, width, height, 3 * width, QImage.Format.Format_RGB888)
    return image.copy()  # the array's memory is not the QImage's to keep
