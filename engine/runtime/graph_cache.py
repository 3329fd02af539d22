"""Graphs onnxruntime has already optimised, kept on disk so the next load skips that work.

One entry per model, provider list and onnxruntime version:
``<cache>/onnxruntime-<version>/<providers>/<folder>-<stem>-<digest>/model.onnx`` with its
weights in ``model.onnx.data`` beside it and a ``source.json`` stamp saying which model file,
which file sizes and times, and which machine it was made from; a stale stamp means rebuild.

Weights always go to the external data file, so graphs over protobuf's 2 GB limit (an SDXL
UNet) are cached like any other. The price is disk: the cache holds a second copy of the
weights per provider, which is why the app owns this folder and can offer to empty it.

The graph is saved at the session's full optimisation level, which includes CPU layout
changes made for this processor's vector width; hence the machine in the stamp, and a cached
graph is loaded with optimisations off, as onnxruntime's "offline mode" documents.

The fp16 copies Easel makes of a model for GPU providers (engine.runtime.fp16) live beside
the optimised graphs, in entries of the same shape (``converted_graph``); onnxruntime then
optimises such a copy like any model, into an entry of its own.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import platform
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

GRAPH_FILE = "model.onnx"
DATA_FILE = "model.onnx.data"
STAMP_FILE = "source.json"

# TensorRT, DirectML and CoreML compile parts of the graph into their own nodes, which
# onnxruntime cannot write back to a file; TensorRT keeps its own engine cache instead.
CACHEABLE_PROVIDERS = frozenset({"cuda", "cpu"})

# Names exporters give a model's external weights: torch and our layout (model.onnx.data),
# optimum (model.onnx_data).
_EXTERNAL_DATA_SUFFIXES = (".onnx.data", ".onnx_data")

log = logging.getLogger(__name__)


def file_identity(model: Path) -> tuple[tuple[str, int, int], ...]:
    """Name, size and modification time of a model file and its external weights, if any.

    Raises ``FileNotFoundError`` when the model file is missing.
    """
    files = [model] + [
        model.with_name(model.stem + suffix)
        for suffix in _EXTERNAL_DATA_SUFFIXES
        if model.with_name(model.stem + suffix).exists()
    ]
    identity = []
    for path in files:
        stat = path.stat()
        identity.append((path.name, stat.st_size, stat.st_mtime_ns))
    return tuple(identity)


@dataclass(frozen=True)
class CachedGraph:
    """The cache entry for one model file on one provider list."""

    folder: Path
    stamp: dict

    @property
    def model(self) -> Path:
        return self.folder / GRAPH_FILE

    def is_fresh(self) -> bool:
        stamp = self._stored_stamp()
        stamp.pop("ran_on", None)
        return bool(stamp) and stamp == self.stamp and self.model.is_file()

    def ran_on(self) -> list[str]:
        """The providers that actually ran when the graph was optimised.

        Usually the providers asked for; on a machine whose GPU provider cannot start (the
        common onnxruntime-gpu install without CUDA), only the CPU. The graph was optimised
        for those, and is only reused while the same ones start.
        """
        return list(self._stored_stamp().get("ran_on", self.stamp["providers"]))

    def _stored_stamp(self) -> dict:
        try:
            stamp = json.loads((self.folder / STAMP_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return stamp if isinstance(stamp, dict) else {}

    def stage(self) -> Path | None:
        """A new private folder for onnxruntime to write into; ``None`` if it cannot be made.

        onnxruntime writes the graph in place, so it writes into a staging folder that is
        renamed into place only once the session exists: a crash mid-write never leaves a
        half-written graph where the next load would find it.
        """
        staging = self.folder.parent / f".staging-{uuid.uuid4().hex}"
        try:
            staging.mkdir(parents=True)
        except OSError as error:
            log.warning("Not caching the optimised graph: %s", error)
            return None
        return staging

    def commit(self, staging: Path, ran_on: Sequence[str]) -> None:
        if not (staging / GRAPH_FILE).is_file():
            self.abandon(staging)
            return
        stamp = {**self.stamp, "ran_on": list(ran_on)}
        try:
            (staging / STAMP_FILE).write_text(json.dumps(stamp, indent=1), encoding="utf-8")
            self.discard()
            staging.replace(self.folder)
        except OSError as error:
            # Another process may have committed the same entry first; theirs is as good.
            log.warning("Could not store the optimised graph in %s: %s", self.folder, error)
            self.abandon(staging)

    def abandon(self, staging: Path) -> None:
        shutil.rmtree(staging, ignore_errors=True)
        with contextlib.suppress(OSError):
            staging.parent.rmdir()  # only if no other entry lives there

    def discard(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def cached_graph(cache: Path, model: Path, providers: Sequence[str]) -> CachedGraph | None:
    """The entry for ``model`` run on ``providers`` (short names), or ``None`` if not cacheable."""
    if not set(providers) <= CACHEABLE_PROVIDERS:
        return None
    model = model.resolve()
    folder = _entry_folder(cache, model, providers)
    stamp = {
        "source": str(model),
        "files": [list(entry) for entry in file_identity(model)],
        "onnxruntime": ort.__version__,
        "providers": list(providers),
        "machine": machine_fingerprint(),
    }
    return CachedGraph(folder, stamp)


def _entry_folder(cache: Path, model: Path, providers: Sequence[str], suffix: str = "") -> Path:
    """Where ``model``'s entry for ``providers`` lives. Folder and stem keep the cache readable
    ("unet-model-3f2a…", "vae_decoder-model-9b1c…"); the digest of the whole path tells two
    models apart."""
    digest = hashlib.sha256(str(model).encode()).hexdigest()[:16]
    name = f"{model.parent.name}-{model.stem}-{digest}{suffix}"
    return Path(cache) / f"onnxruntime-{ort.__version__}" / "+".join(providers) / name


def converted_graph(cache: Path, model: Path, providers: Sequence[str], kind: str,
                    converter: str) -> CachedGraph:
    """The entry for a copy of ``model`` that Easel converts itself for ``providers`` (the fp16
    copy, engine.runtime.fp16), beside the optimised graphs:
    ``<cache>/onnxruntime-<version>/<providers>/<folder>-<stem>-<digest>-<kind>/``. Any
    provider list has one (TensorRT's too: the copy is Easel's, not onnxruntime's). The stamp
    names the model's files and the ``converter`` version, so the copy goes stale when either
    changes; no machine in it, as the conversion does not depend on the processor."""
    model = model.resolve()
    folder = _entry_folder(cache, model, providers, f"-{kind}")
    stamp = {
        "source": str(model),
        "files": [list(entry) for entry in file_identity(model)],
        "converter": converter,
        "providers": list(providers),
    }
    return CachedGraph(folder, stamp)


@functools.cache
def machine_fingerprint() -> str:
    """Changes when the processor does, since CPU layout optimisations depend on it."""
    parts = [platform.machine(), platform.processor()]
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith(("model name", "flags", "Features")):
                    parts.append(line.strip())
                if line.strip() == "":
                    break  # the first processor says it all
    except OSError:
        pass  # not Linux: machine and processor names are what there is
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]
