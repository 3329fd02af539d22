"""The Qt binding keeps Python's reference counts right.

PySide6 6.12.0 on Python 3.11 dropped a reference to None on every call that returns nothing
(``action.setEnabled(True)``), so after enough calls the interpreter aborted with "Fatal
Python error: none_dealloc" — in the app, at exit after a long session; in the test suite,
after the GUI tests. On 3.12+ None and the booleans are immortal and the bug is silent. These
checks fail on such a release, so pyproject's PySide6 range can only be widened after they pass.
"""

from __future__ import annotations

import sys

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QWidget

CALLS = 500


def _references() -> tuple[int, int, int]:
    return sys.getrefcount(None), sys.getrefcount(True), sys.getrefcount(False)


def _drift(call) -> tuple[int, ...]:  # noqa: ANN001 (any callable)
    before = _references()
    for _ in range(CALLS):
        call()
    return tuple(after - start for start, after in zip(before, _references(), strict=True))


class _Sender(QObject):
    flag = Signal(bool)


def test_calls_that_return_nothing_keep_none_alive(qapp):
    widget = QWidget()
    action = QAction("Generate", widget)
    for call in (lambda: action.setEnabled(True), lambda: action.setText("Generate"),
                 lambda: widget.setVisible(False)):
        none, true, false = _drift(call)
        # A few references may come and go with Python's own caches; a leak is one per call.
        assert abs(none) < CALLS // 10 and abs(true) < CALLS // 10 and abs(false) < CALLS // 10


def test_bool_results_and_signals_keep_true_and_false_alive(qapp):
    action = QAction("Mask tool")
    action.setCheckable(True)
    sender = _Sender()
    received = [0]  # a count: keeping the values would hold references of its own

    def count(value: bool) -> None:
        received[0] += value

    sender.flag.connect(count)
    for call in (action.toggle, action.isChecked, lambda: sender.flag.emit(True)):
        assert all(abs(change) < CALLS // 10 for change in _drift(call))
    assert received[0] == CALLS
