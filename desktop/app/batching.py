"""A batch file or a comparison grid as one job of the window's queue, in plain data.

Qt-free, like ``desktop.app.generation``: the batch view-model checks every line on the GUI
thread (a bad line is one sentence, nothing queued) and queues ``run_batch_job`` or
``run_grid_job`` for the worker. They run the core (``desktop.batch``) on the window's own
loaded models through ``PipelinesExecutor``, so a batch never loads a second copy of a model
the window holds, and they report progress in the core's words (jobs done and left, pictures
per minute, time left) on the queue's line. Each report after a job carries a new progress
line; the view-model takes that change as "new pictures are in the library".
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from PIL import Image

from desktop.app.generation import Device, Outcome, Pipelines
from desktop.batch.grid import Grid, run_grid
from desktop.batch.jobs import Job, JobMaker
from desktop.batch.progress import BatchProgress
from desktop.batch.runner import JobFinished, Summary, missing_pictures, run_batch
from desktop.batch.work import Done, Work
from desktop.library import ImageEntry, Library
from desktop.model_store import ModelStore
from desktop.safety import check_failure, flagged_record, safety_checks
from engine.errors import Cancelled, EaselError
from engine.request import Progress, ProgressCallback
from engine.runtime import CancelToken, RuntimeOptions

BATCH_DONE = "Batch done"  # how the core's summary starts


class Context(Protocol):
    """The worker's JobContext: a cancel token in, throttled progress out (with ``detail``,
    the free text the queue shows after the stage)."""

    cancel: CancelToken

    def report(self, step: int, steps: int, image: int = 0, images: int = 1,
               preview: Callable[[], np.ndarray] | None = None, stage: str = "",
               detail: str = "") -> None: ...


class PipelinesExecutor:
    """The core's ``Executor`` over the window's ``Pipelines``: the models the window keeps
    loaded serve the batch too, and the window's runtime settings apply. It runs one work
    after another on the worker thread; a job's own failure comes back as ``Done.error``."""

    name = "this computer"

    def __init__(self, pipelines: Pipelines, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self.pipelines = pipelines
        self.clock = clock
        self.device: Device | None = None  # where the last picture was made, for the status line

    def run(self, works: Iterable[Work], cancel: CancelToken,
            on_progress: ProgressCallback | None = None) -> Iterator[Done]:
        for work in works:
            cancel.raise_if_cancelled()
            yield self._done(work, on_progress or _ignore, cancel)

    def _done(self, work: Work, on_progress: ProgressCallback, cancel: CancelToken) -> Done:
        started = self.clock()
        try:
            result = self.pipelines.run(work.model, work.request, on_progress, cancel)
        except Cancelled:
            raise
        except EaselError as error:
            return Done(work, error=str(error), seconds=self.clock() - started)
        report = result.device
        self.device = Device(report.summary, report.reason, report.note)
        return Done(work, result.images, result.warnings, report.summary,
                    seconds=self.clock() - started)

    def close(self) -> None:
        """Nothing to let go: the models belong to the window."""


def _ignore(_: Progress) -> None:
    pass


@dataclass(frozen=True)
class BatchOutcome:
    """A finished batch: the core's summary and the notes said once for the whole run."""

    title: str  # "Batch: prompts.jsonl"
    summary: Summary
    notes: tuple[str, ...] = ()
    device: Device | None = None  # where its last picture was made; None when none was

    @property
    def failed(self) -> bool:
        return bool(self.summary.failures)

    def text(self) -> str:
        """The summary sentence, then one line per failure ("line 3: …"), then the notes."""
        sentence = self.summary.sentence()
        if sentence.startswith(BATCH_DONE):  # the title already says it is a batch or a grid
            sentence = "Done" + sentence[len(BATCH_DONE):]
        lines = [f"{self.title}: {sentence}"]
        lines += [f"  {line}" for line in self.summary.failure_lines()]
        notes = [*self.notes, *dict.fromkeys(self.summary.warnings)]
        if notes:
            lines.append("Note: " + " ".join(notes))
        return "\n".join(lines)


@dataclass(frozen=True, eq=False)
class GridShown(Outcome):
    """A grid's sheet as a finished generation (the studio shows it on the canvas), with the
    grid's summary for the status line."""

    batch: BatchOutcome | None = None


class SafetyChecks:
    """The installed safety checker on each job's pictures, as ``generation.generate`` runs
    it; a checker that cannot run is said once, not once a job."""

    def __init__(self, store: ModelStore, runtime: RuntimeOptions | None,
                 cancel: CancelToken) -> None:
        self.store, self.runtime, self.cancel = store, runtime, cancel
        self.notes: list[str] = []
        self.flagged = 0

    def __call__(self, pixels: list[np.ndarray]) -> list[dict]:
        verdicts = safety_checks(self.store, pixels, self.runtime, self.cancel)
        failure = check_failure(verdicts)
        if failure is not None and failure not in self.notes:
            self.notes.append(failure)
        self.flagged += sum(1 for verdict in verdicts if flagged_record(verdict) is not None)
        return verdicts

    def said(self) -> tuple[str, ...]:
        flagged = ()
        if self.flagged:
            pictures = "1 picture" if self.flagged == 1 else f"{self.flagged} pictures"
            flagged = (f"The safety checker flagged {pictures}; kept, blurred in the gallery "
                       "until clicked.",)
        return (*flagged, *self.notes)


class QueueLine:
    """The queue's line for a batch: the core's progress line after each job, the bar moving
    with each step of each picture in between."""

    def __init__(self, context: Context, title: str, jobs: int, pictures: int) -> None:
        self.context = context
        self.title = title
        self.pictures = pictures
        self.done = 0
        self.line = BatchProgress(0, jobs, 0, pictures, 0, 0.0).line()
        context.report(0, 1, 0, max(pictures, 1), stage=title, detail=self.line)

    def job_finished(self, finished: JobFinished) -> None:
        progress = finished.progress
        self.done, self.pictures = progress.pictures_done, progress.pictures
        self.line = progress.line()
        # A last step is always sent (never dropped by the worker's throttle), so the
        # view-model hears of every saved picture.
        self.context.report(1, 1, max(self.done - 1, 0), max(self.pictures, 1),
                            stage=self.title, detail=self.line)

    def step(self, progress: Progress) -> None:
        self.context.report(progress.step, progress.steps, self.done + progress.image,
                            max(self.pictures, 1), stage=self.title, detail=self.line)


def pictures_to_make(jobs: Sequence[Job], library: Library) -> tuple[int, int]:
    """(jobs, pictures) this run will make: the library's pictures are skipped."""
    plan = [missing for _, missing in missing_pictures(jobs, library) if missing]
    return len(plan), sum(len(missing) for missing in plan)


def run_batch_job(jobs: Sequence[Job], maker: JobMaker, library: Library,
                  pipelines: Pipelines, file_name: str, title: str,
                  context: Context) -> BatchOutcome:
    """Run a checked batch on the worker thread: every picture the library lacks is made
    and saved as it comes; Cancel stops after the pictures made so far are saved."""
    line = QueueLine(context, title, *pictures_to_make(jobs, library))
    checks = _safety(pipelines, context.cancel)
    executor = PipelinesExecutor(pipelines)
    summary = run_batch(jobs, maker, library, executor, context.cancel,
                        file_name=file_name, report=line.job_finished,
                        safety_checks=checks, on_progress=line.step)
    context.cancel.raise_if_cancelled()  # the queue says what a cancelled batch kept
    return BatchOutcome(title, summary, checks.said() if checks else (), executor.device)


def run_grid_job(grid: Grid, maker: JobMaker, library: Library, pipelines: Pipelines,
                 title: str, pictures: int, device: Device,
                 context: Context) -> GridShown | BatchOutcome:
    """Run a comparison grid (``desktop.batch.grid``) on the worker thread; its sheet comes
    back as a finished generation so the studio shows it, or, with no sheet (every cell
    failed), the summary alone."""
    line = QueueLine(context, title, pictures, pictures)
    checks = _safety(pipelines, context.cancel)
    executor = PipelinesExecutor(pipelines)
    made = run_grid(grid, maker, library, executor, context.cancel,
                    report=line.job_finished, safety_checks=checks, on_progress=line.step)
    context.cancel.raise_if_cancelled()
    outcome = BatchOutcome(title, made.summary, checks.said() if checks else (),
                           executor.device)
    device = executor.device or device
    sheet: ImageEntry | None = made.sheet
    if sheet is None:
        return outcome
    with Image.open(sheet.path) as picture:
        pixels = np.asarray(picture.convert("RGB"))
    return GridShown((sheet,), (pixels,), (), device, outcome)


def _safety(pipelines: Pipelines, cancel: CancelToken) -> SafetyChecks | None:
    """The safety checker on the engine's store and options; a stand-in engine without a
    store (a test's script) checks nothing, as in ``generation.generate``."""
    store = getattr(pipelines, "store", None)
    if store is None:
        return None
    return SafetyChecks(store, getattr(pipelines, "runtime", None), cancel)
