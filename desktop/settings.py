"""Easel's settings, the window's and the command line's: a small JSON file with a schema
version, read once at start (the command line reads what pictures carry and the content
filter's mode from it).

A damaged or unreadable file never stops the app: it is moved aside, the defaults are used,
and the caller shows the one sentence in ``LoadedSettings.message``. Qt-free, so tests and
the command line can read the same file.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from platformdirs import user_config_dir

from desktop.provenance.policy import ProvenanceSettings

SCHEMA_VERSION = 1
FILE_NAME = "settings.json"
THEMES = ("system", "light", "dark")
PROVIDERS = ("tensorrt", "cuda", "directml", "coreml", "cpu")
FILTER_MODES = ("off", "warn", "block")  # as desktop.content_filter.MODES
GPU_PRECISIONS = ("auto", "fp16", "fp32")  # as engine.runtime.RuntimeOptions.precision


@dataclass(frozen=True)
class Settings:
    # Short provider names, best first; empty means "the best available" (the engine's order).
    providers: tuple[str, ...] = ()
    # Where pictures, models and the library live; None means the platform's data folder.
    data_folder: str | None = None
    # Whether copies the app hands out (drag out, export) carry the prompt and settings.
    # Library files always do: the index is rebuilt from them.
    embed_metadata: bool = True
    theme: str = "system"
    # How many models keep their sessions in memory; the least recently used goes first.
    models_kept_loaded: int = 2
    cpu_threads: int = 0  # 0: every core
    # On a GPU: "auto" computes in half precision (fp16: faster, half the memory), "fp32" in
    # full precision (for a model that draws black or broken pictures in fp16).
    gpu_precision: str = "auto"
    # The installed upscaler that Upscale and hires fix use; "" (or one since removed): the
    # first installed by name.
    upscaler: str = ""
    # The installed tiny VAE (TAESD) that fits the model: live previews with it, and "fast
    # decode" of the final pictures with it (off: the model's own VAE keeps fine detail).
    tiny_vae_previews: bool = True
    fast_decode: bool = False
    window_geometry: str = ""  # Qt's saveGeometry(), base64
    # Whether Models › Get models… keeps the downloaded source after a successful import;
    # Easel uses its own ONNX copy, so by default the download is deleted.
    keep_downloads: bool = False
    # Other apps' model folders (ComfyUI, AUTOMATIC1111, InvokeAI): the model picker offers
    # what they hold and imports a model when it is chosen, reading the file in place.
    model_folders: tuple[str, ...] = ()
    # Content Credentials (C2PA) on every picture Easel makes; the prompt in them only when
    # the user opts in (prompts can be private). The invisible watermark is opt-in.
    content_credentials: bool = True
    credentials_prompt: bool = False
    watermark: bool = False
    # The prompt filter: "off", "warn" (the picture is made and labelled) or "block".
    content_filter: str = "warn"
    extra: dict = field(default_factory=dict, compare=False)

    def validated(self) -> Settings:
        """The same settings, or ValueError naming the first value that makes no sense."""
        if not all(name in PROVIDERS for name in self.providers):
            raise ValueError("unknown provider")
        if self.theme not in THEMES:
            raise ValueError("unknown theme")
        for name, value, low in (("models_kept_loaded", self.models_kept_loaded, 1),
                                 ("cpu_threads", self.cpu_threads, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"bad {name}")
        for name in ("embed_metadata", "keep_downloads", "content_credentials",
                     "credentials_prompt", "watermark", "tiny_vae_previews", "fast_decode"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"bad {name}")
        if self.gpu_precision not in GPU_PRECISIONS:
            raise ValueError("unknown gpu_precision")
        if self.content_filter not in FILTER_MODES:
            raise ValueError("unknown content_filter")
        if not isinstance(self.upscaler, str):
            raise ValueError("bad upscaler")
        if not all(isinstance(folder, str) and folder for folder in self.model_folders):
            raise ValueError("bad model_folders")
        return self

    def provenance(self) -> ProvenanceSettings:
        """What the library does to each picture it saves, as these settings say."""
        return ProvenanceSettings(self.content_credentials, self.credentials_prompt,
                                  self.watermark)


@dataclass(frozen=True)
class LoadedSettings:
    settings: Settings
    message: str | None = None  # a sentence for the user when the file could not be used


def default_path() -> Path:
    """``EASEL_CONFIG`` overrides the platform's config folder (tests, portable installs)."""
    override = os.environ.get("EASEL_CONFIG")
    folder = Path(override).expanduser() if override else Path(user_config_dir("Easel", False))
    return folder / FILE_NAME


def load(path: Path) -> LoadedSettings:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return LoadedSettings(Settings())
    except OSError as error:
        return LoadedSettings(Settings(), f"Your settings could not be read ({error.strerror}); "
                                          "Easel started with the default settings.")
    try:
        return LoadedSettings(_parse(text))
    except _NewerSettings:
        return LoadedSettings(Settings(), "Your settings were saved by a newer Easel; this one "
                                          "uses its defaults and leaves that file as it is.")
    except (ValueError, TypeError, KeyError):
        aside = path.with_name(path.name + ".damaged")
        try:
            os.replace(path, aside)
        except OSError:
            aside = path
        return LoadedSettings(Settings(), f"Your settings file was damaged, so Easel started "
                                          f"with the default settings (the old file is kept "
                                          f"as '{aside}').")


class _NewerSettings(Exception):
    pass


def _parse(text: str) -> Settings:
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("not an object")
    version = data.pop("schema", None)
    if not isinstance(version, int) or version < 1:
        raise ValueError("no schema version")
    if version > SCHEMA_VERSION:
        raise _NewerSettings
    known = set(Settings.__dataclass_fields__) - {"extra"}
    values = {key: value for key, value in data.items() if key in known}
    unknown = {key: value for key, value in data.items() if key not in known}
    if "providers" in values:
        if not isinstance(values["providers"], list):
            raise ValueError("providers is not a list")
        values["providers"] = tuple(values["providers"])
    if "model_folders" in values:
        if not isinstance(values["model_folders"], list):
            raise ValueError("model_folders is not a list")
        values["model_folders"] = tuple(values["model_folders"])
    for name in ("data_folder", "window_geometry", "theme"):
        value = values.get(name)
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{name} is not text")
    # Keys a later schema might add are kept, so saving does not throw them away.
    return Settings(**values, extra=unknown).validated()


def save(settings: Settings, path: Path) -> None:
    """Write atomically, so a crash mid-save leaves the old file, never half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"schema": SCHEMA_VERSION, **settings.extra}
    data.update({key: value for key, value in asdict(settings).items() if key != "extra"})
    data["providers"] = list(settings.providers)
    data["model_folders"] = list(settings.model_folders)
    descriptor, temporary = tempfile.mkstemp(prefix=".settings-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
            json.dump(data, stream, indent=2, sort_keys=True)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def with_changes(settings: Settings, **changes: object) -> Settings:
    return replace(settings, **changes).validated()


def data_location(settings: Settings, in_use: Path) -> str:
    """One sentence on where pictures, models and the library really are, and what put them
    there: ``EASEL_HOME`` wins over the data folder setting (the launcher sets it from the
    setting only when the environment has none)."""
    override = os.environ.get("EASEL_HOME")
    chosen = settings.data_folder
    if override and (not chosen or Path(override).expanduser() != Path(chosen).expanduser()):
        return (f"In use now: {in_use} (set by the EASEL_HOME environment variable, which "
                "wins over this setting).")
    if override:
        return f"In use now: {in_use} (this setting)."
    return f"In use now: {in_use} (the standard place for this system)."
