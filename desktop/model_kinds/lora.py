"""The LoRA kind: small low-rank networks that restyle a model that makes pictures.

Recognised by tensor names only LoRA files use (kohya/A1111's ``lora_unet_`` / ``lora_te_``
and ``.lora_down`` / ``.lora_up``, diffusers/PEFT's ``.lora_A`` / ``.lora_B``); the family it
fits is told from the layers it changes (engine.lora.family). Imported as its tensors in a
checked ``lora.safetensors`` (a pickle is read only as plain tensors, in a separate process,
by engine.export.pickle_convert) with ``easel.json`` marked ``"kind": "lora"`` (and A1111's
hash of the file as imported, which pictures record). A LoRA is never a model that makes
pictures: it is used with one, by name (``--lora NAME:WEIGHT`` or ``<lora:NAME:WEIGHT>`` in a
prompt), resolved here to its file before the engine sees it.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from desktop.model_kinds.kind import (
    InstalledModel,
    Progress,
    ShouldStop,
    folder_size,
    kind_in_description,
)
from engine.description import DESCRIPTION_FILE
from engine.errors import ModelError
from engine.export.formats import PICKLE, SAFETENSORS, pickled_strings
from engine.export.safetensors_check import check_safetensors
from engine.lora import LORA_FILE
from engine.lora.family import family_name, lora_family
from engine.lora.lora_file import is_lora_name, layer_names, naming_of
from engine.lora.record import SOURCE_HASH, a1111_hash

if TYPE_CHECKING:
    from desktop.model_store import ModelStore

name = "lora"
noun = "a LoRA"
fallback_formats: tuple[str, ...] = ()
DESCRIPTION_FORMAT = 1
UNKNOWN_FAMILY = "unknown"
# A whole checkpoint's UNet, in either naming: a model that may carry LoRA-like extras.
_CHECKPOINT_NAMES = ("model.diffusion_model.input_blocks.0.0.weight", "conv_in.weight")


def recognises(source: Path, format: str) -> bool:
    if format == SAFETENSORS:
        try:
            names = set(check_safetensors(source))
        except ModelError:
            return False  # the diffusion kind's converter says what is wrong with it
    elif format == PICKLE:
        names = pickled_strings(source)
    else:
        return False
    return not names & set(_CHECKPOINT_NAMES) and any(map(is_lora_name, names))


def needs_exporter(source: Path, format: str) -> bool:
    return format == PICKLE  # torch reads the pickle, in its own process


def import_into(source: Path, building: Path, progress: Progress | None,
                should_stop: ShouldStop | None, **_other_kinds_options: Any) -> None:
    """Copy the LoRA's tensors into ``building/lora.safetensors`` (a pickle converted to
    plain tensors first) and describe it; one sentence when it is no LoRA Easel can use."""
    from engine.export.formats import detect_format

    if progress is not None:
        progress("LoRA", 1, 1)
    target = building / LORA_FILE
    if detect_format(source) == PICKLE:
        from engine.export.pickle_convert import pickle_to_safetensors

        pickle_to_safetensors(source, target)
    else:
        check_safetensors(source)  # before a byte is copied
        shutil.copyfile(source, target)
    # Pictures name a LoRA by A1111's hash of the file the user downloaded (what sites know),
    # which a pickle's converted copy does not keep (engine.lora.record).
    description = {**describe_file(target, source.name), SOURCE_HASH: a1111_hash(source)}
    (building / DESCRIPTION_FILE).write_text(json.dumps(description, indent=2) + "\n",
                                             encoding="utf-8")


def describe_file(path: Path, shown: str) -> dict[str, Any]:
    """The description of the LoRA file ``path`` (called ``shown`` in sentences)."""
    tensors = check_safetensors(path)
    layers = layer_names(tensors, shown)
    # Unknown when its layers do not tell (see engine.lora.family): then whether it fits is
    # known only when it is used, where every layer must find its weight.
    family = lora_family(layers, tensors) or UNKNOWN_FAMILY
    ranks = {tensors[roles["down"]].shape[0] for roles in layers.values()}
    return {"format": DESCRIPTION_FORMAT, "kind": name, "family": family,
            "rank": max(ranks), "layers": len(layers), "tensors": len(tensors),
            "naming": naming_of(list(tensors)), "licence": None, "source": shown}


def is_installed_folder(folder: Path) -> bool:
    return kind_in_description(Path(folder) / DESCRIPTION_FILE) == name


def describe(folder: Path) -> InstalledModel:
    folder = Path(folder)
    try:
        data = json.loads((folder / DESCRIPTION_FILE).read_text(encoding="utf-8"))
        family, rank, layers = str(data["family"]), int(data["rank"]), int(data["layers"])
    except (OSError, ValueError, KeyError, TypeError):
        raise ModelError(f"The description of LoRA '{folder.name}' is damaged.") from None
    plural = "layer" if layers == 1 else "layers"
    use = f"LoRA for {family_name(family)} (rank {rank}, {layers} {plural})"
    return InstalledModel(folder.name, family, "", folder_size(folder), folder, kind=name,
                          use=use, licence=data.get("licence"))


def use_with(model: str) -> str:
    return f'easel generate --lora "{model}:1" "PROMPT"'


def resolve_loras(store: ModelStore, loras: Iterable[tuple[str, float]]
                  ) -> tuple[tuple[str, float], ...]:
    """Installed LoRAs by name -> (file, weight), as requests carry them; one sentence for
    a name that is no installed LoRA (weight 0 included: a typo is a typo)."""
    installed = {model.name: model for model in store.installed(name)}
    resolved = []
    for lora, weight in loras:
        if lora not in installed:
            known = ", ".join(installed) or "none"
            raise ModelError(f"No LoRA named '{lora}' is installed (installed LoRAs: {known}); "
                             f"add one with: easel models import FILE.safetensors.")
        resolved.append((str(installed[lora].path / LORA_FILE), float(weight)))
    return tuple(resolved)


def prompt_loras(store: ModelStore, prompt: str, named: Iterable[tuple[str, float]] = ()
                 ) -> tuple[tuple[str, float], ...]:
    """The LoRAs a request needs: the prompt's ``<lora:NAME:WEIGHT>`` tags and ``named`` ones
    (``--lora``), a name given twice adding up (as in A1111), resolved to their files."""
    from engine.lora import extract_lora_tags

    weights: dict[str, float] = {}
    for lora, weight in [*extract_lora_tags(prompt)[1], *named]:
        weights[lora] = weights.get(lora, 0.0) + weight
    return resolve_loras(store, weights.items())
