"""Running a batch: skip what the library has, run the rest through an executor (this
machine or a Ray cluster), save each picture as it comes, say how far it is, and sum up.

Crash safety is the library's: each picture is written whole and listed with its job id
and index (``Library.add_generated(batch=…)``) before the next is saved. A batch stopped by
Ctrl+C, kill -9 or a crash lost at most the pictures being made; run again, it asks the
library which pictures exist and makes only the others, so none is made twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from desktop.batch.jobs import Job, JobMaker
from desktop.batch.progress import BatchProgress, duration
from desktop.batch.work import Done, Work
from desktop.library import ImageEntry, Library
from engine.errors import Cancelled
from engine.request import ProgressCallback
from engine.runtime import CancelToken


class Executor(Protocol):
    """Runs works and yields each one's ``Done`` as it finishes (in any order)."""

    name: str

    def run(self, works: Iterable[Work], cancel: CancelToken,
            on_progress: ProgressCallback | None = None) -> Iterator[Done]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Failure:
    line: int
    job_id: str
    sentence: str


@dataclass(frozen=True)
class JobFinished:
    """What the runner reports after each work: the job, its new pictures, the progress."""

    job: Job
    done: Done
    entries: tuple[ImageEntry, ...]
    progress: BatchProgress


@dataclass
class Summary:
    jobs: int  # in the batch
    skipped_jobs: int  # whose pictures were all in the library before this run
    made: list[ImageEntry] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    cancelled: bool = False
    pictures: int = 0  # the pictures this run set out to make

    @property
    def per_minute(self) -> float | None:
        return len(self.made) * 60.0 / self.seconds if self.made and self.seconds > 0 else None

    def sentence(self) -> str:
        """The summary's first line; failures follow, one line each (``failure_lines``)."""
        if self.pictures == 0 and not self.failures:
            return (f"Nothing to make: the {_count(self.jobs, 'job')} of this batch "
                    "already have their pictures in the library.")
        rate = f" ({self.per_minute:.1f} pictures/min)" if self.per_minute else ""
        made = f"{_count(len(self.made), 'picture')} made in {duration(self.seconds)}{rate}"
        if self.skipped_jobs:
            made += f"; {_count(self.skipped_jobs, 'job')} already done before"
        if self.cancelled:
            return (f"Stopped: {made}; run the same batch again to go on where it stopped "
                    "(no picture is made twice).")
        if self.failures:
            lines = _count(len({failure.line for failure in self.failures}), "line")
            return f"Batch done with failures: {made}; {lines} failed:"
        return f"Batch done: {made}."

    def failure_lines(self) -> list[str]:
        return [f"line {failure.line}: {failure.sentence}" for failure in self.failures]


def _count(number: int, word: str) -> str:
    return f"{number} {word}" if number == 1 else f"{number} {word}s"


def missing_pictures(jobs: Sequence[Job], library: Library) -> list[tuple[Job, list[int]]]:
    """Each job with the indexes of the pictures the library does not have yet."""
    made = library.batch_pictures(job.id for job in jobs)
    plan = []
    for job in jobs:
        have = made.get(job.id, {})
        plan.append((job, [index for index in range(job.count) if index not in have]))
    return plan


def works_for(job: Job, missing: list[int], maker: JobMaker) -> Iterator[Work]:
    """One work for each unbroken run of missing pictures: a fresh job is one work; one
    stopped halfway goes on from its first missing picture."""
    runs: list[list[int]] = []
    for index in missing:
        if runs and runs[-1][-1] + 1 == index:
            runs[-1].append(index)
        else:
            runs.append([index])
    for run in runs:
        request = maker.request(job, run[0], len(run))
        yield Work(job.id, job.line, job.operation, job.model, job.model_folder, request,
                   run[0])


SafetyChecks = Callable[[list[np.ndarray]], list[dict]]


def run_batch(jobs: Sequence[Job], maker: JobMaker, library: Library, executor: Executor,
              cancel: CancelToken, *, file_name: str,
              report: Callable[[JobFinished], None] | None = None,
              safety_checks: SafetyChecks | None = None,
              on_progress: ProgressCallback | None = None) -> Summary:
    """Make every missing picture of ``jobs`` and save it in ``library``; Ctrl+C (``cancel``)
    stops after the pictures already made are saved."""
    started = time.monotonic()
    plan = [(job, missing) for job, missing in missing_pictures(jobs, library) if missing]
    summary = Summary(jobs=len(jobs), skipped_jobs=len(jobs) - len(plan),
                      pictures=sum(len(missing) for _, missing in plan))
    jobs_by_id = {job.id: job for job, _ in plan}
    works_left = {job.id: len(list(_runs(missing))) for job, missing in plan}
    works = (work for job, missing in plan for work in works_for(job, missing, maker))
    finished_jobs = 0
    failed_jobs: set[str] = set()
    try:
        for done in executor.run(works, cancel, on_progress):
            job = jobs_by_id[done.work.job_id]
            entries = _save(done, job, library, file_name, safety_checks, summary)
            works_left[job.id] -= 1
            if done.error is not None:
                summary.failures.append(Failure(job.line, job.id, done.error))
                failed_jobs.add(job.id)
            if works_left[job.id] == 0:
                finished_jobs += 1
            summary.made.extend(entries)
            summary.warnings.extend(done.warnings)
            if report is not None:
                progress = BatchProgress(finished_jobs, len(plan), len(summary.made),
                                         summary.pictures, len(failed_jobs),
                                         time.monotonic() - started)
                report(JobFinished(job, done, entries, progress))
    except Cancelled:
        summary.cancelled = True
    summary.seconds = time.monotonic() - started
    summary.failures.sort(key=lambda failure: failure.line)
    return summary


def _runs(missing: list[int]) -> Iterator[int]:
    for position, index in enumerate(missing):
        if position == 0 or missing[position - 1] + 1 != index:
            yield index


def _save(done: Done, job: Job, library: Library, file_name: str,
          safety_checks: SafetyChecks | None, summary: Summary) -> tuple[ImageEntry, ...]:
    if not done.images:
        return ()
    pixels = [image.pixels for image in done.images]
    verdicts: list[dict[str, Any]] = (safety_checks(pixels) if safety_checks is not None
                                      else [{} for _ in pixels])
    entries = []
    for offset, (image, verdict) in enumerate(zip(done.images, verdicts, strict=True)):
        key = {"job": job.id, "line": job.line, "picture": done.work.first + offset,
               "file": file_name}
        entries.append(library.add_generated(image.pixels, image.parameters,
                                             source_id=job.source_id,
                                             checks={**job.checks, **verdict}, batch=key))
    return tuple(entries)
