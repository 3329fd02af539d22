"""A cancel token the GUI sets and the engine checks, also from inside a long ONNX call."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from engine.errors import Cancelled


class CancelToken:
    """Set once from any thread; checked between steps and watched during a run.

    A running ONNX call cannot poll a Python flag, so ``Session.run`` registers a hook with
    ``on_cancel`` that sets ``RunOptions.terminate``; onnxruntime checks that between nodes.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cancelled = False
        self._hooks: list[Callable[[], None]] = []

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def cancel(self) -> None:
        """Ask the job to stop; later calls do nothing."""
        with self._lock:
            if self._cancelled:
                return
            self._cancelled = True
            hooks = list(self._hooks)
        # Outside the lock, so a hook may look at the token without deadlocking.
        for hook in hooks:
            hook()

    def raise_if_cancelled(self) -> None:
        if self._cancelled:
            raise Cancelled("Cancelled.")

    @contextmanager
    def on_cancel(self, hook: Callable[[], None]) -> Iterator[None]:
        """Call ``hook`` if the token is cancelled while the ``with`` block runs.

        Registering and checking happen under one lock, so a cancel that lands just before the
        block still reaches the hook (it is then called at once).
        """
        with self._lock:
            already = self._cancelled
            if not already:
                self._hooks.append(hook)
        if already:
            hook()
        try:
            yield
        finally:
            with self._lock:
                if hook in self._hooks:
                    self._hooks.remove(hook)
