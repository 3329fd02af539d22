"""ONNX Runtime sessions: created once per model file and options, run with cancellation.

``get_session`` is the only way the pipelines open a model. It is lazy (nothing is created
until a model is needed), cached by file identity *and* options (a changed provider or thread
count never reuses a session built for the old ones), and honest about the device: every
session carries a ``DeviceReport`` saying where it runs and why a requested GPU is not used.
On a GPU provider the UNet, the text encoders and the VAE decoder run their fp16 copies
(engine.runtime.fp16), and the session says so (``Session.precision``), as it says what it
could not do (``Session.notes``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from engine.errors import BadRequest, Cancelled, ModelError
from engine.runtime import fp16, graph_cache
from engine.runtime.cancel import CancelToken
from engine.runtime.device import DeviceReport, device_report, provider_problem
from engine.runtime.errors import (
    ORT_ERRORS,
    is_model_file_error,
    ort_detail,
    translate_load_error,
    translate_run_error,
)
from engine.runtime.onnx_weights import same_initializers
from engine.runtime.providers import (
    DISPLAY_NAMES,
    load_pip_cuda_libraries,
    normalize_providers,
    ort_provider_names,
    requested_providers,
    resolve_providers,
    short_provider_names,
)

log = logging.getLogger(__name__)


def _ort_log_severity() -> int:
    # onnxruntime prints a red error and a yellow warning on the console whenever a GPU
    # provider fails to start; the device report already says so in words, and every other
    # failure reaches Python as an exception. Developers can turn the log back on.
    try:
        return min(4, max(0, int(os.environ.get("EASEL_ORT_LOG_SEVERITY", "4"))))
    except ValueError:
        return 4


_ORT_LOG_SEVERITY = _ort_log_severity()

_NUMPY_TYPES: dict[str, type] = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int16)": np.int16,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


# The precisions a user can ask for: "auto" is fp16 on a GPU provider, fp32 elsewhere.
PRECISIONS = ("auto", "fp16", "fp32")
# The providers "auto" runs in fp16: CoreML chooses its own precision.
HALF_PROVIDERS = frozenset({"cuda", "tensorrt", "directml"})


@dataclass(frozen=True)
class RuntimeOptions:
    """How to run models: the user's providers, CPU threads, and where optimised graphs go.

    ``providers`` are short names ("cuda", "cpu"), best first; empty means the default order.
    ``cpu_threads`` 0 means every core this process may use. ``optimized_cache`` is a folder
    the app owns (the engine keeps no user data); ``None`` turns the on-disk cache off.
    ``precision`` is "auto" (fp16 on a GPU provider, fp32 on the CPU), "fp16" or "fp32": the
    precision of the graphs that may run in fp16 (``get_session``'s ``half``). ``cuda_graph``
    lets the UNet replay CUDA graphs on CUDA (``get_session``'s ``cuda_graph``).
    """

    providers: tuple[str, ...] = ()
    cpu_threads: int = 0
    optimized_cache: Path | None = None
    # How many pictures of one request share a UNet call; 0 lets the pipeline choose for the
    # device (engine.pipelines.batching).
    image_batch: int = 0
    precision: str = "auto"
    cuda_graph: bool = True

    def __post_init__(self) -> None:
        # Normalised here so equal settings give equal cache keys, and a bad settings file is
        # refused when read, not at the first generation.
        object.__setattr__(self, "providers", normalize_providers(self.providers))
        if isinstance(self.cpu_threads, bool) or not isinstance(self.cpu_threads, int):
            raise BadRequest("The number of CPU threads must be a whole number.")
        if self.cpu_threads < 0:
            raise BadRequest("The number of CPU threads cannot be negative (0 means all cores).")
        if isinstance(self.image_batch, bool) or not isinstance(self.image_batch, int) or (
                self.image_batch < 0):
            raise BadRequest("The number of pictures per UNet call must be a whole number, "
                             "0 or more (0 chooses for the device).")
        if self.optimized_cache is not None:
            object.__setattr__(self, "optimized_cache", Path(self.optimized_cache))
        precision = self.precision.strip().lower() if isinstance(self.precision, str) else None
        if precision not in PRECISIONS:
            raise BadRequest(f"Unknown precision {self.precision!r}: choose auto, fp16 or fp32.")
        object.__setattr__(self, "precision", precision)
        if not isinstance(self.cuda_graph, bool):
            raise BadRequest("Whether to use CUDA graphs must be true or false.")

    @property
    def thread_count(self) -> int:
        """The number of threads a CPU session uses."""
        if self.cpu_threads:
            return self.cpu_threads
        try:
            return len(os.sched_getaffinity(0))  # honours taskset and container CPU limits
        except AttributeError:  # not on Windows or macOS
            return os.cpu_count() or 1


@dataclass(frozen=True)
class InitializerOverrides:
    """Weights that replace some of a graph's initializers when its session is created (a
    LoRA set merged into them, engine.lora).

    ``key`` says which weights they are (equal keys, equal weights), so a session is reused
    for the same set and made anew for another; ``build`` makes them, only when a session is
    created: initializer name -> array of that initializer's shape and type, and the names
    among them the graph stores as external data (outside its file).
    """

    key: tuple
    build: Callable[[], tuple[dict[str, np.ndarray], frozenset[str]]] = field(
        compare=False, repr=False)


class Session:
    """One model file opened in onnxruntime, with the device it really runs on.

    ``precision`` is "fp16" when it runs the model's fp16 copy (engine.runtime.fp16), "fp32"
    otherwise; ``notes`` say, a sentence each, what was asked for and could not be done
    (an fp16 copy or CUDA graphs), for the device report.
    """

    def __init__(
        self, inner: ort.InferenceSession, path: Path, loaded_from: Path, device: DeviceReport,
        keep_alive: tuple = (), *, precision: str = "fp32", notes: Sequence[str] = (),
    ) -> None:
        self._inner = inner
        self.path = path
        self.loaded_from = loaded_from  # the model, its fp16 copy, or an optimised copy
        self.device = device
        self.precision = precision
        self.notes = tuple(notes)
        # onnxruntime reads overriding initializers in place: they must outlive the session.
        self._keep_alive = keep_alive
        self._inputs = {node.name: node for node in inner.get_inputs()}
        # Set when the session was made to replay CUDA graphs (engine.runtime.binding must
        # then run it through an IO binding with fixed buffers).
        self.cuda_graph = False

    @property
    def ort_session(self) -> ort.InferenceSession:
        """The onnxruntime session itself, for engine.runtime.binding's IO binding; the
        pipelines run models through ``run``."""
        return self._inner

    @property
    def input_names(self) -> list[str]:
        return list(self._inputs)

    @property
    def output_names(self) -> list[str]:
        return [node.name for node in self._inner.get_outputs()]

    def input_type(self, name: str) -> np.dtype:
        """The numpy dtype input ``name`` takes, so callers can cast (e.g. the timestep)."""
        node = self._inputs.get(name)
        if node is None:
            known = ", ".join(self._inputs)
            raise ModelError(
                f"The model {self.path} has no input named {name!r} (it has {known})."
            )
        numpy_type = _NUMPY_TYPES.get(node.type)
        if numpy_type is None:
            raise ModelError(
                f"The model {self.path} takes {name!r} as {node.type}, "
                "which the engine cannot feed."
            )
        return np.dtype(numpy_type)

    def input_rank(self, name: str) -> int | None:
        """How many dimensions input ``name`` has (0 for a scalar), None when the graph does
        not say: exporters write a scale as a scalar or as a one-element vector."""
        node = self._inputs.get(name)
        return None if node is None or node.shape is None else len(node.shape)

    def run(
        self,
        feeds: Mapping[str, np.ndarray],
        outputs: Sequence[str] | None = None,
        cancel: CancelToken | None = None,
    ) -> list[np.ndarray]:
        """Run the model; a ``cancel`` from another thread stops it between nodes.

        Raises ``Cancelled`` when the token was cancelled before or during the call, and an
        engine error (``GenerationFailed``, ``BadRequest``) for onnxruntime's failures.
        """
        # Fresh options every run: a terminate flag once set stays set.
        run_options = ort.RunOptions()
        run_options.log_severity_level = _ORT_LOG_SEVERITY
        names = list(outputs) if outputs is not None else None
        if cancel is None:
            return self._run(names, feeds, run_options)
        cancel.raise_if_cancelled()
        with cancel.on_cancel(lambda: setattr(run_options, "terminate", True)):
            try:
                results = self._run(names, feeds, run_options)
            except Exception as error:
                if cancel.cancelled:
                    raise Cancelled("Cancelled.") from error
                raise
        # A cancel that came as the last node finished still wins: the caller asked to stop.
        cancel.raise_if_cancelled()
        return results

    def _run(
        self, names: list[str] | None, feeds: Mapping[str, np.ndarray], run_options: ort.RunOptions
    ) -> list[np.ndarray]:
        try:
            return self._inner.run(names, dict(feeds), run_options)
        except ORT_ERRORS as error:
            if run_options.terminate:
                raise Cancelled("Cancelled.") from error
            device = DISPLAY_NAMES.get(self.device.in_use, self.device.in_use)
            raise translate_run_error(error, self.path, device) from error

    def __repr__(self) -> str:
        return f"Session({self.path.name!r}, {self.device.summary}, {self.precision})"


_lock = threading.Lock()
_sessions: dict[tuple, Session] = {}
_quieted = False


def get_session(path: Path, options: RuntimeOptions | None = None,
                overrides: InitializerOverrides | None = None, *, half: bool = False,
                cuda_graph: bool = False) -> Session:
    """The session for ``path`` under ``options``, created on first use and then reused.

    ``half``: the graph may run in fp16 (the UNet, the text encoders, the VAE decoder): it
    does when ``options.precision`` is "fp16", or "auto" and the providers expected to start
    begin with a GPU provider; the fp16 copy is made once and cached (engine.runtime.fp16).
    ``cuda_graph``: replay CUDA graphs when the session runs on CUDA (the UNet, run through
    engine.runtime.binding); ``Session.cuda_graph`` says whether it does.

    The cache key holds the resolved path, the sizes and times of the model and its external
    weights (a re-exported model is a new session), the providers and the options, which
    ``overrides`` replace some of its weights, and ``half`` and ``cuda_graph``. One model
    file keeps at most one session with overrides or none of its plain ones beside it, and
    one per options: each holds a whole copy of the weights (a UNet), so switching LoRA sets,
    or from fp16 to fp32, or away from CUDA graphs, lets the old one go before the new one
    loads.
    """
    options = options or RuntimeOptions()
    path = Path(path).resolve()
    try:
        identity = graph_cache.file_identity(path)
    except FileNotFoundError:
        raise ModelError(f"The model file {path} is missing.") from None
    overridden = None if overrides is None else overrides.key
    variant = (bool(half), bool(cuda_graph))
    key = (path, identity, tuple(resolve_providers(options.providers)), options, overridden,
           variant)
    with _lock:
        session = _sessions.get(key)
        if session is None:
            # A changed file's old session holds memory (a whole UNet) and is never used
            # again; so does another set of overrides or another variant (see above).
            for stale in [k for k in _sessions if k[0] == path and (
                    k[1] != identity or k[4] != overridden and (
                        k[4] is not None or overridden is not None)
                    or k[3] == options and k[5] != variant)]:
                del _sessions[stale]
            _quiet_onnxruntime()
            session = _open(path, options, overrides, half=half, cuda_graph=cuda_graph)
            _sessions[key] = session
    return session


def open_session(path: Path, options: RuntimeOptions | None = None, *,
                 half: bool = False) -> Session:
    """A new session for ``path``, made exactly as ``get_session`` makes one (through the
    fp16 copy when ``half`` calls for it, and the optimised-graph cache, which it fills) but
    not kept: preparing a model ahead of its use (engine.runtime.prepare) wants the cache
    entries, not the memory."""
    options = options or RuntimeOptions()
    path = Path(path).resolve()
    if not path.is_file():
        raise ModelError(f"The model file {path} is missing.")
    with _lock:
        _quiet_onnxruntime()
    return _open(path, options, half=half)


def expected_providers(providers: Sequence[str]) -> list[str]:
    """``providers`` (a resolved list) without the GPU providers that cannot start here (no
    GPU, a missing CUDA library): those a session is expected to run on, as the
    onnxruntime-gpu package without a GPU quietly runs on the CPU alone."""
    return [name for name in providers if name == "cpu" or provider_problem(name) is None]


def runs_in_half(options: RuntimeOptions, providers: Sequence[str]) -> bool:
    """Whether a graph that may run in fp16 does, under ``options`` on ``providers`` (the
    providers expected to start, best first)."""
    if options.precision != "auto":
        return options.precision == "fp16"
    return bool(providers) and providers[0] in HALF_PROVIDERS


def is_loaded(path: Path) -> bool:
    """Whether a session of the model file ``path`` is open (its memory already taken)."""
    path = Path(path).resolve()
    with _lock:
        return any(key[0] == path for key in _sessions)


def clear_sessions() -> None:
    """Forget every cached session, so their memory goes once callers drop theirs too."""
    with _lock:
        _sessions.clear()


def release_sessions(folder: Path) -> int:
    """Forget the cached sessions of the model files inside ``folder`` (one model), leaving
    every other model's loaded; their memory goes once callers drop theirs too. Returns how
    many were forgotten."""
    folder = Path(folder).resolve()
    with _lock:
        inside = [key for key in _sessions if key[0].is_relative_to(folder)]
        for key in inside:
            del _sessions[key]
    return len(inside)


def build_session_options(
    options: RuntimeOptions,
    providers: Sequence[str] = ("cpu",),
    *,
    save_to: Path | None = None,
    from_cache: bool = False,
    half: bool = False,
) -> ort.SessionOptions:
    """onnxruntime's session options for ``options`` on ``providers`` (short names);
    ``half`` for an fp16 copy (engine.runtime.fp16)."""
    session_options = ort.SessionOptions()
    session_options.log_severity_level = _ORT_LOG_SEVERITY
    session_options.intra_op_num_threads = options.thread_count
    # Spinning threads keep a core busy between ops; on few cores that starves the GUI thread
    # and the gallery decoder for almost no speed. Off for the GPU too, where the CPU waits.
    session_options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session_options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    session_options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if "directml" in providers:
        # DirectML supports neither memory patterns nor parallel execution.
        session_options.enable_mem_pattern = False
    if from_cache:
        # Already optimised for this provider and machine; doing it again only costs time.
        session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    elif half:
        # The full level adds the CPU provider's layout rewrites, which crash onnxruntime 1.31
        # (a segfault: nothing to catch) on some fp16 graphs - the starter's text encoder with
        # --precision fp16 on a CPU - and may meet the CPU nodes of a GPU session's fp16 graph.
        # The GPU's fusions are all at the extended level, so an fp16 copy stops there.
        session_options.graph_optimization_level = (
            ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED)
    else:
        session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if save_to is not None:
        session_options.optimized_model_filepath = str(save_to)
        session_options.add_session_config_entry(
            "session.optimized_model_external_initializers_file_name", graph_cache.DATA_FILE
        )
    return session_options


def _open(path: Path, options: RuntimeOptions,
          overrides: InitializerOverrides | None = None, *, half: bool = False,
          cuda_graph: bool = False) -> Session:
    """Create a session, dropping GPU providers that fail to start until one works."""
    requested = requested_providers(options.providers)
    providers = resolve_providers(options.providers)
    if {"cuda", "tensorrt"} & set(providers):
        load_pip_cuda_libraries()
    start_errors: dict[str, BaseException] = {}
    while True:
        try:
            opened = _open_on(path, providers, options, overrides, half=half,
                              cuda_graph=cuda_graph)
            break
        except ORT_ERRORS as error:
            if providers == ["cpu"] or is_model_file_error(error):
                device = DISPLAY_NAMES[providers[0]]
                raise translate_load_error(error, path, device) from error
            # Remembered for the device report: this provider is passed over, not hidden.
            start_errors[providers[0]] = error
            providers = providers[1:]
    in_use = short_provider_names(opened.inner.get_providers())
    report = device_report(
        requested, in_use, cpu_threads=options.thread_count, start_errors=start_errors
    )
    if opened.precision == fp16.HALF:
        report = dataclasses.replace(report, precision=fp16.HALF)
    if report.reason:
        # Info, not warning: the app shows the reason itself; a console copy is for developers.
        log.info("%s", report.reason)
    for note in opened.notes:
        log.info("%s", note)
    session = Session(opened.inner, path, opened.loaded_from, report,
                      keep_alive=tuple(opened.values.values()), precision=opened.precision,
                      notes=opened.notes)
    session.cuda_graph = opened.cuda_graph and in_use[:1] == ["cuda"]
    return session


@dataclass
class _Opened:
    inner: ort.InferenceSession
    loaded_from: Path
    precision: str
    cuda_graph: bool
    values: dict[str, ort.OrtValue]  # the overrides: they must outlive the session
    notes: tuple[str, ...]


def _open_on(path: Path, providers: list[str], options: RuntimeOptions,
             overrides: InitializerOverrides | None, *, half: bool,
             cuda_graph: bool) -> _Opened:
    """The session on ``providers``: in fp16 where ``half`` and the options call for it,
    replaying CUDA graphs where ``cuda_graph`` asks and CUDA comes first. Each of those that
    cannot be had falls back to the plain session, with the reason in the notes: the fp16
    copy cannot be made or loaded, a graph with CPU nodes cannot be captured. Raises what
    onnxruntime raised for the plain fp32 session (the provider then is dropped)."""
    label = f"{path.parent.name}/{path.name}"
    notes: list[str] = []
    graphs = [(path, fp16.SINGLE)]
    if half and runs_in_half(options, expected_providers(providers)):
        try:
            graphs.insert(0, (fp16.half_graph(path, options.optimized_cache, providers),
                              fp16.HALF))
        except (ModelError, OSError) as error:
            notes.append(f"{error} {label} runs in fp32.")
    replays = [True, False] if cuda_graph and providers[0] == "cuda" else [False]
    failures: dict[tuple[str, bool], BaseException] = {}
    for graph, precision in graphs:
        values, external = _ort_values(overrides, graph if precision == fp16.HALF else None)
        for replay in replays:
            try:
                if values:
                    inner, loaded_from = _create_with_overrides(
                        graph, providers, options, (values, external), cuda_graph=replay,
                        half=precision == fp16.HALF)
                else:
                    inner, loaded_from = _create(graph, providers, options, cuda_graph=replay,
                                                 half=precision == fp16.HALF)
            except ORT_ERRORS as error:
                failures[(precision, replay)] = error
                continue
            in_use = short_provider_names(inner.get_providers())
            if precision == fp16.HALF and options.precision == "auto" and (
                    in_use[0] not in HALF_PROVIDERS):
                # The GPU provider was quietly left out: fp16 on the CPU is slow for nothing.
                del inner
                break
            half_failure = failures.get((fp16.HALF, False)) or failures.get((fp16.HALF, True))
            if precision == fp16.SINGLE and half_failure is not None:
                notes.append(f"The fp16 copy of {label} could not be loaded "
                             f"({ort_detail(half_failure)}); it runs in fp32.")
            replay_failure = failures.get((precision, True))
            if not replay and replay_failure is not None:
                notes.append(f"CUDA graphs are not used for {label}: "
                             f"{ort_detail(replay_failure)}.")
            return _Opened(inner, loaded_from, precision, replay, values, tuple(notes))
    raise failures[(fp16.SINGLE, False)]


def _ort_values(overrides: InitializerOverrides | None, converted: Path | None = None
                ) -> tuple[dict[str, ort.OrtValue], frozenset[str]]:
    """The overriding weights as onnxruntime takes them; for the fp16 copy ``converted``,
    in the types that copy stores them in."""
    if overrides is None:
        return {}, frozenset()
    arrays, external = overrides.build()
    if converted is not None:
        arrays, external = fp16.fit_overrides(converted, arrays)
    values = {name: ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array))
              for name, array in arrays.items()}
    return values, external


def _create_with_overrides(
    path: Path, providers: list[str], options: RuntimeOptions,
    overrides: tuple[dict[str, ort.OrtValue], frozenset[str]], *, cuda_graph: bool = False,
    half: bool = False,
) -> tuple[ort.InferenceSession, Path]:
    """A session whose initializers ``overrides`` replaces.

    Optimising a whole UNet again takes most of a LoRA switch (9 s of 12 on 2 cores), so the
    optimised graph from the cache is used when it still holds every replaced initializer
    under its name with the model's own values, stored outside the graph (onnxruntime kept
    those weights as exported; it does so for MatMul weights, but reorders convolution
    weights into new ones). Otherwise the model file itself is optimised with the new values.
    """
    values, _external = overrides
    entry = None
    if options.optimized_cache is not None:
        entry = graph_cache.cached_graph(options.optimized_cache, path, providers)
    if entry is not None and entry.is_fresh() and same_initializers(entry.model, path, values):
        try:
            inner = _new_session(entry.model, providers, options, from_cache=True,
                                 overrides=(values, frozenset(values)), cuda_graph=cuda_graph,
                                 half=half)
        except ORT_ERRORS as error:
            log.warning("Not using the optimised graph %s: %s", entry.folder, error)
        else:
            if short_provider_names(inner.get_providers()) == entry.ran_on():
                return inner, entry.model
            del inner
    return _new_session(path, providers, options, overrides=overrides,
                        cuda_graph=cuda_graph, half=half), path


def _add_overrides(session_options: ort.SessionOptions,
                   overrides: tuple[Mapping[str, ort.OrtValue], frozenset[str]]) -> None:
    """Replace initializers before the graph is optimised.

    Weights stored as external data are swapped in the graph itself as it loads
    (``add_external_initializers``), so every optimisation sees the new values. Weights
    inside the graph file can only be handed over beside it (``add_initializer``); at the
    full level onnxruntime's layout transformer then reorders a convolution's weights from
    the graph's own copy and the override is silently lost, so such sessions stop one level
    short of it (measured with onnxruntime 1.31; text encoders have no convolutions).
    """
    values, external = overrides
    outside = [name for name in values if name in external]
    if outside:
        session_options.add_external_initializers(outside, [values[name] for name in outside])
    inside = [name for name in values if name not in external]
    for name in inside:
        session_options.add_initializer(name, values[name])
    if inside and session_options.graph_optimization_level == (
            ort.GraphOptimizationLevel.ORT_ENABLE_ALL):
        session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED


def _create(
    path: Path, providers: list[str], options: RuntimeOptions, *, cuda_graph: bool = False,
    half: bool = False,
) -> tuple[ort.InferenceSession, Path]:
    """A session for ``providers``, through the optimised-graph cache when there is one."""
    entry = None
    if options.optimized_cache is not None:
        entry = graph_cache.cached_graph(options.optimized_cache, path, providers)
    if entry is not None and entry.is_fresh():
        try:
            inner = _new_session(entry.model, providers, options, from_cache=True,
                                 cuda_graph=cuda_graph, half=half)
        except ORT_ERRORS as error:
            if cuda_graph:
                raise  # the graph may be fine: CUDA graphs are what failed
            # A damaged cache entry must never stop a good model from loading.
            log.warning("Rebuilding the optimised graph %s: %s", entry.folder, error)
            entry.discard()
        else:
            if short_provider_names(inner.get_providers()) == entry.ran_on():
                return inner, entry.model
            # Other providers started than when the graph was optimised (a GPU that failed
            # then works now, or the reverse): that graph does not fit them; make a new one.
            del inner
            entry.discard()
    staging = entry.stage() if entry is not None else None
    if staging is None:
        return _new_session(path, providers, options, cuda_graph=cuda_graph, half=half), path
    try:
        inner = _new_session(path, providers, options, save_to=staging / graph_cache.GRAPH_FILE,
                             cuda_graph=cuda_graph, half=half)
    except ORT_ERRORS as error:
        entry.abandon(staging)
        if is_model_file_error(error) or cuda_graph:
            raise
        # Perhaps only the saving failed (a full disk): try once more without it.
        return _new_session(path, providers, options, half=half), path
    # Stored with the providers that really started: on a machine where the GPU provider
    # cannot start, the graph is the CPU's, and it is reused as long as that stays so.
    entry.commit(staging, short_provider_names(inner.get_providers()))
    return inner, path


def _new_session(
    model: Path,
    providers: list[str],
    options: RuntimeOptions,
    *,
    save_to: Path | None = None,
    from_cache: bool = False,
    overrides: tuple[Mapping[str, ort.OrtValue], frozenset[str]] | None = None,
    cuda_graph: bool = False,
    half: bool = False,
) -> ort.InferenceSession:
    session_options = build_session_options(
        options, providers, save_to=save_to, from_cache=from_cache, half=half
    )
    if overrides is not None:
        _add_overrides(session_options, overrides)
    names = ort_provider_names(providers)
    with_options = [
        (name, _provider_options(short, options, cuda_graph=cuda_graph))
        for short, name in zip(providers, names, strict=True)
    ]
    return ort.InferenceSession(
        str(model),
        sess_options=session_options,
        providers=with_options,
        # onnxruntime's own fallback prints to stdout and retries on the CPU without telling
        # the caller; the engine does its own, with a reason.
        enable_fallback=0,
    )


def _provider_options(provider: str, options: RuntimeOptions, *,
                      cuda_graph: bool = False) -> dict[str, Any]:
    if provider == "cuda" and cuda_graph:
        # Replays the whole UNet call as one captured graph: every node on CUDA, fixed
        # shapes, inputs and outputs bound to the same device buffers each run.
        return {"enable_cuda_graph": "1"}
    if provider == "tensorrt" and options.optimized_cache is not None:
        # Building TensorRT engines takes minutes per model and shape; keep them.
        engines = options.optimized_cache / f"onnxruntime-{ort.__version__}" / "tensorrt-engines"
        return {
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(engines),
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": str(engines),
        }
    return {}


def _quiet_onnxruntime() -> None:
    # The default logger is where a failed provider start is printed; it is process-wide,
    # so it is set once, when the first model is opened, not at import.
    global _quieted
    if not _quieted:
        ort.set_default_logger_severity(_ORT_LOG_SEVERITY)
        _quieted = True
