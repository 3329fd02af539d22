"""The installed models: import into a temporary folder, move into place at the end.

A model is either fully installed or absent: an import is built in ``.importing-*`` inside
the store and renamed into place only when complete and checksummed, so an interrupted or
failed import leaves nothing the app would mistake for a model.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from desktop import importer, model_kinds
from desktop.files import fsync_folder, make_readable, process_alive
from desktop.model_kinds import InstalledModel, ModelKind
from engine.errors import EaselError, ExportUnavailable, ModelError
from engine.manifest import manifest_hash, verify_manifest, write_manifest

__all__ = ["DIFFUSION", "UPSCALER", "ImportProgress", "InstalledModel", "ModelStore"]

ImportProgress = Callable[[str, int, int], None]
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._ -]{0,63}")
_IMPORTING = ".importing-"
# The first two kinds (desktop.model_kinds), named where the store keeps their old methods.
DIFFUSION, UPSCALER = model_kinds.diffusion.name, model_kinds.upscaler.name


class ModelStore:
    """The user's models in ``root``, and the read-only models that ship with Easel in
    ``built_in`` (the starter model), which cannot be removed or shadowed."""

    def __init__(self, root: Path, built_in: Path | None = None) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.built_in = Path(built_in) if built_in is not None else None
        self._remove_abandoned_imports()

    def installed(self, kind: str | None = None) -> list[InstalledModel]:
        """The installed models of ``kind`` (every kind when None): the user's by name, then
        the built-in ones."""
        return self._models_in(self.root, kind) + self._built_in(kind)

    def list(self) -> list[InstalledModel]:
        """The user's models that make pictures, by name, then the built-in ones (upscalers
        are listed by ``upscalers``)."""
        return self.installed(DIFFUSION)

    def upscalers(self) -> list[InstalledModel]:
        """The installed upscalers, by name."""
        return self._models_in(self.root, UPSCALER)

    def upscaler_path(self, name: str) -> Path:
        """The folder of the installed upscaler ``name``."""
        folder = self.root / name
        if _NAME.fullmatch(name) and _kind_name(folder) == UPSCALER:
            return folder
        installed = ", ".join(model.name for model in self.upscalers()) or "none"
        raise ModelError(f"No upscaler named '{name}' is installed (installed: {installed}); "
                         f"add one with: easel models import FILE.")

    def built_in_models(self) -> list[InstalledModel]:
        return self._built_in(DIFFUSION)

    def _built_in(self, kind: str | None) -> list[InstalledModel]:
        if self.built_in is None or not self.built_in.is_dir():
            return []
        return [dataclasses.replace(model, built_in=True)
                for model in self._models_in(self.built_in, kind)]

    @staticmethod
    def _models_in(root: Path, kind: str | None) -> list[InstalledModel]:
        models = []
        for folder in sorted(root.iterdir(), key=lambda path: path.name.lower()):
            if folder.name.startswith(".") or not folder.is_dir():
                continue
            found = model_kinds.kind_of_folder(folder)
            if found is None or kind not in (None, found.name):
                continue  # not a model (a stray folder), or not of the kind asked for
            try:
                models.append(found.describe(folder))
            except ModelError:
                continue  # a damaged description: listing must not fail because of it
        return models

    def path_of(self, name: str, kind: str | None = DIFFUSION) -> Path:
        """The folder of model ``name``: one that makes pictures, or with ``kind`` None any
        installed model, upscalers included."""
        for root in (self.root, self.built_in):
            if root is None:
                continue
            folder = root / name
            found = model_kinds.kind_of_folder(folder) if _NAME.fullmatch(name) else None
            if found is None:
                continue
            if kind is not None and found.name != kind:
                raise ModelError(f"'{name}' is {found.noun}, not "
                                 f"{model_kinds.kind_named(kind).noun}; use it with: "
                                 f"{found.use_with(name)}.")
            return folder
        installed = ", ".join(model.name for model in self.list()) or "none"
        raise ModelError(f"No model named '{name}' is installed (installed: {installed}); "
                         f"add one with: easel models import FOLDER.")

    def default_model(self) -> InstalledModel:
        """The model to use when none is named: the user's only model, or with none
        installed the built-in starter model."""
        own = self._models_in(self.root, DIFFUSION)
        if len(own) == 1:
            return own[0]
        if len(own) > 1:
            names = ", ".join(model.name for model in own)
            raise EaselError(f"Several models are installed ({names}); choose one with "
                             f"--model.")
        built_in = self.built_in_models()
        if not built_in:
            raise ModelError("No model is installed and the built-in starter model is "
                             "missing; add one with: easel models import FOLDER.")
        return built_in[0]

    def remove(self, name: str) -> None:
        own = _kind_name(self.root / name) is not None
        if not own and name in {model.name for model in self.built_in_models()}:
            raise EaselError(f"'{name}' is built into Easel and cannot be removed.")
        folder = self.path_of(name, kind=None)
        derived = self._derived_graphs(folder)
        # Rename first so a crash half-way through leaves a hidden leftover, not a broken model.
        doomed = self.root / f"{_IMPORTING}removed-{os.getpid()}-{name}"
        folder.rename(doomed)
        shutil.rmtree(doomed)
        if derived is not None:  # its hard link would keep the UNet's weights on disk
            shutil.rmtree(derived, ignore_errors=True)

    def _derived_graphs(self, folder: Path) -> Path | None:
        """The UNet that takes ControlNet residuals made from this model, in the data folder's
        cache beside the models (engine.control.unet_variant), when there is one."""
        try:
            model_hash = manifest_hash(folder)
        except (ModelError, OSError):
            return None
        derived = self.root.parent / "cache" / "optimized" / "control-unet" / model_hash
        return derived if derived.is_dir() else None

    def import_model(self, source: Path, name: str | None = None,
                     progress: ImportProgress | None = None,
                     should_stop: Callable[[], bool] | None = None, *,
                     family: str | None = None, prediction: str | None = None,
                     distillation: str | None = "auto",
                     kind: str | None = None) -> InstalledModel:
        """Install a model, whatever form it comes in (told by its content, not its name):
        the one kind that recognises it imports it (desktop.model_kinds), or ``kind`` when the
        user names one. ``family``, ``prediction`` and ``distillation`` answer what a
        checkpoint cannot tell (desktop.model_kinds.diffusion.import_into).

        Without the exporter's packages here (the desktop packages leave them out), the
        separate model importer does the work when it is installed (desktop.importer)."""
        source = Path(source).expanduser()
        if not source.exists():
            raise ModelError(f"'{source}' does not exist.")
        options = {"family": family, "prediction": prediction, "distillation": distillation}
        try:
            return self._import_here(source, name, progress, should_stop, kind, options)
        except ExportUnavailable as missing:
            # Never when this process is the importer: it would hand the work to itself.
            elsewhere = None if os.environ.get(importer.DELEGATED_ENV) else \
                importer.find_importer()
            if elsewhere is None:
                raise ExportUnavailable(importer.unavailable_sentence(str(missing))) from None
        name = name or _default_name(source)
        self.check_new_name(name)
        importer.import_with(elsewhere, source, name, family=family, prediction=prediction,
                             distillation=distillation, kind=kind, progress=progress,
                             should_stop=should_stop)
        return next(model for model in self.installed() if model.name == name)

    def _import_here(self, source: Path, name: str | None, progress: ImportProgress | None,
                     should_stop: Callable[[], bool] | None, chosen: str | None,
                     options: dict[str, str | None]) -> InstalledModel:
        from engine.export import require_export_dependencies
        from engine.export.formats import detect_format

        format = detect_format(source)  # one sentence for anything that is not a model
        kind = model_kinds.kind_for_source(source, format, chosen)
        if kind.needs_exporter(source, format):
            require_export_dependencies()  # one sentence if the export extra is missing
        return self._install(name or _default_name(source), kind, lambda building: (
            kind.import_into(source, building, progress, should_stop, **options)))

    def _install(self, name: str, kind: ModelKind,
                 build: Callable[[Path], object]) -> InstalledModel:
        """Build the model in a hidden folder, checksum it, then move it into place."""
        self.check_new_name(name)
        building = Path(tempfile.mkdtemp(prefix=f"{_IMPORTING}{os.getpid()}-", dir=self.root))
        try:
            build(building)
            write_manifest(building)
            verify_manifest(building, full=True)
            make_readable(building)  # mkdtemp made it private to this user
            self.check_new_name(name)  # another import may have taken it meanwhile
            building.rename(self.root / name)
            fsync_folder(self.root)
        except BaseException:
            shutil.rmtree(building, ignore_errors=True)
            raise
        return kind.describe(self.root / name)

    def check_new_name(self, name: str) -> None:
        """Raise one sentence when ``name`` cannot be given to a new model (a download asks
        before fetching gigabytes)."""
        if not _NAME.fullmatch(name):
            raise EaselError(f"'{name}' cannot be a model name: use up to 64 letters, digits, "
                             f"spaces, dots, dashes or underscores, starting with a letter or "
                             f"digit.")
        if (self.root / name).exists():
            # Said the same in the window, where the name comes from the file or the catalogue.
            raise EaselError(f"A model named '{name}' is already installed; remove it first, "
                             f"or import the new one under another name (on the command "
                             f"line: --name NAME).")
        if self.built_in is not None and (self.built_in / name).exists():
            raise EaselError(f"'{name}' is the name of a model built into Easel; import the "
                             f"new one under another name (on the command line: --name NAME).")

    def _remove_abandoned_imports(self) -> None:
        """Clear what a killed import or removal left behind (only if its process is gone)."""
        for folder in self.root.glob(f"{_IMPORTING}*"):
            pid = _pid_in(folder.name)
            if pid is None or not process_alive(pid):
                shutil.rmtree(folder, ignore_errors=True)


def _default_name(source: Path) -> str:
    return source.resolve().name if source.is_dir() else source.stem


def _kind_name(folder: Path) -> str | None:
    found = model_kinds.kind_of_folder(folder)
    return None if found is None else found.name


def _pid_in(name: str) -> int | None:
    match = re.match(rf"{re.escape(_IMPORTING)}(?:removed-)?(\d+)-", name)
    return int(match.group(1)) if match else None
