"""The GPU benchmark's models: random-weight diffusers folders, exported by Easel's own exporter.

Three models, each in the real architecture (``--scale real``, from ``resources/configs``) or a
tiny one for the CPU dry run (``--scale tiny``, the test suite's tiny configs):

- ``sd15``: Stable Diffusion 1.5 (``resources/configs/sd15``, as ``make_random_sd15.py``).
- ``turbo``: an SD-Turbo-shaped model: SD 2.1's architecture (``resources/configs/sd2``) at
  512x512 (UNet sample size 64), epsilon prediction, and the Euler scheduler with "trailing"
  spacing SD-Turbo ships, from which Easel's importer recognises a turbo model.
- ``sdxl``: SDXL 1.0 base (``resources/configs/sdxl``).

Weights are the libraries' default initialisation after ``torch.manual_seed(seed + k)`` for the
k-th component (norm layers weight 1, bias 0), saved in float16 as the hub ships checkpoints:
half the disk and writing time, and both sides of the benchmark read the very same values
(Easel's exporter widens them to float32, diffusers loads them as they are).

Each model lives in ``ROOT/NAME-SCALE/``: ``diffusers/`` (the hub layout), ``easel/`` (the
exported folder with its manifest, as the model store installs it), ``cache/`` (Easel's
optimised graphs) and ``ready`` once both folders are complete. Each folder is built beside
and renamed into place, under a lock: a background build and the benchmark can ask for the same
model, and the second waits for the first instead of building it twice.

Usage: ``python -m tests.benchmarks.gpu.models --work DIR [--scale real] [--parallel] sd15 ...``
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.benchmarks.make_random_sd15 import CLIP_TOKENIZER, TOKENIZER_FILES  # noqa: E402

CONFIGS = REPO / "resources" / "configs"
SCALES = ("real", "tiny")
SHM = Path("/dev/shm")

# SD-Turbo's scheduler as stabilityai/sd-turbo ships it.
TURBO_SCHEDULER = {
    "_class_name": "EulerDiscreteScheduler", "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "beta_start": 0.00085, "clip_sample": False,
    "interpolation_type": "linear", "num_train_timesteps": 1000, "prediction_type": "epsilon",
    "sample_max_value": 1.0, "set_alpha_to_one": False, "skip_prk_steps": True,
    "steps_offset": 1, "timestep_spacing": "trailing", "trained_betas": None,
    "use_karras_sigmas": False,
}


@dataclass(frozen=True)
class Family:
    """One of the benchmark's models: where its architecture comes from, and what changes."""

    name: str
    configs: str  # the folder under resources/configs
    tiny: str  # its tiny configs: tests.tiny_models.CONFIGS or tests.tiny_models_xl.XL_CONFIGS
    pad_tokens: tuple[str, ...]  # of tokenizer (and tokenizer_2)
    unet_changes: dict = field(default_factory=dict)
    scheduler: dict | None = None  # replaces the shipped scheduler config
    # Disk a real-size build takes, GB: diffusers float16, Easel float32, and Easel's cache
    # (the float16 copy and its optimised graph).
    disk_gb: float = 10.0

    @property
    def is_sdxl(self) -> bool:
        return len(self.pad_tokens) == 2


FAMILIES: dict[str, Family] = {
    "sd15": Family("sd15", "sd15", "sd1", ("<|endoftext|>",), disk_gb=12),
    "turbo": Family("turbo", "sd2", "sd-turbo", ("!",), unet_changes={"sample_size": 64},
                    scheduler=TURBO_SCHEDULER, disk_gb=14),
    "sdxl": Family("sdxl", "sdxl", "sdxl", ("<|endoftext|>", "!"), disk_gb=36),
}


@dataclass(frozen=True)
class ModelFolders:
    root: Path

    @property
    def diffusers(self) -> Path:
        return self.root / "diffusers"

    @property
    def easel(self) -> Path:
        return self.root / "easel"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def ready(self) -> bool:
        return (self.root / "ready").is_file()


# --- configs -------------------------------------------------------------------------------

def component_configs(family: Family, scale: str) -> dict[str, dict]:
    """unet, vae, text_encoder(s) and scheduler configs, and the model index, of ``family``."""
    index = _read(family.configs, "model_index.json")
    if scale == "real":
        names = ("unet", "vae", "text_encoder", "text_encoder_2")[:4 if family.is_sdxl else 3]
        configs = {name: _read(family.configs, f"{name}/config.json") for name in names}
        configs["scheduler"] = _read(family.configs, "scheduler/scheduler_config.json")
    else:
        configs = {name: dict(value) for name, value in _tiny_configs(family.tiny).items()
                   if name in ("unet", "vae", "text_encoder", "text_encoder_2", "scheduler")}
    if scale == "real":
        configs["unet"].update(family.unet_changes)
    if family.scheduler is not None:
        configs["scheduler"] = dict(family.scheduler)
    index["scheduler"] = ["diffusers", configs["scheduler"]["_class_name"]]
    if not family.is_sdxl:
        index.update(safety_checker=[None, None], feature_extractor=[None, None],
                     requires_safety_checker=False)
    configs["model_index"] = index
    return configs


def _read(family_folder: str, relative: str) -> dict:
    return json.loads((CONFIGS / family_folder / relative).read_text(encoding="utf-8"))


def _tiny_configs(name: str) -> dict:
    from tests.tiny_models import CONFIGS as TINY
    from tests.tiny_models_xl import XL_CONFIGS

    return {**TINY, **XL_CONFIGS}[name]


# --- building ------------------------------------------------------------------------------

def build_diffusers_folder(family: Family, scale: str, destination: Path, seed: int = 0) -> None:
    """Write ``family``'s random-weight diffusers folder into the empty ``destination``."""
    import torch

    _quiet_libraries()
    configs = component_configs(family, scale)
    for offset, (name, build) in enumerate(component_builders().items()):
        if name not in configs:
            continue
        torch.manual_seed(seed + offset)
        # One component in memory at a time: the SDXL UNet alone is 10 GB in float32.
        module = build(configs[name]).eval()
        _check_finite(name, module)
        module.to(torch.float16).save_pretrained(destination / name, safe_serialization=True)
        del module
        print(f"  {family.name} {name}: {_folder_gb(destination / name):.2f} GB", flush=True)
    _write_json(destination / "scheduler" / "scheduler_config.json", configs["scheduler"])
    _write_json(destination / "model_index.json", configs["model_index"])
    for number, pad in enumerate(family.pad_tokens):
        _write_tokenizer(destination / ("tokenizer" if number == 0 else "tokenizer_2"), pad)


def component_builders() -> dict:
    """Component name -> a function making that component, random, from its config."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    return {
        "text_encoder": lambda config: CLIPTextModel(CLIPTextConfig.from_dict(config)),
        "text_encoder_2": lambda config: CLIPTextModelWithProjection(
            CLIPTextConfig.from_dict(config)),
        "vae": AutoencoderKL.from_config,
        "unet": UNet2DConditionModel.from_config,
    }


def _quiet_libraries() -> None:
    # Their progress bars and a note on casting to float16 (the VAE keeps no module in
    # float32 here) would bury the build's own lines in the device's short output.
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def _check_finite(name: str, module) -> None:
    import torch

    for parameter_name, parameter in module.named_parameters():
        if not torch.isfinite(parameter).all():
            raise RuntimeError(f"{name}: {parameter_name} has non-finite values")


def _write_tokenizer(folder: Path, pad_token: str) -> None:
    """The CLIP tokenizer as hub Stable Diffusion folders carry it, with the family's padding."""
    folder.mkdir(parents=True)
    for name in TOKENIZER_FILES:
        if name.endswith(".json") and name != "vocab.json":
            data = json.loads((CLIP_TOKENIZER / name).read_text(encoding="utf-8"))
            _write_json(folder / name, {**data, "pad_token": pad_token})
        else:
            shutil.copyfile(CLIP_TOKENIZER / name, folder / name)


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _folder_gb(folder: Path) -> float:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file()) / 1e9


def export_easel_folder(source: Path, destination: Path) -> None:
    """Export ``source`` with Easel's exporter and write the manifest, as an import does."""
    from engine.export.diffusers_folder import export_diffusers_folder
    from engine.manifest import write_manifest

    export_diffusers_folder(source, destination)
    write_manifest(destination)


@contextlib.contextmanager
def _built_beside(final: Path) -> Iterator[Path]:
    """An empty folder next to ``final``, renamed to it when the block ends without error."""
    building = Path(tempfile.mkdtemp(prefix=f".{final.name}-building-", dir=final.parent))
    try:
        yield building
        building.chmod(0o755)
        os.replace(building, final)
    finally:
        shutil.rmtree(building, ignore_errors=True)


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"  waiting for the build of {root.name} already under way", flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def is_building(root: Path) -> bool:
    """Whether another process is building the model in ``root`` now (holds its lock)."""
    if not (root / ".lock").is_file():
        return False
    with open(root / ".lock") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(lock, fcntl.LOCK_UN)
    return False


def model_root(work: Path, name: str, scale: str) -> Path:
    """Where ``name`` is (or will be): ``WORK/models/NAME-SCALE``, a link when it lives
    elsewhere (see ``place``)."""
    return work / "models" / f"{name}-{scale}"


class BuildFailed(Exception):
    """A model could not be built (or could not before: it is not tried twice)."""


def ensure(name: str, scale: str, work: Path, seed: int = 0) -> ModelFolders:
    """The model's folders, built now unless they are ready (or being built: then waited for).

    Raises BuildFailed when it cannot be built, now or in an earlier try (``place`` found no
    room, an export failed): on the device a second try would only cost the same minutes."""
    family = FAMILIES[name]
    folders = ModelFolders(model_root(work, name, scale))
    if folders.ready:
        return folders
    with _locked(folders.root):
        if folders.ready:
            return folders
        failed = folders.root / "failed"
        if failed.is_file():
            raise BuildFailed(failed.read_text().strip())
        _limit_threads()
        started = time.monotonic()
        try:
            if not folders.diffusers.is_dir():
                with _built_beside(folders.diffusers) as building:
                    build_diffusers_folder(family, scale, building, seed)
            built = time.monotonic()
            if not folders.easel.is_dir():
                with _built_beside(folders.easel) as building:
                    export_easel_folder(folders.diffusers, building)
        except Exception as error:
            text = " ".join(str(error).split()) or type(error).__name__
            failed.write_text(f"building {name} failed: {type(error).__name__}: {text}\n")
            raise BuildFailed(failed.read_text().strip()) from error
        (folders.root / "ready").write_text(json.dumps({
            "built_s": round(built - started, 1),
            "exported_s": round(time.monotonic() - built, 1)}) + "\n")
        print(f"  {name} ({scale}) ready in {time.monotonic() - started:.0f} s: diffusers "
              f"{built - started:.0f} s, export {time.monotonic() - built:.0f} s", flush=True)
    return folders


def _limit_threads() -> None:
    """torch's threads for building, from EASEL_BUILD_THREADS: builds running side by side
    share the cores, and on a busy 2-core machine torch's spinning threads run a tiny model
    fifty times slower than one thread does."""
    threads = os.environ.get("EASEL_BUILD_THREADS")
    if threads:
        import torch

        torch.set_num_threads(int(threads))


def build_times(folders: ModelFolders) -> dict:
    """How long the model took to make and export (its ``ready`` file)."""
    try:
        return json.loads((folders.root / "ready").read_text())
    except (OSError, ValueError):
        return {}


# --- where the models go ---------------------------------------------------------------------

def free_gb(folder: Path) -> float:
    while not folder.exists():
        folder = folder.parent
    return shutil.disk_usage(folder).free / 1e9


def place(names: list[str], scale: str, work: Path) -> dict[str, str]:
    """Decide where each model is built: under WORK while its disk has room, else in /dev/shm
    (memory) while that has; WORK/models/NAME-SCALE becomes a link to the place chosen. SDXL
    alone takes about 36 GB; the device's disk is 64 GB and holds the image too. A model with
    no room is marked failed, with the sizes, and the others go on. Returns where each went."""
    chosen: dict[str, str] = {}
    room = {work: free_gb(work), SHM: free_gb(SHM) if SHM.is_dir() else 0.0}
    for name in names:
        link = model_root(work, name, scale)
        if link.exists():
            chosen[name] = str(link.resolve())
            continue
        need = FAMILIES[name].disk_gb if scale == "real" else 0.2
        # /dev/shm is memory, which the exports and the benchmark run in too: 24 GB stay free.
        usable = {work: room[work] - 2, SHM: room[SHM] - 24}
        target = next((where for where in (work, SHM) if usable[where] >= need), None)
        link.parent.mkdir(parents=True, exist_ok=True)
        if target is None:
            link.mkdir(exist_ok=True)
            reason = (f"{name} needs about {need:.0f} GB of disk; once the models before it "
                      f"have theirs, {room[work]:.0f} GB are left under {work} and "
                      f"{room[SHM]:.0f} GB in {SHM}")
            (link / "failed").write_text(reason + "\n")
            chosen[name] = reason
            print(f"  {reason}: not built", flush=True)
            continue
        room[target] -= need
        if target == work:
            link.mkdir(exist_ok=True)
        else:
            elsewhere = SHM / "easel-gpu-models" / link.name
            elsewhere.mkdir(parents=True, exist_ok=True)
            link.symlink_to(elsewhere, target_is_directory=True)
        chosen[name] = str(link.resolve())
        print(f"  {name}: built in {chosen[name]} ({need:.0f} GB needed)", flush=True)
    return chosen


def build_all(names: list[str], scale: str, work: Path, parallel: bool, seed: int = 0) -> int:
    """Build every model, each in a process of its own when ``parallel``; 0 when all built."""
    place(names, scale, work)
    if parallel and len(names) > 1:
        command = [sys.executable, "-m", "tests.benchmarks.gpu.models", "--work", str(work),
                   "--scale", scale, "--seed", str(seed)]
        running = {name: subprocess.Popen([*command, name], cwd=REPO) for name in names}
        failed = [name for name, process in running.items() if process.wait() != 0]
    else:
        failed = []
        for name in names:
            try:
                ensure(name, scale, work, seed)
            except BuildFailed as error:
                print(f"  {error}", flush=True)
                failed.append(name)
    if failed:
        print(f"  could not build {', '.join(failed)}", flush=True)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="+", choices=tuple(FAMILIES))
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--scale", choices=SCALES, default="real")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--parallel", action="store_true",
                        help="build the models at once, one process each")
    arguments = parser.parse_args(argv)
    return build_all(arguments.names, arguments.scale, arguments.work.resolve(),
                     arguments.parallel, arguments.seed)


if __name__ == "__main__":
    sys.exit(main())
