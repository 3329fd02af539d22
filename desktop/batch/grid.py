"""Comparison grids (``easel grid``, the window's Grid dialog): AUTOMATIC1111's X/Y/Z plot.

A grid is a base of batch-line settings (prompt, model, ...) and up to three axes, each one
setting with a few values. Every combination is a cell; each cell is a batch line of its own
(count 1, line number = cell number, so its job id is stable) and runs through the batch core
(``run_batch``), so a grid stopped halfway and run again makes only its missing cells. The
cells' pictures are then laid out on one comparison sheet (``desktop.batch.sheet``), saved in
the library as operation "grid".

Every cell has the same seed unless an axis varies it: ``seed`` when the base gives one, else
one derived from the grid's definition (the same grid, run again, has the same seed).
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from desktop.batch.jobs import Job, JobMaker, seed_of
from desktop.batch.lines import ALIASES, SETTINGS, BatchLine, checked_settings
from desktop.batch.runner import Executor, JobFinished, SafetyChecks, Summary, run_batch
from desktop.batch.sheet import SheetCell, draw_sheet
from desktop.image_files import read_parameters
from desktop.library import ImageEntry, Library
from desktop.library.errors import BadImage
from desktop.library.images import open_image
from desktop.safety import flagged_record
from engine.errors import BadRequest, EaselError
from engine.noise import GENERATOR_NAMES
from engine.prompt_emphasis import EMPHASES
from engine.request import ProgressCallback
from engine.runtime import CancelToken
from engine.schedulers import DISTILLED_SCHEDULER_NAMES, SCHEDULER_NAMES

# A1111's prompt search/replace: the first value is found in the prompt (or the negative
# prompt) and replaced by each value in turn, itself included.
PROMPT_SR = "prompt_sr"
# The settings worth comparing side by side; the others (operation, count, source, mask,
# the outpaint sides) change what a cell is rather than how it is made.
AXIS_SETTINGS: tuple[str, ...] = (
    "steps", "guidance", "scheduler", "seed", "model", "width", "height", "prompt",
    PROMPT_SR, "negative_prompt", "strength", "image_guidance", "instruction", "emphasis",
    "rng", "feather")
_AXIS_ALIASES = {**ALIASES, "sr": PROMPT_SR, "prompt_s/r": PROMPT_SR, "s/r": PROMPT_SR}
# Sane bounds: 16 values an axis, 100 cells a grid (a 10x10 grid of 512-pixel pictures is
# already a 5,000-pixel sheet, and 100 pictures take an hour on a CPU).
MAX_VALUES = 16
MAX_CELLS = 100
# The settings whose values are names from a list: a misspelt one is said at the axis.
_CHOICES = {"scheduler": SCHEDULER_NAMES + DISTILLED_SCHEDULER_NAMES, "emphasis": EMPHASES,
            "rng": GENERATOR_NAMES}
SHEET = "sheet"  # the sheet's picture key in its batch record (cells are 0, their index)
FILE_NAME = "grid"  # the batch record's "file" of cells and sheet


@dataclass(frozen=True)
class Axis:
    """One setting and its values, typed as a batch line reads them (``steps`` whole numbers,
    ``guidance`` numbers, ...). Made from text by ``parse_axis``; made directly (the window),
    the values are read the same way, so a bad one is the same sentence."""

    setting: str
    values: tuple[Any, ...]

    def __post_init__(self) -> None:
        setting = _axis_setting(self.setting)
        object.__setattr__(self, "setting", setting)
        object.__setattr__(self, "values", _axis_values(setting, tuple(self.values)))

    def labels(self) -> list[str]:
        """Each value as the sheet writes it, e.g. "steps: 10", "guidance: 7.5"."""
        return [f"{self.setting}: {_shown(value)}" for value in self.values]


def parse_axis(text: str) -> Axis:
    """``"steps=10,20,30"``: a setting, then its values separated by commas (a value holding a
    comma goes in double quotes, as in CSV); anything else is one sentence."""
    name, equals, values = str(text).partition("=")
    if not equals or not name.strip():
        raise BadRequest(f"An axis is a setting and its values, like steps=10,20,30; "
                         f"{text!r} is not.")
    setting = _axis_setting(name)
    cells = next(csv.reader([values], skipinitialspace=True), [])
    return Axis(setting, tuple(cell.strip() for cell in cells))


def _axis_setting(name: str) -> str:
    key = str(name).strip().lower().replace("-", "_").replace(" ", "_")
    key = _AXIS_ALIASES.get(key, key)
    if key not in AXIS_SETTINGS:
        raise BadRequest(f"An axis cannot vary {str(name).strip()!r}; it may vary "
                         f"{', '.join(AXIS_SETTINGS)}.")
    return key


def _axis_values(setting: str, values: tuple[Any, ...]) -> tuple[Any, ...]:
    if not values or all(value == "" for value in values):
        raise BadRequest(f"The {setting} axis has no values; give them after the =, separated "
                         f"by commas ({setting}=a,b,c).")
    if len(values) > MAX_VALUES:
        raise BadRequest(f"The {setting} axis has {len(values)} values; a grid takes at most "
                         f"{MAX_VALUES} an axis.")
    read, kind = SETTINGS["prompt" if setting == PROMPT_SR else setting]
    typed = []
    for value in values:
        if value == "" or value is None:
            raise BadRequest(f"The {setting} axis has an empty value; remove the extra comma.")
        try:
            typed.append(read(value))
        except (ValueError, TypeError):
            raise BadRequest(f"The {setting} axis takes {kind}, not {value!r}.") from None
        if setting in _CHOICES and typed[-1] not in _CHOICES[setting]:
            raise BadRequest(f"The {setting} axis takes {', '.join(_CHOICES[setting])}; "
                             f"{value!r} is not one of them.")
    for position, value in enumerate(typed):
        if value in typed[:position]:
            raise BadRequest(f"The {setting} axis gives {_shown(value)} twice; each value "
                             "makes one column or row.")
    return tuple(typed)


def _shown(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class Cell:
    """One combination: its number (from 1: x fastest, then y, then z), its place and the
    axis values that make it."""

    number: int
    column: int
    row: int
    block: int
    values: Mapping[str, Any] = field(default_factory=dict)

    def described(self) -> str:
        return ", ".join(f"{setting}: {_shown(value)}" for setting, value in self.values.items())


@dataclass(frozen=True)
class Grid:
    """The settings every cell shares (``base``: a batch line's, e.g. prompt, model, steps)
    and the axes; an axis's value takes the place of the base's for its cells."""

    base: Mapping[str, Any]
    x: Axis
    y: Axis | None = None
    z: Axis | None = None

    def __post_init__(self) -> None:
        settings = [axis.setting for axis in self.axes()]
        for position, setting in enumerate(settings):
            if setting in settings[:position]:
                raise BadRequest(f"Two axes vary {setting}; give each setting one axis.")
        cells = int(np.prod([len(axis.values) for axis in self.axes()]))
        if cells > MAX_CELLS:
            raise BadRequest(f"This grid has {cells} cells; a grid takes at most {MAX_CELLS}, "
                             "so give fewer values.")
        if "count" in self.base and self.base["count"] not in (1, "1"):
            raise BadRequest("A grid makes one picture a cell; leave count out.")
        if PROMPT_SR in settings:
            self._check_search()

    def axes(self) -> list[Axis]:
        return [axis for axis in (self.x, self.y, self.z) if axis is not None]

    def _check_search(self) -> None:
        axis = next(axis for axis in self.axes() if axis.setting == PROMPT_SR)
        word = axis.values[0]
        prompt_axis = next((axis for axis in self.axes() if axis.setting == "prompt"), None)
        prompts = list(prompt_axis.values) if prompt_axis else [self.base.get("prompt", "")]
        for prompt in prompts:
            if word not in prompt and word not in self.base.get("negative_prompt", ""):
                raise BadRequest(f"The prompt_sr axis looks for {word!r} (its first value) "
                                 f"in the prompt, but the prompt {prompt!r} does not hold it.")

    @property
    def id(self) -> str:
        """The grid's identity: the same base and axes give the same id (and seed)."""
        definition = {"base": dict(self.base),
                      "axes": [[axis.setting, list(axis.values)] for axis in self.axes()],
                      "names": [name for name, axis in zip("xyz", (self.x, self.y, self.z),
                                                           strict=True) if axis is not None]}
        text = json.dumps(definition, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def seed(self) -> int:
        """The seed of every cell (unless an axis varies it)."""
        return int(self.base["seed"]) if "seed" in self.base else seed_of(self.id)

    def cells(self) -> list[Cell]:
        x, y, z = (axis.values if axis else (None,) for axis in (self.x, self.y, self.z))
        cells = []
        for block, row, column in itertools.product(range(len(z)), range(len(y)),
                                                    range(len(x))):
            values = {}
            for axis, index in ((self.x, column), (self.y, row), (self.z, block)):
                if axis is not None:
                    values[axis.setting] = axis.values[index]
            cells.append(Cell(len(cells) + 1, column, row, block, values))
        return cells

    def lines(self) -> list[BatchLine]:
        """Every cell as a batch line, checked as a batch line is; a bad one is one sentence
        naming the cell."""
        return [BatchLine(cell.number, self._settings(cell)) for cell in self.cells()]

    def _settings(self, cell: Cell) -> dict[str, Any]:
        settings = {key: value for key, value in self.base.items() if key != "count"}
        settings["seed"] = self.seed
        for setting, value in cell.values.items():
            if setting != PROMPT_SR:
                settings[setting] = value
        if PROMPT_SR in cell.values:
            word = next(axis for axis in self.axes() if axis.setting == PROMPT_SR).values[0]
            for key in ("prompt", "negative_prompt"):
                if key in settings:
                    settings[key] = settings[key].replace(word, cell.values[PROMPT_SR])
        try:
            return checked_settings(settings, cell.number)
        except EaselError as error:
            raise in_cell(error, cell) from None


def in_cell(error: EaselError, cell: Cell) -> EaselError:
    """A batch line's sentence ("Line 3: ...") as the cell's ("Cell 3 (steps: 20): ...")."""
    text = str(error)
    prefix = f"Line {cell.number}: "
    text = text[len(prefix):] if text.startswith(prefix) else text
    where = f"Cell {cell.number} ({cell.described()})" if cell.values else f"Cell {cell.number}"
    try:
        return type(error)(f"{where}: {text}")
    except TypeError:  # an error type that wants more than a message
        return BadRequest(f"{where}: {text}")


def grid_jobs(grid: Grid, maker: JobMaker) -> list[Job]:
    """Every cell as a job, all checked before any work (models, sizes, schedulers, the
    content filter)."""
    jobs = []
    for cell, line in zip(grid.cells(), grid.lines(), strict=True):
        try:
            jobs.append(maker.job(line))
        except EaselError as error:
            raise in_cell(error, cell) from None
    return jobs


@dataclass(frozen=True)
class GridOutcome:
    summary: Summary
    sheet: ImageEntry | None  # None when cancelled, or when no cell has a picture


def run_grid(grid: Grid, maker: JobMaker, library: Library, executor: Executor,
             cancel: CancelToken, *, report: Callable[[JobFinished], None] | None = None,
             safety_checks: SafetyChecks | None = None,
             on_progress: ProgressCallback | None = None) -> GridOutcome:
    """Make the grid's missing cells, then its sheet; a grid whose cells and sheet are all
    in the library makes nothing and gives the sheet it has."""
    jobs = grid_jobs(grid, maker)
    summary = run_batch(jobs, maker, library, executor, cancel, file_name=FILE_NAME,
                        report=report, safety_checks=safety_checks, on_progress=on_progress)
    if summary.cancelled:
        return GridOutcome(summary, None)
    if summary.pictures == 0 and (sheet := existing_sheet(grid, library)) is not None:
        return GridOutcome(summary, sheet)
    return GridOutcome(summary, make_sheet(grid, jobs, library))


def existing_sheet(grid: Grid, library: Library) -> ImageEntry | None:
    """The grid's sheet if the library has it (not in the trash, its file there)."""
    image_id = library.batch_pictures([grid.id]).get(grid.id, {}).get(SHEET)
    if image_id is None:
        return None
    entry = library.get(image_id)
    return None if entry.trashed or entry.missing else entry


def make_sheet(grid: Grid, jobs: list[Job], library: Library) -> ImageEntry | None:
    """Draw the sheet from the cells' pictures in the library and save it there; None when
    no cell has a picture (there is nothing to compare)."""
    made = library.batch_pictures(job.id for job in jobs)
    entries = [_entry(library, made.get(job.id, {}).get(0)) for job in jobs]
    pictures = [_pixels(entry) for entry in entries]
    first = next((entry for entry, pixels in zip(entries, pictures, strict=True)
                  if pixels is not None), None)
    parameters = read_parameters(first.path) if first is not None else None
    if parameters is None:
        return None
    cells = grid.cells()
    sheet_cells = [SheetCell(pixels, job.seed, cell.column, cell.row, cell.block)
                   for cell, job, pixels in zip(cells, jobs, pictures, strict=True)]
    axes = [grid.x, grid.y, grid.z]
    drawn = draw_sheet(_title(grid), [axis.labels() if axis else None for axis in axes],
                       sheet_cells)
    height, width = drawn.pixels.shape[:2]
    settings = {"grid": grid.id, "base": dict(grid.base),
                **{name: {"setting": axis.setting, "values": list(axis.values)}
                   for name, axis in zip("xyz", axes, strict=True) if axis is not None},
                "cells": [{"cell": cell.number, "values": dict(cell.values), "seed": job.seed,
                           "image_id": entry.id if entry is not None else None,
                           "box": list(drawn.layout.cells[index])}
                          for index, (cell, job, entry)
                          in enumerate(zip(cells, jobs, entries, strict=True))]}
    return library.add_generated(
        drawn.pixels, replace(parameters, width=width, height=height), operation="grid",
        settings=settings, checks=_sheet_checks(jobs, entries),
        batch={"job": grid.id, "picture": SHEET, "file": FILE_NAME})


def _title(grid: Grid) -> str:
    prompt = grid.base.get("prompt") or grid.base.get("instruction") or ""
    return prompt if prompt else grid.base.get("operation", "generate")


def _entry(library: Library, image_id: str | None) -> ImageEntry | None:
    return library.get(image_id) if image_id is not None else None


def _pixels(entry: ImageEntry | None) -> np.ndarray | None:
    """A cell's picture from its library file; None for a cell with none (failed, or its file
    gone), which the sheet draws as a grey box."""
    if entry is None or entry.missing:
        return None
    try:
        with open_image(entry.path) as image:
            return np.asarray(image.convert("RGB"))
    except (BadImage, OSError):
        return None


def _sheet_checks(jobs: list[Job], entries: list[ImageEntry | None]) -> dict[str, Any]:
    """What the content checks said, carried to the sheet: the content filter's record of
    the first cell, and a flagged cell's safety record (the gallery then blurs the sheet
    too, as it does the cell)."""
    checks: dict[str, Any] = dict(jobs[0].checks) if jobs else {}
    for entry in entries:
        record = flagged_record(entry.parameters) if entry is not None else None
        if record is not None:
            checks["safety_check"] = dict(record)
            break
    return checks
