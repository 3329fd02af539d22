"""Checksum manifest of a model folder: catches damaged or tampered files.

At install every file's size, modification time and SHA-256 are recorded. Loading does the
cheap check (sizes and times); a file whose time changed is hashed again, so a copy or a
`touch` is not mistaken for damage, but changed content is.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from engine.errors import ModelError

MANIFEST_FILE = "manifest.json"
_CHUNK = 4 * 1024 * 1024


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _model_files(folder: Path) -> list[Path]:
    return sorted(
        path for path in folder.rglob("*")
        if path.is_file() and path.name != MANIFEST_FILE
    )


def write_manifest(folder: Path) -> dict:
    """Hash every file in ``folder`` and write ``manifest.json``; returns the manifest."""
    folder = Path(folder)
    files = {}
    for path in _model_files(folder):
        stat = path.stat()
        files[path.relative_to(folder).as_posix()] = {
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
            "sha256": sha256_of(path),
        }
    manifest = {"format": 1, "files": files}
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n",
                                        encoding="utf-8")
    return manifest


def read_manifest(folder: Path) -> dict:
    path = Path(folder) / MANIFEST_FILE
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        files = manifest["files"]
        if not isinstance(files, dict):
            raise ValueError("files is not a table")
    except FileNotFoundError:
        raise ModelError(f"Model '{Path(folder).name}' has no checksum manifest; "
                         f"import it again.") from None
    except (OSError, ValueError, KeyError, TypeError):
        raise ModelError(f"The checksum manifest of model '{Path(folder).name}' is damaged; "
                         f"import the model again.") from None
    return manifest


def verify_manifest(folder: Path, full: bool = False) -> None:
    """Raise ModelError if a file is missing, changed or unexpected.

    ``full`` hashes every file (done at import); otherwise only files whose modification
    time differs from the manifest are hashed (done at every load).
    """
    folder = Path(folder)
    name = folder.name
    expected = read_manifest(folder)["files"]
    present = {path.relative_to(folder).as_posix(): path for path in _model_files(folder)}
    for relative, entry in expected.items():
        path = present.get(relative)
        if path is None:
            raise ModelError(f"Model '{name}' is damaged: {relative} is missing; "
                             f"import it again.")
        stat = path.stat()
        if stat.st_size != entry["size"]:
            raise ModelError(f"Model '{name}' is damaged: {relative} has the wrong size; "
                             f"import it again.")
        unchanged = stat.st_mtime_ns == entry.get("mtime_ns")
        if (full or not unchanged) and sha256_of(path) != entry["sha256"]:
            raise ModelError(f"Model '{name}' is damaged or was modified: {relative} does "
                             f"not match its checksum; import it again.")
    extra = sorted(set(present) - set(expected))
    # Extra files are only a problem where the engine would read them: the graphs.
    suspicious = [relative for relative in extra if relative.endswith((".onnx", ".data", ".py"))]
    if suspicious:
        raise ModelError(f"Model '{name}' contains a file its manifest does not list "
                         f"({suspicious[0]}); import it again.")


def manifest_hash(folder: Path) -> str:
    """A short, stable hash of the whole model (A1111-style 10 hex digits)."""
    files = read_manifest(folder)["files"]
    digest = hashlib.sha256()
    for relative in sorted(files):
        digest.update(f"{relative}\0{files[relative]['sha256']}\n".encode())
    return digest.hexdigest()[:10]
