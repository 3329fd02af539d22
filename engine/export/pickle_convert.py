"""Converts a pickle checkpoint (.ckpt, .pt, .bin, .pth) to safetensors, safely, then to a
diffusers folder through engine.export.single_file.

Unpickling runs code named in the file, so a pickle is only ever read by
``torch.load(weights_only=True)``, whose restricted unpickler builds tensors and plain
containers and refuses everything else. It runs in a separate Python process: a hostile or
broken file can at worst crash that process, and Easel's own process never unpickles anything.
There is no fallback to an unrestricted load.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from engine.errors import ModelError
from engine.export import require_export_dependencies
from engine.export.single_file import (
    CONFIGS_ROOT,
    ConvertedModel,
    Progress,
    ShouldStop,
    convert_single_file,
)

# Exit codes of the loading process, each with the sentence the user reads.
REFUSED, UNREADABLE, NOT_A_STATE_DICT, OUT_OF_MEMORY = 3, 4, 5, 6

# Run with ``python -I -c``: isolated mode ignores PYTHON* variables, the user's site folder and
# the current folder, so nothing beside the checkpoint can change what this imports.
# LOAD_PICKLE leaves the file's contents in ``loaded`` (or exits with one of the codes above);
# a script goes on from there to pick out the tensors and write them with the writer.
LOAD_PICKLE = r"""
import pickle, runpy, sys, zipfile
import torch

source, target, writer = sys.argv[1:4]
try:
    # mmap keeps a multi-gigabyte zip checkpoint out of memory; the legacy format cannot map.
    loaded = torch.load(source, map_location="cpu", weights_only=True,
                        mmap=zipfile.is_zipfile(source))
except pickle.UnpicklingError as error:
    # Opcodes torch.save never writes (a plain pickle's framing) mean "not a torch file";
    # anything else the restricted unpickler refuses is an object it will not build.
    sys.exit(4 if "Unsupported operand" in str(error) else 3)
except MemoryError:
    sys.exit(6)
except Exception:
    sys.exit(4)
"""
LOAD_SCRIPT = LOAD_PICKLE + r"""
# Lightning/ldm training checkpoints wrap the weights in "state_dict"; BasicSR's (Real-ESRGAN's
# .pth files) in "params_ema", the averaged weights it releases, or "params"; A1111's
# textual-inversion embeddings in "string_to_param".
for wrapper in ("string_to_param", "state_dict", "params_ema", "params"):
    if isinstance(loaded, dict) and isinstance(loaded.get(wrapper), dict):
        loaded = loaded[wrapper]
        break
if not isinstance(loaded, dict):
    sys.exit(5)
tensors = {name: value for name, value in loaded.items()
           if isinstance(name, str) and isinstance(value, torch.Tensor)}  # not step counters
if not tensors:
    sys.exit(5)
runpy.run_path(writer)["save_safetensors"](tensors, target, {"format": "pt"})
"""
WRITER = Path(__file__).with_name("safetensors_write.py")


def pickle_to_safetensors(checkpoint: Path, output: Path, *, script: str = LOAD_SCRIPT,
                          what: str = "a model checkpoint") -> None:
    """Write the tensors of the pickle checkpoint to the .safetensors file ``output``, reading
    the pickle only with ``torch.load(weights_only=True)`` in a separate process. ``script``
    (``LOAD_PICKLE`` and what follows) picks the tensors out; ``what`` is what the file is
    not when it holds no table of named weights."""
    require_export_dependencies()
    checkpoint = Path(checkpoint)
    name = checkpoint.name
    if not checkpoint.is_file():
        raise ModelError(f"'{name}' does not exist.")
    result = subprocess.run(
        [sys.executable, "-I", "-c", script, str(checkpoint.resolve()), str(output),
         str(WRITER)],
        env=_loading_environment(), stdin=subprocess.DEVNULL, capture_output=True, check=False,
    )
    if result.returncode == REFUSED:
        raise ModelError(f"'{name}' contains Python objects other than tensors, so Easel will "
                         f"not load it: unpickling them could run code hidden in the file.")
    if result.returncode == UNREADABLE:
        raise ModelError(f"'{name}' is damaged or is not a PyTorch checkpoint, so it cannot be "
                         f"read.")
    if result.returncode == NOT_A_STATE_DICT:
        raise ModelError(f"'{name}' holds no table of named weights, so it is not {what}.")
    if result.returncode == OUT_OF_MEMORY:
        raise ModelError(f"'{name}' is too large to load in this computer's memory.")
    if result.returncode != 0 or not Path(output).is_file():
        # The process's own report stays in the chained traceback for logs.
        details = ChildProcessError(result.stderr.decode("utf-8", "replace")[-4000:])
        raise ModelError(f"'{name}' could not be converted: the loading process failed "
                         f"(exit status {result.returncode}).") from details


def _loading_environment() -> dict[str, str]:
    environment = dict(os.environ)
    # torch honours this only when weights_only is not passed; dropped anyway, belt and braces.
    environment.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)
    return environment


def convert_pickle(checkpoint: Path, destination: Path, *, family: str | None = None,
                   prediction: str | None = None, configs_root: Path = CONFIGS_ROOT,
                   progress: Progress | None = None, should_stop: ShouldStop | None = None,
                   scratch: Path | None = None) -> ConvertedModel:
    """Convert the pickle checkpoint into a diffusers folder in the empty ``destination``.

    The intermediate .safetensors file (as large as the checkpoint) lives in a temporary
    folder under ``scratch`` (the system's temporary folder by default) and is always removed.
    The other arguments are those of ``convert_single_file``.
    """
    checkpoint = Path(checkpoint)
    with tempfile.TemporaryDirectory(prefix="easel-pickle-", dir=scratch) as folder:
        # Named after the checkpoint, so refusals further on name the user's file.
        converted = Path(folder) / checkpoint.name
        pickle_to_safetensors(checkpoint, converted)
        return convert_single_file(converted, destination, family=family,
                                   prediction=prediction, configs_root=configs_root,
                                   progress=progress, should_stop=should_stop)
