"""The ``easel batch`` command: run every job of a JSON Lines or CSV file, on this machine or
on a Ray cluster, resumable (desktop.batch)."""

from __future__ import annotations

import argparse
from pathlib import Path

from desktop.batch.jobs import Job, JobMaker
from desktop.batch.lines import OPERATIONS, SETTINGS, read_batch_file
from desktop.batch.local import LocalExecutor
from desktop.batch.runner import Executor, JobFinished, Summary, run_batch
from desktop.cli.common import (
    add_runtime_arguments,
    model_store,
    open_library,
    prompt_screen,
    run_interruptible,
    runtime_options,
    say,
)
from desktop.library import Library
from desktop.model_store import ModelStore
from desktop.safety import check_failure, safety_checks
from engine.runtime import CancelToken, RuntimeOptions

EXIT_FAILURES = 1
EXIT_CANCELLED = 130


def add_commands(commands: argparse._SubParsersAction) -> None:
    batch = commands.add_parser(
        "batch", help="make the pictures of every line of a JSON Lines or CSV file",
        description="Run every job of a batch file: JSON Lines (one object a line) or CSV (a "
                    "header row naming the settings). A line may set: "
                    f"{', '.join(SETTINGS)}; operation is one of {', '.join(OPERATIONS)} "
                    "(default generate). Every line is checked before any work. Run again "
                    "after a stop, it makes only the pictures the library does not have.")
    batch.add_argument("file", type=Path, help="the batch file (.jsonl or .csv)")
    add_cluster_arguments(batch)
    add_runtime_arguments(batch)
    batch.set_defaults(run=_batch)


def _batch(arguments: argparse.Namespace) -> int:
    lines = read_batch_file(arguments.file)
    store = model_store()
    runtime = runtime_options(arguments)
    with open_library() as library:
        maker = JobMaker(store, library, runtime, arguments.file.resolve().parent,
                         prompt_screen())
        jobs = maker.jobs(lines)  # every line checked before any work
        executor = executor_for(arguments, runtime, jobs)
        try:
            summary = run_jobs(jobs, maker, library, executor, store, runtime,
                               arguments.file.name)
        finally:
            executor.close()
    return _said(summary)


def add_cluster_arguments(parser: argparse.ArgumentParser) -> None:
    """``--ray ADDRESS`` and ``--ray-models FOLDER``: where the jobs run."""
    parser.add_argument("--ray", metavar="ADDRESS",
                        help="run the jobs on a Ray cluster: its address (host:port) or auto "
                             "(needs the cluster extra: pip install 'easel[cluster]')")
    parser.add_argument("--ray-models", type=Path, metavar="FOLDER",
                        help="with --ray: the folder holding the model folders, as the "
                             "workers see it (default: this computer's models folder, which "
                             "must then be shared with them; easel models pack makes one)")


def executor_for(arguments: argparse.Namespace, runtime: RuntimeOptions,
                 jobs: list[Job]) -> Executor:
    """This computer, or the Ray cluster ``--ray`` names (checked before any work)."""
    if arguments.ray_models is not None and not arguments.ray:
        say("warning: --ray-models is for a Ray cluster; without --ray it is not used.")
    if not arguments.ray:
        return LocalExecutor(runtime)
    from desktop.batch import cluster

    return cluster.connect(arguments.ray, runtime, jobs, arguments.ray_models)


def run_jobs(jobs: list[Job], maker: JobMaker, library: Library, executor: Executor,
             store: ModelStore, runtime: RuntimeOptions, file_name: str,
             unit: str = "line") -> Summary:
    """Run the batch with Ctrl+C stopping it cleanly, printing each new picture's path on
    stdout (as ``easel generate`` does) and a progress line on stderr after each job; ``unit``
    is what a job is called in them ("line" of a file, "cell" of a grid)."""
    pictures = sum(job.count for job in jobs)
    kind = "grid" if unit == "cell" else "batch"
    say(f"{kind}: {len(jobs)} {unit}s, {pictures} pictures, on {executor.name}")
    failures_said: list[str] = []

    def checked(pixels: list) -> list[dict]:
        verdicts = safety_checks(store, pixels, runtime, CancelToken())
        failure = check_failure(verdicts)
        if failure is not None and failure not in failures_said:
            failures_said.append(failure)  # once, not once a job
            say(f"warning: {failure}")
        return verdicts

    def report(finished: JobFinished) -> None:
        for entry in finished.entries:
            print(entry.path, flush=True)
        outcome = ("failed" if finished.done.error is not None
                   else f"{len(finished.entries)} made")
        say(f"{unit} {finished.job.line} ({finished.job.described()}): {outcome} · "
            f"{finished.progress.line()}")
        for warning in finished.done.warnings:
            say(f"warning: {unit} {finished.job.line}: {warning}")

    summary, _ = run_interruptible(lambda cancel: run_batch(
        jobs, maker, library, executor, cancel, file_name=file_name, report=report,
        safety_checks=checked))
    return summary


def _said(summary: Summary) -> int:
    say(summary.sentence())
    for line in summary.failure_lines():
        say(f"  {line}")
    if summary.cancelled:
        return EXIT_CANCELLED
    return EXIT_FAILURES if summary.failures else 0
