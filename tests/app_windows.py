"""The desktop window for GUI tests: a studio over a fresh library and model store, shown,
then closed with a check that no worker thread, pool thread or timer outlives it."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from PySide6.QtCore import QTimer

from desktop.app.generation import EnginePipelines, Pipelines
from desktop.app.viewmodels.studio import Services, Studio
from desktop.app.widgets.main_window import MainWindow
from desktop.library import Library
from desktop.model_store import ModelStore
from desktop.settings import Settings
from engine.runtime import RuntimeOptions

BUILT_IN = Path(__file__).resolve().parent.parent / "resources" / "models"


def real_engine(store: ModelStore) -> EnginePipelines:
    """The engine itself, on the CPU (the built-in starter model is always installed)."""
    return EnginePipelines(store, RuntimeOptions(providers=("cpu",)))


@contextmanager
def studio_window(qtbot, home: Path,  # noqa: ANN001 (pytest-qt's fixture)
                  pipelines: Callable[[ModelStore], Pipelines] | Pipelines,
                  library: Library | None = None) -> Iterator[MainWindow]:
    """A shown main window over ``home``; ``pipelines`` is an engine or makes one from the
    store. A library passed in stays open (its fixture closes it)."""
    own_library = library is None
    library = library or Library.open(home / "home")
    store = ModelStore(home / "models", BUILT_IN)
    engine = pipelines(store) if callable(pipelines) else pipelines
    studio = Studio(Services(library, store, engine, Settings()))
    shown = MainWindow(studio)
    qtbot.addWidget(shown)
    shown.show()
    try:
        yield shown
    finally:
        shown.close()
        if own_library:
            library.close()
    nothing_left_behind(studio)


def nothing_left_behind(studio: Studio) -> None:
    """Closing cancels the job and waits: no worker, pool thread or timer may outlive it."""
    runner = studio.runner
    assert runner._thread.isFinished()
    assert runner._pool.activeThreadCount() == 0
    assert not [timer for timer in studio.findChildren(QTimer) if timer.isActive()]
    assert not [thread for thread in threading.enumerate()
                if thread.name.startswith(("easel", "Qt", "QThread"))]


@contextmanager
def tiny_studio(qtbot, home: Path, prompt: str = "a red chair",  # noqa: ANN001 (pytest-qt's)
                size: tuple[int, int] = (64, 48)) -> Iterator[MainWindow]:
    """The window over ``home`` on the real engine, the tiny SD 1.x chosen and the form set
    for a quick, repeatable picture (two steps, a locked seed)."""
    with studio_window(qtbot, home, real_engine) as shown:
        form = shown.studio.prompt
        form.choose_model("tiny")
        form.update(prompt=prompt, width=size[0], height=size[1], steps=2, seed=3,
                    seed_locked=True)
        yield shown
