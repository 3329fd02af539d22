"""The model importer as a program of its own, for the desktop packages.

Importing a model needs torch, diffusers and transformers (about 1 GB). The desktop packages
leave them out, so the app stays small and starts fast; the separate ``easel-importer``
package holds them, as an ``easel`` program of its own. When this process cannot import
models itself and that program is installed, the model store hands the import to it: the same
``models import`` command, the same data folder (it inherits ``EASEL_HOME``), its progress
read back line by line, and its one-sentence error passed on as ours.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from engine.errors import Cancelled, ModelError

IMPORTER_ENV = "EASEL_IMPORTER"  # the importer program, where it is not on PATH
IMPORTER_NAME = "easel-importer"
DELEGATED_ENV = "EASEL_IMPORTING_FOR_APP"  # set in the importer's environment: no handing on
# Where the Linux packages install it; PATH usually has /usr/bin/easel-importer too.
INSTALLED_IMPORTERS = (Path("/opt/easel-importer/easel-importer"),)
FROZEN_SENTENCE = ("Importing models needs Easel's model importer (torch, diffusers and "
                   "transformers, about 1 GB), which this package leaves out: install the "
                   "easel-importer package, then import again.")

_PROGRESS = re.compile(r"^easel: \[(\d+)/(\d+)\] (.*)$")
_ERROR = re.compile(r"^easel: (?:error: )?(.*)$")


def unavailable_sentence(sentence: str) -> str:
    """The exporter's "install this" ``sentence``, said for how Easel was installed: a frozen
    desktop package has no pip, so it names the importer package instead."""
    from engine.export import UNAVAILABLE_SENTENCE

    frozen = getattr(sys, "frozen", False)
    return FROZEN_SENTENCE if frozen and sentence == UNAVAILABLE_SENTENCE else sentence


def find_importer() -> Path | None:
    """The ``easel-importer`` program: ``EASEL_IMPORTER``, then PATH, then where the Linux
    packages put it. None when none is installed."""
    named = os.environ.get(IMPORTER_ENV)
    if named:
        path = Path(named).expanduser()
        return path if path.is_file() and os.access(path, os.X_OK) else None
    on_path = shutil.which(IMPORTER_NAME)
    if on_path:
        return Path(on_path)
    return next((p for p in INSTALLED_IMPORTERS if p.is_file() and os.access(p, os.X_OK)), None)


def import_with(importer: Path, source: Path, name: str, *, family: str | None = None,
                prediction: str | None = None, distillation: str | None = "auto",
                kind: str | None = None,
                progress: Callable[[str, int, int], None] | None = None,
                should_stop: Callable[[], bool] | None = None) -> None:
    """Run ``importer models import`` and wait; its progress goes to ``progress``.

    Raises ModelError with the importer's own sentence when it fails, Cancelled when
    ``should_stop`` says so (the importer is stopped, and cleans up its half-built folder
    the next time the store opens, as after any interrupted import)."""
    command = [str(importer), "models", "import", str(source), "--name", name,
               "--few-step", distillation or "none"]
    if family:
        command += ["--family", family]
    if prediction:
        command += ["--prediction", prediction]
    if kind:  # the user's answer to "which kind is it?" goes along
        command += ["--kind", kind]
    try:
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                 text=True, bufsize=1,
                                 env={**os.environ, DELEGATED_ENV: "1"})
    except OSError as error:
        raise ModelError(f"The model importer at {importer} could not start ({error}).") \
            from None
    last_message = ""
    assert child.stderr is not None
    # Cancelling is noticed at the importer's next line: it reports each stage as it starts.
    for line in child.stderr:
        line = line.rstrip("\n")
        if should_stop and should_stop():
            child.terminate()
            child.wait()
            raise Cancelled("The import was cancelled.")
        step = _PROGRESS.match(line)
        if step and progress:
            progress(step.group(3), int(step.group(1)), int(step.group(2)))
        elif line.strip():
            last_message = line
    if child.wait() != 0:
        said = _ERROR.match(last_message)
        raise ModelError(said.group(1) if said else
                         f"The model importer failed ({last_message or 'no message'}).")
