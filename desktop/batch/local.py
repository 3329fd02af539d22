"""The executor that runs a batch's work on this machine: one work after another, the model
kept loaded between jobs (the batch's advantage over one ``easel generate`` a job)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

from desktop.batch.work import Done, ModelCache, Work, make_pictures
from engine.request import ProgressCallback
from engine.runtime import CancelToken, RuntimeOptions


class LocalExecutor:
    name = "this computer"

    def __init__(self, runtime: RuntimeOptions) -> None:
        self.models = ModelCache(runtime)

    def run(self, works: Iterable[Work], cancel: CancelToken,
            on_progress: ProgressCallback | None = None) -> Iterator[Done]:
        for work in works:
            cancel.raise_if_cancelled()
            yield make_pictures(work, self.models, on_progress, cancel, time.monotonic)

    def close(self) -> None:
        self.models.close()
