"""The installed models: import into a temporary folder, move into place at the end.

A model is either fully installed or absent: an import is built in ``.importing-*`` inside
the store and renamed into place only when complete and checksummed, so an interrupted or
failed import leaves nothing the app would mistake for a model.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from desktop import importer
from desktop.files import fsync_folder
from engine.description import ModelDescription
from engine.errors import EaselError, ExportUnavailable, ModelError
from engine.manifest import verify_manifest, write_manifest
from engine.upscale.description import UpscalerDescription, is_upscaler_folder

ImportProgress = Callable[[str, int, int], None]
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._ -]{0,63}")
_IMPORTING = ".importing-"
DIFFUSION, UPSCALER = "diffusion", "upscaler"  # the kinds of model folder


@dataclass(frozen=True)
class InstalledModel:
    name: str
    family: str
    prediction_type: str
    size_bytes: int
    path: Path
    built_in: bool = False
    # "diffusion" (makes pictures) or "upscaler" (enlarges them; its family says its scale).
    kind: str = DIFFUSION


class ModelStore:
    """The user's models in ``root``, and the read-only models that ship with Easel in
    ``built_in`` (the starter model), which cannot be removed or shadowed."""

    def __init__(self, root: Path, built_in: Path | None = None) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.built_in = Path(built_in) if built_in is not None else None
        self._remove_abandoned_imports()

    def list(self) -> list[InstalledModel]:
        """The user's models that make pictures, by name, then the built-in ones (upscalers
        are listed by ``upscalers``)."""
        return self._models_in(self.root) + self.built_in_models()

    def upscalers(self) -> list[InstalledModel]:
        """The installed upscalers, by name."""
        found = []
        for folder in sorted(self.root.iterdir(), key=lambda path: path.name.lower()):
            if folder.name.startswith(".") or not is_upscaler_folder(folder):
                continue
            try:
                found.append(_installed_upscaler(folder))
            except ModelError:
                continue  # a damaged description: listing must not fail because of it
        return found

    def upscaler_path(self, name: str) -> Path:
        """The folder of the installed upscaler ``name``."""
        folder = self.root / name
        if _NAME.fullmatch(name) and is_upscaler_folder(folder):
            return folder
        installed = ", ".join(model.name for model in self.upscalers()) or "none"
        raise ModelError(f"No upscaler named '{name}' is installed (installed: {installed}); "
                         f"add one with: easel models import FILE.")

    def built_in_models(self) -> list[InstalledModel]:
        if self.built_in is None or not self.built_in.is_dir():
            return []
        return self._models_in(self.built_in, built_in=True)

    @staticmethod
    def _models_in(root: Path, built_in: bool = False) -> list[InstalledModel]:
        models = []
        for folder in sorted(root.iterdir(), key=lambda path: path.name.lower()):
            if folder.name.startswith(".") or not folder.is_dir():
                continue
            try:
                models.append(_installed(folder, built_in))
            except ModelError:
                continue  # not ours (a stray folder); listing must not fail because of it
        return models

    def path_of(self, name: str, kind: str | None = DIFFUSION) -> Path:
        """The folder of model ``name``: one that makes pictures, or with ``kind`` None any
        installed model, upscalers included."""
        for root in (self.root, self.built_in):
            if root is None:
                continue
            folder = root / name
            if _NAME.fullmatch(name) and (folder / "easel.json").is_file():
                if kind == DIFFUSION and is_upscaler_folder(folder):
                    raise ModelError(f"'{name}' is an upscaler, not a model that makes "
                                     f"pictures; use it with: easel upscale --model {name}.")
                return folder
        installed = ", ".join(model.name for model in self.list()) or "none"
        raise ModelError(f"No model named '{name}' is installed (installed: {installed}); "
                         f"add one with: easel models import FOLDER.")

    def default_model(self) -> InstalledModel:
        """The model to use when none is named: the user's only model, or with none
        installed the built-in starter model."""
        own = self._models_in(self.root)
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
        own = (self.root / name / "easel.json").is_file()
        if not own and name in {model.name for model in self.built_in_models()}:
            raise EaselError(f"'{name}' is built into Easel and cannot be removed.")
        folder = self.path_of(name, kind=None)
        # Rename first so a crash half-way through leaves a hidden leftover, not a broken model.
        doomed = self.root / f"{_IMPORTING}removed-{os.getpid()}-{name}"
        folder.rename(doomed)
        shutil.rmtree(doomed)

    def import_model(self, source: Path, name: str | None = None,
                     progress: ImportProgress | None = None,
                     should_stop: Callable[[], bool] | None = None, *,
                     family: str | None = None, prediction: str | None = None,
                     distillation: str | None = "auto") -> InstalledModel:
        """Install a model, whatever form it comes in (told by its content, not its name):
        an ONNX folder (optimum, Amuse) is checked and used as it is; a diffusers folder is
        exported to ONNX; a single-file .safetensors checkpoint, or a pickle checkpoint read
        only as plain tensors, is converted to a diffusers folder first. ``family`` and
        ``prediction`` answer what a checkpoint file cannot tell; ``distillation`` ("turbo",
        "lcm", None) overrides the few-step detection.

        Without the exporter's packages here (the desktop packages leave them out), the
        separate model importer does the work when it is installed (desktop.importer)."""
        source = Path(source).expanduser()
        if not source.exists():
            raise ModelError(f"'{source}' does not exist.")
        try:
            return self._import_here(source, name, progress, should_stop, family=family,
                                     prediction=prediction, distillation=distillation)
        except ExportUnavailable as missing:
            # Never when this process is the importer: it would hand the work to itself.
            elsewhere = None if os.environ.get(importer.DELEGATED_ENV) else \
                importer.find_importer()
            if elsewhere is None:
                raise ExportUnavailable(importer.unavailable_sentence(str(missing))) from None
        name = name or (source.resolve().name if source.is_dir() else source.stem)
        self._check_new_name(name)
        importer.import_with(elsewhere, source, name, family=family, prediction=prediction,
                             distillation=distillation, progress=progress,
                             should_stop=should_stop)
        return next(m for m in self.list() + self.upscalers() if m.name == name)

    def _import_here(self, source: Path, name: str | None,
                     progress: ImportProgress | None,
                     should_stop: Callable[[], bool] | None, *, family: str | None,
                     prediction: str | None, distillation: str | None) -> InstalledModel:
        from engine.onnx_folder import is_onnx_model_folder

        if source.is_dir() and is_onnx_model_folder(source):
            from engine.export.onnx_folder import import_onnx_folder

            def build(building: Path) -> None:
                import_onnx_folder(source, building, progress, should_stop)

            return self._install(name or source.resolve().name, build)

        from engine.export import require_export_dependencies
        from engine.export.formats import detect_format

        kind = detect_format(source)  # one sentence for anything that is not a model
        require_export_dependencies()  # one sentence if the export extra is missing
        default_name = source.resolve().name if source.is_dir() else source.stem
        if _is_upscaler(source, kind):
            from engine.export.upscaler import import_upscaler

            return self._install(name or default_name, lambda building: import_upscaler(
                source, building, progress, should_stop), describe=_installed_upscaler)
        from engine.export.diffusers_folder import export_diffusers_folder

        def build(building: Path) -> None:
            if kind in ("safetensors", "pickle"):
                converted = Path(tempfile.mkdtemp(prefix=f"{_IMPORTING}{os.getpid()}-convert-",
                                                  dir=self.root))
                try:
                    self._convert_checkpoint(source, kind, converted / "model", family,
                                             prediction, progress, should_stop)
                    export_diffusers_folder(converted / "model", building, progress,
                                            should_stop, distillation=distillation)
                finally:
                    shutil.rmtree(converted, ignore_errors=True)
            else:
                export_diffusers_folder(source, building, progress, should_stop,
                                        distillation=distillation)

        return self._install(name or default_name, build)

    def _convert_checkpoint(self, source: Path, kind: str, destination: Path,
                            family: str | None, prediction: str | None,
                            progress: ImportProgress | None,
                            should_stop: Callable[[], bool] | None) -> None:
        destination.mkdir()
        if kind == "safetensors":
            from engine.export.single_file import convert_single_file

            convert_single_file(source, destination, family=family, prediction=prediction,
                                progress=progress, should_stop=should_stop)
        else:
            from engine.export.pickle_convert import convert_pickle

            # The plain-tensor copy of the pickle is as large as the checkpoint: keep it
            # beside the models (same disk), not in a small system temporary folder.
            convert_pickle(source, destination, family=family, prediction=prediction,
                           progress=progress, should_stop=should_stop,
                           scratch=destination.parent)

    def _install(self, name: str, build: Callable[[Path], object],
                 describe: Callable[[Path], InstalledModel] | None = None) -> InstalledModel:
        """Build the model in a hidden folder, checksum it, then move it into place."""
        self._check_new_name(name)
        building = Path(tempfile.mkdtemp(prefix=f"{_IMPORTING}{os.getpid()}-", dir=self.root))
        try:
            build(building)
            write_manifest(building)
            verify_manifest(building, full=True)
            _make_readable(building)  # mkdtemp made it private to this user
            self._check_new_name(name)  # another import may have taken it meanwhile
            building.rename(self.root / name)
            fsync_folder(self.root)
        except BaseException:
            shutil.rmtree(building, ignore_errors=True)
            raise
        return (describe or _installed)(self.root / name)

    def _check_new_name(self, name: str) -> None:
        if not _NAME.fullmatch(name):
            raise EaselError(f"'{name}' cannot be a model name: use up to 64 letters, digits, "
                             f"spaces, dots, dashes or underscores, starting with a letter or "
                             f"digit.")
        if (self.root / name).exists():
            raise EaselError(f"A model named '{name}' is already installed; choose another "
                             f"name with --name or remove it first.")
        if self.built_in is not None and (self.built_in / name).exists():
            raise EaselError(f"'{name}' is the name of a model built into Easel; choose "
                             f"another name with --name.")

    def _remove_abandoned_imports(self) -> None:
        """Clear what a killed import or removal left behind (only if its process is gone)."""
        for folder in self.root.glob(f"{_IMPORTING}*"):
            pid = _pid_in(folder.name)
            if pid is None or not _process_alive(pid):
                shutil.rmtree(folder, ignore_errors=True)


def _is_upscaler(source: Path, kind: str) -> bool:
    """Told by content: an ONNX upscaler, or a checkpoint whose tensor names are a
    super-resolution network's."""
    from engine.export.formats import ONNX_UPSCALER, looks_like_upscaler

    return kind == ONNX_UPSCALER or looks_like_upscaler(source, kind)


def _installed_upscaler(folder: Path) -> InstalledModel:
    description = UpscalerDescription.load(folder)
    size = sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())
    return InstalledModel(folder.name, description.summary, "", size, folder, kind=UPSCALER)


def _installed(folder: Path, built_in: bool = False) -> InstalledModel:
    description = ModelDescription.load(folder)
    size = sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())
    return InstalledModel(folder.name, description.family, description.prediction_type, size,
                          folder, built_in)


def _pid_in(name: str) -> int | None:
    match = re.match(rf"{re.escape(_IMPORTING)}(?:removed-)?(\d+)-", name)
    return int(match.group(1)) if match else None


def _process_alive(pid: int) -> bool:
    if pid == os.getpid() or os.name != "posix":
        # On Windows os.kill(pid, 0) would send Ctrl+C, not probe: leftovers stay there.
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _make_readable(folder: Path) -> None:
    """Give the model folder the permissions a normal mkdir would (mode 777 less umask)."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
