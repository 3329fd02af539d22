"""The registry of the kinds of installed model, which the model store asks in turn.

Order matters only where two kinds could claim the same thing: a source recognised by several
kinds is refused (the user names one with ``--kind``), and a source no kind recognises goes to
the first kind that takes its format as a fallback. Tests register a kind of their own by
replacing ``KINDS``; the functions here read it at each call.
"""

from __future__ import annotations

from pathlib import Path

from desktop.model_kinds import (
    annotator,
    controlnet,
    diffusion,
    embedding,
    face_detector,
    face_restorer,
    image_encoder,
    ip_adapter,
    lora,
    safety_checker,
    segmenter,
    tiny_vae,
    upscaler,
)
from desktop.model_kinds.kind import InstalledModel, ModelKind
from engine.errors import ModelError

__all__ = ["KINDS", "InstalledModel", "ModelKind", "kind_named", "kind_of_folder",
           "kind_for_source"]

KINDS: tuple[ModelKind, ...] = (diffusion, upscaler, lora, embedding, controlnet, annotator,
                                ip_adapter, image_encoder, segmenter, face_restorer,
                                face_detector, safety_checker, tiny_vae)


def kind_named(name: str) -> ModelKind:
    """The kind called ``name``; ModelError naming the kinds there are otherwise."""
    for kind in KINDS:
        if kind.name == name:
            return kind
    raise ModelError(f"There is no kind of model called '{name}'; the kinds are "
                     f"{_either([kind.name for kind in KINDS])}.")


def kind_of_folder(folder: Path) -> ModelKind | None:
    """The kind of the installed model in ``folder``, or None when it holds none."""
    return next((kind for kind in KINDS if kind.is_installed_folder(folder)), None)


def kind_for_source(source: Path, format: str, chosen: str | None = None) -> ModelKind:
    """The kind that imports ``source`` (of detected ``format``): the one ``chosen`` by the
    user, else the one kind that recognises it, else the first that takes its format as a
    fallback; ModelError in one sentence when none or several fit."""
    if chosen is not None:
        kind = kind_named(chosen)
        if not (kind.recognises(source, format) or format in kind.fallback_formats):
            raise ModelError(f"'{source.name}' is not {kind.noun}.")
        return kind
    claims = [kind for kind in KINDS if kind.recognises(source, format)]
    if len(claims) > 1:
        raise ModelError(f"'{source.name}' could be {_either([k.noun for k in claims])}; "
                         f"say which with {_either([f'--kind {k.name}' for k in claims])}.")
    claims = claims or [kind for kind in KINDS if format in kind.fallback_formats]
    if not claims:
        raise ModelError(f"'{source.name}' is none of the kinds of model Easel installs "
                         f"({_either([kind.name for kind in KINDS], 'and')}).")
    return claims[0]


def _either(words: list[str], last: str = "or") -> str:
    """"a, b or c"."""
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} {last} {words[-1]}"
