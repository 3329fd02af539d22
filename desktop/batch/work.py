"""What an executor runs for a batch job, and what comes back: plain, picklable values, so the
same ``make_pictures`` runs in this process and on a Ray worker.

A ``Work`` is one run of the engine: a request for some of a job's pictures, with the model
folder it needs. Only the process that submitted the batch writes the library; executors only
make pictures and hand them back in a ``Done``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from desktop.batch.jobs import PIPELINES, Request
from engine.errors import Cancelled, EaselError
from engine.model import Model, load_model
from engine.request import GeneratedImage, ProgressCallback
from engine.runtime import CancelToken, RuntimeOptions


@dataclass(frozen=True, eq=False)
class Work:
    job_id: str
    line: int
    operation: str  # a batch line's operation (desktop.batch.lines.OPERATIONS)
    model: str  # the installed model's name, as pictures record it
    model_folder: Path  # where the executor reads it: a shared folder for a cluster
    request: Request
    first: int  # the job's picture index of the request's first picture


@dataclass(frozen=True, eq=False)
class Done:
    """A work's pictures, or why there are none (``error``: one sentence)."""

    work: Work
    images: tuple[GeneratedImage, ...] = ()
    warnings: tuple[str, ...] = ()
    device: str = ""  # where it ran, in words ("CPU", "NVIDIA H100 (CUDA)", a Ray node…)
    error: str | None = None
    seconds: float = 0.0


class ModelCache:
    """The models an executor keeps loaded (one by default: a batch usually runs one model
    for many jobs, and two large models at once may not fit a GPU)."""

    def __init__(self, runtime: RuntimeOptions, keep: int = 1) -> None:
        self.runtime = runtime
        self.keep = max(1, keep)
        self._models: OrderedDict[Path, Model] = OrderedDict()

    def model(self, folder: Path, name: str) -> Model:
        folder = Path(folder)
        if folder in self._models:
            self._models.move_to_end(folder)
            return self._models[folder]
        while len(self._models) >= self.keep:
            _, old = self._models.popitem(last=False)
            old.close()
        model = load_model(folder, self.runtime, name)
        self._models[folder] = model
        return model

    def close(self) -> None:
        while self._models:
            _, model = self._models.popitem(last=False)
            model.close()


def make_pictures(work: Work, models: ModelCache, on_progress: ProgressCallback | None,
                  cancel: CancelToken, clock: Callable[[], float]) -> Done:
    """Run one work; a failure of the job's own (a bad request found late, a black picture,
    out of memory) comes back as its sentence, cancelling raises ``Cancelled``."""
    started = clock()
    try:
        model = models.model(work.model_folder, work.model)
        pipeline = PIPELINES[work.operation](model)
        result = pipeline(work.request, on_progress, cancel)
    except Cancelled:
        raise
    except EaselError as error:
        return Done(work, error=str(error), seconds=clock() - started)
    return Done(work, result.images, result.warnings, result.device.summary,
                seconds=clock() - started)
