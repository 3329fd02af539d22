"""What the library does to every picture it makes, as the user set it: Content Credentials
(on by default, the prompt in them off by default) and the invisible watermark (off by
default). One object, made where the library is opened (the window, the command line), so both
honour the same settings file."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from desktop.provenance import keys
from desktop.provenance.signing import Claim, SigningError, sign_png

# Operations that make a picture from nothing but words (and guides); the rest start from
# a picture, so their credentials say "edited".
NEW_PICTURE_OPERATIONS = frozenset({"text_to_image", "regions"})


@dataclass(frozen=True)
class ProvenanceSettings:
    credentials: bool = True
    credentials_prompt: bool = False  # prompts can be private: the user opts in
    watermark: bool = False


class Provenance:
    """Credentials and watermark for the pictures of one data folder. Thread-safe: the
    window's job thread and the GUI both save pictures."""

    def __init__(self, data_folder: Path, settings: ProvenanceSettings | None = None) -> None:
        self.data_folder = Path(data_folder)
        self.settings = settings or ProvenanceSettings()
        self._identity: keys.SigningIdentity | None = None
        self._lock = threading.Lock()
        self._notes: list[str] = []  # sentences for the user: a replaced key, an unsigned save

    def identity(self) -> keys.SigningIdentity:
        """This installation's signing identity, made on the first signature."""
        with self._lock:
            if self._identity is None:
                self._identity = keys.load_or_create(self.data_folder)
                if self._identity.message:
                    self._notes.append(self._identity.message)
            return self._identity

    def take_notes(self) -> list[str]:
        """What the user must be told since the last call (a replaced key, a picture saved
        without credentials), each once: the caller shows them."""
        with self._lock:
            notes, self._notes = self._notes, []
            return notes

    def serial_number(self) -> int | None:
        """Of this installation's certificate, if one was made already (nothing is made)."""
        if self._identity is None and not keys.identity_path(self.data_folder).is_file():
            return None
        try:
            return self.identity().serial_number
        except OSError:
            return None

    def marked(self, pixels: np.ndarray) -> np.ndarray:
        if not self.settings.watermark:
            return pixels
        from desktop.provenance.watermark import WatermarkError, add_watermark

        try:
            return add_watermark(pixels)
        except WatermarkError:  # too small to carry it (a thumbnail-sized test picture)
            return pixels

    def claim(self, title: str, operation: str, model_name: str | None,
              model_hash: str | None, prompt: str, edit: bool) -> Claim:
        return Claim(title=title, operation=operation, model_name=model_name or None,
                     model_hash=model_hash or None,
                     prompt=prompt if self.settings.credentials_prompt else None, edit=edit)

    def write(self, png: bytes, claim: Claim, destination: BinaryIO,
              parent: Path | None = None) -> None:
        """``png`` to ``destination``, signed when credentials are on. ``parent``: the
        source picture's file, for an edit (its credentials are kept inside the new ones)."""
        if not self.settings.credentials:
            destination.write(png)
            return
        try:
            identity = self.identity()
            if parent is not None and parent.is_file():
                with parent.open("rb") as source:
                    sign_png(png, claim, identity, destination, source)
            else:
                sign_png(png, claim, identity, destination)
        except (SigningError, MemoryError, OSError) as error:
            # No picture is lost for want of a signature: it is saved without one, and said.
            # (A full disk fails again below, and is said as such by the atomic write.)
            reason = ("too large to sign in memory" if isinstance(error, MemoryError)
                      else f"the key could not be made: {error.strerror or error}"
                      if isinstance(error, OSError) else str(error))
            destination.seek(0)
            destination.truncate()
            destination.write(png)
            with self._lock:
                self._notes.append(f"'{claim.title}' was saved without Content Credentials "
                                   f"({reason}).")
