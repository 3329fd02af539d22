"""Content Credentials (C2PA) on the PNGs Easel makes: who made the picture and how.

A new picture says ``c2pa.created`` with IPTC's digital source type "trained algorithmic
media"; an edit says ``c2pa.opened`` (the source picture, as a parent ingredient whose own
manifest is kept, so the chain of edits can be followed) then ``c2pa.edited``. Both name Easel
and its version as the software agent; an ``easel.generation`` assertion names the operation
and the model with its hash, and the prompt only when the user allows it (prompts can be
private). Signing is offline: no timestamp authority, no certificate status fetch.

The manifest goes into the PNG's ``caBX`` chunk; the text chunks other tools read
(``parameters``, ``easel``, XMP) stay where they are.
"""

from __future__ import annotations

import functools
import io
import threading
from dataclasses import dataclass
from typing import BinaryIO

from desktop.provenance.keys import SigningIdentity
from engine import __version__
from engine.errors import EaselError

TRAINED = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
# An edit mixes the source's pixels with what a model made.
COMPOSITE = "http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia"
GENERATION_LABEL = "easel.generation"
SOFTWARE = {"name": "Easel", "version": __version__}

# Never reach the network from here: no OCSP, no remote manifests; and no thumbnail (it would
# double a picture's size and take most of the signing time).
C2PA_SETTINGS = {
    "builder": {"thumbnail": {"enabled": False}},
    "verify": {"ocsp_fetch": False, "remote_manifest_fetch": False},
}

_lock = threading.Lock()  # the native library is shared; one signature at a time


@dataclass(frozen=True)
class Claim:
    """What a picture's credentials say about it."""

    title: str  # the file's name
    operation: str  # "text to image", "upscale", …
    model_name: str | None = None
    model_hash: str | None = None
    prompt: str | None = None  # only when the user allows prompts in credentials
    edit: bool = False  # made from another picture (then ``parent`` is that picture's PNG)


class SigningError(EaselError):
    """Why the picture could not be signed, in a few words (the C2PA library's first line)."""


def sign_png(png: bytes | BinaryIO, claim: Claim, identity: SigningIdentity,
             destination: BinaryIO, parent: bytes | BinaryIO | None = None) -> None:
    """Write ``png`` with its Content Credentials to ``destination``. ``parent``: the source
    picture of an edit (its own credentials, if any, are kept inside the new ones)."""
    import c2pa  # the native library loads on the first signature, not at start

    source = io.BytesIO(png) if isinstance(png, bytes) else png
    manifest = {
        "claim_generator_info": [SOFTWARE],
        "title": claim.title,
        "format": "image/png",
        "assertions": [
            {"label": "c2pa.actions.v2", "data": {"actions": [_action(claim, parent is not None)]}},
            {"label": GENERATION_LABEL, "data": _generation(claim)},
        ],
    }
    try:
        with _lock:
            builder = c2pa.Builder(manifest, context=_context())
            if claim.edit and parent is not None:
                # The edit intent adds the c2pa.opened action that points at the parent.
                builder.set_intent(c2pa.C2paBuilderIntent.EDIT)
                stream = io.BytesIO(parent) if isinstance(parent, bytes) else parent
                builder.add_ingredient({"title": "source picture", "relationship": "parentOf"},
                                       "image/png", stream)
            builder.sign(_signer(identity), "image/png", source, destination)
    except c2pa.C2paError as error:
        raise SigningError(str(error).strip().splitlines()[0] if str(error).strip()
                           else type(error).__name__) from error


def _action(claim: Claim, has_parent: bool) -> dict:
    if claim.edit and has_parent:
        return {"action": "c2pa.edited", "digitalSourceType": COMPOSITE,
                "softwareAgent": SOFTWARE, "description": claim.operation}
    # An edit of a picture Easel does not keep (a file given by path) still creates the file:
    # C2PA's first action is "created" or "opened", and "opened" needs the source's manifest.
    return {"action": "c2pa.created", "digitalSourceType": COMPOSITE if claim.edit else TRAINED,
            "softwareAgent": SOFTWARE, "description": claim.operation}


def _generation(claim: Claim) -> dict:
    data: dict = {"operation": claim.operation}
    if claim.model_name is not None:
        data["model"] = {"name": claim.model_name, "hash": claim.model_hash}
    if claim.prompt is not None:
        data["prompt"] = claim.prompt
    return data


@functools.cache
def _context():  # -> c2pa.Context
    import c2pa

    return c2pa.Context(settings=c2pa.Settings.from_dict(C2PA_SETTINGS))


@functools.lru_cache(maxsize=4)
def _signer(identity: SigningIdentity):  # -> c2pa.Signer
    """Kept per identity: making one parses the key and certificates again."""
    import c2pa

    return c2pa.Signer.from_info(c2pa.C2paSignerInfo(
        alg=b"es256", sign_cert=identity.certificates, private_key=identity.private_key,
        ta_url=None))
