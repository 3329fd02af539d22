"""Running a batch's work on a Ray cluster (``easel batch FILE --ray ADDRESS|auto``).

Each work is one Ray task running ``desktop.batch.work.make_pictures`` on a worker; the
pictures come back to this process, which alone writes the library (desktop.batch.runner).
Ray is the optional ``easel[cluster]`` extra, so it is imported here and nowhere else, and
only when a batch asks for a cluster.

What a task asks of the cluster (``_task_shape``):
- On a cluster with GPUs, one GPU a task (``num_gpus=1``): one session per GPU, and a model
  that fills one GPU never shares it. CPU-only nodes of such a cluster get no work.
- On CPU nodes, a task takes a share of a node's cores and its ONNX Runtime sessions run that
  many threads, so the tasks on a node never oversubscribe its cores. The share is the
  smallest worker node's core count (or the user's ``--threads`` when smaller): one model
  copy per node where nodes are alike, since a model in memory per core would not fit.

A worker process keeps its model loaded between tasks (``_worker_models``: Ray reuses
worker processes), so a batch loads each model once per worker, as the local batch does.
A worker killed mid-task (out of memory, a node lost) is Ray's system failure: the task runs
again elsewhere, up to ``RETRIES`` times. A job failing for its own reasons is not retried:
``make_pictures`` returns it as ``Done.error``, and any other exception becomes one too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from desktop.batch.jobs import Job
from desktop.batch.work import Done, ModelCache, Work, make_pictures
from engine.description import DESCRIPTION_FILE
from engine.errors import BadRequest
from engine.request import ProgressCallback
from engine.runtime import CancelToken, RuntimeOptions

RAY_MISSING = ("Running a batch on a Ray cluster needs Ray, which is not installed: "
               "pip install 'easel[cluster]'.")
# The installed app (a frozen bundle) has no pip and leaves Ray out (79 MB, a cluster's tool).
RAY_MISSING_FROZEN = ("Running a batch on a Ray cluster needs Ray, which the installed app "
                      "does not include: install Easel with pip install 'easel[cluster]' on "
                      "this computer and the workers, and run its easel command.")
RETRIES = 3  # a task whose worker died runs again this many times
CONNECT_TIMEOUT_S = 3.0  # the TCP check: ray.init itself would keep trying for long
GCS_TRIES = 5  # ray.init's tries, a second apart (Ray's default waits 20 s on a refusal)
CHECK_TIMEOUT_S = 120.0  # a node's first worker imports Easel and ONNX Runtime
IN_FLIGHT_PER_SLOT = 2  # enough to keep every worker busy while results come back


class ClusterUnavailable(BadRequest):
    """The cluster cannot run this batch: no Ray, no cluster, models it cannot read."""


@dataclass(frozen=True)
class TaskShape:
    """What each task asks of the cluster, and how many can run at once."""

    num_cpus: float
    num_gpus: float
    slots: int
    runtime: RuntimeOptions  # as the workers run: cpu_threads set to the CPU share


def connect(address: str, runtime: RuntimeOptions, jobs: list[Job],
            models_folder: Path | None) -> RayExecutor:
    """Connect to the Ray cluster at ``address`` (host:port, or ``auto`` for one started on
    this computer) and check that its workers can read every model of ``jobs`` (from
    ``models_folder / job.model`` when given) before any work; ClusterUnavailable in one
    sentence otherwise, with nothing started."""
    ray = _import_ray()
    bootstrap = _bootstrap_address(ray, address)
    _check_reachable(bootstrap)
    _init(ray, bootstrap)
    try:
        nodes = _working_nodes(ray, runtime)
        if not nodes:
            raise ClusterUnavailable(f"The Ray cluster at {bootstrap} has no worker node with "
                                     "CPUs or GPUs to run jobs on.")
        shape = _task_shape(nodes, runtime)
        places = Places(models_folder)
        _check_model_folders(ray, bootstrap, nodes,
                             sorted({str(places.model_folder(job.model, job.model_folder))
                                     for job in jobs}))
        return RayExecutor(ray, bootstrap, nodes, shape, places)
    except BaseException:
        ray.shutdown()
        raise


class RayExecutor:
    """Runs works as Ray tasks, a bounded number in flight, and yields each ``Done`` as it
    finishes (desktop.batch.runner.Executor)."""

    def __init__(self, ray: Any, address: str, nodes: Sequence[dict], shape: TaskShape,
                 places: Places) -> None:
        self._ray = ray
        self.shape = shape
        self._places = places
        self._task = ray.remote(_run_work).options(
            num_cpus=shape.num_cpus, num_gpus=shape.num_gpus, max_retries=RETRIES,
            retry_exceptions=False)  # a job's own failure is not worth a retry
        self.in_flight = max(1, shape.slots * IN_FLIGHT_PER_SLOT)
        cpus = sum(int(node["Resources"].get("CPU", 0)) for node in nodes)
        gpus = sum(int(node["Resources"].get("GPU", 0)) for node in nodes)
        sizes = [_count(len(nodes), "node"), _count(cpus, "CPU")]
        if gpus:
            sizes.append(_count(gpus, "GPU"))
        self.name = f"the Ray cluster at {address} ({', '.join(sizes)})"

    def run(self, works: Iterable[Work], cancel: CancelToken,
            on_progress: ProgressCallback | None = None) -> Iterator[Done]:
        """Per-step progress stays on the workers: the batch reports after each job."""
        pending: dict[Any, Work] = {}
        waiting = iter(works)
        more = True
        try:
            while True:
                cancel.raise_if_cancelled()
                while more and len(pending) < self.in_flight:
                    work = next(waiting, None)
                    if work is None:
                        more = False
                    else:
                        pending[self._task.remote(self._places.on_cluster(work),
                                                  self.shape.runtime)] = work
                if not pending:
                    return
                # A short wait, so that Ctrl+C is seen within it; a result ends it at once.
                ready, _ = self._ray.wait(list(pending), num_returns=1, timeout=0.2)
                for ref in ready:
                    yield self._done(ref, pending.pop(ref))
        finally:
            for ref in pending:  # cancelled, or the caller stopped: none left running
                self._ray.cancel(ref)

    def _done(self, ref: Any, work: Work) -> Done:
        try:
            done = self._ray.get(ref)
        except self._ray.exceptions.RayError as error:
            # Retries spent (a worker killed each time, a node lost): say so, with Ray's
            # own first line; the worker logs on the cluster have the rest.
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
            return Done(work, error=f"The Ray worker making it stopped, {RETRIES + 1} times "
                                    f"({reason}).")
        return replace(done, work=work)  # the work as the runner made it (this computer's paths)

    def close(self) -> None:
        """Disconnect this process from the cluster; the cluster itself keeps running."""
        self._ray.shutdown()


class Places:
    """Where the workers read models: this computer's folders, or with ``--ray-models`` the
    same names under the folder the workers see (LoRA and embedding files too)."""

    def __init__(self, models_folder: Path | None) -> None:
        self.models_folder = models_folder
        self._local_root: Path | None = None
        if models_folder is not None:
            from desktop import paths

            self._local_root = paths.models_dir()

    def model_folder(self, model: str, folder: Path) -> Path:
        return folder if self.models_folder is None else self.models_folder / model

    def on_cluster(self, work: Work) -> Work:
        if self.models_folder is None:
            return work
        request = work.request
        moved: dict[str, Any] = {}
        loras = getattr(request, "loras", ())
        if loras:
            moved["loras"] = tuple((self._file(path), weight) for path, weight in loras)
        embeddings = getattr(request, "embeddings", ())
        if embeddings:
            moved["embeddings"] = tuple((name, self._file(path)) for name, path in embeddings)
        return replace(work, model_folder=self.model_folder(work.model, work.model_folder),
                       request=replace(request, **moved) if moved else request)

    def _file(self, path: str) -> str:
        assert self.models_folder is not None and self._local_root is not None
        try:
            inside = Path(path).relative_to(self._local_root)
        except ValueError:
            return path  # not one of this computer's installed models: as given
        return str(self.models_folder / inside)


# --- connecting -------------------------------------------------------------------------------

def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        frozen = getattr(sys, "frozen", False)
        raise ClusterUnavailable(RAY_MISSING_FROZEN if frozen else RAY_MISSING) from None
    return ray


def _bootstrap_address(ray: Any, address: str) -> str:
    """host:port of the cluster; ``auto`` is the one ``ray start`` last started here (or
    RAY_ADDRESS), as Ray itself finds it."""
    if address != "auto":
        return address
    try:
        from ray._private.services import canonicalize_bootstrap_address

        found = canonicalize_bootstrap_address("auto")
    except (ConnectionError, ValueError):
        found = None
    if not found:
        raise ClusterUnavailable("No Ray cluster is running on this computer (auto finds one "
                                 "started here with ray start); start one or give its "
                                 "address as host:port.")
    return found


def _check_reachable(address: str) -> None:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ClusterUnavailable(f"'{address}' is not a Ray cluster address; give it as "
                                 "host:port (the head node's, port 6379 by default) or auto.")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), CONNECT_TIMEOUT_S) as link:
            speaks_grpc = _answers_http2(link)
    except OSError as error:
        reason = error.strerror or type(error).__name__.lower()
        raise ClusterUnavailable(f"No Ray cluster answers at {address} ({reason}); check the "
                                 "address and that the cluster is running.") from None
    if not speaks_grpc:
        raise ClusterUnavailable(f"Something answers at {address}, but not a Ray cluster's "
                                 "head node; check the port (6379 by default).")


# An HTTP/2 client's first words: the preface, then an empty SETTINGS frame (RFC 9113, 3.4).
_HTTP2_HELLO = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
_SETTINGS = 4


def _answers_http2(link: socket.socket) -> bool:
    """Whether the server speaks HTTP/2, as a Ray head's gRPC server does: it answers the
    preface with its own SETTINGS frame. Anything else there (a web server, another program)
    would keep ray.init trying for 40 s a try, 200 s in all. A cluster with TLS (RAY_USE_TLS)
    answers only after a handshake, so it is not asked."""
    if os.environ.get("RAY_USE_TLS", "").lower() in ("1", "true"):
        return True
    link.settimeout(CONNECT_TIMEOUT_S)
    try:
        link.sendall(_HTTP2_HELLO)
        header = b""
        while len(header) < 9:
            chunk = link.recv(9 - len(header))
            if not chunk:
                return False
            header += chunk
    except OSError:
        return False
    return header[3] == _SETTINGS


def _init(ray: Any, address: str) -> None:
    # Ray's log lines stay in the cluster's log files: the batch reports each job itself.
    os.environ.setdefault("RAY_gcs_server_port_wait_time_s", str(GCS_TRIES))
    _errors_to_stderr()
    try:
        with _native_messages_held():
            ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR,
                     configure_logging=True)
    except Exception as error:  # Ray raises ConnectionError, RuntimeError, its own errors
        if "auth" in _chain_text(error).lower():
            raise ClusterUnavailable(
                f"The Ray cluster at {address} asks for its token: set RAY_AUTH_MODE=token "
                "and give the token in RAY_AUTH_TOKEN or ~/.ray/auth_token.") from None
        raise ClusterUnavailable(f"Could not connect to the Ray cluster at {address} "
                                 f"({type(error).__name__}); is it a Ray head node of the "
                                 f"same Ray version ({ray.__version__})?") from None


@contextlib.contextmanager
def _native_messages_held() -> Iterator[None]:
    """Hold what Ray's C++ core writes on stderr while it connects (a line a second of
    "Failed to get cluster ID from GCS server" for each try, seen with a server that is not a
    Ray head): when connecting fails, the one sentence says it all and they are dropped; when
    it works, they are written out after all. The stream is the process's own file
    descriptor 2, which no Ray setting quiets."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        held.seek(0)  # reached only when connecting worked
        sys.stderr.write(held.read().decode(errors="replace"))


def _errors_to_stderr() -> None:
    """Ray prints what goes wrong on the cluster (a worker killed, its task retried) on
    stdout, where ``easel batch`` prints only picture paths for scripts to read; such news
    belongs on stderr. Ray has no setting for it: its printer is wrapped (ray==2.60 pinned)."""
    from ray._private import worker

    printer = getattr(worker, "print_to_stdstream", None)
    if printer is None or getattr(printer, "easel_to_stderr", False):
        return

    def to_stderr(data: dict, ignore_prefix: bool) -> None:
        printer({**data, "is_err": True}, ignore_prefix)

    to_stderr.easel_to_stderr = True  # type: ignore[attr-defined]
    worker.print_to_stdstream = to_stderr


def _chain_text(error: BaseException | None) -> str:
    text = []
    while error is not None:
        text.append(f"{type(error).__name__}: {error}")
        error = error.__cause__ or error.__context__
    return "\n".join(text)


def _working_nodes(ray: Any, runtime: RuntimeOptions) -> list[dict]:
    """The alive nodes that can run work: with GPUs when the cluster has any and the user
    did not ask for the CPU alone, else with CPUs."""
    alive = [node for node in ray.nodes() if node.get("Alive")]
    with_gpus = [node for node in alive if node["Resources"].get("GPU", 0) >= 1]
    if with_gpus and runtime.providers != ("cpu",):
        return with_gpus
    return [node for node in alive if node["Resources"].get("CPU", 0) >= 1]


def _task_shape(nodes: Sequence[dict], runtime: RuntimeOptions) -> TaskShape:
    gpus = [int(node["Resources"].get("GPU", 0)) for node in nodes]
    if runtime.providers != ("cpu",) and all(gpus):  # the GPU nodes of _working_nodes
        return TaskShape(num_cpus=1, num_gpus=1, slots=sum(gpus), runtime=runtime)
    cores = [int(node["Resources"]["CPU"]) for node in nodes]
    share = min(cores)
    if runtime.cpu_threads:
        share = min(share, runtime.cpu_threads)
    return TaskShape(num_cpus=share, num_gpus=0, slots=sum(core // share for core in cores),
                     runtime=replace(runtime, cpu_threads=share))


def _check_model_folders(ray: Any, address: str, nodes: Sequence[dict],
                         folders: list[str]) -> None:
    """One small task pinned to each working node: can it read every model folder?"""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    check = ray.remote(_unreadable_folders)
    refs = {check.options(num_cpus=0, max_retries=0, scheduling_strategy=(
        NodeAffinitySchedulingStrategy(node["NodeID"], soft=False))).remote(folders): node
        for node in nodes}
    try:
        answers = ray.get(list(refs), timeout=CHECK_TIMEOUT_S)
    except ray.exceptions.GetTimeoutError:
        for ref in refs:
            ray.cancel(ref)
        raise ClusterUnavailable(f"The Ray cluster at {address} did not run a first task "
                                 f"within {CHECK_TIMEOUT_S:.0f} s; look at its workers' "
                                 "logs (ray status).") from None
    except ray.exceptions.RayError as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[-1]
        raise ClusterUnavailable(f"Easel cannot run on the workers of the Ray cluster at "
                                 f"{address} ({reason}); install the same Easel there.") from None
    for node, unreadable in zip(refs.values(), answers, strict=True):
        if unreadable:
            raise ClusterUnavailable(
                f"The Ray worker on {node['NodeManagerAddress']} cannot read the model "
                f"folder {unreadable[0]} (or its {DESCRIPTION_FILE}); share the models folder "
                "with the workers and give it as they see it with --ray-models.")


def _count(number: int, word: str) -> str:
    return f"{number} {word}" if number == 1 else f"{number} {word}s"


# --- on the workers ---------------------------------------------------------------------------

_worker_models: dict[RuntimeOptions, ModelCache] = {}  # one worker process's loaded model


def _unreadable_folders(folders: list[str]) -> list[str]:
    return [folder for folder in folders
            if not os.access(Path(folder) / DESCRIPTION_FILE, os.R_OK)]


def _run_work(work: Work, runtime: RuntimeOptions) -> Done:
    """One Ray task: make a work's pictures with this worker's loaded model."""
    models = _worker_models.get(runtime)
    if models is None:
        for old in _worker_models.values():
            old.close()  # another batch's settings: one model in memory at a time
        _worker_models.clear()
        models = _worker_models[runtime] = ModelCache(_usable_here(runtime))
    node = socket.gethostname()
    try:
        done = make_pictures(work, models, None, CancelToken(), time.monotonic)
    except Exception as error:  # not a job failure make_pictures knows: still one sentence
        return Done(work, error=f"It failed on the Ray node {node} "
                                f"({type(error).__name__}: {error}).")
    return replace(done, device=f"{done.device or 'unknown device'} on Ray node {node}")


def _usable_here(runtime: RuntimeOptions) -> RuntimeOptions:
    """The submitting computer's optimised-graph cache folder, where this node can write it
    (a node of the same machine, or a shared home); otherwise no cache."""
    cache = runtime.optimized_cache
    if cache is None:
        return runtime
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError:
        return replace(runtime, optimized_cache=None)
    return runtime if os.access(cache, os.W_OK) else replace(runtime, optimized_cache=None)
