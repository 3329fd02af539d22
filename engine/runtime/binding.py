"""The UNet's calls of a denoising run, through onnxruntime's IO binding.

Across the steps of a picture only the latents and the timestep change; the conditioning
(``encoder_hidden_states``, SDXL's ``text_embeds`` and ``time_ids``, LCM's
``timestep_cond``) does not. ``bound_calls`` binds it once, as OrtValues on the session's
device, so a GPU receives it once per run of steps instead of at every step; each call then
binds only what changes and brings back only the output, which the numpy schedulers step
with. Every provider runs this way, the CPU too, so the tests run the path a GPU takes.

A session made to replay CUDA graphs (``Session.cuda_graph``) must find its inputs and
output at the same device addresses at every run of a graph. There (``GraphCalls``) each
input and the output of a shape live in buffers allocated once and kept with the session,
new values are copied into them (``OrtValue.update_inplace``), and each shape has a graph
of its own: the ``gpu_graph_id`` run option, from 1 (0 is onnxruntime's own default, -1 runs
without a graph). onnxruntime runs a graph's first calls normally, then captures it, then
replays it. A failure there raises ``CudaGraphFailed``; the pipeline then stops the model's
CUDA graphs (``Model.stop_cuda_graph``) and goes on with plain calls, saying why.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from engine.errors import Cancelled
from engine.runtime.cancel import CancelToken
from engine.runtime.errors import ORT_ERRORS, ort_detail, translate_run_error
from engine.runtime.providers import DISPLAY_NAMES
from engine.runtime.sessions import Session

# The run option naming the CUDA graph a run captures or replays (onnxruntime's
# kOrtRunOptionsConfigCudaGraphAnnotation); -1 runs without one.
GRAPH_ID_OPTION = "gpu_graph_id"
NO_GRAPH = -1
# Providers whose tensors live in CUDA memory.
_CUDA_PROVIDERS = frozenset({"cuda", "tensorrt"})


class CudaGraphFailed(Exception):
    """Capturing or replaying a CUDA graph failed; ``reason`` says so in the user's words.
    Not an engine error: the pipeline handles it by going on without CUDA graphs."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def device_of(session: Session) -> str:
    """Where ``session`` keeps its tensors, as OrtValue names devices: "cuda" or "cpu"."""
    return "cuda" if session.device.in_use in _CUDA_PROVIDERS else "cpu"


def bound_calls(session: Session, constants: Mapping[str, np.ndarray],
                most: int | None = None, output: str = "out_sample") -> BoundCalls:
    """The calls of ``session`` that share ``constants``: CUDA graph replays on a session
    made for them (until they fail once), plain bound calls otherwise."""
    if session.cuda_graph and session not in _graphs_failed:
        return GraphCalls(session, constants, most, output)
    return BoundCalls(session, constants, most, output)


class BoundCalls:
    """Calls of ``session`` whose inputs ``constants`` are the same every time, bound once
    as OrtValues on its device. A call gives the other inputs and returns ``output`` as
    numpy. ``most`` caps the samples of one run: a larger batch runs in parts of that many,
    each part with its own rows of the constants, bound once too."""

    def __init__(self, session: Session, constants: Mapping[str, np.ndarray],
                 most: int | None = None, output: str = "out_sample") -> None:
        self.session = session
        self.constants = dict(constants)
        self.most = most
        self.output = output
        self.device = device_of(session)
        self._bindings: dict[tuple[int, int], ort.IOBinding] = {}

    def __call__(self, feeds: Mapping[str, np.ndarray], cancel: CancelToken) -> np.ndarray:
        """The output for the inputs ``feeds`` (all batched alike on axis 0) and the
        constants; a ``cancel`` from another thread stops a run between nodes."""
        outputs = [self._run_part(start, stop, feeds, cancel)
                   for start, stop in _parts(_batch(feeds), self.most)]
        return outputs[0] if len(outputs) == 1 else np.concatenate(outputs)

    def _run_part(self, start: int, stop: int, feeds: Mapping[str, np.ndarray],
                  cancel: CancelToken) -> np.ndarray:
        binding = self._bindings.get((start, stop))
        if binding is None:
            binding = self.session.ort_session.io_binding()
            for name, value in self.constants.items():
                binding.bind_ortvalue_input(name, self._on_device(value[start:stop]))
            # onnxruntime allocates the output on the device at each run; only it comes back.
            binding.bind_output(self.output, self.device)
            self._bindings[(start, stop)] = binding
        for name, value in feeds.items():
            # onnxruntime copies these to the device as the run starts, through its own
            # memory arena (an OrtValue made here would take and free device memory per call).
            binding.bind_cpu_input(name, np.ascontiguousarray(value[start:stop]))
        # A session made for CUDA graphs that runs without them says so at each run.
        graph = NO_GRAPH if self.session.cuda_graph else None
        self._run(binding, cancel, graph)
        return binding.copy_outputs_to_cpu()[0]

    def _on_device(self, value: np.ndarray) -> ort.OrtValue:
        return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(value), self.device, 0)

    def _run(self, binding: ort.IOBinding, cancel: CancelToken, graph: int | None) -> None:
        """One run, cancelled as ``Session.run`` cancels (``RunOptions.terminate``), its
        failures translated as that one's are."""
        run_options = _run_options(graph)  # fresh each run: a terminate flag once set stays
        cancel.raise_if_cancelled()
        with cancel.on_cancel(lambda: setattr(run_options, "terminate", True)):
            try:
                self.session.ort_session.run_with_iobinding(binding, run_options)
            except ORT_ERRORS as error:
                if run_options.terminate or cancel.cancelled:
                    raise Cancelled("Cancelled.") from error
                device = DISPLAY_NAMES.get(self.session.device.in_use,
                                           self.session.device.in_use)
                raise translate_run_error(error, self.session.path, device) from error
        # A cancel that came as the last node finished still wins: the caller asked to stop.
        cancel.raise_if_cancelled()


@dataclass(eq=False)
class _Graph:
    """One shape's CUDA graph: its id, and the binding with the fixed buffers it reads and
    writes (the output's made after the first run tells its shape)."""

    graph_id: int
    binding: ort.IOBinding
    inputs: dict[str, ort.OrtValue]
    output: ort.OrtValue | None = None


# Each session's graphs, kept as long as the session: a captured graph reads its buffers'
# addresses, so they must outlive every run of it.
_graphs: weakref.WeakKeyDictionary[Session, dict[tuple, _Graph]] = weakref.WeakKeyDictionary()
# Sessions whose graphs failed once: they run plain calls from then on.
_graphs_failed: weakref.WeakSet[Session] = weakref.WeakSet()


class GraphCalls(BoundCalls):
    """Calls of a session made to replay CUDA graphs: every input and the output in the
    session's fixed buffers for that shape, the constants copied in once for these calls.

    A run with a graph is not terminated by a cancel (a capture cut short would leave the
    graph half made); a replay is a single launch, so the cancel is checked before and after
    it instead. A failure of such a run is a ``CudaGraphFailed``; the first run of a shape,
    without a graph, fails and cancels as a plain call does."""

    def __init__(self, session: Session, constants: Mapping[str, np.ndarray],
                 most: int | None = None, output: str = "out_sample") -> None:
        super().__init__(session, constants, most, output)
        self._graphs = _graphs.setdefault(session, {})
        self._loaded: set[tuple] = set()  # the graphs these calls' constants are copied into

    def _run_part(self, start: int, stop: int, feeds: Mapping[str, np.ndarray],
                  cancel: CancelToken) -> np.ndarray:
        values = {**{name: value[start:stop] for name, value in self.constants.items()},
                  **{name: value[start:stop] for name, value in feeds.items()}}
        # Parts of one batch may share a shape but not their constants: a graph each.
        key = (start, *sorted((name, value.shape, value.dtype.str)
                              for name, value in values.items()))
        graph = self._graphs.get(key)
        if graph is None:
            graph = self._new_graph(key, values)
        loaded = self.constants if key not in self._loaded else {}
        for name in [*loaded, *feeds]:
            graph.inputs[name].update_inplace(np.ascontiguousarray(values[name]))
        self._loaded.add(key)
        if graph.output is None:
            # A shape's first run has no graph: onnxruntime allocates its output, whose
            # shape and type make the fixed buffer every later run writes.
            graph.binding.bind_output(self.output, self.device)
            self._run(graph.binding, cancel, NO_GRAPH)
            (result,) = graph.binding.copy_outputs_to_cpu()
            graph.output = ort.OrtValue.ortvalue_from_shape_and_type(
                result.shape, result.dtype, self.device, 0)
            graph.binding.bind_ortvalue_output(self.output, graph.output)
            return result
        cancel.raise_if_cancelled()
        try:
            self.session.ort_session.run_with_iobinding(graph.binding,
                                                        _run_options(graph.graph_id))
        except ORT_ERRORS as error:
            _graphs.pop(self.session, None)  # their buffers go with the graphs
            _graphs_failed.add(self.session)
            raise CudaGraphFailed(
                f"The GPU could not run {_label(self.session)} as a CUDA graph "
                f"({ort_detail(error)}); it runs without CUDA graphs from now on.") from error
        cancel.raise_if_cancelled()
        return graph.binding.copy_outputs_to_cpu()[0]

    def _new_graph(self, key: tuple, values: Mapping[str, np.ndarray]) -> _Graph:
        binding = self.session.ort_session.io_binding()
        inputs = {}
        for name, value in values.items():
            inputs[name] = ort.OrtValue.ortvalue_from_shape_and_type(
                value.shape, value.dtype, self.device, 0)
            binding.bind_ortvalue_input(name, inputs[name])
        graph = _Graph(len(self._graphs) + 1, binding, inputs)
        self._graphs[key] = graph
        return graph


def _run_options(graph: int | None) -> ort.RunOptions:
    # The log level is left to the session's (quiet unless EASEL_ORT_LOG_SEVERITY says).
    run_options = ort.RunOptions()
    if graph is not None:
        run_options.add_run_config_entry(GRAPH_ID_OPTION, str(graph))
    return run_options


def _batch(feeds: Mapping[str, np.ndarray]) -> int:
    return len(next(iter(feeds.values())))


def _parts(batch: int, most: int | None) -> list[tuple[int, int]]:
    size = most or batch
    return [(start, min(batch, start + size)) for start in range(0, batch, size)]


def _label(session: Session) -> str:
    # "unet/model.onnx" tells the user which part of the model folder.
    return f"{session.path.parent.name}/{session.path.name}"
