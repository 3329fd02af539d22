"""The layer between the pipelines and ONNX Runtime: providers, sessions, cancellation.

Pipelines open models only through ``get_session`` and run them through ``Session.run``;
everything onnxruntime raises comes out as an ``engine.errors`` error with one sentence.
"""

from engine.runtime.cancel import CancelToken
from engine.runtime.device import DeviceReport
from engine.runtime.prepare import (
    Graph,
    Preparation,
    PrepareFailed,
    needs_preparing,
    prepare_graphs,
)
from engine.runtime.providers import available_providers, resolve_providers
from engine.runtime.sessions import (
    PRECISIONS,
    InitializerOverrides,
    RuntimeOptions,
    Session,
    build_session_options,
    clear_sessions,
    get_session,
    is_loaded,
    open_session,
    release_sessions,
)

__all__ = [
    "PRECISIONS",
    "CancelToken",
    "DeviceReport",
    "Graph",
    "InitializerOverrides",
    "Preparation",
    "PrepareFailed",
    "RuntimeOptions",
    "Session",
    "available_providers",
    "build_session_options",
    "clear_sessions",
    "get_session",
    "is_loaded",
    "needs_preparing",
    "open_session",
    "prepare_graphs",
    "release_sessions",
    "resolve_providers",
]
