"""Copy installed models into a folder of their own, to hand to a Ray cluster's workers.

``easel batch FILE --ray ADDRESS --ray-models FOLDER`` has the workers read each model from
FOLDER/NAME, so FOLDER must hold complete, undamaged models under their installed names. A
model is either fully there or absent: it is copied into a hidden ``.packing-*`` folder
inside FOLDER, every byte of the copy checked against the model's manifest, and only then
renamed to FOLDER/NAME. Everything is checked before the first byte is copied (names, each
installed model against its manifest, what FOLDER already holds, free space), so bad input
costs nothing and leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from desktop.files import fsync_folder, make_readable, process_alive
from desktop.model_store import ModelStore
from engine.errors import EaselError, ModelError
from engine.manifest import read_manifest, verify_manifest

__all__ = ["PackError", "PackProgress", "PackedModel", "pack_models"]

# (what is being done, files done, files in all), as the store's ImportProgress.
PackProgress = Callable[[str, int, int], None]
_PACKING = ".packing-"
# Another computer may be packing into the same shared folder: only this host's leftovers,
# from processes that are gone, are cleared.
_HOST = re.sub(r"[^A-Za-z0-9]", "_", socket.gethostname())[:40] or "host"
_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
_DENIED = {errno.EACCES, errno.EPERM, errno.EROFS}


class PackError(EaselError):
    """A model could not be packed; nothing half-written was left in the folder."""


@dataclasses.dataclass(frozen=True)
class PackedModel:
    """A model in the packed folder: ``copied`` is False when an identical copy was already
    there and was kept."""

    name: str
    folder: Path
    size_bytes: int
    copied: bool


@dataclasses.dataclass(frozen=True)
class _Planned:
    name: str
    source: Path
    target: Path
    size_bytes: int
    already_there: bool


def pack_models(store: ModelStore, names: Sequence[str], folder: Path,
                progress: PackProgress | None = None) -> list[PackedModel]:
    """Copy the installed models ``names`` (any kind, built-in ones too) into
    ``folder``/NAME; returns them in the order named. Raises one sentence (PackError or the
    store's ModelError) for an unknown name, a damaged model, a different model already in
    ``folder`` under that name, or a folder that cannot take them."""
    folder = Path(folder).expanduser()
    _make_folder(folder)
    _remove_abandoned(folder)
    plans = [_plan(store, name, folder) for name in dict.fromkeys(names)]
    _check_space(folder, [plan for plan in plans if not plan.already_there])
    packed = []
    for plan in plans:
        if not plan.already_there and not _copy_model(plan, folder, progress):
            plan = dataclasses.replace(plan, already_there=True)  # packed meanwhile by another
        packed.append(PackedModel(plan.name, plan.target, plan.size_bytes,
                                  copied=not plan.already_there))
    return packed


def _plan(store: ModelStore, name: str, folder: Path) -> _Planned:
    """Check model ``name`` and what ``folder`` holds under its name, before any copying."""
    source = store.path_of(name, kind=None)  # one sentence for an unknown name
    verify_manifest(source)  # one sentence for a damaged model (sizes, changed files)
    files = read_manifest(source)["files"]
    size = sum(entry["size"] for entry in files.values())
    target = folder / name
    return _Planned(name, source, target, size, _already_there(name, files, target))


def _already_there(name: str, files: dict, target: Path) -> bool:
    """Whether ``target`` holds this very model (the same files, by checksum); a different
    model or a damaged copy there is refused, never replaced."""
    if not target.exists() and not target.is_symlink():
        return False
    try:
        there = read_manifest(target)["files"]
    except (ModelError, OSError):
        there = None
    if there is None or _contents(there) != _contents(files):
        raise PackError(f"'{target}' already holds something other than the model '{name}'; "
                        f"remove it, or pack into another folder.")
    try:
        verify_manifest(target)
    except (ModelError, OSError):
        raise PackError(f"'{target}' holds a damaged copy of the model '{name}'; remove it "
                        f"and pack again.") from None
    return True


def _contents(files: dict) -> dict[str, tuple[int, str]]:
    """A manifest's files by size and checksum: a copy's modification times may differ."""
    return {path: (entry["size"], entry["sha256"]) for path, entry in files.items()}


def _make_folder(folder: Path) -> None:
    if folder.exists() and not folder.is_dir():
        raise PackError(f"'{folder}' is a file, not a folder; name a folder to pack into.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = tempfile.mkdtemp(prefix=f"{_PACKING}{_HOST}-{os.getpid()}-", dir=folder)
        os.rmdir(probe)
    except OSError as error:
        raise _folder_error(folder, error) from error


def _check_space(folder: Path, plans: list[_Planned]) -> None:
    needed = sum(plan.size_bytes for plan in plans)
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise PackError(f"The disk holding '{folder}' has {_gigabytes(free)} free and the "
                        f"models need {_gigabytes(needed)}; free some space or pack into "
                        f"another folder.")


def _copy_model(plan: _Planned, folder: Path, progress: PackProgress | None) -> bool:
    """Copy one model into place; False when an identical copy appeared meanwhile."""
    building = Path(tempfile.mkdtemp(prefix=f"{_PACKING}{_HOST}-{os.getpid()}-", dir=folder))
    try:
        files = sorted(path for path in plan.source.rglob("*") if path.is_file())
        for done, path in enumerate(files):
            relative = path.relative_to(plan.source)
            if progress is not None:
                progress(f"{plan.name}: {relative.as_posix()}", done, len(files))
            (building / relative).parent.mkdir(parents=True, exist_ok=True)
            _copy_file(path, building / relative)
        if progress is not None:
            progress(f"{plan.name}: checking the copy", len(files), len(files))
        _check_copy(plan, building)
        make_readable(building)  # mkdtemp made it private; the workers must read it
        return _move_into_place(plan, building, folder)
    except OSError as error:
        raise _copy_error(plan, folder, error) from error
    finally:
        shutil.rmtree(building, ignore_errors=True)  # gone already once renamed


def _copy_file(source: Path, target: Path) -> None:
    """Copy one file with its modification time (the manifest's cheap check compares it),
    on disk before the rename that makes the model visible. Not its mode: a built-in model's
    read-only files would stay read-only in the packed folder."""
    shutil.copyfile(source, target)
    with open(target, "rb") as stream:
        os.fsync(stream.fileno())
    times = source.stat()
    os.utime(target, ns=(times.st_atime_ns, times.st_mtime_ns))


def _check_copy(plan: _Planned, building: Path) -> None:
    """Hash every copied byte: a model damaged on this disk, or by the copy, goes no further."""
    try:
        verify_manifest(building, full=True)
    except ModelError:
        raise PackError(f"The model '{plan.name}' is damaged (a file does not match its "
                        f"checksum); import it again, then pack it.") from None


def _move_into_place(plan: _Planned, building: Path, folder: Path) -> bool:
    try:
        building.rename(plan.target)
    except OSError as error:
        if error.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.EISDIR, errno.ENOTDIR):
            raise
        # Someone put something there since the check: keep it if it is this model.
        _already_there(plan.name, read_manifest(building)["files"], plan.target)
        return False
    fsync_folder(folder)
    return True


def _folder_error(folder: Path, error: OSError) -> PackError:
    if error.errno in _FULL:
        return PackError(f"The disk holding '{folder}' is full; free some space or pack into "
                         f"another folder.")
    if error.errno in _DENIED:
        return PackError(f"Easel cannot write in '{folder}' (permission denied or read-only); "
                         f"make it writable or pack into another folder.")
    if error.errno in (errno.ENOTDIR, errno.EEXIST):
        return PackError(f"'{folder}' cannot be made: a file is in the way; name another "
                         f"folder to pack into.")
    return PackError(f"Easel cannot write in '{folder}' ({error.strerror or error}); pack "
                     f"into another folder.")


def _copy_error(plan: _Planned, folder: Path, error: OSError) -> PackError:
    if error.errno in _FULL:
        return PackError(f"The disk holding '{folder}' became full while packing "
                         f"'{plan.name}' ({_gigabytes(plan.size_bytes)}); nothing of it was "
                         f"left there: free some space and pack again.")
    if error.errno in _DENIED:
        return PackError(f"Easel cannot write in '{folder}' (permission denied or read-only) "
                         f"while packing '{plan.name}'; make it writable and pack again.")
    return PackError(f"Packing '{plan.name}' into '{folder}' failed "
                     f"({error.strerror or error}); nothing of it was left there.")


def _remove_abandoned(folder: Path) -> None:
    """Clear what a killed pack on this computer left behind (only if its process is gone)."""
    for leftover in folder.glob(f"{_PACKING}{_HOST}-*"):
        match = re.match(rf"{re.escape(_PACKING + _HOST)}-(\d+)-", leftover.name)
        if match and not process_alive(int(match.group(1))):
            shutil.rmtree(leftover, ignore_errors=True)


def _gigabytes(size: int) -> str:
    return f"{size / 1e9:.2f} GB"
