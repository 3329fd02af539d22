"""Embeddings on one model: new rows of the token-embedding table, and the ids that use them.

Each embedding's vectors are appended after the tokenizer's vocabulary when a text encoder's
session is created (engine.runtime.InitializerOverrides: the graph's ``token_embedding``
initializer is replaced by the enlarged table; a Gather reads any row count, so nothing is
re-exported). A prompt that names an embedding gets the new rows' ids in place of the name's
tokens, one id per vector, which is what diffusers' load_textual_inversion does with added
tokens. A1111 finds names the same way, by their token ids in the tokenized prompt, the
longest name first; a name that is no offered embedding is just words.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from engine.embeddings.embedding_file import EMBEDDING_FILE, read_embedding
from engine.errors import BadRequest, ModelError
from engine.export.checkpoint_family import FAMILY_NAMES
from engine.runtime.onnx_weights import read_initializers
from engine.runtime.sessions import InitializerOverrides

MAP_FILE = "weights_map.json"  # as engine.export.weights_map writes it
_TABLE_WEIGHT = "embeddings.token_embedding.weight"  # the end of its PyTorch name
# A run of ids that must stay together in one chunk: one embedding's vectors.
Run = tuple[int, ...]
Found = TypeVar("Found")  # what a name found in a prompt stands for


@dataclass(frozen=True)
class _Embedding:
    name: str  # as written in prompts
    vectors: dict[str, np.ndarray]  # text encoder component -> (n, width)
    identity: tuple  # path, size and time: an edited file is a new embedding

    @property
    def count(self) -> int:
        return len(next(iter(self.vectors.values())))


class EmbeddingSet:
    """Embeddings checked against one model: ``overrides`` for each text encoder's session
    and ``find`` for the ids a prompt's tokens become."""

    def __init__(self, folder: Path, model_name: str, embeddings: list[_Embedding]) -> None:
        self.folder = folder
        self.model_name = model_name
        self._embeddings = embeddings
        self._tables: dict[str, tuple[str, int]] = {}  # component -> (initializer, rows)
        self._names: dict[str, dict[int, list[tuple[Run, Run]]]] = {}

    def table(self, component: str) -> tuple[str, int]:
        """(initializer name, vocabulary rows) of ``component``'s token-embedding table."""
        if component not in self._tables:
            self._tables[component] = _token_table(self.folder, component,
                                                   self.model_name)[:2]
        return self._tables[component]

    def overrides(self, component: str) -> InitializerOverrides:
        """The enlarged table of ``component``'s graph: its rows, then each embedding's."""
        key = ("embeddings", component,
               tuple((embedding.name, embedding.identity) for embedding in self._embeddings))
        return InitializerOverrides(key, lambda: self._enlarged(component))

    def _enlarged(self, component: str) -> tuple[dict[str, np.ndarray], frozenset[str]]:
        initializer, _rows = self.table(component)
        values, external = read_initializers(self.folder / component / "model.onnx",
                                             [initializer])
        table = values[initializer]
        rows = [embedding.vectors[component] for embedding in self._embeddings]
        if any(vectors.shape[1] != table.shape[1] for vectors in rows):
            raise ModelError(f"An embedding's vectors do not fit the {table.shape[1]}-wide "
                             f"tokens of model '{self.model_name}'.")
        enlarged = np.concatenate([table, *(r.astype(table.dtype) for r in rows)])
        return {initializer: enlarged}, external

    def find(self, component: str, piece_ids: Callable[[str], list[int]],
             ids: Sequence[int]) -> list[int | Run]:
        """``ids`` (one piece of a prompt) with every embedding's name replaced by the run of
        its vectors' ids; ``piece_ids`` is the component's tokenizer."""
        return replace_names(ids, self._name_index(component, piece_ids))

    def _name_index(self, component: str, piece_ids: Callable[[str], list[int]]
                    ) -> dict[int, list[tuple[Run, Run]]]:
        """First token of a name -> (the name's tokens, its run of new ids), longest first."""
        if component not in self._names:
            names: list[tuple[Run, Run]] = []
            next_id = self.table(component)[1]
            for embedding in self._embeddings:
                run = tuple(range(next_id, next_id + embedding.count))
                next_id += embedding.count
                names.append((tuple(piece_ids(embedding.name)), run))
            self._names[component] = name_index(names)
        return self._names[component]


def name_index(names: Iterable[tuple[Run, Found]]) -> dict[int, list[tuple[Run, Found]]]:
    """First token of each name (its token ids) -> (the name's ids, what it stands for),
    longest first: where several names could start, A1111 takes the longest."""
    index: dict[int, list[tuple[Run, Found]]] = {}
    for ids, found in names:
        if ids:  # a name of no tokens can never be written
            index.setdefault(ids[0], []).append((ids, found))
    for candidates in index.values():
        candidates.sort(key=lambda candidate: -len(candidate[0]))
    return index


def replace_names(ids: Sequence[int], names: Mapping[int, Sequence[tuple[Run, Found]]]
                  ) -> list[int | Found]:
    """``ids`` (one piece of a prompt) read left to right, each name of ``names``
    (name_index) found replaced by what it stands for; a name inside a longer name or word
    is not found, as its ids differ. The one scan both the encoder and the record use, so a
    picture records exactly the embeddings that changed it."""
    found: list[int | Found] = []
    position = 0
    while position < len(ids):
        for name, stands_for in names.get(ids[position], ()):
            if tuple(ids[position:position + len(name)]) == name:
                found.append(stands_for)
                position += len(name)
                break
        else:
            found.append(ids[position])
            position += 1
    return found


def prepare_embeddings(folder: Path, family: str, model_name: str,
                       embeddings: Sequence[tuple[str, Path | str]]) -> EmbeddingSet | None:
    """Check ``embeddings`` (name as written in prompts, file) against the model in
    ``folder``; None when there are none. One sentence for a missing or unfit file."""
    seen: set[str] = set()
    checked = []
    for name, path in embeddings:
        path = Path(path)
        if not name.strip():
            raise BadRequest(f"The embedding file {path} has an empty name.")
        if name in seen:
            raise BadRequest(f"Two embeddings are called '{name}'; a prompt could not tell "
                             f"which it means.")
        seen.add(name)
        if not path.is_file():
            raise ModelError(f"The embedding file {path} is missing.")
        found, vectors = read_embedding(path)
        widths = {component: _table_width(folder, component, model_name)
                  for component in _encoders(folder)}
        if {c: v.shape[1] for c, v in vectors.items()} != widths:
            made_for = FAMILY_NAMES.get(found or "", "another model family")
            raise BadRequest(f"Embedding '{name}' is made for {made_for}, but model "
                             f"'{model_name}' is {FAMILY_NAMES.get(family, 'another family')}.")
        stat = path.stat()
        identity = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        checked.append(_Embedding(name, vectors, identity))
    return EmbeddingSet(Path(folder), model_name, checked) if checked else None


def embedding_name(path: Path) -> str:
    """How the user knows an embedding file: its folder's name when installed, else the
    file's name without its extension (as A1111 names them)."""
    path = Path(path)
    return path.parent.name if path.name == EMBEDDING_FILE else path.stem


def _encoders(folder: Path) -> list[str]:
    second = (Path(folder) / "text_encoder_2" / "model.onnx").is_file()
    return ["text_encoder", "text_encoder_2"] if second else ["text_encoder"]


def _table_width(folder: Path, component: str, model_name: str) -> int:
    return _token_table(folder, component, model_name)[2]


def _token_table(folder: Path, component: str, model_name: str) -> tuple[str, int, int]:
    """(initializer, rows, width) of ``component``'s token-embedding table."""
    try:
        weights = json.loads((folder / component / MAP_FILE).read_text(encoding="utf-8"))
        entry = next(entry for key, entry in weights["weights"].items()
                     if key.endswith(_TABLE_WEIGHT))
        rows, width = entry["shape"]
        return str(entry["initializer"]), int(rows), int(width)
    except (OSError, ValueError, KeyError, TypeError, IndexError, StopIteration):
        raise ModelError(f"Easel cannot find the token table of model '{model_name}', so it "
                         f"cannot use embeddings; import the model again to use them.") from None
