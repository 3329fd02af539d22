"""Starting the desktop app: settings, the one-window lock (a second start brings the open
window forward, handing it the picture it was started with), the library, the window."""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QMessageBox

from desktop import paths
from desktop import settings as settings_file
from desktop.app.file_open_events import FileOpenEvents
from desktop.app.generation import EnginePipelines
from desktop.app.single_window import (
    WindowServer,
    ask_to_open,
    ask_to_show,
    bring_forward,
    server_name,
)
from desktop.app.viewmodels.studio import Services, Studio
from desktop.app.widgets.icons import icon
from desktop.app.widgets.main_window import MainWindow
from desktop.library import Library, LibraryInUse
from desktop.library.instance import claim_window
from desktop.model_prepare import settings_runtime
from desktop.model_store import ModelStore
from desktop.settings import Settings
from engine.errors import EaselError


def main(argv: Sequence[str] | None = None, picture: Path | None = None) -> int:
    """Run the window until it is closed; the exit status for the ``easel`` command.

    ``picture`` (an absolute path, checked as a drop is: ``open_picture.checked_picture``)
    becomes the source picture, in this window or in the one already open on the library.
    """
    app = QApplication.instance() or QApplication(list(argv or sys.argv[:1]))
    app.setApplicationName("Easel")
    app.setOrganizationName("Easel")
    app.setWindowIcon(icon("easel"))
    loaded = settings_file.load(settings_file.default_path())
    apply_theme(app, loaded.settings.theme)
    if loaded.settings.data_folder and not os.environ.get("EASEL_HOME"):
        os.environ["EASEL_HOME"] = loaded.settings.data_folder  # the environment wins
    try:
        data_folder = paths.data_dir()
        server = WindowServer(server_name(data_folder))
        window_lock = claim_window(data_folder / "library")
    except LibraryInUse as error:
        answered = (ask_to_open(server.name, picture) if picture is not None
                    else ask_to_show(server.name))
        if answered:
            return 0  # the open window came forward (with the picture): what the user wanted
        QMessageBox.information(None, "Easel", str(error))
        return 1
    except EaselError as error:  # a data folder Easel cannot write in (read-only, full)
        return _cannot_start(error)
    try:
        server.listen()  # after the lock: a socket left by a crashed window is ours to remove
        return _run(app, loaded.settings, loaded.message, server, picture)
    finally:
        server.close()
        window_lock.close()


def _run(app: QApplication, settings: Settings, settings_message: str | None,
         server: WindowServer, picture: Path | None) -> int:
    try:  # each of these may be the first write in a new data folder (read-only, full)
        library = Library.open(paths.data_dir(), provenance=settings.provenance())
    except EaselError as error:
        return _cannot_start(error)
    try:
        try:
            store = ModelStore(paths.models_dir(), paths.built_in_models_dir())
            options = settings_runtime(settings)
        except EaselError as error:
            return _cannot_start(error)
        pipelines = EnginePipelines(store, options, settings.models_kept_loaded)
        studio = Studio(Services(library, store, pipelines, settings,
                                 settings_file.default_path()))
        window = MainWindow(studio)
        server.show_requested.connect(lambda: bring_forward(window))
        server.open_requested.connect(lambda later: _take_picture(window, later))
        file_opened = FileOpenEvents(lambda later: _take_picture(window, later))
        app.installEventFilter(file_opened)
        window.show()
        settle_memory()
        for warning in [settings_message, *library.report.warnings]:
            if warning:
                window.show_problem(warning)
        if picture is not None:
            studio.drops.drop_file(picture)
        return app.exec()
    finally:
        library.close()


def say_in_a_box(sentence: str) -> None:
    """One sentence in a message box, for a start with no terminal (a file manager's "Open
    with Easel") that ends before any window opens."""
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("Easel")
    app.setWindowIcon(icon("easel"))
    QMessageBox.warning(None, "Easel", sentence)


def _cannot_start(error: EaselError) -> int:
    """Why the window cannot open, in one sentence, before any window opened."""
    QMessageBox.critical(None, "Easel", str(error))
    return 1


def _take_picture(window: MainWindow, picture: Path) -> None:
    """A later ``easel open PICTURE``: the window comes forward and takes the picture as a
    drop on its canvas (a file that went bad meanwhile is said there, in one sentence)."""
    bring_forward(window)
    window.studio.drops.drop_file(picture)


def settle_memory() -> None:
    """Exempt what start-up made (modules, widgets, models) from garbage collection.

    A full collection walks every tracked object while holding the GIL; with what the window,
    PySide and ONNX Runtime bring in, that took 25-80 ms here: a stall of the GUI thread,
    whichever thread set it off. Those objects live as long as the app, so walking them finds
    nothing; after ``freeze`` a collection walks only what was made since.
    """
    gc.collect()
    gc.freeze()


def apply_theme(app: QApplication, theme: str) -> None:
    """"system" leaves Qt following the desktop's light or dark setting (Qt 6.5+)."""
    hints = app.styleHints()
    if not hasattr(hints, "setColorScheme"):  # Qt before 6.8: the system's scheme only
        return
    scheme = {"light": Qt.ColorScheme.Light, "dark": Qt.ColorScheme.Dark}.get(
        theme, Qt.ColorScheme.Unknown)
    hints.setColorScheme(scheme)
