"""Everything known about one library picture, in words: the fields `easel gallery show`
prints and the window's Picture details shows, and the lines about its Content Credentials
(shared by `easel gallery check`)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from desktop.image_files import picture_embeddings
from desktop.library import ImageEntry
from desktop.provenance.reading import read_credentials


def picture_fields(entry: ImageEntry, tags: list[str],
                   chain: list[ImageEntry]) -> list[tuple[str, str]]:
    """(name, value) pairs, only those with a value; ``chain``: the pictures it was made
    from, nearest first."""
    fields = [("id", entry.id), ("file", entry.path), ("made", datetime.fromtimestamp(
        entry.created_at).strftime("%Y-%m-%d %H:%M:%S")), ("prompt", entry.prompt),
        ("negative prompt", entry.negative_prompt), ("model", entry.model),
        ("seed", entry.seed), ("size", f"{entry.width}x{entry.height}"),
        ("operation", entry.operation), ("LoRAs", loras_line(entry.parameters)),
        ("Embeddings", ", ".join(f"{name} ({short_hash})" for name, short_hash in
                                 picture_embeddings(entry.parameters))),
        ("controls", controls_line(entry.parameters)),
        ("image prompts", image_prompts_line(entry.parameters)),
        ("from", entry.origin),
        ("made from", " <- ".join(source.id[:12] for source in chain)),
        ("favourite", "yes" if entry.favourite else ""), ("tags", ", ".join(tags)),
        ("in the trash", "yes" if entry.trashed else ""),
        ("file missing", "yes" if entry.missing else ""),
        ("content filter", filter_line(entry.parameters)),
        ("safety check", safety_line(entry.parameters))]
    return [(name, str(value)) for name, value in fields if value not in ("", None)]


def credentials_lines(path: Path, own_serial: int | None) -> list[str]:
    """A picture file's Content Credentials, in lines (the first says whether they hold)."""
    credentials = read_credentials(path)
    lines = credentials.describe()
    if credentials.ours(own_serial):
        lines[0] += " Signed by this installation of Easel."
    return lines


def loras_line(parameters: dict) -> str:
    """The LoRAs a picture was made with: Easel's record (name, weight, hash), or the "Lora
    hashes" of a picture from AUTOMATIC1111."""
    loras = parameters.get("loras")
    if isinstance(loras, list):
        return ", ".join(f"{lora.get('name')} {lora.get('weight'):g} ({lora.get('hash')})"
                         for lora in loras if isinstance(lora, dict))
    settings = parameters.get("settings")
    hashes = settings.get("Lora hashes") if isinstance(settings, dict) else None
    return str(hashes) if hashes else ""


def controls_line(parameters: dict) -> str:
    """The ControlNets that steered a picture: name, control, weight and the share of the
    steps they acted in."""
    controls = parameters.get("controls")
    if not isinstance(controls, list):
        return ""
    return ", ".join(
        f"{control.get('controlnet')} ({control.get('control') or 'control'}) "
        f"{control.get('weight'):g} from {control.get('start'):g} to {control.get('end'):g}"
        + (" guess mode" if control.get("guess_mode") else "")
        for control in controls if isinstance(control, dict))


def image_prompts_line(parameters: dict) -> str:
    """The image prompts a picture was made with: adapter, encoder and weight of each."""
    prompts = parameters.get("image_prompts")
    if not isinstance(prompts, list):
        return ""
    return ", ".join(f"{prompt.get('adapter')} with {prompt.get('encoder')} "
                     f"{prompt.get('weight'):g}" for prompt in prompts if isinstance(prompt, dict))


def filter_line(parameters: dict) -> str:
    """What the content filter flagged in the prompt ("warned: gore")."""
    decision = parameters.get("content_filter")
    if not isinstance(decision, dict):
        return ""
    return "; ".join(f"{key}: {', '.join(map(str, terms))}" for key, terms in decision.items()
                     if key != "mode" and isinstance(terms, list))


def safety_line(parameters: dict) -> str:
    """The installed safety checker's verdict ("flagged by NAME, score 0.97")."""
    record = parameters.get("safety_check")
    if not isinstance(record, dict):
        return ""
    checker = record.get("checker", "?")
    if isinstance(record.get("error"), str):
        return f"not checked: {checker} could not run ({record['error']})"
    score = record.get("score")
    shown = f", score {score:.3g}" if isinstance(score, int | float) else ""
    verdict = "flagged" if record.get("flagged") is True else "passed"
    return f"{verdict} by {checker}{shown}"
