"""The ``easel grid`` command: one prompt, every combination of up to three axes of settings,
and a comparison sheet of them all (AUTOMATIC1111's X/Y/Z plot; desktop.batch.grid)."""

from __future__ import annotations

import argparse
from pathlib import Path

from desktop.batch.grid import (
    AXIS_SETTINGS,
    MAX_CELLS,
    MAX_VALUES,
    Grid,
    existing_sheet,
    grid_jobs,
    make_sheet,
    parse_axis,
)
from desktop.batch.jobs import JobMaker
from desktop.cli.batch import (
    EXIT_CANCELLED,
    EXIT_FAILURES,
    add_cluster_arguments,
    executor_for,
    run_jobs,
)
from desktop.cli.common import (
    HEIGHT_HELP,
    WIDTH_HELP,
    add_emphasis_argument,
    add_rng_argument,
    add_runtime_arguments,
    model_store,
    open_library,
    prompt_screen,
    runtime_options,
    say,
)
from engine.noise import NUMPY
from engine.schedulers import DISTILLED_SCHEDULER_NAMES, SCHEDULER_NAMES

AXIS_HELP = "SETTING=VALUE,VALUE,...: "


def add_commands(commands: argparse._SubParsersAction) -> None:
    grid = commands.add_parser(
        "grid", help="compare settings: a picture for every combination, on one sheet",
        description="Make a picture for every combination of the axes' values (x: columns, y: "
                    "rows, z: blocks) and a comparison sheet of them, all saved in the "
                    f"library. An axis may vary {', '.join(AXIS_SETTINGS)}; prompt_sr=cat,"
                    "dog,fox replaces cat in the prompt by each value in turn. At most "
                    f"{MAX_VALUES} values an axis and {MAX_CELLS} cells. Every cell has the "
                    "same seed unless an axis varies it. Run again after a stop, it makes only "
                    "the missing cells.")
    grid.add_argument("prompt", help="what the pictures should show")
    grid.add_argument("--x", "-x", required=True, metavar="SETTING=VALUES",
                      help="the columns, e.g. steps=10,20,30")
    grid.add_argument("--y", "-y", metavar="SETTING=VALUES",
                      help="the rows, e.g. guidance=3,5,7.5")
    grid.add_argument("--z", "-z", metavar="SETTING=VALUES",
                      help="blocks one under another, e.g. model=a,b")
    grid.add_argument("--model", "-m", help="an installed model (default as for generate)")
    grid.add_argument("--negative-prompt", "-n", default="", help="what to avoid")
    grid.add_argument("--steps", type=int, help="denoising steps (model default if unset)")
    grid.add_argument("--guidance", "--cfg", type=float,
                      help="how closely to follow the prompt (model default if unset)")
    grid.add_argument("--scheduler", choices=SCHEDULER_NAMES + DISTILLED_SCHEDULER_NAMES,
                      help="sampling method")
    grid.add_argument("--seed", type=int,
                      help="the seed of every cell (default: one fixed by the grid, so the "
                           "same grid run again goes on where it stopped)")
    grid.add_argument("--width", type=int, help=WIDTH_HELP)
    grid.add_argument("--height", type=int, help=HEIGHT_HELP)
    add_emphasis_argument(grid)
    add_rng_argument(grid)
    add_cluster_arguments(grid)
    add_runtime_arguments(grid)
    grid.set_defaults(run=_grid)


def _grid(arguments: argparse.Namespace) -> int:
    grid = Grid(_base(arguments), parse_axis(arguments.x),
                parse_axis(arguments.y) if arguments.y else None,
                parse_axis(arguments.z) if arguments.z else None)
    if arguments.seed is not None and "seed" in [axis.setting for axis in grid.axes()]:
        say("warning: an axis varies the seed, so --seed is not used.")
    store = model_store()
    runtime = runtime_options(arguments)
    with open_library() as library:
        maker = JobMaker(store, library, runtime, Path.cwd(), prompt_screen())
        jobs = grid_jobs(grid, maker)  # every cell checked before any work
        executor = executor_for(arguments, runtime, jobs)
        try:
            summary = run_jobs(jobs, maker, library, executor, store, runtime, "grid",
                               unit="cell")
        finally:
            executor.close()
        say(summary.sentence())
        for line in summary.failure_lines():
            say(f"  {line.replace('line', 'cell', 1)}")
        if summary.cancelled:
            return EXIT_CANCELLED
        sheet = existing_sheet(grid, library) if summary.pictures == 0 else None
        if sheet is not None:
            say("Every cell and the sheet of this grid are already in the library.")
        else:
            sheet = make_sheet(grid, jobs, library)
        if sheet is None:
            say("No cell has a picture, so there is no sheet to make.")
            return EXIT_FAILURES
        print(sheet.path, flush=True)
    return EXIT_FAILURES if summary.failures else 0


def _base(arguments: argparse.Namespace) -> dict:
    """The settings every cell shares, as a batch line's; unset ones left out, so the grid's
    identity (and default seed) depends only on what was given."""
    base = {"prompt": arguments.prompt}
    for name in ("model", "negative_prompt", "steps", "guidance", "scheduler", "seed", "width",
                 "height"):
        value = getattr(arguments, name)
        if value not in (None, ""):
            base[name] = value
    if arguments.emphasis != "original":
        base["emphasis"] = arguments.emphasis
    if arguments.rng != NUMPY:
        base["rng"] = arguments.rng
    return base
