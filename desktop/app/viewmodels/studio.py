"""The app's view-model: one object the main window binds to, owning the smaller ones.

It turns the user's actions (generate, cancel, reuse, delete, drop a file, import a model)
into library calls and worker jobs, and the worker's events back into state the widgets show.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from pathlib import Path

from PySide6.QtCore import QObject, QTimer, Signal
from PySide6.QtGui import QGuiApplication, QImage

from desktop.app import generation
from desktop.app import settings as settings_file
from desktop.app.generation import Device, Outcome, Pipelines
from desktop.app.parameters import request_from
from desktop.app.settings import Settings
from desktop.app.viewmodels.gallery import GalleryModel
from desktop.app.viewmodels.history import HistoryModel
from desktop.app.viewmodels.jobs import JobQueueModel, JobRow
from desktop.app.viewmodels.models import ModelListModel
from desktop.app.viewmodels.prompt import PromptViewModel
from desktop.app.worker import JobProgress, JobRunner, qimage_from_pixels
from desktop.library import ImageEntry, Library
from desktop.library.images import open_image
from desktop.model_store import InstalledModel, ModelStore
from engine.errors import EaselError
from engine.runtime import available_providers

FULL_PREFIX = "full:"
SOURCE_PREFIX = "source:"
COPY_PREFIX = "copy:"
LIBRARY_POLL_MS = 1000


@dataclass
class Services:
    """What the studio works with; the launcher makes the real ones, tests make their own."""

    library: Library
    store: ModelStore
    pipelines: Pipelines
    settings: Settings
    settings_path: Path | None = None  # None: settings are not saved (tests)


class Studio(QObject):
    message = Signal(str)  # news for the status bar
    problem = Signal(str)  # a sentence the user must see (a dialog)
    canvas_changed = Signal()
    source_changed = Signal()
    device_changed = Signal()
    progress_changed = Signal()  # the running job's progress (or none left)
    welcome_changed = Signal()
    generated = Signal(object)  # Outcome, after it is on the canvas and in the gallery

    def __init__(self, services: Services, runner: JobRunner | None = None,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.services = services
        self.library = services.library
        self.settings = services.settings
        self.runner = runner or JobRunner(self)
        self.prompt = PromptViewModel(services.store, services.library, self)
        self.history = HistoryModel(services.library, self)
        self.gallery = GalleryModel(services.library, self.runner, parent=self)
        self.jobs = JobQueueModel(self)
        self.gallery.embed_metadata = services.settings.embed_metadata
        self.models = ModelListModel(services.store, self)
        # What the canvas shows: a finished picture (with its entry) or the running preview.
        self.canvas_image: QImage | None = None
        self.canvas_entry: ImageEntry | None = None
        self.canvas_is_preview = False
        self.preview_size: tuple[int, int] | None = None  # the running job's picture size
        self.source_image: QImage | None = None  # the dropped picture, for the editing tools
        self.source_path: Path | None = None
        self.progress: JobProgress | None = None
        self.device = Device(_startup_device(services.settings), None)
        self.welcome_dismissed = False
        self.last_trashed: list[str] = []
        self.runner.started.connect(self._job_started)
        self.runner.progressed.connect(self._job_progressed)
        self.runner.finished.connect(self._job_finished)
        self.runner.failed.connect(self._job_failed)
        self.runner.cancelled.connect(self._job_cancelled)
        self.runner.image_ready.connect(self._image_ready)
        self.runner.image_failed.connect(self._image_failed)
        # Another process (an `easel generate`) may add pictures meanwhile.
        self._poll = QTimer(self)
        self._poll.setInterval(LIBRARY_POLL_MS)
        self._poll.timeout.connect(self._check_library)
        self._poll.start()

    # Welcome -------------------------------------------------------------------------------

    @property
    def show_welcome(self) -> bool:
        """First run: nothing imported and nothing made yet."""
        if self.welcome_dismissed:
            return False
        own = [model for model in self.prompt.models if not model.built_in]
        return not own and self.gallery.rowCount() == 0

    def dismiss_welcome(self) -> None:
        self.welcome_dismissed = True
        self.welcome_changed.emit()

    # Generating ----------------------------------------------------------------------------

    def generate(self) -> int | None:
        """Queue a generation with the form as it is; returns the job id."""
        if self.prompt.model() is None:
            self.problem.emit("There is no model to generate with; import one first "
                              "(Models › Import model…).")
            return None
        seed = self.prompt.seed_for_next_run()
        form = replace(self.prompt.form, seed=seed)
        request = request_from(form)
        work = functools.partial(generation.generate, self.services.pipelines, self.library,
                                 form.model, request)
        job_id = self.runner.submit(work)
        title = " ".join(form.prompt.split()) or "(no prompt)"
        self.jobs.add(JobRow(job_id, title, "generate",
                             extra={"size": (form.width, form.height)}))
        if self.show_welcome:
            self.dismiss_welcome()
        return job_id

    def cancel(self, job_id: int) -> None:
        self.runner.cancel(job_id)

    def cancel_running(self) -> None:
        running = self.jobs.running()
        if running is not None:
            self.runner.cancel(running.id)

    def _job_started(self, job_id: int) -> None:
        self.jobs.set_running(job_id)
        row = self.jobs.find(job_id)
        if row is not None and row.kind == "generate":
            self.preview_size = row.extra["size"]
        self.progress = None
        self.progress_changed.emit()

    def _job_progressed(self, job_id: int, progress: JobProgress) -> None:
        self.jobs.set_progress(job_id, progress)
        self.progress = progress
        self.progress_changed.emit()
        if progress.preview is not None:
            self.canvas_image = progress.preview
            self.canvas_entry = None
            self.canvas_is_preview = True
            self.canvas_changed.emit()

    def _job_finished(self, job_id: int, result: object) -> None:
        row = self._job_ended(job_id)
        if isinstance(result, Outcome):
            self._show_outcome(result)
        elif isinstance(result, InstalledModel):
            self.prompt.reload_models()
            self.models.refresh()
            self.message.emit(f"Installed '{result.name}' ({result.family}).")
        elif row is not None:
            self.message.emit("Done.")

    def _show_outcome(self, outcome: Outcome) -> None:
        self.canvas_image = qimage_from_pixels(outcome.pixels[-1])
        self.canvas_entry = outcome.entries[-1]
        self.canvas_is_preview = False
        self.canvas_changed.emit()
        if outcome.device != self.device:
            self.device = outcome.device
            self.device_changed.emit()
        self.gallery.refresh()
        self.history.refresh()
        count = len(outcome.entries)
        note = "; ".join(outcome.warnings)
        self.message.emit(f"Saved {count} picture{'s' if count > 1 else ''} to the gallery."
                          + (f" Note: {note}" if note else ""))
        self.generated.emit(outcome)

    def _job_failed(self, job_id: int, message: str) -> None:
        self._job_ended(job_id)
        self._drop_preview()
        self.problem.emit(message)

    def _job_cancelled(self, job_id: int) -> None:
        row = self._job_ended(job_id)
        if row is not None and row.running:
            self._drop_preview()
            self.message.emit("Cancelled; nothing was saved.")

    def _job_ended(self, job_id: int) -> JobRow | None:
        row = self.jobs.remove(job_id)
        if row is not None and row.running:
            self.progress = None
            self.preview_size = None
            self.progress_changed.emit()
        return row

    def _drop_preview(self) -> None:
        if self.canvas_is_preview:
            self.canvas_image, self.canvas_is_preview = None, False
            if self.canvas_entry is not None:
                self.show_entry(self.canvas_entry)
            self.canvas_changed.emit()

    # The gallery's actions -----------------------------------------------------------------

    def show_entry(self, entry: ImageEntry) -> None:
        """Show a gallery picture on the canvas (decoded off the GUI thread)."""
        self.canvas_entry = entry
        path = entry.path
        self.runner.load_image(FULL_PREFIX + entry.id, lambda: path)

    def copy_entry(self, entry: ImageEntry) -> None:
        """Put the picture on the clipboard (decoded off the GUI thread, then copied)."""
        path = entry.path
        self.runner.load_image(COPY_PREFIX + entry.id, lambda: path)

    def reuse(self, entry: ImageEntry, seed_only: bool = False) -> None:
        self.prompt.reuse(entry, seed_only)
        self.message.emit("Seed reused." if seed_only else "Parameters reused.")

    def set_favourite(self, entries: list[ImageEntry], favourite: bool) -> None:
        self._library_call(self.library.set_favourite, [e.id for e in entries], favourite)
        self.gallery.refresh()

    def trash(self, entries: list[ImageEntry]) -> None:
        ids = [entry.id for entry in entries]
        if not ids or self._library_call(self.library.trash, ids) is None:
            return
        self.last_trashed = ids
        self.gallery.refresh()
        count = len(ids)
        self.message.emit(f"Moved {count} picture{'s' if count > 1 else ''} to the trash "
                          "(Ctrl+Z brings them back).")

    def undo_trash(self) -> None:
        if not self.last_trashed:
            return
        if self._library_call(self.library.restore, self.last_trashed) is not None:
            count = len(self.last_trashed)
            self.last_trashed = []
            self.gallery.refresh()
            self.message.emit(f"Restored {count} picture{'s' if count > 1 else ''}.")

    def _library_call(self, function, *args):  # noqa: ANN001, ANN202 (a thin wrapper)
        try:
            return function(*args)
        except EaselError as error:
            self.problem.emit(str(error))
            return None

    def _check_library(self) -> None:
        if self.library.changed_elsewhere():
            self.gallery.refresh()
            self.history.refresh()

    # Dropped files -------------------------------------------------------------------------

    def drop_file(self, path: Path) -> bool:
        """Make a dropped picture the source image; anything else is refused in one sentence
        and changes nothing. The header check is quick; the full decode runs off-thread."""
        try:
            open_image(Path(path)).close()
        except EaselError as error:
            self.problem.emit(str(error))
            return False
        self.runner.load_image(SOURCE_PREFIX + str(path), lambda: Path(path))
        return True

    def _image_ready(self, key: str, image: QImage) -> None:
        if key.startswith(FULL_PREFIX):
            entry = self.canvas_entry
            if entry is not None and key == FULL_PREFIX + entry.id and not self.canvas_is_preview:
                self.canvas_image = image
                self.canvas_changed.emit()
        elif key.startswith(COPY_PREFIX):
            QGuiApplication.clipboard().setImage(image)
            self.message.emit("Picture copied.")
        elif key.startswith(SOURCE_PREFIX):
            self.source_image = image
            self.source_path = Path(key[len(SOURCE_PREFIX):])
            self.source_changed.emit()
            self.message.emit(f"'{self.source_path.name}' is the source image.")

    def _image_failed(self, key: str, message: str) -> None:
        if key.startswith(SOURCE_PREFIX):
            name = Path(key[len(SOURCE_PREFIX):]).name
            self.problem.emit(f"'{name}' is damaged or incomplete and cannot be read.")
        elif key.startswith((FULL_PREFIX, COPY_PREFIX)):
            self.problem.emit(message)

    # Models --------------------------------------------------------------------------------

    def import_model(self, source: Path) -> int:
        work = functools.partial(generation.import_model, self.services.store, Path(source))
        job_id = self.runner.submit(work)
        self.jobs.add(JobRow(job_id, f"Import {Path(source).name}", "import"))
        return job_id

    def remove_model(self, name: str) -> None:
        try:
            self.services.store.remove(name)
        except (EaselError, OSError) as error:
            self.problem.emit(str(error))
            return
        self.prompt.reload_models()
        self.models.refresh()
        self.message.emit(f"Removed '{name}'.")

    # Settings ------------------------------------------------------------------------------

    def apply_settings(self, new: Settings) -> None:
        old, self.settings = self.settings, new
        self.services.settings = new
        if self.services.settings_path is not None:
            try:
                settings_file.save(new, self.services.settings_path)
            except OSError as error:
                self.problem.emit(f"The settings could not be saved ({error.strerror}).")
        engine_changed = (old.providers, old.cpu_threads, old.models_kept_loaded) != (
            new.providers, new.cpu_threads, new.models_kept_loaded)
        if engine_changed and hasattr(self.services.pipelines, "reconfigure"):
            self.services.pipelines.reconfigure(generation.runtime_options(new),
                                                new.models_kept_loaded)
        self.gallery.embed_metadata = new.embed_metadata
        if old.data_folder != new.data_folder:
            self.message.emit("The new data folder is used from the next start.")

    def remember_window(self, geometry: str) -> None:
        """Keep the window's place for the next start (saved with the settings)."""
        if geometry != self.settings.window_geometry:
            self.apply_settings(replace(self.settings, window_geometry=geometry))

    # Closing -------------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Cancel the running job and wait for the worker; stop the timer."""
        self._poll.stop()
        self.runner.shutdown()
        self.gallery.forget_drag_copies()


def _startup_device(settings: Settings) -> str:
    """Until the first picture loads a model, only what could be used is known."""
    if settings.providers == ("cpu",):
        return "CPU (chosen in the settings)"
    gpus = [name for name in available_providers() if name != "cpu"]
    return "GPU or CPU: known at the first picture" if gpus else "CPU"
