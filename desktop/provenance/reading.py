"""Reading a PNG's Content Credentials back, for `easel gallery show`, `easel gallery check`
and the window's picture details: is there a manifest, does it still match the picture, and
what does it say.

The signer is never "trusted": Easel's certificates are made on the user's machine and no
authority vouches for them, so the validator's ``signingCredential.untrusted`` is expected and
not counted as a failure here; every other failure (a changed pixel, a changed manifest) is.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

from desktop.provenance.signing import C2PA_SETTINGS, GENERATION_LABEL

NONE, VALID, TAMPERED, UNREADABLE = "none", "valid", "tampered", "unreadable"
_EXPECTED = {"signingCredential.untrusted"}  # no authority knows a self-made certificate


@dataclass(frozen=True)
class Credentials:
    state: str  # NONE, VALID, TAMPERED or UNREADABLE
    sentence: str  # what a person is told, in one line
    actions: tuple[str, ...] = ()  # "c2pa.opened", "c2pa.edited", …
    digital_source_type: str | None = None  # of the last action that names one
    software: str | None = None  # "Easel 0.1.0"
    signer: str | None = None  # the certificate's common name
    serial_number: int | None = None  # of the signing certificate
    operation: str | None = None
    model: str | None = None
    model_hash: str | None = None
    prompt: str | None = None
    parents: tuple[str, ...] = ()  # each parent ingredient: "valid", "tampered" or "none"
    failures: tuple[str, ...] = ()  # the validator's failure codes, less the expected one

    def ours(self, serial_number: int | None) -> bool:
        """Signed by the identity with that serial number (this installation's)."""
        return serial_number is not None and self.serial_number == serial_number

    def describe(self) -> list[str]:
        """The lines `easel gallery show` and the picture details print."""
        lines = [self.sentence]
        if self.state in (VALID, TAMPERED):
            lines.append(f"  made with: {self.software or 'unknown software'}; "
                         f"signed by: {self.signer or 'unknown'}")
            if self.actions:
                lines.append(f"  actions: {', '.join(self.actions)}")
            if self.digital_source_type:
                lines.append(f"  source type: {self.digital_source_type.rsplit('/', 1)[-1]}")
            if self.model:
                lines.append(f"  model: {self.model}"
                             + (f" ({self.model_hash})" if self.model_hash else ""))
            if self.prompt is not None:
                lines.append(f"  prompt: {self.prompt}")
            for number, parent in enumerate(self.parents, 1):
                lines.append(f"  source picture {number}: credentials {parent}")
        return lines


def read_credentials(picture: bytes | Path) -> Credentials:
    """The credentials of a PNG (its bytes or its path); never raises for a bad file."""
    import c2pa

    try:
        data = picture if isinstance(picture, bytes) else Path(picture).read_bytes()
    except OSError as error:
        return Credentials(UNREADABLE, f"Content Credentials: the file could not be read "
                                       f"({error.strerror or error}).")
    context = c2pa.Context(settings=c2pa.Settings.from_dict(C2PA_SETTINGS))
    try:
        reader = c2pa.Reader("image/png", io.BytesIO(data), context=context)
        store = json.loads(reader.json())
    except c2pa.C2paError as error:
        if "ManifestNotFound" in type(error).__name__ or "no JUMBF" in str(error):
            return Credentials(NONE, "Content Credentials: none.")
        return Credentials(UNREADABLE, "Content Credentials: present but unreadable "
                                       f"({_first_line(error)}).")
    return _summary(store)


def _summary(store: dict) -> Credentials:
    manifests = store.get("manifests") or {}
    active = manifests.get(store.get("active_manifest") or "", {})
    results = store.get("validation_results") or {}
    failures = tuple(entry.get("code", "?") for entry
                     in (results.get("activeManifest") or {}).get("failure", [])
                     if entry.get("code") not in _EXPECTED)
    actions, source_type = _actions(active)
    generation = _assertion(active, GENERATION_LABEL) or {}
    model = generation.get("model") or {}
    signature = active.get("signature_info") or {}
    software = next((f"{info.get('name', '?')} {info.get('version', '')}".strip()
                     for info in active.get("claim_generator_info") or []), None)
    parents = tuple(_parent_state(ingredient, results)
                    for ingredient in active.get("ingredients") or []
                    if ingredient.get("relationship") == "parentOf")
    if failures:
        state = TAMPERED
        sentence = ("Content Credentials: do NOT match the picture — it was changed after it "
                    f"was signed ({', '.join(failures)}).")
    else:
        state = VALID
        sentence = ("Content Credentials: valid — unchanged since it was signed (the signer "
                    "is an installation's own certificate, not a verified identity).")
    serial = signature.get("cert_serial_number")
    return Credentials(
        state, sentence, actions, source_type, software, signature.get("common_name"),
        int(serial) if isinstance(serial, str) and serial.isdigit() else None,
        generation.get("operation"), model.get("name"), model.get("hash"),
        generation.get("prompt"), parents, failures)


def _actions(manifest: dict) -> tuple[tuple[str, ...], str | None]:
    names: list[str] = []
    source_type = None
    for label in ("c2pa.actions.v2", "c2pa.actions"):
        for action in (_assertion(manifest, label) or {}).get("actions", []):
            names.append(action.get("action", "?"))
            source_type = action.get("digitalSourceType") or source_type
    return tuple(names), source_type


def _assertion(manifest: dict, label: str) -> dict | None:
    return next((assertion.get("data") for assertion in manifest.get("assertions") or []
                 if assertion.get("label") == label), None)


def _parent_state(ingredient: dict, results: dict) -> str:
    if not ingredient.get("active_manifest"):
        return NONE
    own = (ingredient.get("validation_results") or {}).get("activeManifest") or {}
    failed = [entry for entry in own.get("failure", []) if entry.get("code") not in _EXPECTED]
    for delta in results.get("ingredientDeltas") or []:  # a change found since it was added
        failed += (delta.get("validationDeltas") or {}).get("failure", [])
    return TAMPERED if failed else VALID


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
