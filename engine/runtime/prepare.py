"""Optimising graphs ahead of their first use, so the first load after an import is quick.

onnxruntime's full optimisation of an SD 1.5 UNet on a 2-core CPU takes about 5 s and
writing the optimised copy another 4 s; done at first use, it makes the first picture after an
import wait. ``prepare_graphs`` does that work when the caller chooses (right after an
import), through the very code a load runs (``sessions.open_session``), so the optimised graph
lands in the cache exactly where the later load looks; ``needs_preparing`` says whether it
still has to be done (a model imported before, another onnxruntime or provider, an emptied
cache). A graph that runs in fp16 on this runtime (a UNet on CUDA) gets its fp16 copy made
first (engine.runtime.fp16), and that copy is what is optimised.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from engine.errors import EaselError
from engine.runtime import fp16, graph_cache
from engine.runtime.cancel import CancelToken
from engine.runtime.providers import resolve_providers
from engine.runtime.sessions import (
    RuntimeOptions,
    expected_providers,
    open_session,
    runs_in_half,
)

# (what is being prepared in the user's words, its number from 1, how many), before each
# graph, as the model store numbers an import's stages.
PrepareProgress = Callable[[str, int, int], None]


class PrepareFailed(EaselError):
    """A graph could be opened but its optimised copy could not be kept (a full disk, a
    read-only cache): the next load optimises it again."""


@dataclass(frozen=True)
class Graph:
    """One graph to prepare: its file, what it is in the user's words ("the UNet"), and
    whether it may run in fp16 (``get_session``'s ``half``)."""

    file: Path
    label: str
    half: bool = False


@dataclass(frozen=True)
class PreparedGraph:
    graph: Graph
    seconds: float
    prepared: bool  # False: it was ready already and nothing was done


@dataclass(frozen=True)
class Preparation:
    """What ``prepare_graphs`` did, graph by graph, and how long it took in all."""

    graphs: tuple[PreparedGraph, ...]
    seconds: float

    @property
    def prepared(self) -> tuple[Graph, ...]:
        """The graphs optimised now (the others were ready)."""
        return tuple(item.graph for item in self.graphs if item.prepared)


def starting_providers(runtime: RuntimeOptions) -> list[str]:
    """The providers a session for ``runtime`` is expected to run on: the resolved list
    without the GPU providers that cannot start here (no GPU, a missing CUDA library), as
    the onnxruntime-gpu package without a GPU quietly runs on the CPU alone."""
    return expected_providers(resolve_providers(runtime.providers))


def needs_preparing(model_file: Path, runtime: RuntimeOptions, half: bool = False) -> bool:
    """True when loading ``model_file`` with ``runtime`` would convert or optimise it first:
    it runs in fp16 here (``half`` and the runtime say so) and its fp16 copy is not in the
    cache, or the cache has no fresh optimised entry for the file (or that copy), or the
    entry was made on other providers than those expected to start now (the loader would
    then discard it). False when there is nothing to prepare: no cache folder, or providers
    whose graphs cannot be cached (TensorRT) and no fp16 copy to make."""
    if runtime.optimized_cache is None:
        return False
    model_file = Path(model_file).resolve()
    if not model_file.is_file():
        return False  # nothing to prepare; loading it says the file is missing
    resolved, starting = resolve_providers(runtime.providers), starting_providers(runtime)
    if half and runs_in_half(runtime, starting):
        copy = fp16.half_entry(model_file, runtime.optimized_cache, resolved)
        if not copy.is_fresh():
            return True
        model_file = copy.model
    entry = graph_cache.cached_graph(runtime.optimized_cache, model_file, resolved)
    if entry is None:
        return False
    # Where the loader keeps the graph depends on how a GPU provider fails: one that
    # onnxruntime quietly leaves out keeps the full list's entry (stamped as run on the
    # CPU), one that raises is dropped by the loader, which then uses the shorter list's.
    places = [entry] if starting == resolved else [
        entry, graph_cache.cached_graph(runtime.optimized_cache, model_file, starting)]
    return not any(place is not None and place.is_fresh() and place.ran_on() == starting
                   for place in places)


def prepare_graphs(
    graphs: Sequence[Graph],
    runtime: RuntimeOptions,
    progress: PrepareProgress | None = None,
    cancel: CancelToken | None = None,
) -> Preparation:
    """Optimise each graph that needs it and keep the result in the cache, one at a time,
    letting each session go before the next (a UNet's optimisation alone takes 3.5 GB).

    ``cancel`` is checked between graphs (onnxruntime cannot stop a session being made):
    ``Cancelled`` then leaves the graphs done so far prepared and nothing half-written, as
    the cache writes into a private folder renamed into place only when whole. Raises the
    loader's error for a graph that cannot be opened, and ``PrepareFailed`` when it opened
    but its optimised copy could not be kept.
    """
    started = time.perf_counter()
    done: list[PreparedGraph] = []
    for index, graph in enumerate(graphs):
        if cancel is not None:
            cancel.raise_if_cancelled()
        if not needs_preparing(graph.file, runtime, graph.half):
            done.append(PreparedGraph(graph, 0.0, False))
            continue
        if progress is not None:
            progress(f"Preparing {graph.label} for this processor (once)", index + 1,
                     len(graphs))
        done.append(_prepare(graph, runtime))
    return Preparation(tuple(done), time.perf_counter() - started)


def _prepare(graph: Graph, runtime: RuntimeOptions) -> PreparedGraph:
    started = time.perf_counter()
    session = open_session(graph.file, runtime, half=graph.half)
    notes = session.notes
    del session  # only the copies it left in the cache are wanted, not its memory
    if needs_preparing(graph.file, runtime, graph.half):
        if notes:  # an fp16 copy that cannot be made or loaded: the session says why
            raise PrepareFailed(" ".join(notes))
        # The loader opens a model even when its copy cannot be saved (a full disk).
        raise PrepareFailed(f"The optimised copy of {graph.label} could not be kept in "
                            f"{runtime.optimized_cache}: is the disk full or read-only?")
    return PreparedGraph(graph, time.perf_counter() - started, True)
