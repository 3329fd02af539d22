"""Models in the user's other model folders (AUTOMATIC1111/Forge, ComfyUI, InvokeAI), offered
in the model picker and imported when chosen. Qt-free: the view-model runs it off the GUI
thread, since a folder of checkpoints on a slow disk takes a moment to read."""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from desktop.model_sources.scan import DIFFUSION, MODEL_FILES, app_of, scan_folder
from engine.errors import EaselError

_NOT_IN_NAMES = re.compile(r"[^A-Za-z0-9._ -]+")


@dataclass(frozen=True)
class FolderChoice:
    """A model in one of the user's folders, not imported yet."""

    name: str  # the name it is imported under (and then listed as)
    path: Path
    family: str  # "Stable Diffusion 1.x", "SDXL inpainting", "diffusers folder", ...
    size_bytes: int
    app: str | None  # "ComfyUI", ...: whose folder it is in, where that can be told
    built_in: bool = False

    @property
    def label(self) -> str:
        return f"{self.name}  ({self.family}; imported when chosen)"

    @property
    def tooltip(self) -> str:
        where = f"{self.app} folder" if self.app else "folder"
        return (f"In your {where}: {self.path}. Choosing it imports it into Easel (in the "
                f"queue); the file itself is only read.")


def install_name(path: Path) -> str:
    """The model name a found file or folder is imported under: its name, in the letters the
    model store accepts."""
    stem = path.stem if path.suffix.lower() in MODEL_FILES else path.name
    name = _NOT_IN_NAMES.sub("-", stem).strip(" .-_")[:64]
    return name or "model"


def folder_choices(folders: Sequence[str | Path],
                   installed: Collection[str]) -> tuple[list[FolderChoice], list[str]]:
    """The importable diffusion models in ``folders`` not imported yet (by name), and one
    sentence for each folder that could not be read (gone, unplugged)."""
    found: dict[str, FolderChoice] = {}
    problems = []
    for folder in folders:
        folder = Path(folder).expanduser()
        try:
            models = scan_folder(folder)
        except EaselError as error:
            problems.append(f"The model folder {folder} was skipped: {error}")
            continue
        app = app_of(folder)
        for model in models:
            name = install_name(model.path)
            if model.kind != DIFFUSION or name in installed or name in found:
                continue  # upscalers are chosen in the settings; the first of a name wins
            found[name] = FolderChoice(name, model.path, model.description, model.size_bytes,
                                       app)
    return sorted(found.values(), key=lambda choice: choice.name.lower()), problems
