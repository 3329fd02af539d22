"""Preparing an installed model for this processor right after its import or download.

The first load of a model optimises its graphs for the processor and keeps the result in the
data folder's cache (engine.runtime.prepare); for SD 1.5 on a 2-core CPU that is 10 s of a
13 s first load. Done as the last step of an import instead, with the options the app or the
command line will load the model with (the cache is keyed by providers), the first picture
loads in about 2.5 s. Preparing is a bonus, never a condition: whatever stops it (no memory, a
full disk, a cancel) leaves the model installed, and its first use prepares it instead.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from desktop import paths
from desktop import settings as settings_file
from desktop.model_kinds.kind import InstalledModel
from desktop.settings import Settings
from desktop.units import size_text
from engine.errors import Cancelled, EaselError
from engine.model import prepare_model
from engine.runtime import CancelToken, RuntimeOptions

log = logging.getLogger(__name__)

# (what is being done, done, total), as the model store's imports report.
Progress = Callable[[str, int, int], None]

LATER = "it will be prepared for this processor at its first use"


@dataclass(frozen=True)
class PrepareOutcome:
    """How preparing went: the time it took, or why the model was left for its first use."""

    seconds: float
    graphs: int  # how many graphs were optimised now
    problem: str | None = None  # None: prepared (or nothing needed it)

    @property
    def prepared(self) -> bool:
        return self.problem is None

    def clause(self) -> str:
        """"prepared for this processor in 9.8 s", or why not and what happens instead."""
        if self.problem is not None:
            return f"{LATER} ({self.problem})"
        if self.graphs == 0:
            return "already prepared for this processor"
        return f"prepared for this processor in {self.seconds:.1f} s"


def is_prepared_ahead(model: InstalledModel) -> bool:
    """Whether an import prepares ``model``'s kind: diffusion models, whose UNet is most of a
    first load (the other kinds' graphs load in a moment)."""
    return model.kind == "diffusion"


def prepare_installed(model: InstalledModel, runtime: RuntimeOptions,
                      progress: Progress | None = None,
                      should_stop: Callable[[], bool] | None = None) -> PrepareOutcome | None:
    """Prepare ``model`` (just installed) for loading with ``runtime``; None for a kind with
    nothing to prepare (only diffusion models' graphs are optimised ahead). Never raises
    for what stops the preparing: the outcome says it in a clause."""
    if not is_prepared_ahead(model):
        return None
    started = time.perf_counter()
    try:
        preparation = prepare_model(model.path, runtime, progress, _AskingToken(should_stop))
    except Cancelled:
        return PrepareOutcome(time.perf_counter() - started, 0, "preparing was stopped")
    except MemoryError:
        return PrepareOutcome(time.perf_counter() - started, 0, "there was not enough memory")
    except (EaselError, OSError) as error:
        # An install is never undone for this: the model works, only its first load is slower.
        log.warning("Could not prepare '%s': %s", model.name, error)
        return PrepareOutcome(time.perf_counter() - started, 0, _reason(error))
    return PrepareOutcome(preparation.seconds, len(preparation.prepared))


def prepare_after_import(model: InstalledModel, runtime: Callable[[], RuntimeOptions],
                         progress: Progress | None = None,
                         should_stop: Callable[[], bool] | None = None
                         ) -> PrepareOutcome | None:
    """The last step of an import or download in the window or ``easel models get``: prepare
    ``model`` for the options ``runtime()`` gives (asked only when there is something to
    prepare), and say how it went as the last ``progress`` report. None, and nothing said, for
    a kind with nothing to prepare or when the options cannot be had (an unusable data
    folder: the first load says so)."""
    if not is_prepared_ahead(model):
        return None
    try:
        options = runtime()
    except EaselError:
        return None
    outcome = prepare_installed(model, options, progress, should_stop)
    if outcome is not None and progress is not None:
        clause = outcome.clause()
        progress(clause[:1].upper() + clause[1:], 1, 1)
    return outcome


def installed_line(model: InstalledModel, outcome: PrepareOutcome | None) -> str:
    """The import's last line: "Installed 'x' (sd1, 4.3 GB), prepared for this processor
    in 9.8 s." """
    line = f"Installed '{model.name}' ({model.family}, {size_text(model.size_bytes)})"
    return f"{line}, {outcome.clause()}." if outcome is not None else f"{line}."


def command_line_runtime(providers: str | None = None, threads: int = 0,
                         precision: str = "auto") -> RuntimeOptions:
    """The options the command line loads models with: ``providers`` as --providers takes
    them ("cuda,cpu"; None: EASEL_PROVIDERS, else the best available), ``threads`` (0:
    every core) and ``precision`` (--precision). ``easel models get`` prepares for the
    defaults, as ``easel generate`` with no --providers or --threads loads."""
    if providers is None:
        providers = os.environ.get("EASEL_PROVIDERS", "")
    names = tuple(name.strip().lower() for name in providers.split(",") if name.strip())
    return RuntimeOptions(providers=names, cpu_threads=threads, precision=precision,
                          optimized_cache=paths.optimized_graphs_dir())


def settings_runtime(settings: Settings) -> RuntimeOptions:
    """The options the window loads models with, from its settings."""
    return RuntimeOptions(providers=settings.providers, cpu_threads=settings.cpu_threads,
                          precision=settings.gpu_precision,
                          optimized_cache=paths.optimized_graphs_dir())


def saved_runtime() -> RuntimeOptions:
    """The options of the saved settings, which the window runs with: for a job that was not
    handed them (an import preparing its model for them), and for ``easel doctor``."""
    return settings_runtime(settings_file.load(settings_file.default_path()).settings)


def _reason(error: BaseException) -> str:
    """Why, in a few words for inside a sentence: the error's own sentence without its end."""
    if isinstance(error, OSError):
        return error.strerror or str(error)
    text = str(error).strip().rstrip(".") or type(error).__name__
    # "The disk ..." reads on inside a sentence as "the disk ...", "ONNX ..." stays.
    return text[:1].lower() + text[1:] if text[1:2].islower() else text


class _AskingToken(CancelToken):
    """A cancel token that also asks ``should_stop``, the model store's way to cancel."""

    def __init__(self, should_stop: Callable[[], bool] | None) -> None:
        super().__init__()
        self._should_stop = should_stop

    @property
    def cancelled(self) -> bool:
        return self._cancelled or (self._should_stop is not None and self._should_stop())

    def raise_if_cancelled(self) -> None:
        if self.cancelled:
            raise Cancelled("Cancelled.")
