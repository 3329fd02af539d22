"""File › Run batch… and the comparison grid, as jobs of the window's queue.

Everything a batch or a grid can be refused for (a file that cannot be read, a bad line, a
model that is not installed, a blocked prompt, a bad axis) is checked here on the GUI thread
with the core's own sentence, before anything is queued. The work itself
(desktop.app.batching) runs on the worker like any generation, on the window's loaded models;
the queue shows the core's progress line, the gallery shows each picture as it is saved, and
the summary (failures by line) is said at the end. A cancelled batch keeps its pictures, and
running it again goes on where it stopped.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, Signal

from desktop.app import batching
from desktop.app.viewmodels.jobs import JobRow
from desktop.app.worker import JobProgress
from desktop.batch.grid import AXIS_SETTINGS, PROMPT_SR, Grid, grid_jobs, parse_axis
from desktop.batch.jobs import Job, JobMaker
from desktop.batch.lines import read_batch_file
from desktop.content_filter.screening import screen
from desktop.model_prepare import settings_runtime
from engine.errors import EaselError

if TYPE_CHECKING:
    from desktop.app.viewmodels.studio import Studio

BATCH_KIND = "batch"  # the queue rows this model owns
CANCEL_NOTE = ("Stopped: the pictures already made stay in the gallery; run the same batch "
               "again to go on where it stopped (no picture is made twice).")
GRID_CANCEL_NOTE = ("Stopped: the cells already made stay in the gallery; run the same grid "
                    "again to make only the others and the sheet.")
FILE_TYPES = "Batch files (*.jsonl *.csv)"
# The grid's first two axes as the dialog opens: the settings people compare most.
DEFAULT_AXES = ("steps", "guidance")
EDIT_ONLY = ("strength", "image_guidance", "instruction", "feather")


@dataclass(frozen=True)
class GridPlan:
    """What the grid dialog's fields make: the grid and its pictures, or why not."""

    grid: Grid | None = None
    pictures: int = 0
    shape: tuple[int, ...] = ()  # values on each axis given
    problem: str | None = None

    def line(self) -> str:
        """The dialog's count line: "3 × 3 = 9 pictures, and a sheet" or the problem."""
        if self.problem is not None:
            return self.problem
        shape = " × ".join(str(size) for size in self.shape)
        pictures = "1 picture" if self.pictures == 1 else f"{self.pictures} pictures"
        return f"{shape} = {pictures}, and a sheet of them all"


class BatchModel(QObject):
    problem = Signal(str)
    message = Signal(str)

    def __init__(self, studio: Studio, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.studio = studio
        self.folder: Path | None = None  # where the last batch file was chosen
        self._lines: dict[int, str] = {}  # running job id -> its last progress line
        self.problem.connect(studio.problem)
        self.message.connect(studio.message)
        runner = studio.runner
        runner.progressed.connect(self._progressed)
        runner.finished.connect(self._finished)
        runner.failed.connect(self._ended)
        runner.cancelled.connect(self._ended)

    # Run batch… ----------------------------------------------------------------------------

    def run_file(self, path: Path) -> int | None:
        """Check every line of the batch file, then queue it; a file or line that cannot run
        is its one sentence, with nothing queued."""
        path = Path(path)
        self.folder = path.parent
        try:
            lines = read_batch_file(path)
        except OSError as error:
            self.problem.emit(f"'{path.name}' could not be read ({error.strerror}).")
            return None
        except EaselError as error:
            self.problem.emit(str(error))
            return None
        checked = self._jobs(lambda maker: maker.jobs(lines), path.resolve().parent)
        if checked is None:
            return None
        maker, jobs = checked
        title = f"Batch: {path.name}"
        studio = self.studio
        work = functools.partial(batching.run_batch_job, jobs, maker, studio.library,
                                 studio.services.pipelines, path.name, title)
        return self._queue(work, title, CANCEL_NOTE)

    # Comparison grid… ----------------------------------------------------------------------

    def axis_settings(self) -> tuple[str, ...]:
        """The settings an axis of the dialog's grid may vary: the core's, less those that
        only an edit of a picture takes (the grid starts from the prompt panel)."""
        return tuple(setting for setting in AXIS_SETTINGS if setting not in EDIT_ONLY)

    def base(self) -> dict[str, Any]:
        """The prompt panel's settings as a batch line's: what every cell shares."""
        form = self.studio.prompt.form
        base: dict[str, Any] = {"prompt": form.prompt, "model": form.model,
                                "steps": form.steps, "guidance": form.guidance,
                                "scheduler": form.scheduler, "seed": form.seed,
                                "width": form.width, "height": form.height}
        if form.negative_prompt.strip():
            base["negative_prompt"] = form.negative_prompt
        return base

    def describe_base(self) -> str:
        """The base in a line: "a red fox · starter · 20 steps · guidance 7 · euler ·
        512 × 512 · seed 42"."""
        base = self.base()
        prompt = " ".join(base["prompt"].split()) or "(no prompt)"
        # An unlocked seed is drawn anew at Run, as Generate does; one for every cell.
        seed = f"seed {base['seed']}" if self.studio.prompt.form.seed_locked else "a new seed"
        return (f"{prompt} · {base['model'] or 'no model'} · {base['steps']} steps · "
                f"guidance {base['guidance']:g} · {base['scheduler']} · "
                f"{base['width']} × {base['height']} · {seed}")

    def suggested_values(self, setting: str) -> str:
        """Values worth comparing for ``setting`` around the panel's own: "10,20,30"."""
        base = self.base()
        value = base.get(setting)
        if setting == "steps":
            values = [max(1, round(value / 2)), value, round(value * 1.5)]
        elif setting == "guidance":
            values = [max(1.0, value - 2), value, value + 2]
        elif setting == "seed":
            values = [value, value + 1, value + 2]
        elif setting in ("width", "height"):
            values = [value - 64, value, value + 64] if value > 64 else [value, value + 64]
        elif setting == "model":
            values = [choice.name for choice in self.studio.prompt.models[:3]]
        elif setting == "scheduler":
            model = self.studio.prompt.model()
            names = generation_schedulers(model) if model is not None else []
            values = list(dict.fromkeys([value, *names]))[:3]
        elif setting == PROMPT_SR:
            words = base["prompt"].replace(",", " ").split()
            values = words[-1:]  # the word to swap; the user adds what replaces it
        else:
            values = [] if value is None else [value]
        return ",".join(_value_text(item) for item in dict.fromkeys(values))

    def plan(self, x: str, y: str = "", z: str = "") -> GridPlan:
        """The grid the fields make ("steps=10,20,30" on each axis; Y and Z may be empty),
        or the core's sentence for the first bad one."""
        try:
            axes = [parse_axis(text) for text in (x, y, z) if text.strip()]
            if not axes:
                return GridPlan(problem="Give the X axis a setting and its values.")
            grid = Grid(self.base(), *axes)
            count = len(grid.lines())
        except EaselError as error:
            return GridPlan(problem=str(error))
        return GridPlan(grid, count, tuple(len(axis.values) for axis in axes))

    def run_grid(self, x: str, y: str = "", z: str = "") -> int | None:
        """Queue the grid the fields make, its cells checked first (a bad one is said and
        nothing is queued); the seed is the panel's next one, as Generate's."""
        studio = self.studio
        if studio.prompt.model() is None:
            self.problem.emit("There is no model to make a grid with; import one first "
                              "(Models › Import model…).")
            return None
        studio.prompt.seed_for_next_run()  # a new seed shown unless it is locked
        plan = self.plan(x, y, z)
        if plan.problem is not None:
            self.problem.emit(plan.problem)
            return None
        grid = plan.grid
        checked = self._jobs(lambda maker: grid_jobs(grid, maker), studio.library.root)
        if checked is None:
            return None
        maker, _ = checked
        names = " × ".join(axis.setting for axis in grid.axes())
        title = f"Grid: {names} ({plan.pictures} pictures)"
        work = functools.partial(batching.run_grid_job, grid, maker, studio.library,
                                 studio.services.pipelines, title, plan.pictures,
                                 studio.device)
        return self._queue(work, title, GRID_CANCEL_NOTE)

    # Checking and queuing ------------------------------------------------------------------

    def _maker(self, folder: Path, notes: list[str] | None = None) -> JobMaker:
        studio = self.studio
        library, mode = studio.library, studio.settings.content_filter

        def screened(request: object) -> Mapping[str, Any]:
            # The window's content filter (as ContentChecks): PromptBlocked names the line.
            screening = screen(request, library.root, mode)
            if notes is not None:
                notes.extend(note for note in screening.notes if note not in notes)
            return screening.checks

        return JobMaker(studio.services.store, library,
                        settings_runtime(studio.settings), folder, screened)

    def _jobs(self, make: Callable[[JobMaker], list[Job]], folder: Path
              ) -> tuple[JobMaker, list[Job]] | None:
        notes: list[str] = []
        maker = self._maker(folder, notes)
        try:
            jobs = make(maker)
        except EaselError as error:
            self.problem.emit(str(error))
            return None
        for note in notes:
            self.message.emit(note)
        return maker, jobs

    def _queue(self, work: Callable, title: str, cancelled: str) -> int:
        studio = self.studio
        job_id = studio.runner.submit(work)
        self._lines[job_id] = ""
        studio.jobs.add(JobRow(job_id, title, BATCH_KIND, extra={"cancelled": cancelled}))
        if studio.show_welcome:
            studio.dismiss_welcome()
        return job_id

    # The worker's news ---------------------------------------------------------------------

    def _progressed(self, job_id: int, progress: JobProgress) -> None:
        if job_id not in self._lines or progress.detail == self._lines[job_id]:
            return
        # A new progress line comes after each job: its pictures are in the library now.
        self._lines[job_id] = progress.detail
        self.studio.gallery.refresh()

    def _finished(self, job_id: int, result: object) -> None:
        if self._lines.pop(job_id, None) is None:
            return
        studio = self.studio
        outcome = result.batch if isinstance(result, batching.GridShown) else result
        if not isinstance(outcome, batching.BatchOutcome):
            return
        studio.gallery.refresh()
        studio.history.refresh()
        if outcome.device is not None and outcome.device != studio.device:
            studio.device = outcome.device  # the status line says where the batch ran
            studio.device_changed.emit()
        if outcome.failed:
            self.problem.emit(outcome.text())
        else:
            self.message.emit(outcome.text())

    def _ended(self, job_id: int, *_: object) -> None:
        if self._lines.pop(job_id, None) is not None:
            self.studio.gallery.refresh()  # what a stopped batch made stays


def _value_text(value: object) -> str:
    """A value as the values field takes it: a number plainly, text with a comma or a
    quote in double quotes (the field is read as a CSV row)."""
    if isinstance(value, float):
        return f"{value:g}"
    text = str(value)
    if any(mark in text for mark in ',"'):
        return '"' + text.replace('"', '""') + '"'
    return text


def generation_schedulers(model: Any) -> list[str]:
    """The schedulers the chosen model offers, as the prompt panel lists them."""
    from desktop.app.parameters import schedulers_for

    return list(schedulers_for(model))
