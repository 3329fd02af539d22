"""How long the GUI event loop stalls while a picture is made and while a big gallery scrolls.

    QT_QPA_PLATFORM=offscreen python -m tests.benchmarks.gui_stall [--images 100000]
        [--library /tmp/easel-gui-bench] [--jobs 6] [--scroll-s 20]

A 5 ms probe timer runs on the GUI thread; every gap between its ticks beyond 5 ms is time
the event loop could not answer (a stall). Two runs, each printing the longest stall and the
99th percentile of gaps:

1. generation: ``--jobs`` pictures from the built-in starter model (real engine, CPU), queued
   at once, with live previews, saving into the library and refreshing the gallery;
2. gallery: a library of ``--images`` pictures (built once with tests.benchmarks.library_speed and
   reused), scrolled smoothly down for half the time and dragged to random places for the
   rest, with every thumbnail made on the worker's pool as rows come into view.

The target (issue 6) is under 50 ms on a 2-core machine. A script, not a timed test.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from PySide6.QtCore import QElapsedTimer, Qt, QTimer
from PySide6.QtWidgets import QApplication

from desktop.app.generation import EnginePipelines
from desktop.app.launch import settle_memory
from desktop.app.viewmodels.studio import Services, Studio
from desktop.app.widgets.main_window import MainWindow
from desktop.library import Library
from desktop.model_store import ModelStore
from desktop.settings import Settings
from engine.runtime import RuntimeOptions

ROOT = Path(__file__).resolve().parents[2]
PROBE_MS = 5
TARGET_MS = 50


class StallProbe:
    """Records the gaps between ticks of a fast timer on the GUI thread."""

    def __init__(self) -> None:
        self.gaps: list[float] = []
        self.times: list[float] = []  # seconds since start, at the end of each gap
        self._clock = QElapsedTimer()
        self._timer = QTimer()
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._timer.setInterval(PROBE_MS)
        self._timer.timeout.connect(self._tick)
        self._last = 0.0

    def start(self) -> None:
        self.gaps.clear()
        self.times.clear()
        self._clock.start()
        self._last = 0.0
        self._timer.start()

    def stop(self) -> None:
        # The time since the last tick counts too: a GUI thread blocked until the run's end
        # would otherwise never see the tick that ends its stall.
        self._tick()
        self._timer.stop()

    def _tick(self) -> None:
        now = self._clock.nsecsElapsed() / 1e6
        self.gaps.append(now - self._last)
        self.times.append(now / 1000)
        if now - self._last > TARGET_MS and os.environ.get("EASEL_STALLS"):
            print(f"  stall {now - self._last:.0f} ms at {now / 1000:.2f} s", flush=True)
        self._last = now

    def summary(self, name: str, since_s: float = 0.0, until_s: float = float("inf")) -> str:
        gaps = sorted(gap for gap, at in zip(self.gaps[1:], self.times[1:], strict=True)
                      if since_s <= at < until_s) or [0.0]
        worst = gaps[-1] - PROBE_MS
        p99 = gaps[int(0.99 * (len(gaps) - 1))] - PROBE_MS
        verdict = "under" if worst < TARGET_MS else "OVER"
        return (f"{name}: longest stall {worst:.1f} ms ({verdict} the {TARGET_MS} ms target), "
                f"p99 {p99:.1f} ms, median gap {statistics.median(gaps):.1f} ms, "
                f"{len(gaps)} ticks")


def run_until(app: QApplication, done, limit_s: float) -> None:
    started = time.monotonic()
    while not done() and time.monotonic() - started < limit_s:
        app.processEvents()
        time.sleep(0.001)


def window_for(library: Library, store: ModelStore) -> MainWindow:
    pipelines = EnginePipelines(store, RuntimeOptions(providers=("cpu",)))
    studio = Studio(Services(library, store, pipelines, Settings()))
    window = MainWindow(studio)
    window.resize(1400, 900)
    window.show()
    settle_memory()  # as the app does once its window is up
    return window


def measure_generation(app: QApplication, jobs: int) -> str:
    with tempfile.TemporaryDirectory() as folder:
        library = Library.open(Path(folder) / "home")
        store = ModelStore(Path(folder) / "models", ROOT / "resources" / "models")
        window = window_for(library, store)
        studio = window.studio
        studio.dismiss_welcome()
        studio.prompt.update(prompt="a big dog in the centre, on a yellow background")
        studio.generate()  # a first run loads the model; not what we measure
        run_until(app, lambda: studio.jobs.rowCount() == 0, 120)
        probe = StallProbe()
        probe.start()
        started = time.monotonic()
        for _ in range(jobs):
            studio.generate()
        run_until(app, lambda: studio.jobs.rowCount() == 0, 300)
        seconds = time.monotonic() - started
        probe.stop()
        window.close()
        library.close()
    return probe.summary(f"generation ({jobs} starter pictures, {seconds:.1f} s)")


def measure_gallery(app: QApplication, root: Path, images: int, scroll_s: float) -> str:
    if not (root / "library").is_dir():
        from tests.benchmarks.library_speed import build

        print(f"building a library of {images:,} pictures in {root} (once)…", flush=True)
        build(root, images)
    library = Library.open(root, backup_interval_s=10**9)
    store = ModelStore(root / "models", ROOT / "resources" / "models")
    window = window_for(library, store)
    window.studio.dismiss_welcome()
    grid = window.gallery.grid
    bar = grid.verticalScrollBar()
    run_until(app, lambda: bar.maximum() > 0, 30)
    run_until(app, lambda: False, 1.0)  # the window's first layout and paint are not scrolling
    total = window.studio.gallery.rowCount()
    rng = random.Random(1)
    probe = StallProbe()
    step = grid.gridSize().height() // 4  # smooth scrolling: a quarter row per frame

    def scroll() -> None:
        elapsed = time.monotonic() - started
        if elapsed < scroll_s / 2:
            bar.setValue(bar.value() + step)
        else:  # the scroll bar dragged to random places
            bar.setValue(rng.randrange(bar.maximum() + 1))

    mover = QTimer()
    mover.setInterval(16)
    mover.timeout.connect(scroll)
    probe.start()
    started = time.monotonic()
    mover.start()
    run_until(app, lambda: False, scroll_s)
    mover.stop()
    probe.stop()
    window.close()
    library.close()
    half = scroll_s / 2
    return "\n".join((
        probe.summary(f"gallery, smooth scrolling ({total:,} pictures, {half:.0f} s)",
                      until_s=half),
        probe.summary(f"gallery, scroll bar dragged to random places ({half:.0f} s)",
                      since_s=half)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--library", type=Path, default=Path("/tmp/easel-gui-bench"))
    parser.add_argument("--jobs", type=int, default=6)
    parser.add_argument("--scroll-s", type=float, default=20.0)
    parser.add_argument("--only", choices=("generation", "gallery"))
    arguments = parser.parse_args()
    os.environ.setdefault("EASEL_HOME", tempfile.mkdtemp(prefix="easel-gui-bench-home-"))
    app = QApplication(sys.argv[:1])
    print(f"platform {app.platformName()}, {os.cpu_count()} cores", flush=True)
    if arguments.only in (None, "generation"):
        print(measure_generation(app, arguments.jobs), flush=True)
    if arguments.only in (None, "gallery"):
        print(measure_gallery(app, arguments.library, arguments.images, arguments.scroll_s),
              flush=True)


if __name__ == "__main__":
    main()
