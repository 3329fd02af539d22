"""The app's view-model: one object the main window binds to, owning the smaller ones.

It turns the user's actions (generate, edit the source picture, cancel, reuse, delete, drop
a file, import a model) into library calls and worker jobs, and the worker's events back into
state the widgets show.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from PySide6.QtCore import QObject, QTimer, Signal
from PySide6.QtGui import QImage

from desktop import settings as settings_file
from desktop.app import editing, generation, instructing, upscaling
from desktop.app.editing import SourcePicture
from desktop.app.generation import Device, Outcome, Pipelines
from desktop.app.parameters import final_size, request_from
from desktop.app.variations import variations_form
from desktop.app.viewmodels.background import BackgroundModel, qimage_of
from desktop.app.viewmodels.batch import BatchModel
from desktop.app.viewmodels.catalogue import CatalogueModel
from desktop.app.viewmodels.content_checks import ContentChecks
from desktop.app.viewmodels.controls import ControlsModel
from desktop.app.viewmodels.drops import DroppedPictures
from desktop.app.viewmodels.gallery import GalleryModel
from desktop.app.viewmodels.history import HistoryModel
from desktop.app.viewmodels.image_prompts import ImagePromptsModel
from desktop.app.viewmodels.jobs import JobQueueModel, JobRow
from desktop.app.viewmodels.mask import MaskModel
from desktop.app.viewmodels.model_folders import FolderModels
from desktop.app.viewmodels.models import ModelListModel
from desktop.app.viewmodels.outpaint import OutpaintModel
from desktop.app.viewmodels.picture_details import PictureDetailsModel
from desktop.app.viewmodels.pictures import PictureActions
from desktop.app.viewmodels.prompt import PromptViewModel
from desktop.app.viewmodels.regions import RegionsModel, regions_request
from desktop.app.worker import JobProgress, JobRunner, qimage_from_pixels
from desktop.decoding import Decoding
from desktop.library import ImageEntry, Library
from desktop.model_prepare import settings_runtime
from desktop.model_store import InstalledModel, ModelStore
from desktop.safety import flagged_record, hidden_pixels
from desktop.settings import Settings
from engine.errors import EaselError
from engine.runtime import available_providers

FULL_PREFIX = "full:"
SOURCE_PREFIX = "source:"
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
    mask_editing_changed = Signal()
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
        self.checks = ContentChecks(self)
        self.drops = DroppedPictures(self)
        self.details = PictureDetailsModel(services.library, self.runner, self)
        self.gallery = GalleryModel(services.library, self.runner, parent=self)
        self.jobs = JobQueueModel(self)
        self.gallery.embed_metadata = services.settings.embed_metadata
        self.models = ModelListModel(services.store, self)
        # Models › Get models…: download jobs in this queue; a finished one lands in `models`.
        self.catalogue = CatalogueModel(services.store, self.runner, self.jobs,
                                        lambda: self.settings.keep_downloads, self)
        self.catalogue.problem.connect(self.problem)
        self.catalogue.message.connect(self.message)
        self.models.modelReset.connect(self.catalogue.refresh_installed)
        # The user's other model folders, offered in the picker and imported when chosen.
        self.folders = FolderModels(self.runner, services.store, self)
        self.folders.serve(self.prompt, self.models, self.import_model)
        self.folders.problem.connect(self.problem)
        self.folders.read(services.settings.model_folders)
        self.pictures = PictureActions(services.library, self.gallery, self.runner, self)
        self.pictures.message.connect(self.message)
        self.pictures.problem.connect(self.problem)
        self._engine_choices()
        # What the canvas shows: a finished picture (with its entry) or the running preview.
        self.canvas_image: QImage | None = None
        self.canvas_entry: ImageEntry | None = None
        self.canvas_is_preview = False
        self.preview_size: tuple[int, int] | None = None  # the running job's picture size
        # The picture the editing actions start from (dropped, or chosen in the gallery).
        self.source: SourcePicture | None = None
        self.source_image: QImage | None = None
        self.source_path: Path | None = None
        self.canvas_is_source = False  # the canvas shows the source (the mask can be painted)
        self.mask = MaskModel(self)  # kept at the source's size
        self.mask_editing = False
        # The outpaint handles on the canvas; they hold outpaint_sides, which the dialog shares.
        self.outpaint_frame = OutpaintModel(self)
        self.outpaint_frame.follow(self.prompt)
        self.source_changed.connect(lambda: self.outpaint_frame.set_source_size(
            self.source.size if self.source is not None else None))
        self.outpaint_sides = editing.Sides(right=128)  # the outpaint dialog's last values
        self.regions = RegionsModel(parent=self)  # the Region tool's boxes, at the form's size
        self.regions.follow(self.prompt)
        self.regions.refused.connect(self.problem)
        self.controls = ControlsModel(services.store, self.prompt, self, self)  # ControlNets
        self.controls.problem.connect(self.problem)
        self.controls.message.connect(self.message)
        self.image_prompts = ImagePromptsModel(services.store, self.prompt, self, self)
        self.image_prompts.problem.connect(self.problem)
        self._source_loads = 0  # counts source loads, so only the latest one is used
        self._after_source: Callable[[], object] | None = None  # a gallery action's next step
        self._pending_entry: ImageEntry | None = None  # the library picture being loaded
        self._source_entry: ImageEntry | None = None  # the library picture the source is
        self._prompt_at_source: str | None = None  # the prompt box then (Variations' rule)
        self.progress: JobProgress | None = None
        self.device = Device(_startup_device(services.settings), None)
        self.welcome_dismissed = False
        self.runner.started.connect(self._job_started)
        self.runner.progressed.connect(self._job_progressed)
        self.runner.finished.connect(self._job_finished)
        self.runner.failed.connect(self._job_failed)
        self.runner.cancelled.connect(self._job_cancelled)
        self.runner.image_ready.connect(self._image_ready)
        self.runner.image_failed.connect(self._image_failed)
        self.runner.fetched.connect(self._fetched)
        # Background tools; after the studio's own slots, so their news is said last.
        self.background = BackgroundModel(self, services.store, self)
        self.batches = BatchModel(self, self)  # File › Run batch… and the comparison grid
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
        # While the Region tool is on and has boxes, Generate follows the layout on screen.
        layout = self.regions.in_use
        if layout and (missing := self.regions.missing_prompt()):
            self.problem.emit(missing)
            return None
        seed = self.prompt.seed_for_next_run()
        form = replace(self.prompt.form, seed=seed)
        request = regions_request(form, self.regions) if layout else request_from(form)
        if (request := self._steered(request)) is None:
            return None
        if (screening := self.checks.screened(request)) is None:
            return None
        work = functools.partial(generation.generate, self.services.pipelines, self.library,
                                 form.model, request, checks=screening.checks)
        job_id = self.runner.submit(work)
        title = " ".join(form.prompt.split()) or "(no prompt)"
        if layout:
            title = f"{title} ({len(self.regions.boxes)} regions)"
        elif form.hires_scale > 1:
            title = f"{title} (hires fix {form.hires_scale:g}×)"
        size = (form.width, form.height) if layout else final_size(
            form, self.prompt.model().size_multiple)
        self.jobs.add(JobRow(job_id, title, "generate", extra={"size": size}))
        if self.show_welcome:
            self.dismiss_welcome()
        return job_id

    # Editing the source picture ------------------------------------------------------------

    def variations(self) -> int | None:
        """Queue new pictures like the source, as many as the form's ``variations``, with the
        source's own prompt unless one was typed for it (``variations_form``), keeping its
        composition or its meaning as chosen (``ImagePromptsModel.keep_meaning``)."""
        return self._edit("Variations", lambda form, source: self.image_prompts.variations_request(
            variations_form(form, source, self._prompt_at_source), source))

    def edit(self) -> int | None:
        """Queue the source redrawn to match the prompt, by the form's strength."""
        if not self.prompt.form.prompt.strip() and self._ready_to_edit():
            self.problem.emit(editing.NO_EDIT_PROMPT)
            return None
        return self._edit("Edit", editing.edit_request)

    def inpaint(self) -> int | None:
        """Queue a repaint of the masked part of the source (the rest stays exactly)."""
        if not self.controls.mask_is_free():
            return None  # the mask tool holds a control picture, not the mask
        if self._ready_to_edit() and self.mask.is_empty():
            self.problem.emit(editing.EMPTY_MASK)
            return None
        job_id = self._edit("Inpaint", editing.inpaint_request, self.mask.pixels())
        if job_id is not None:
            self.set_mask_editing(False)  # so the preview and the result show
        return job_id

    def outpaint(self, sides: editing.Sides) -> int | None:
        """Queue the source extended by ``sides`` pixels, the new border painted to fit."""
        if self._ready_to_edit() and not any(
                (sides.left, sides.top, sides.right, sides.bottom)):
            self.problem.emit(editing.NO_SIDES)
            return None
        job_id = self._edit("Outpaint", editing.outpaint_request, sides)
        if job_id is not None:
            self.outpaint_sides = sides
            self.set_mask_editing(False)
            self.outpaint_frame.set_editing(False)  # the handles would frame the result
        return job_id

    def instruct(self) -> int | None:
        """Queue the source changed as the prompt says (an InstructPix2Pix model)."""
        if self._ready_to_edit() and (problem := instructing.instruct_problem(
                self.prompt.model(), self.prompt.form)):
            self.problem.emit(problem)
            return None
        return self._edit("Instruct", instructing.instruct_request)

    def upscale(self, scale: int) -> int | None:
        """Queue the source enlarged ``scale`` times, by the installed upscaler or else by
        Lanczos resampling (the result's note says so); no diffusion model is needed."""
        source = self.source
        if source is None:
            self.problem.emit(editing.NO_SOURCE)
            return None
        try:
            request = upscaling.upscale_request(source, scale)
        except EaselError as error:  # too large to open again: the engine's sentence
            self.problem.emit(str(error))
            return None
        work = functools.partial(
            upscaling.upscale, self.services.pipelines, self.library,
            generation.chosen_upscaler(self.services.store, self.settings.upscaler), request,
            source_id=source.image_id, source_path=self.source_path)
        job_id = self.runner.submit(work)
        self.jobs.add(JobRow(job_id, f"Upscale {scale}× of {source.name}", "generate",
                             extra={"size": upscaling.upscaled_size(source, scale)}))
        return job_id

    def _ready_to_edit(self) -> bool:
        """Whether the checks every edit shares would pass (so an action's own check speaks
        only when it is the one thing wrong)."""
        return self.prompt.model() is not None and self.source is not None

    def _edit(self, title: str, make_request: Callable[..., generation.Request],
              *extra: object) -> int | None:
        if self.prompt.model() is None:
            self.problem.emit("There is no model to edit with; import one first "
                              "(Models › Import model…).")
            return None
        source = self.source
        if source is None:
            self.problem.emit(editing.NO_SOURCE)
            return None
        form = replace(self.prompt.form, seed=self.prompt.seed_for_next_run())
        if (request := self._steered(make_request(form, source, *extra))) is None:
            return None
        if (screening := self.checks.screened(request)) is None:
            return None
        work = functools.partial(generation.generate, self.services.pipelines, self.library,
                                 form.model, request, source_id=source.image_id,
                                 checks=screening.checks)
        job_id = self.runner.submit(work)
        count = f" ×{request.count}" if request.count > 1 else ""
        self.jobs.add(JobRow(job_id, f"{title}{count} of {source.name}", "generate",
                             extra={"size": editing.result_size(request)}))
        return job_id

    def _steered(self, request: generation.Request | None) -> generation.Request | None:
        """The request with the Controls dock's ControlNets and image prompts; None once one
        sentence has said what is wrong."""
        request = None if request is None else self.controls.steer(request)
        return None if request is None else self.image_prompts.steer(request)

    def set_mask_editing(self, on: bool) -> None:
        """Turn the mask tool on (the canvas shows the source to paint on) or off."""
        if on and self.source is None:
            self.problem.emit(editing.NO_SOURCE)
            self.mask_editing_changed.emit()  # a toggled button goes back off
            return
        if on:
            self.regions.set_editing(False)  # one tool on the canvas at a time
            self.outpaint_frame.set_editing(False)
        if on == self.mask_editing:
            return
        self.mask_editing = on
        if on and not self.canvas_is_source:
            self.show_source()
        self.mask_editing_changed.emit()

    def set_regions_editing(self, on: bool) -> None:
        """Turn the Region tool on (the canvas lays out boxes on the picture to be
        generated) or off; the boxes are kept either way."""
        if on:
            self.set_mask_editing(False)
            self.outpaint_frame.set_editing(False)
            if self.show_welcome:
                self.dismiss_welcome()  # the layout is drawn on the canvas's page
        self.regions.set_editing(on)

    @property
    def outpaint_sides(self) -> editing.Sides:
        """The sides the next outpaint adds: the dialog's values and the handles' alike."""
        return self.outpaint_frame.sides

    @outpaint_sides.setter
    def outpaint_sides(self, sides: editing.Sides) -> None:
        self.outpaint_frame.set_sides(sides)

    def set_outpaint_editing(self, on: bool) -> None:
        """Show handles on the source's edges that set the sides to add (or hide them)."""
        if on and self.source is None:
            self.problem.emit(editing.NO_SOURCE)
            self.outpaint_frame.editing_changed.emit()  # a toggled button goes back off
            return
        if on:
            self.set_mask_editing(False)
            self.regions.set_editing(False)
            self.show_source()
        self.outpaint_frame.set_editing(on)

    def show_source(self) -> None:
        """Show the source picture on the canvas."""
        if self.source_image is None:
            return
        self.canvas_image = self.source_image
        self.canvas_entry = self._source_entry
        self.canvas_is_preview = False
        self.canvas_is_source = True
        self.canvas_changed.emit()

    def undo(self) -> None:
        """Ctrl+Z: the last mask stroke while the mask tool is on, else the last delete."""
        if self.mask_editing and self.mask.can_undo:
            self.mask.undo()
        else:
            self.pictures.undo_trash()

    def cancel(self, job_id: int) -> None:
        self.runner.cancel(job_id)

    def cancel_running(self) -> None:
        # The runner's own record, not the queue list's: the list hears of a start a moment
        # later, and Escape pressed in that moment must still stop the job.
        running = self.runner.running_id()
        if running is not None:
            self.runner.cancel(running)

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
        if progress.preview is not None and not self.mask_editing:  # never under the brush
            self.canvas_image = progress.preview
            self.canvas_entry = None
            self.canvas_is_preview = True
            self.canvas_is_source = False
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
        self.checks.say_signing_news()

    def _show_outcome(self, outcome: Outcome) -> None:
        if not self.mask_editing:  # the result waits in the gallery while the user paints
            pixels = outcome.pixels[-1]
            if flagged_record(outcome.entries[-1].parameters) is not None:
                pixels = hidden_pixels(pixels)  # shown when the user clicks it in the gallery
            self.canvas_image = qimage_of(pixels)  # a cut-out keeps its alpha
            self.canvas_entry = outcome.entries[-1]
            self.canvas_is_preview = False
            self.canvas_is_source = False
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
            self.message.emit(row.extra.get("cancelled", "Cancelled; nothing was saved."))

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
            elif self.source_image is not None:
                self.show_source()  # an edit stopped: back to what it started from
            self.canvas_changed.emit()

    # The gallery's actions -----------------------------------------------------------------

    def show_entry(self, entry: ImageEntry) -> None:
        """Show a gallery picture on the canvas (decoded off the GUI thread)."""
        self.set_mask_editing(False)  # the mask belongs to the source, not to this picture
        self.canvas_entry = entry
        self.canvas_is_source = False
        path = entry.path
        self.runner.load_image(FULL_PREFIX + entry.id, lambda: path)

    def reuse(self, entry: ImageEntry, seed_only: bool = False) -> None:
        self.prompt.reuse(entry, seed_only)
        if not seed_only and self.regions.reuse(entry.parameters):
            self.set_regions_editing(True)  # a layout picture: its boxes are on the canvas
        kept = self.library.input_path  # the control and reference pictures it was made from
        note = "" if seed_only else (self.controls.reuse(entry.parameters, kept)
                                     + self.image_prompts.reuse(entry.parameters, kept))
        self.message.emit("Seed reused." if seed_only else "Parameters reused." + note)

    def _check_library(self) -> None:
        if self.library.changed_elsewhere():
            self.gallery.refresh()
            self.history.refresh()

    def use_as_source(self, entry: ImageEntry | None = None,
                      then: Callable[[], object] | None = None) -> bool:
        """Make a library picture (the canvas's, if none is given) the source, keeping its
        id for lineage; ``then`` runs once it is decoded (a gallery menu's action)."""
        entry = entry or (None if self.canvas_is_preview else self.canvas_entry)
        if entry is None:
            self.problem.emit("Choose a picture in the gallery (or drop one on the canvas) "
                              "to use as the source.")
            return False
        if entry.missing:
            self.problem.emit(f"The file of picture #{entry.id[:6]} is missing, so it cannot "
                              "be the source.")
            return False
        self.load_source(entry.path, entry.id, then, entry)
        return True

    def variations_of(self, entry: ImageEntry) -> None:
        """The gallery's "Variations": that picture becomes the source, then variations."""
        self.use_as_source(entry, self.variations)

    def edit_of(self, entry: ImageEntry) -> None:
        """The gallery's "Edit": that picture becomes the source, then it is redrawn."""
        if not self.prompt.form.prompt.strip():
            self.problem.emit(editing.NO_EDIT_PROMPT)
            return
        self.use_as_source(entry, self.edit)

    def instruct_of(self, entry: ImageEntry) -> None:
        """The gallery's "Instruct": that picture becomes the source, then it is changed as
        the prompt says; a model or prompt that cannot do it is said before anything loads."""
        if problem := instructing.instruct_problem(self.prompt.model(), self.prompt.form):
            self.problem.emit(problem)
            return
        self.use_as_source(entry, self.instruct)

    def upscale_of(self, entry: ImageEntry, scale: int) -> None:
        """The gallery's "Upscale 2×/4×": that picture becomes the source, then enlarged."""
        self.use_as_source(entry, lambda: self.upscale(scale))

    def load_source(self, path: Path | None, image_id: str | None,
                     then: Callable[[], object] | None, entry: ImageEntry | None = None,
                     read: Callable[[], SourcePicture] | None = None) -> None:
        """Decode the source off-thread: the file at ``path``, or what ``read`` gives (a
        picture held in memory, with no path); ``then`` runs once it is decoded."""
        self._source_loads += 1
        self._after_source = then
        self._pending_entry = entry
        library = self.library
        self.runner.fetch(f"{SOURCE_PREFIX}{self._source_loads}:{path or ''}",
                          read or (lambda: editing.open_source(path, library, image_id)))

    def _fetched(self, key: str, result: object) -> None:
        if not key.startswith(SOURCE_PREFIX) or not isinstance(result, SourcePicture):
            return
        number, path = key[len(SOURCE_PREFIX):].split(":", 1)
        if int(number) != self._source_loads:
            return  # another picture was dropped or chosen since
        self.source = result
        self.source_image = qimage_from_pixels(result.pixels)
        self.source_path = Path(path) if path else None  # None: dropped picture data
        self._source_entry = self._pending_entry
        self._prompt_at_source = self.prompt.form.prompt
        self.mask.reset(*result.size)
        if self.show_welcome:
            self.dismiss_welcome()  # the user has started: the canvas shows the source
        self.show_source()
        self.source_changed.emit()
        own = " Variations use its own prompt until you type a new one." if result.prompt else ""
        self.message.emit((f"Picture #{result.image_id[:6]} is the source now."
                           if result.image_id else f"'{result.name}' is the source now.") + own)
        then, self._after_source = self._after_source, None
        if then is not None:
            then()

    def _image_ready(self, key: str, image: QImage) -> None:
        if key.startswith(FULL_PREFIX):
            entry = self.canvas_entry
            if (entry is not None and key == FULL_PREFIX + entry.id and not self.canvas_is_preview
                    and not self.canvas_is_source):
                self.canvas_image = image
                self.canvas_changed.emit()

    def _image_failed(self, key: str, message: str) -> None:
        if key.startswith(SOURCE_PREFIX):
            number = key[len(SOURCE_PREFIX):].split(":", 1)[0]
            if int(number) == self._source_loads:
                self._after_source = None
                self.problem.emit(message)  # the source stays what it was
        elif key.startswith(FULL_PREFIX):
            self.problem.emit(message)

    # Models --------------------------------------------------------------------------------

    def import_model(self, source: Path, name: str | None = None) -> int:
        work = functools.partial(generation.import_model, self.services.store, Path(source),
                                 name=name)
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
            self.services.pipelines.reconfigure(settings_runtime(new),
                                                new.models_kept_loaded)
        self.gallery.embed_metadata = new.embed_metadata
        self.services.library.provenance.settings = new.provenance()
        self._engine_choices()
        if old.model_folders != new.model_folders:
            self.folders.read(new.model_folders)
        if old.data_folder != new.data_folder:
            self.message.emit("The new data folder is used from the next start.")

    def upscaler_names(self) -> list[str]:
        """The installed upscalers, for the settings' choice."""
        return [model.name for model in self.services.store.upscalers()]

    def _engine_choices(self) -> None:
        """The settings the real engine reads at each job: hires fix's upscaler, and the tiny
        VAE's previews and fast decode (a test's stand-in engine has neither)."""
        if hasattr(self.services.pipelines, "upscaler"):
            self.services.pipelines.upscaler = self.settings.upscaler
            self.services.pipelines.decoding = Decoding(self.settings.tiny_vae_previews,
                                                        self.settings.fast_decode)

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
