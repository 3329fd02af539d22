"""The textual-inversion embedding kind: a few learned token vectors a prompt uses by name.

Recognised by its tensors (engine.embeddings.embedding_file: A1111's ``string_to_param`` .pt
and ``emb_params`` .safetensors, diffusers' ``learned_embeds`` with one tensor named after
its token, SDXL's ``clip_l`` + ``clip_g``); the family is told by the vectors' width. Imported
as ``embedding.safetensors`` holding one float32 tensor per text encoder (``text_encoder``,
``text_encoder_2``) with ``easel.json`` marked ``"kind": "embedding"`` (and the SHA-256 of the
file as imported, which pictures record). Its name in a prompt is the installed name (the
file's name without extension by default, as in A1111); every installed embedding of the
model's family is offered to each request, as A1111 loads all.
"""

from __future__ import annotations

import json
import struct
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from desktop.model_kinds.kind import (
    InstalledModel,
    Progress,
    ShouldStop,
    folder_size,
    kind_in_description,
)
from engine.description import DESCRIPTION_FILE
from engine.embeddings import EMBEDDING_FILE, embedding_layout, read_embedding
from engine.embeddings.embedding_file import family_of
from engine.embeddings.record import SOURCE_HASH, file_sha256
from engine.errors import ModelError
from engine.export.checkpoint_family import FAMILY_NAMES
from engine.export.formats import PICKLE, SAFETENSORS, pickled_strings
from engine.export.safetensors_check import check_safetensors
from engine.lora.lora_file import is_lora_name

if TYPE_CHECKING:
    from desktop.model_store import ModelStore

name = "embedding"
noun = "a textual-inversion embedding"
fallback_formats: tuple[str, ...] = ()
DESCRIPTION_FORMAT = 1
# diffusers' learned_embeds.bin holds one small tensor; a larger pickle is something else.
_SMALL_PICKLE = 1024 * 1024


def recognises(source: Path, format: str) -> bool:
    if format == SAFETENSORS:
        try:
            tensors = check_safetensors(source)
            family, _roles = embedding_layout(tensors, source.name)
        except ModelError:
            return False
        return family is not None and not any(map(is_lora_name, tensors))
    if format == PICKLE:
        strings = pickled_strings(source)
        if "string_to_param" in strings:
            return True  # A1111's .pt
        return (Path(source).stat().st_size <= _SMALL_PICKLE
                and not any("." in string and string.endswith(("weight", "bias"))
                            for string in strings))
    return False


def needs_exporter(source: Path, format: str) -> bool:
    return format == PICKLE  # torch reads the pickle, in its own process


def import_into(source: Path, building: Path, progress: Progress | None,
                should_stop: ShouldStop | None, **_other_kinds_options: Any) -> None:
    """Write the embedding's vectors to ``building/embedding.safetensors`` and describe it;
    one sentence when the file is no embedding Easel can use."""
    from engine.export.formats import detect_format

    if progress is not None:
        progress("Embedding", 1, 1)
    if detect_format(source) == PICKLE:
        with tempfile.TemporaryDirectory(prefix="easel-embedding-") as folder:
            converted = Path(folder) / f"{source.stem}.safetensors"
            _pickle_to_safetensors(source, converted)
            _family, vectors = read_embedding(converted)
    else:
        _family, vectors = read_embedding(source)
    family = family_of(vectors, source.name)
    write_vectors(vectors, building / EMBEDDING_FILE)
    # Pictures name an embedding by the hash of the file the user downloaded (what sites
    # know), which the installed copy is not (engine.embeddings.record).
    description = {"format": DESCRIPTION_FORMAT, "kind": name, "family": family,
                   "vectors": len(vectors["text_encoder"]), "licence": None,
                   "source": source.name, SOURCE_HASH: file_sha256(source)}
    (building / DESCRIPTION_FILE).write_text(json.dumps(description, indent=2) + "\n",
                                             encoding="utf-8")


def write_vectors(vectors: dict[str, np.ndarray], path: Path) -> None:
    """Easel's installed form: one float32 tensor per text encoder, in safetensors."""
    header, offset, blobs = {}, 0, []
    for component, values in vectors.items():
        blob = np.ascontiguousarray(values, dtype="<f4").tobytes()
        header[component] = {"dtype": "F32", "shape": list(values.shape),
                             "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)  # the data starts 8-byte aligned
    with path.open("wb") as file:
        file.write(struct.pack("<Q", len(encoded)) + encoded + b"".join(blobs))


def is_installed_folder(folder: Path) -> bool:
    return kind_in_description(Path(folder) / DESCRIPTION_FILE) == name


def describe(folder: Path) -> InstalledModel:
    folder = Path(folder)
    try:
        data = json.loads((folder / DESCRIPTION_FILE).read_text(encoding="utf-8"))
        family, vectors = str(data["family"]), int(data["vectors"])
    except (OSError, ValueError, KeyError, TypeError):
        raise ModelError(f"The description of embedding '{folder.name}' is damaged.") from None
    plural = "vector" if vectors == 1 else "vectors"
    use = (f"embedding for {FAMILY_NAMES.get(family, family)} ({vectors} {plural}): "
           f"write '{folder.name}' in a prompt")
    return InstalledModel(folder.name, family, "", folder_size(folder), folder, kind=name,
                          use=use, licence=data.get("licence"))


def use_with(model: str) -> str:
    return f'easel generate "a picture in the style of {model}"'


def installed_embeddings(store: ModelStore, family: str) -> tuple[tuple[str, str], ...]:
    """Every installed embedding that fits ``family``, as requests carry them: (name as
    written in prompts, file). A prompt that names none is unchanged."""
    return tuple((model.name, str(model.path / EMBEDDING_FILE))
                 for model in store.installed(name) if model.family == family)


# --- pickles ----------------------------------------------------------------------------------

def _pickle_to_safetensors(source: Path, target: Path) -> None:
    """engine.export.pickle_convert's isolated, tensors-only load (which unwraps A1111's
    ``string_to_param``, a table of tensors one level down)."""
    from engine.export.pickle_convert import pickle_to_safetensors

    pickle_to_safetensors(source, target)
